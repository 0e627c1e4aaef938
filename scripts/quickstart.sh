#!/usr/bin/env bash
# The quickstart: set up, run the example study (about 10 minutes on 2 cores), show its status,
# and export the best trial as a ready training config.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/sweeper run examples/quickstart.yaml
.venv/bin/sweeper status examples/quickstart.yaml
.venv/bin/sweeper export examples/quickstart.yaml -o studies/quickstart/best.yaml
echo "next: .venv/bin/sweeper ui examples/quickstart.yaml   # the MLflow UI of this study"
echo "      .venv/bin/sweeper train studies/quickstart/best.yaml --steps 300   # a full run of the best config"
