#!/usr/bin/env bash
# GPU readiness in one prepared run (one GPU, under 10 minutes): bf16 GRPO steps that move the weights, the memory
# options, vLLM (CUDA) greedy tokens = HF greedy tokens and one vLLM step's sampler/trainer mismatch, step time
# native vs TRL, the tiny Qwen testbed if it is built. Prints one PASS/FAIL/SKIP line per check and a summary
# (scripts/gpu_check.py says what each check does). Never a dependency of the tests.
#
#   bash scripts/gpu_check.sh             # on the GPU machine (python: $PYTHON, else .venv/bin/python, else python3)
#   bash scripts/gpu_check.sh --dry-run   # on a CPU machine: the same checks at the smallest sizes, float32
#   WHEELS=dir bash scripts/gpu_check.sh  # first pip-install the project from wheels in dir (a machine offline)
#   TRL_PYTHON=/path/python ...           # TRL's python for the step-time comparison
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then :
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PYTHON=.venv/bin/python
else PYTHON=python3; fi
if [ -n "${WHEELS:-}" ]; then
  "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" pydantic pyyaml 2>&1 | tail -2 || true
fi
missing=$("$PYTHON" - <<'PY'
import importlib.util as u
print(" ".join(m for m in ("torch", "transformers", "accelerate", "pydantic", "yaml") if u.find_spec(m) is None))
PY
)
if [ -n "$missing" ]; then
  echo "FAIL setup: $PYTHON lacks: $missing (install the project: pip install -e '.[vllm]', or WHEELS=dir with their wheels)"
  exit 1
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 570 "$PYTHON" scripts/gpu_check.py "$@"
