#!/usr/bin/env bash
# Bring up, tear down and inspect a real PostgreSQL test server on a Debian machine (for the tests
# marked `postgres`: Optuna storage and MLflow tracking store on a database server).
#
#   scripts/postgres.sh up       install Debian's `postgresql` if missing, create the cluster (first
#                                time), start it on 127.0.0.1:$PORT only, create the role `sweeper`
#                                (password in $STATE/password, CREATEDB). Idempotent.
#   scripts/postgres.sh down     stop the server this script started (by its data dir), nothing else.
#                                `down --purge` also deletes the state dir.
#   scripts/postgres.sh status   say whether it runs; exit 0 if it answers, 3 if not.
#   scripts/postgres.sh env      print the exports a client (the tests) needs: SWEEPER_PG_URL
#                                (postgresql://sweeper:PASSWORD@127.0.0.1:PORT), SWEEPER_PG_DIR.
#   scripts/postgres.sh install  only install the package.
#
# Run as root (the server itself runs as Debian's `postgres` user). No systemd, and Debian's own
# cluster (`main` on port 5432) is neither started nor touched: this server has its own data dir,
# port, socket dir and log under one state dir:
#   ${SWEEPER_PG_DIR:-/tmp/entropy-sweeper-postgres}    port ${SWEEPER_PG_PORT:-55432}
# It listens on 127.0.0.1 only (and a unix socket in the state dir). Durability settings are off
# (fsync, synchronous_commit, full_page_writes): a crash of the *machine* may lose the test data;
# a killed client or a stopped server loses nothing, and locking and transactions are unchanged.
set -euo pipefail

STATE_DIR="${SWEEPER_PG_DIR:-/tmp/entropy-sweeper-postgres}"
PORT="${SWEEPER_PG_PORT:-55432}"
ROLE=sweeper
DATA_DIR="$STATE_DIR/data"
SOCKET_DIR="$STATE_DIR/run"
LOG_FILE="$STATE_DIR/postgres.log"
PASSWORD_FILE="$STATE_DIR/password"

log() { printf '[postgres.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
require_root() { [[ $(id -u) -eq 0 ]] || die "run as root (it installs a package and runs the server as user postgres)"; }

# The server binaries (/usr/lib/postgresql/<major>/bin): the cluster's own major version once it
# exists (a data dir only runs under its major), else the newest installed.
bin_dir() {
    local major
    if [[ -f $DATA_DIR/PG_VERSION && -x /usr/lib/postgresql/$(<"$DATA_DIR/PG_VERSION")/bin/postgres ]]; then
        major=$(<"$DATA_DIR/PG_VERSION")
    else
        major=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
    fi
    [[ -n $major && -x /usr/lib/postgresql/$major/bin/postgres ]] || return 1
    echo "/usr/lib/postgresql/$major/bin"
}

install_packages() {
    bin_dir >/dev/null && id postgres >/dev/null 2>&1 && return 0
    log "installing Debian's postgresql (log: $STATE_DIR/apt.log)"
    mkdir -p "$STATE_DIR"
    # apt must not start Debian's own cluster: a policy-rc.d answering 101 makes the maintainer
    # scripts skip every service start (as in slurm/cluster.sh). Removed afterwards if created here.
    local created_policy=0 status=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# written by entropy-sweeper scripts/postgres.sh during apt-get install\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    {
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=600 update &&
        apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends postgresql
    } >>"$STATE_DIR/apt.log" 2>&1 || status=$?
    if ((created_policy)); then rm -f /usr/sbin/policy-rc.d; fi
    ((status == 0)) || { tail -n 30 "$STATE_DIR/apt.log" >&2; die "apt-get failed (exit $status), see $STATE_DIR/apt.log"; }
    bin_dir >/dev/null || die "no server binaries under /usr/lib/postgresql after the install"
}

as_postgres() { runuser -u postgres -- "$@"; }

server_answers() { "$(bin_dir)/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 2; }

# True if our data dir's postmaster runs (postmaster.pid names a live postgres process).
our_server_runs() {
    [[ -f $DATA_DIR/postmaster.pid ]] || return 1
    local pid
    pid=$(head -n 1 "$DATA_DIR/postmaster.pid")
    [[ $pid =~ ^[0-9]+$ && -d /proc/$pid ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == postgres ]]
}

init_cluster() {
    [[ -f $DATA_DIR/PG_VERSION ]] && return 0
    log "creating the cluster in $DATA_DIR"
    mkdir -p "$STATE_DIR" "$SOCKET_DIR"
    [[ -s $PASSWORD_FILE ]] || { head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$PASSWORD_FILE"; }
    chmod 644 "$PASSWORD_FILE"   # a loopback-only test server; tests read it as any user
    chown postgres:postgres "$STATE_DIR" "$SOCKET_DIR"
    chmod 755 "$STATE_DIR" "$SOCKET_DIR"
    # superuser postgres: unix socket only, peer auth; every TCP login needs a password (scram)
    as_postgres "$(bin_dir)/initdb" -D "$DATA_DIR" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >>"$STATE_DIR/initdb.log" 2>&1 || die "initdb failed; see $STATE_DIR/initdb.log"
    cat >>"$DATA_DIR/postgresql.conf" <<EOF

# --- entropy-sweeper test server (scripts/postgres.sh)
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCKET_DIR'
max_connections = 200
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
EOF
}

start_server() {
    if our_server_runs; then
        log "server already runs (pid $(head -n 1 "$DATA_DIR/postmaster.pid"))"
        return 0
    fi
    touch "$LOG_FILE"; chown postgres:postgres "$LOG_FILE"
    log "starting the server on 127.0.0.1:$PORT"
    # pg_ctl detaches the postmaster into its own session: it outlives this shell and pytest
    as_postgres "$(bin_dir)/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -w -t 60 start >/dev/null ||
        { tail -n 20 "$LOG_FILE" >&2; die "the server did not start; see $LOG_FILE"; }
}

create_role() {
    local password
    password=$(<"$PASSWORD_FILE")
    as_postgres "$(bin_dir)/psql" -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -d postgres \
        -v role="$ROLE" -v password="$password" >/dev/null <<'EOF' || die "could not create role; see $LOG_FILE"
SELECT format('CREATE ROLE %I LOGIN CREATEDB', :'role') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'role', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'role', :'role') WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'role') \gexec
EOF
}

cmd_up() {
    require_root
    local started=$EPOCHREALTIME
    install_packages
    init_cluster
    start_server
    server_answers || die "the server does not answer on 127.0.0.1:$PORT; see $LOG_FILE"
    create_role
    log "up in $(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}') s: 127.0.0.1:$PORT, state dir $STATE_DIR"
}

cmd_down() {
    require_root
    if our_server_runs; then
        log "stopping the server"
        as_postgres "$(bin_dir)/pg_ctl" -D "$DATA_DIR" -m fast -w -t 60 stop >/dev/null ||
            die "pg_ctl stop failed; see $LOG_FILE"
    fi
    if [[ ${1:-} == --purge && -d $STATE_DIR ]]; then
        [[ -f $DATA_DIR/PG_VERSION || ! -d $DATA_DIR ]] || die "$STATE_DIR does not look like our state dir; not deleting it"
        log "deleting $STATE_DIR"
        rm -rf "$STATE_DIR"
    fi
    log "down"
}

cmd_status() {
    if our_server_runs && server_answers; then
        echo "postgres running (pid $(head -n 1 "$DATA_DIR/postmaster.pid")) on 127.0.0.1:$PORT; state dir $STATE_DIR"
        return 0
    fi
    echo "postgres stopped; state dir $STATE_DIR"
    return 3
}

cmd_env() {
    [[ -s $PASSWORD_FILE ]] || die "no server set up yet: run '$0 up' first"
    echo "export SWEEPER_PG_URL=postgresql://$ROLE:$(<"$PASSWORD_FILE")@127.0.0.1:$PORT"
    echo "export SWEEPER_PG_DIR=$STATE_DIR"
}

case "${1:-}" in
    up) cmd_up ;;
    down) shift; cmd_down "$@" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    install) require_root; install_packages ;;
    *) echo "usage: $0 up|down [--purge]|status|env|install" >&2; exit 2 ;;
esac
