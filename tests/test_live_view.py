"""The live view of a running study (sweeper/run/live.py, sweeper/run/trial/progress.py): each running trial's
seed r/R, step s/S and last validation, a line for each stop and why, and the same in the MLflow parent run's
description. Real trial processes of the stand-in trainer, a real Optuna storage and MLflow store."""

from __future__ import annotations

import json

from sweeper.run.driver import run_study
from sweeper.run.live import LiveView, progress_text
from sweeper.study.spec import load_spec
from test_sweeper_driver import study_file


def test_progress_text_and_a_line_only_when_it_changed(tmp_path):
    assert progress_text(3, None) == "#3 starting"
    record = {"seed": 12, "seed_index": 2, "seeds": 3, "step": 40, "steps": 60,
              "validation": {"step": 40, "metric": "val/pass@8", "value": 0.5123}}
    assert progress_text(3, record) == "#3 seed 2/3 step 40/60 val/pass@8 0.5123 (step 40)"
    assert progress_text(4, {**record, "validation": None}) == "#4 seed 2/3 step 40/60 no validation yet"
    (tmp_path / "progress.json").write_text(json.dumps(record))
    printed: list[str] = []
    view = LiveView(interval=10.0)
    assert view.tick([(3, tmp_path)], printed.append, now=100.0)
    assert not view.tick([(3, tmp_path)], printed.append, now=105.0)          # before the interval
    assert not view.tick([(3, tmp_path)], printed.append, now=120.0)          # unchanged
    (tmp_path / "progress.json").write_text(json.dumps({**record, "step": 41}))
    assert view.tick([(3, tmp_path)], printed.append, now=130.0)
    assert printed == ["running: #3 seed 2/3 step 40/60 val/pass@8 0.5123 (step 40)",
                       "running: #3 seed 2/3 step 41/60 val/pass@8 0.5123 (step 40)"]
    view.stopped("trial 5 PRUNED: entropy_collapse at step 4")
    assert view.note([]) == "running: none\nstopped (most recent last):\n- trial 5 PRUNED: entropy_collapse at step 4"


def test_a_running_study_shows_seeds_steps_validations_and_stops(tmp_path):
    from mlflow.tracking import MlflowClient

    from sweeper import tracking

    path = study_file(tmp_path, step_seconds=0.05, base={"train": {"steps": 20, "eval_every": 4}},
                      space={"params": {"entropy.method": ["steer", "none"]}},
                      enqueue=[{"entropy.method": "steer"}, {"entropy.method": "none"}],
                      pruner={"type": "none", "health": {"collapse": {"fraction": 0.5, "patience": 1}}},
                      budget={"n_trials": 2, "max_parallel": 2, "seeds": 2}, tracking={"enabled": True})
    lines: list[str] = []
    run_study(path, progress=False, log=lines.append, live_interval=0.2)
    running = [line for line in lines if line.startswith("running: ")]
    assert any("#0 seed 1/2 step " in line and "/20" in line for line in running)
    assert any("#0 seed 2/2 step " in line for line in running)                # the second seed is shown too
    assert any("val/pass@8 " in line for line in running)
    stops = [line for line in lines if line.startswith("trial 1 PRUNED: ")]
    assert stops and "entropy_collapse" in stops[0]
    spec = load_spec(path)
    client = MlflowClient(tracking_uri=spec.tracking.uri)
    parent = tracking.find_study_run(client, client.get_experiment_by_name(spec.tracking.experiment).experiment_id,
                                     spec.study.name)
    note = parent.data.tags["mlflow.note.content"]
    assert "stopped (most recent last):" in note and "trial 1 PRUNED: " in note and "entropy_collapse" in note
