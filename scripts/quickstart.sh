#!/usr/bin/env bash
# The quickstart: set up, run the example study, show its status, export the best trial as a ready
# training config, and verify the choice on held-out prompts with fresh seeds (about 14 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/sweeper run examples/quickstart.yaml
.venv/bin/sweeper status examples/quickstart.yaml
.venv/bin/sweeper export examples/quickstart.yaml -o studies/quickstart/best.yaml
# the chosen config against GRPO again: 5 fresh training seeds, validated once, at the last step, on 512 held-out
# prompts (the gain must hold over new prompts as well as new seeds: more prompts narrow that part at little cost)
.venv/bin/sweeper verify examples/quickstart.yaml --seeds 5 --prompts 512
echo "next: .venv/bin/sweeper ui examples/quickstart.yaml   # the MLflow UI of this study"
echo "      .venv/bin/sweeper train studies/quickstart/best.yaml --steps 300   # a full run of the best config"
