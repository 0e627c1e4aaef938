#!/usr/bin/env bash
# Bring up, tear down and inspect a real single-node Slurm test cluster on a Debian machine.
#
#   slurm/cluster.sh up       install Debian's packages if missing, write configs, start munged,
#                             MariaDB, slurmdbd, slurmctld, slurmd; wait until the node is idle and
#                             sacct answers. Idempotent: what already runs is left alone.
#   slurm/cluster.sh down     stop what `up` started (by its pid files), nothing else.
#                             `down --purge` also deletes the state dir (next `up` starts from scratch).
#   slurm/cluster.sh status   print which daemons run, and sinfo.
#   slurm/cluster.sh env      print the exports a client (sbatch, submitit, the tests) needs.
#   slurm/cluster.sh install  only install the packages.
#
# Run as root. No systemd: the daemons are started by hand, each in its own session, with every
# config, log, pid file, socket and database under one state dir:
#   ${SWEEPER_SLURM_DIR:-/tmp/entropy-sweeper-slurm}
# Logs: $STATE/log/*.log (daemon logs) and $STATE/log/*.stderr (what a daemon printed before its log
# was open). Why each setting is what it is: see slurm/README.md.
set -euo pipefail

STATE_DIR="${SWEEPER_SLURM_DIR:-/tmp/entropy-sweeper-slurm}"
CLUSTER_NAME="${SWEEPER_SLURM_CLUSTER:-entropy}"
PARTITION="debug"
SLURMCTLD_PORT=6817
SLURMD_PORT=6818
SLURMDBD_PORT=6819
ACCOUNTING_DB="slurm_acct_db"
ACCOUNTING_DB_USER="slurm"
UP_TIMEOUT_S="${SWEEPER_SLURM_UP_TIMEOUT:-120}"

ETC_DIR="$STATE_DIR/etc"
LOG_DIR="$STATE_DIR/log"
RUN_DIR="$STATE_DIR/run"
SPOOL_DIR="$STATE_DIR/spool"
MUNGE_DIR="$STATE_DIR/munge"
MYSQL_DIR="$STATE_DIR/mysql"
SLURM_CONF_FILE="$ETC_DIR/slurm.conf"
SLURMDBD_CONF_FILE="$ETC_DIR/slurmdbd.conf"
# munged listens on its default socket: Slurm's clients of slurmdbd (sacctmgr, sacct) in 22.05 do not
# honour AuthInfo=socket=..., so a private socket path breaks accounting.
MUNGE_SOCKET=/run/munge/munge.socket.2
MYSQL_SOCKET="$MYSQL_DIR/mysqld.sock"
MYSQL_DATA_DIR="$MYSQL_DIR/data"
DB_PASSWORD_FILE="$ETC_DIR/db_password"

log() { printf '[cluster.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and starts daemons as other users)"
}

# ---------------------------------------------------------------- install

needed_commands=(munged mungekey slurmctld slurmd slurmdbd sinfo sbatch sacct sacctmgr scontrol
                 mariadbd mariadb-install-db mariadb mariadb-admin)

missing_commands() {
    local cmd missing=()
    for cmd in "${needed_commands[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || missing+=("$cmd")
    done
    echo "${missing[*]}"
}

install_packages() {
    local missing
    missing=$(missing_commands)
    [[ -z $missing ]] && return 0
    log "installing Debian packages (missing: $missing); log: $LOG_DIR/apt.log"
    mkdir -p "$LOG_DIR"
    # apt must not start the daemons itself: a policy-rc.d that answers 101 ("action forbidden")
    # makes every maintainer script skip its service start. Removed afterwards only if created here.
    local created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# written by entropy-sweeper slurm/cluster.sh during apt-get install\nexit 101\n' \
            >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    local status=0
    {
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=600 update &&
        apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
            slurmctld slurmd slurm-client slurmdbd munge mariadb-server mariadb-client
    } >>"$LOG_DIR/apt.log" 2>&1 || status=$?
    if ((created_policy)); then rm -f /usr/sbin/policy-rc.d; fi
    ((status == 0)) || { tail -n 30 "$LOG_DIR/apt.log" >&2; die "apt-get failed (exit $status), see $LOG_DIR/apt.log"; }
    missing=$(missing_commands)
    [[ -z $missing ]] || die "still missing after install: $missing"
}

# ---------------------------------------------------------------- pid files

# pid_alive NAME: true if $RUN_DIR/NAME.pid names a live process whose command is NAME's binary.
pid_alive() {
    local name=$1 binary=$2 pid
    [[ -f $RUN_DIR/$name.pid ]] || return 1
    pid=$(<"$RUN_DIR/$name.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -d /proc/$pid ]] || return 1
    # guard against a recycled pid: the process must run the expected program, and not be a zombie
    # (a daemon that exited and waits for its parent to reap it). /proc/PID/comm, not /proc/PID/exe:
    # the latter is unreadable once a daemon has switched to its own user on some kernels.
    local comm state
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $comm == "$binary" && $state != Z ]]
}

pid_of() { cat "$RUN_DIR/$1.pid"; }

# start_daemon NAME BINARY CMD...: start CMD in its own session with stdout/stderr appended to
# $LOG_DIR/NAME.stderr and its pid in $RUN_DIR/NAME.pid. The command must stay in the foreground.
start_daemon() {
    local name=$1 binary=$2
    shift 2
    if pid_alive "$name" "$binary"; then
        log "$name already runs (pid $(pid_of "$name"))"
        return 0
    fi
    log "starting $name"
    # setsid: the daemon leaves the caller's process group and session, so it outlives the shell,
    # pytest, or the job runner that called `up`.
    setsid "$@" </dev/null >>"$LOG_DIR/$name.stderr" 2>&1 &
    local pid=$!
    echo "$pid" >"$RUN_DIR/$name.pid"
    sleep 0.2
    if ! pid_alive "$name" "$binary"; then
        tail -n 20 "$LOG_DIR/$name.stderr" >&2 || true
        die "$name exited at once; see $LOG_DIR/$name.stderr and $LOG_DIR/$name.log"
    fi
}

# stop_daemon NAME BINARY: SIGTERM the pid in its pid file, wait, SIGKILL after 30 s.
stop_daemon() {
    local name=$1 binary=$2 pid i
    if ! pid_alive "$name" "$binary"; then
        rm -f "$RUN_DIR/$name.pid"
        return 0
    fi
    pid=$(pid_of "$name")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        [[ -d /proc/$pid ]] || break
        # a zombie child of nobody we can reap: treat as gone
        [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]] && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
        log "$name did not stop in 30 s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN_DIR/$name.pid"
}

wait_until() {
    local what=$1 timeout=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.25
    done
    log "$what"
}

# ---------------------------------------------------------------- configs

# write_if_changed FILE: replace FILE with stdin only when the content differs (so a running
# cluster is not told its config changed when it did not).
write_if_changed() {
    local file=$1 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return 1
    fi
    mv "$tmp" "$file"
    return 0
}

# Node hardware as slurmd sees it (slurmd -C prints "NodeName=... CPUs=2 Boards=1 ...").
node_hardware_field() {
    local field=$1
    slurmd -C 2>/dev/null | head -n 1 | tr ' ' '\n' | sed -n "s/^$field=//p"
}

make_dirs() {
    mkdir -p "$ETC_DIR" "$LOG_DIR" "$RUN_DIR" "$SPOOL_DIR/slurmctld" "$SPOOL_DIR/slurmd" \
        "$MUNGE_DIR" "$MYSQL_DIR"
    chmod 755 "$STATE_DIR" "$ETC_DIR" "$LOG_DIR" "$RUN_DIR" "$SPOOL_DIR"
    # each daemon user owns what it writes
    chown slurm:slurm "$SPOOL_DIR/slurmctld"
    chown munge:munge "$MUNGE_DIR"
    chmod 755 "$MUNGE_DIR"   # clients need to reach the socket; the key itself is mode 0400
    chown mysql:mysql "$MYSQL_DIR"
    chmod 755 "$MYSQL_DIR"   # slurmdbd (user slurm) must reach the socket; data/ stays 0700
    # the logs dir is shared: slurmctld/slurmdbd (user slurm) and mariadbd (user mysql) write there
    local f
    for f in slurmctld.log slurmdbd.log; do touch "$LOG_DIR/$f"; chown slurm:slurm "$LOG_DIR/$f"; done
    touch "$LOG_DIR/mariadb.err"; chown mysql:mysql "$LOG_DIR/mariadb.err"
    touch "$LOG_DIR/munged.log"; chown munge:munge "$LOG_DIR/munged.log"; chmod 640 "$LOG_DIR/munged.log"
}

write_configs() {
    local host cpus boards sockets cores threads real_mem node_mem def_mem_per_cpu
    host=$(hostname -s)
    cpus=$(node_hardware_field CPUs)
    boards=$(node_hardware_field Boards)
    sockets=$(node_hardware_field SocketsPerBoard)
    cores=$(node_hardware_field CoresPerSocket)
    threads=$(node_hardware_field ThreadsPerCore)
    real_mem=$(node_hardware_field RealMemory)
    [[ -n $cpus && -n $real_mem ]] || die "could not read the node's hardware from 'slurmd -C'"
    # leave headroom for the OS, MariaDB and the daemons: offer 3/4 of the memory, at most all but 2 GiB
    node_mem=$((real_mem * 3 / 4))
    ((node_mem > real_mem - 2048)) && node_mem=$((real_mem - 2048))
    ((node_mem < 512)) && node_mem=512
    # a job that asks for no memory gets this much per CPU (without it, it would get the whole node
    # and jobs would run one at a time)
    def_mem_per_cpu=$((node_mem / cpus / 2))
    ((def_mem_per_cpu > 2048)) && def_mem_per_cpu=2048

    if [[ ! -f $DB_PASSWORD_FILE ]]; then
        (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DB_PASSWORD_FILE")
    fi
    local db_password
    db_password=$(<"$DB_PASSWORD_FILE")

    write_if_changed "$SLURM_CONF_FILE" <<EOF && { log "wrote $SLURM_CONF_FILE"; SLURM_CONF_CHANGED=1; } || true
# Written by entropy-sweeper slurm/cluster.sh: a single-node test cluster. Do not edit; edit the script.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job may start 10 s after its last run instead of 121 s
AuthInfo=cred_expire=10
StateSaveLocation=$SPOOL_DIR/slurmctld
SlurmdSpoolDir=$SPOOL_DIR/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.self.pid
SlurmdPidFile=$RUN_DIR/slurmd.self.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups here: track job processes through /proc, bind no tasks
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
LaunchParameters=use_interactive_step
# cores and memory are consumable, so several small jobs share the node
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem_per_cpu
SchedulerType=sched/backfill
# schedule a batch job as soon as it is submitted (default waits up to ~3 s); run backfill every 5 s
# (default 30 s) so that a requeued job starts soon after its begin time (requeue + cred_expire + 1)
SchedulerParameters=batch_sched_delay=0,bf_interval=5
# accounting: submitit reads final job states (CANCELLED, TIMEOUT, ...) from sacct
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$SLURMDBD_PORT
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
MinJobAge=300
Waittime=0
MailProg=/bin/true
NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus Boards=$boards SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$node_mem State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES DefaultTime=10 MaxTime=60 State=UP
EOF

    # slurmdbd refuses a config that others can read (it holds the DB password)
    write_if_changed "$SLURMDBD_CONF_FILE" <<EOF && log "wrote $SLURMDBD_CONF_FILE" || true
# Written by entropy-sweeper slurm/cluster.sh. Do not edit; edit the script.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$SLURMDBD_PORT
SlurmUser=slurm
DebugLevel=info
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$RUN_DIR/slurmdbd.self.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$ACCOUNTING_DB
StorageUser=$ACCOUNTING_DB_USER
StoragePass=$db_password
EOF
    chown slurm:slurm "$SLURMDBD_CONF_FILE"
    chmod 600 "$SLURMDBD_CONF_FILE"
    chmod 644 "$SLURM_CONF_FILE"
}

# ---------------------------------------------------------------- daemons

start_munge() {
    if ! pid_alive munged munged && munge_roundtrip >/dev/null 2>&1; then
        # someone else's munged serves the default socket: use it, and leave it alone on `down`
        log "using the munged already running on $MUNGE_SOCKET (not started here; down leaves it)"
        return 0
    fi
    mkdir -p "$(dirname "$MUNGE_SOCKET")"
    chown munge:munge "$(dirname "$MUNGE_SOCKET")"
    chmod 755 "$(dirname "$MUNGE_SOCKET")"
    if [[ ! -f $MUNGE_DIR/munge.key ]]; then
        mungekey --create --keyfile="$MUNGE_DIR/munge.key" 2>>"$LOG_DIR/munged.stderr" ||
            die "mungekey failed; see $LOG_DIR/munged.stderr"
        chown munge:munge "$MUNGE_DIR/munge.key"
        chmod 400 "$MUNGE_DIR/munge.key"
    fi
    # setpriv (not runuser): it execs munged as user munge without forking, so the pid is munged's
    start_daemon munged munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground \
        --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$MUNGE_DIR/munged.pid" --seed-file="$MUNGE_DIR/munged.seed" \
        --log-file="$LOG_DIR/munged.log"
    wait_until "munged answers" 30 munge_roundtrip || die "munged does not answer; see $LOG_DIR/munged.log"
}

munge_roundtrip() { munge --socket="$MUNGE_SOCKET" -n | unmunge --socket="$MUNGE_SOCKET"; }

mysql_client() { mariadb --no-defaults --socket="$MYSQL_SOCKET" -u root "$@"; }

start_mariadb() {
    if [[ ! -d $MYSQL_DATA_DIR/mysql ]]; then
        log "initialising the MariaDB datadir"
        mariadb-install-db --no-defaults --user=mysql --datadir="$MYSQL_DATA_DIR" \
            --auth-root-authentication-method=socket --skip-test-db \
            >>"$LOG_DIR/mariadb-install-db.log" 2>&1 ||
            die "mariadb-install-db failed; see $LOG_DIR/mariadb-install-db.log"
    fi
    # unix socket only: no TCP port that could collide with another MariaDB on this machine
    start_daemon mariadbd mariadbd /usr/sbin/mariadbd --no-defaults --user=mysql \
        --datadir="$MYSQL_DATA_DIR" --socket="$MYSQL_SOCKET" --pid-file="$MYSQL_DIR/mariadbd.pid" \
        --log-error="$LOG_DIR/mariadb.err" --skip-networking \
        --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900
    wait_until "MariaDB answers" 60 mariadb-admin --no-defaults --socket="$MYSQL_SOCKET" -u root ping ||
        die "MariaDB does not answer; see $LOG_DIR/mariadb.err"
    local db_password
    db_password=$(<"$DB_PASSWORD_FILE")
    mysql_client <<EOF || die "could not create the accounting database; see $LOG_DIR/mariadb.err"
CREATE DATABASE IF NOT EXISTS $ACCOUNTING_DB;
CREATE USER IF NOT EXISTS '$ACCOUNTING_DB_USER'@'localhost' IDENTIFIED BY '$db_password';
ALTER USER '$ACCOUNTING_DB_USER'@'localhost' IDENTIFIED BY '$db_password';
GRANT ALL ON $ACCOUNTING_DB.* TO '$ACCOUNTING_DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
}

slurm_env() { env SLURM_CONF="$SLURM_CONF_FILE" "$@"; }

start_slurmdbd() {
    # MYSQL_UNIX_PORT: where the MariaDB client library inside slurmdbd finds our socket
    start_daemon slurmdbd slurmdbd env SLURM_CONF="$SLURM_CONF_FILE" MYSQL_UNIX_PORT="$MYSQL_SOCKET" \
        /usr/sbin/slurmdbd -D
    wait_until "slurmdbd answers" 90 slurm_env sacctmgr -n list cluster ||
        die "slurmdbd does not answer; see $LOG_DIR/slurmdbd.log"
    if ! slurm_env sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER_NAME"; then
        slurm_env sacctmgr -i add cluster "$CLUSTER_NAME" >>"$LOG_DIR/sacctmgr.log" 2>&1 ||
            die "sacctmgr add cluster failed; see $LOG_DIR/sacctmgr.log"
        log "registered cluster $CLUSTER_NAME in accounting"
    fi
}

node_idle() {
    local node_state
    node_state=$(slurm_env sinfo -h -N -n "$(hostname -s)" -o %t 2>/dev/null) || return 1
    [[ $node_state == idle || $node_state == mix || $node_state == alloc ]]
}

cmd_up() {
    require_root
    local started=$EPOCHREALTIME
    install_packages
    make_dirs
    local slurmctld_was_running=0
    pid_alive slurmctld slurmctld && slurmctld_was_running=1
    SLURM_CONF_CHANGED=0
    write_configs
    start_munge
    start_mariadb
    start_slurmdbd
    start_daemon slurmctld slurmctld env SLURM_CONF="$SLURM_CONF_FILE" /usr/sbin/slurmctld -D -i
    wait_until "slurmctld answers" 60 slurm_env scontrol ping ||
        die "slurmctld does not answer; see $LOG_DIR/slurmctld.log"
    if ((slurmctld_was_running && SLURM_CONF_CHANGED)); then
        log "slurm.conf changed while the cluster ran: scontrol reconfigure"
        slurm_env scontrol reconfigure || die "scontrol reconfigure failed; run '$0 down' then '$0 up'"
    fi
    start_daemon slurmd slurmd env SLURM_CONF="$SLURM_CONF_FILE" /usr/sbin/slurmd -D
    if ! wait_until "node $(hostname -s) is idle" "$UP_TIMEOUT_S" node_idle; then
        slurm_env sinfo -N -l >&2 || true
        die "node not idle after ${UP_TIMEOUT_S}s; see $LOG_DIR/slurmd.log and $LOG_DIR/slurmctld.log"
    fi
    wait_until "sacct answers" 60 slurm_env sacct -n -X -S now ||
        die "sacct does not answer; see $LOG_DIR/slurmdbd.log"
    log "cluster up in $(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}') s; state dir $STATE_DIR"
    log "clients need: export SLURM_CONF=$SLURM_CONF_FILE   (or: eval \"\$(slurm/cluster.sh env)\")"
}

cmd_down() {
    require_root
    local purge=0
    [[ ${1:-} == --purge ]] && purge=1
    if [[ -d $RUN_DIR ]]; then
        # end running jobs first, so that no job step outlives its slurmd
        if pid_alive slurmctld slurmctld && pid_alive slurmd slurmd; then
            local job_ids
            job_ids=$(slurm_env squeue -h -o %i 2>/dev/null || true)
            if [[ -n $job_ids ]]; then
                log "cancelling jobs: $(echo $job_ids)"
                # shellcheck disable=SC2086
                slurm_env scancel $job_ids 2>/dev/null || true
                wait_until "jobs ended" 20 test -z "$(slurm_env squeue -h -o %i 2>/dev/null)" ||
                    log "some jobs still listed; stopping anyway"
            fi
        fi
        stop_daemon slurmd slurmd
        stop_daemon slurmctld slurmctld
        stop_daemon slurmdbd slurmdbd
        stop_daemon mariadbd mariadbd
        stop_daemon munged munged
    fi
    if ((purge)) && [[ -d $STATE_DIR ]]; then
        [[ -f $SLURM_CONF_FILE || -d $RUN_DIR ]] || die "$STATE_DIR does not look like a cluster state dir; not deleting it"
        log "deleting $STATE_DIR"
        rm -rf "$STATE_DIR"
    fi
    log "down"
}

cmd_status() {
    local name binary any=0
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        binary=$name
        if pid_alive "$name" "$binary"; then
            printf '%-10s running (pid %s)\n' "$name" "$(pid_of "$name")"
            any=1
        else
            printf '%-10s stopped\n' "$name"
        fi
    done
    echo "state dir: $STATE_DIR"
    if ((any)) && pid_alive slurmctld slurmctld; then
        slurm_env sinfo 2>&1 || true
    fi
}

cmd_env() {
    echo "export SLURM_CONF=$SLURM_CONF_FILE"
    echo "export SWEEPER_SLURM_DIR=$STATE_DIR"
}

case "${1:-}" in
    up) cmd_up ;;
    down) shift; cmd_down "$@" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    install) require_root; install_packages ;;
    *) echo "usage: $0 up|down [--purge]|status|env|install" >&2; exit 2 ;;
esac
