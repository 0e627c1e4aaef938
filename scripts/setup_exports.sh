#!/usr/bin/env bash
# Sets up the environments of the real libraries that `sweeper export --format trl|verl` targets, for the
# `exports` tests: .venv-verl (verl and its declared dependencies) and .venv-trl (TRL). They are separate from
# .venv because their pins clash with this project's (verl pins transformers < 5.11). Idempotent: a stamp
# file in each venv records what was installed, so a second run returns at once.
# torch==2.13.0 goes in first and stays pinned (the CPU wheel; a plain `torch` would pull a CUDA build). --no-compile:
# byte-compiling all of torch, ray and transformers at install costs minutes; Python compiles what the tests import.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VERL_REQUIREMENT=${VERL_REQUIREMENT:-verl==0.9.1}
TRL_REQUIREMENT=${TRL_REQUIREMENT:-trl==1.16.0}

setup_env() {  # setup_env VENV REQUIREMENT...
  local venv=$1
  shift
  local stamp="$venv/.exports-stamp" want="torch==2.13.0 $*"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup_exports: $venv ready ($want)"
    return
  fi
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  local pin
  pin=$(mktemp)
  echo "torch==2.13.0" > "$pin"
  "$venv/bin/python" -m pip install -q --no-compile -c "$pin" torch==2.13.0 "$@"
  rm -f "$pin"
  echo "$want" > "$stamp"
  echo "setup_exports: $venv installed ($want)"
}

case "${1:-all}" in
  verl) setup_env .venv-verl "$VERL_REQUIREMENT" ;;
  trl) setup_env .venv-trl "$TRL_REQUIREMENT" ;;
  all)  # both at once: pip spends most of its time unpacking wheels, so two installs overlap well on 2 cores
    setup_env .venv-verl "$VERL_REQUIREMENT" & verl_pid=$!
    setup_env .venv-trl "$TRL_REQUIREMENT" & trl_pid=$!
    status=0
    wait $verl_pid || status=$?
    wait $trl_pid || status=$?
    exit $status ;;
  *) echo "usage: $0 [verl|trl|all]" >&2; exit 2 ;;
esac
