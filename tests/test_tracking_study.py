"""Tracking through the real driver: ``sweeper run`` with MLflow on, ``sweeper report``, ``sweeper ui``,
and a tracking server killed mid-study (the study completes, no trial is lost).

Real Optuna storage, real submitit local executor, real trial processes running the stand-in
trainer (tests/standin_trainer.py), real MLflow (SQLite store or ``mlflow server``).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from sweeper import tracking
from sweeper.cli import main as sweeper_main
from sweeper.run.driver import run_study
from sweeper.study.spec import load_spec
from sweeper.run.storage import default_tracking_uri, make_storage
from sweeper.results.ui import MlflowServer, _group_alive, free_port

REPO = Path(__file__).resolve().parents[1]
STANDIN = f"{REPO / 'tests' / 'standin_trainer.py'}:train"

pytestmark = pytest.mark.slow


def study_file(tmp_path: Path, name: str, tracking_section: dict, n_trials: int, step_seconds: float) -> Path:
    spec = {
        "study": {"name": name},
        "objective": {"metric": "val/pass@8"},
        "base": {"train": {"steps": 10, "eval_every": 2}},
        "space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.4},
                             "entropy.method": {"type": "categorical", "choices": ["steer", "none"]}}},
        "sampler": {"type": "random", "seed": 0},
        "enqueue": [{"clip.eps_high": 0.28, "entropy.method": "steer"}, {"clip.eps_high": 0.3, "entropy.method": "none"}],
        "pruner": {"type": "none", "health": {"collapse": {"fraction": 0.5, "patience": 1}}},
        "budget": {"n_trials": n_trials, "max_parallel": 2},
        "executor": {"type": "local", "entrypoint": STANDIN, "env": {"STANDIN_STEP_SECONDS": str(step_seconds)}},
        "tracking": tracking_section,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def pass_at(eps_high: float, step: int) -> float:  # the stand-in's curve
    return max(0.0, 1 - 4 * abs(eps_high - 0.28)) * (1 - math.exp(-step / 10)) + 0.05


def stored_trials(path: Path):
    spec = load_spec(path)
    return optuna.load_study(study_name=spec.study.name, storage=make_storage(spec.study.storage)).get_trials()


def quiet(_message: str) -> None:
    pass


def test_run_report_and_ui_commands(tmp_path, capsys):
    path = study_file(tmp_path, "cli", {"enabled": True}, n_trials=2, step_seconds=0.01)
    run_study(path, progress=False, log=quiet)
    spec = load_spec(path)
    assert spec.tracking.uri == default_tracking_uri(spec.study.dir)
    client = MlflowClient(tracking_uri=spec.tracking.uri)
    experiment = client.get_experiment_by_name("cli")
    parent = tracking.find_study_run(client, experiment.experiment_id, "cli")
    runs = tracking.find_trial_runs(client, parent.info.run_id)
    assert {n: (r.info.run_name, r.data.tags[tracking.TAG_STATE]) for n, r in runs.items()} == {
        0: ("trial-0000", "COMPLETE"), 1: ("trial-0001", "PRUNED")}
    assert runs[1].data.tags[tracking.TAG_PRUNE_REASON] == "entropy_collapse"
    assert [t.number for t in stored_trials(path)] == [0, 1]

    assert sweeper_main(["report", str(path), "-o", str(tmp_path / "report")]) == 0
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "## Best: trial 0 (`trial-0000`)" in summary
    assert "| 1 | trial-0001 | PRUNED |" in summary and "entropy_collapse" in summary
    assert (tmp_path / "report" / "plots" / "entropy_overlay.png").exists()
    assert (tmp_path / "report" / "plots" / "pass_at_k_overlay.png").exists()

    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "sweeper", "ui", str(path), "--port", str(port)], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in ui.stdout:  # "starting ...", "MLflow UI for study experiment 'cli':", "  <url>"
            if "#/experiments/" in line:
                url = line.strip()
                break
        assert url == tracking.experiment_runs_url(f"http://127.0.0.1:{port}", experiment.experiment_id)
        server_pids = [int(p) for p in subprocess.run(["ps", "-o", "pid=", "--ppid", str(ui.pid)], capture_output=True,
                                                      text=True).stdout.split()]
        assert len(server_pids) == 1
        assert os.getpgid(server_pids[0]) == server_pids[0] != os.getpgid(ui.pid)  # its own process group
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            assert response.status == 200
        ui.send_signal(signal.SIGINT)  # Ctrl-C
        assert ui.wait(timeout=60) == 0
        assert not _group_alive(server_pids[0])  # the whole server group is gone
    finally:
        if ui.poll() is None:
            ui.terminate()
            ui.wait(timeout=60)


def test_tracking_server_killed_mid_study_loses_no_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # inherited by the trial processes
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    server = MlflowServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlartifacts", log_path=tmp_path / "server.log")
    server.start()
    try:
        server.wait_healthy()
        path = study_file(tmp_path, "flaky", {"enabled": True, "uri": server.url}, n_trials=4, step_seconds=0.3)
        client = MlflowClient(tracking_uri=server.url)
        killed = threading.Event()
        finished_at_kill: list[int] = []

        def kill_when_first_metrics_arrive():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    experiment = client.get_experiment_by_name("flaky")
                    if experiment is not None and any(
                            r.data.metrics for r in client.search_runs([experiment.experiment_id], "tags.`sweeper.role` = 'trial'")):
                        break
                except Exception:  # noqa: BLE001 - the server may still be busy
                    pass
                time.sleep(0.3)
            server.stop(timeout=0)  # the tracking server dies while trials are training
            finished_at_kill.append(sum(t.state.is_finished() for t in stored_trials(path)))
            killed.set()

        killer = threading.Thread(target=kill_when_first_metrics_arrive, daemon=True)
        killer.start()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = run_study(path, progress=False, log=quiet)
        killer.join(timeout=60)
        assert killed.is_set()
        assert finished_at_kill[0] < 4  # it died mid-study, not after
    finally:
        server.stop(timeout=5)

    trials = stored_trials(path)
    assert len(trials) == 4 and sum(report.counts.values()) == 4
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", *[t.state.name for t in trials[2:]]]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)  # none failed because of tracking
    for trial in trials:
        if trial.state.name == "COMPLETE":
            assert trial.value == pytest.approx(pass_at(trial.params["clip.eps_high"], 10))
    assert any(issubclass(w.category, tracking.TrackingUnavailableWarning) for w in caught)
    trial_dirs = sorted((Path(load_spec(path).study.dir) / "trials").iterdir())
    assert len(trial_dirs) == 4


@pytest.mark.extended  # test_one_state checks complete, crashed, killed and corrupt trials in all four views; this adds rejected and pruned
def test_status_and_the_mlflow_study_run_count_every_trial_state_alike(tmp_path, capsys):
    """A study with a lost, a rejected, a pruned, a failed and two complete trials: `sweeper status` and the
    parent run's study/n_<state> metrics count them the same way (one classification of trial states)."""
    release = tmp_path / "release"
    hold = {"seed": 1, "clip.eps_high": 0.28, "entropy.method": "steer", "model.path": "builtin:tiny-arith"}
    spec = {
        "study": {"name": "states"},
        "objective": {"metric": "val/pass@8"},
        "base": {"train": {"steps": 6, "eval_every": 2}},
        "space": {"params": {"seed": [1, 0], "clip.eps_high": [0.28, 0.5], "entropy.method": ["steer", "none"],
                             "model.path": ["builtin:tiny-arith", "standin:crash"]},
                  "constraints": ["clip.eps_high <= 0.4"]},
        "enqueue": [hold,                                    # holds until `release` exists: lost with its driver
                    {**hold, "seed": 0, "clip.eps_high": 0.5},   # rejected by the constraint
                    {**hold, "seed": 0, "entropy.method": "none"},   # pruned: entropy collapse
                    {**hold, "seed": 0, "model.path": "standin:crash"},   # failed
                    {**hold, "seed": 0}],                    # complete (and the lost trial's re-queued copy)
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none", "health": {"collapse": {"fraction": 0.5, "patience": 1}}},
        "budget": {"n_trials": 4, "max_parallel": 1},
        "executor": {"type": "local", "entrypoint": STANDIN, "env": {"STANDIN_RELEASE_FILE": str(release)}},
        "tracking": {"enabled": True},
    }
    path = tmp_path / "states.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))

    driver = subprocess.Popen([sys.executable, "-m", "sweeper", "run", str(path), "--no-progress"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not list((tmp_path / "studies" / "states" / "trials" / "00000" / "submitit").glob("*_log.out")) or \
                "[sweeper] trial 0" not in "".join(p.read_text() for p in (tmp_path / "studies" / "states" / "trials" / "00000" / "submitit").glob("*_log.out")):
            assert time.time() < deadline and driver.poll() is None, "trial 0 never started"
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its trial: trial 0 is left RUNNING, its job gone
        driver.wait()
    release.touch()
    run_study(path, progress=False, log=quiet)

    spec = load_spec(path)
    expected = {"COMPLETE": 2, "PRUNED": 1, "FAIL": 1, "REJECTED": 1, "LOST": 1}
    assert sweeper_main(["status", str(path)]) == 0
    assert "trials: 2 complete, 1 fail, 1 lost, 1 pruned, 1 rejected" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=spec.tracking.uri)
    experiment = client.get_experiment_by_name("states")
    parent = tracking.find_study_run(client, experiment.experiment_id, "states")
    metrics = parent.data.metrics
    assert {state: int(metrics[f"study/n_{state.lower()}"]) for state in expected} == expected
    assert metrics["study/n_running"] == 0 and metrics["study/n_trials"] == 6
    lost_run = tracking.find_trial_runs(client, parent.info.run_id, experiment.experiment_id)[0]  # trial 0
    assert (lost_run.data.tags[tracking.TAG_STATE], lost_run.info.status) == ("LOST", "KILLED")   # as status says
