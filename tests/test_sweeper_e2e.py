"""End to end with the real trainer: a one-trial study on the shipped tiny model (two replicate seeds, one
step-0 validation for both) through the submitit local executor, exported, and the export trained by
`sweeper train` (the trainer's own CLI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import tiny_run_config
from sweeper.run.driver import run_study
from sweeper.results.export import export_best
from sweeper.study.spec import load_spec
from trainers.config import load_config
from trainers.reporting import read_per_prompt

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_real_trial_then_export_then_sweeper_train(tmp_path):
    base = tiny_run_config(tmp_path / "unused")
    spec = {
        "study": {"name": "e2e"},
        "objective": {"metric": "val/pass@4"},
        "base": base,
        "space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.3}, "entropy.method": ["steer"]}},
        "pruner": {"type": "none"},
        "budget": {"n_trials": 1, "seeds": 2},
        "executor": {"type": "local", "resources": {"cpus_per_trial": 1, "timeout_min": 10}},
        "tracking": {"enabled": False},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    report = run_study(path, progress=False, log=lambda m: None)
    study = optuna.load_study(study_name="e2e", storage=load_spec(path).study.storage)
    trial = study.trials[0]
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("stderr_tail")
    assert report.counts == {"COMPLETE": 1}
    assert 0.0 <= trial.value <= 1.0 and sorted(trial.intermediate_values) == [2, 4]  # step 0 is not reported
    run_dir = Path(trial.user_attrs["trial_dir"]) / "run"
    assert (run_dir / "metrics.jsonl").exists()
    # two seeds: the value is their mean; both start from one step-0 validation, computed once for the study
    assert trial.user_attrs["seeds"] == [0, 1] and len(trial.user_attrs["replicates"]) == 2
    assert trial.value == pytest.approx(sum(r["values"][0] for r in trial.user_attrs["replicates"]) / 2)
    assert len(list((load_spec(path).study_dir / "step0_cache").glob("*.json"))) == 1
    first, second = (read_per_prompt(run_dir.parent / name / "per_prompt.jsonl")[0] for name in ("run", "run-seed1"))
    assert first["step"] == second["step"] == 0 and first["per_prompt"] == second["per_prompt"]

    out = export_best(path, tmp_path / "best.yaml", steps=2, output_dir=str(tmp_path / "best-run"))
    assert load_config(out).train.steps == 2
    result = subprocess.run([sys.executable, "-m", "sweeper", "train", str(out), "--quiet"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "best-run" / "metrics.jsonl").exists()
