"""GRPO with ``rollout.engine: vllm`` end to end (marker ``vllm``): a short run and a 2-trial study on the shipped
model, with the entropy methods that use old-policy features (SIREN's nucleus entropy, STEER's Omega)."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import vllm_run_config
from sweeper.run.driver import run_study
from sweeper.study.spec import load_spec
from trainers.config import load_config, parse_config
from trainers.grpo import GRPOTrainer
from trainers.reporting import read_metrics
from trainers.rollout import VLLMRolloutEngine

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.mark.parametrize("method", ["siren", "steer"])
def test_short_grpo_run_with_vllm_completes(tmp_path, method):
    config = parse_config(vllm_run_config(tmp_path / "run", entropy={"method": method}, train={"steps": 3, "eval_every": 3}))
    trainer = GRPOTrainer(config)
    assert isinstance(trainer.engine, VLLMRolloutEngine)
    summary = trainer.train()
    assert summary["status"] == "completed" and summary["step"] == 3
    train_records = read_metrics(tmp_path / "run" / "metrics.jsonl", "train")
    val_records = read_metrics(tmp_path / "run" / "metrics.jsonl", "val")
    assert [r["step"] for r in train_records] == [1, 2, 3]
    assert [r["step"] for r in val_records] == [0, 3]
    for record in train_records:
        assert all(math.isfinite(v) for v in record.values() if isinstance(v, float))
        assert record["train/entropy"] > 0 and 0 < record["train/response_length"] <= 6
        assert any(key.startswith(f"{method}/") for key in record), sorted(record)
    assert 0.0 <= val_records[-1]["val/pass@1"] <= val_records[-1]["val/pass@4"] <= 1.0


def test_two_trial_study_with_vllm_completes(tmp_path):
    spec = {
        "study": {"name": "vllm-e2e"},
        "objective": {"metric": "val/pass@4"},
        "base": vllm_run_config(tmp_path / "unused", train={"steps": 2, "eval_every": 1}),
        "space": {"params": {"entropy.method": ["siren", "steer"]}},
        "enqueue": [{"entropy.method": "siren"}, {"entropy.method": "steer"}],
        "pruner": {"type": "none"},
        "budget": {"n_trials": 2, "max_parallel": 2},
        "executor": {"type": "local", "resources": {"cpus_per_trial": 1, "timeout_min": 15}},
        "tracking": {"enabled": False},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    report = run_study(path, progress=False, log=lambda m: None)
    study = optuna.load_study(study_name="vllm-e2e", storage=load_spec(path).study.storage)
    assert report.counts == {"COMPLETE": 2}, [t.user_attrs.get("stderr_tail") for t in study.trials]
    assert sorted(t.params["entropy.method"] for t in study.trials) == ["siren", "steer"]
    for trial in study.trials:
        assert 0.0 <= trial.value <= 1.0 and sorted(trial.intermediate_values) == [1, 2]
        run_dir = Path(trial.user_attrs["trial_dir"]) / "run"
        assert load_config(run_dir / "config.yaml").rollout.engine == "vllm"
        records = read_metrics(run_dir / "metrics.jsonl", "train")
        assert [r["step"] for r in records] == [1, 2]
        method = trial.params["entropy.method"]
        assert any(key.startswith(f"{method}/") for key in records[-1])
