#!/usr/bin/env bash
# The test command: sets up .venv, the system parts the end-to-end tests use (Debian's chromium,
# the local Slurm test cluster), then runs the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# exports (issue 16): the real verl and TRL, each in its own venv, for tests/test_export_libraries.py (marker `exports`)
bash scripts/setup_exports.sh
if [ "$(id -u)" = 0 ]; then
  if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
  fi
  bash slurm/cluster.sh up
else
  echo "test: not root; browser and Slurm tests need chromium and slurm/cluster.sh up (they skip with a reason otherwise)"
fi
export MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest tests -ra "$@"
