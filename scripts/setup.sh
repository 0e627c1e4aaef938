#!/usr/bin/env bash
# Sets up .venv with entropy-sweeper and its dependencies. Idempotent.
# torch==2.13.0 goes in first so pip takes the CPU wheel (a plain `torch` would pull a CUDA build of several GB).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test,postgres,trl]"   # trl: trials with engine: trl
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, optuna, mlflow; import trl; print("torch", torch.__version__, "optuna", optuna.__version__, "mlflow", mlflow.__version__, "trl", trl.__version__)'))"
