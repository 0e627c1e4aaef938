"""Faults keep nothing lost: kill -9 of a trial process, of the driver (alone, or with its trials), and of
the MLflow server during a study, each followed by a re-run, leave every trial's Optuna state, its metrics
and its MLflow run consistent (the guarantees of docs/sweeper.md, "What survives a crash").

Real driver processes (``python -m sweeper run``), real submitit jobs running the stand-in trainer, a real
Optuna storage, real MLflow (a SQLite store, or ``mlflow server`` killed with SIGKILL and started again)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from _signals import default_stop_signals
from sweeper import tracking
from sweeper.contract import TRACKING_SPILL_FILE, trial_state
from sweeper.tracking.names import STATE_TO_RUN_STATUS
from sweeper.run.driver import NO_OUTCOME, run_study
from sweeper.study.spec import load_spec
from sweeper.results.ui import MlflowServer
from test_sweeper_driver import REPO, STANDIN, trials_of

pytestmark = pytest.mark.slow


def study_file(tmp_path: Path, *, uri: str | None = None, n_trials: int = 3, steps: int = 20, step_seconds: float = 0.2) -> Path:
    spec = {
        "study": {"name": "faults"},
        "objective": {"metric": "val/pass@8"},
        "base": {"train": {"steps": steps, "eval_every": 2}},
        "space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.4},
                             "entropy.method": {"type": "categorical", "choices": ["steer", "aer"]}}},
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "budget": {"n_trials": n_trials, "max_parallel": 2},
        "executor": {"type": "local", "entrypoint": STANDIN, "env": {"STANDIN_STEP_SECONDS": str(step_seconds)}},
        "tracking": {"enabled": True, **({"uri": uri} if uri else {})},
    }
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def start_driver(path: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sweeper", "run", str(path), "--no-progress"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=default_stop_signals, **popen)


def wait_until(condition, what: str, driver: subprocess.Popen | None = None, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = condition()
        except Exception:  # noqa: BLE001 - the study or the store may not exist yet
            value = None
        if value:
            return value
        assert driver is None or driver.poll() is None, f"the driver ended before: {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {what}")


def training(path: Path, count: int):
    """``count`` trials RUNNING with a job and at least one validation reported, else None."""
    running = [t for t in trials_of(path) if t.state.name == "RUNNING" and "job_id" in t.user_attrs and t.intermediate_values]
    return running if len(running) >= count else None


def assert_consistent(path: Path) -> list:
    """Every launched trial is final in Optuna and has exactly one MLflow run whose status and state tag say
    the same, whose objective history holds every value Optuna got (all of them for a trial that ran to its
    end), and whose train/entropy history has every step once. No run is left RUNNING."""
    spec = load_spec(path)
    trials = trials_of(path)
    launched = [t for t in trials if "trial_dir" in t.user_attrs]
    assert launched and all(t.state.is_finished() for t in trials), [(t.number, t.state.name) for t in trials]
    client = MlflowClient(tracking_uri=spec.tracking.uri)
    experiment = client.get_experiment_by_name(spec.tracking.experiment)
    parent = tracking.find_study_run(client, experiment.experiment_id, spec.study.name)
    assert parent.info.status == "FINISHED"
    runs = client.search_runs([experiment.experiment_id], f"tags.`{tracking.TAG_PARENT}` = '{parent.info.run_id}'")
    numbers = [int(r.data.tags[tracking.TAG_TRIAL_NUMBER]) for r in runs]
    assert sorted(numbers) == sorted(t.number for t in launched), "one MLflow run per launched trial"
    by_number = {int(r.data.tags[tracking.TAG_TRIAL_NUMBER]): r for r in runs}
    for trial in launched:
        run = by_number[trial.number]
        state = trial_state(trial)  # the one classification: a lost trial is LOST in MLflow too
        assert run.info.status == STATE_TO_RUN_STATUS[state], (trial.number, state, run.info.status)
        assert run.data.tags[tracking.TAG_STATE] == state
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/pass_at_8")}
        expected = trial.intermediate_values
        assert set(expected) <= set(history), (trial.number, sorted(expected), sorted(history))
        assert all(history[step] == pytest.approx(value) for step, value in expected.items())
        if state == "COMPLETE":  # every validation; step 0 (the untrained model) is not an intermediate value
            assert set(history) == set(expected) | {0} and run.data.metrics["objective"] == pytest.approx(trial.value)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/entropy")]
        assert len(steps) == len(set(steps)) and sorted(steps) == list(range(1, len(steps) + 1)), (trial.number, steps)
    return trials


def test_kill_9_of_a_trial_process_then_a_rerun(tmp_path):
    path = study_file(tmp_path, n_trials=3)
    driver = start_driver(path)
    running = wait_until(lambda: training(path, 2), "two trials training", driver)
    victim = running[0]
    os.kill(int(victim.user_attrs["job_id"]), signal.SIGKILL)   # the local job id is the trial process's pid
    assert driver.wait(timeout=180) == 0
    report = run_study(path, progress=False, log=lambda _: None)   # the re-run: nothing left to do
    assert report.launched == 0 and report.reattached == 0
    trials = assert_consistent(path)
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state.name == "FAIL" and NO_OUTCOME in killed.user_attrs["fail_reason"]
    assert [t.state.name for t in trials if t.number != victim.number] == ["COMPLETE", "COMPLETE"]


@pytest.mark.parametrize("with_its_trials", [False, pytest.param(True, marks=pytest.mark.extended)],
                         ids=["driver", "driver-and-trials"])   # its trials killed too: test_sweeper_driver's resume test
def test_kill_9_of_the_driver_then_a_rerun(tmp_path, with_its_trials):
    path = study_file(tmp_path, n_trials=3)
    driver = start_driver(path, start_new_session=True)
    in_flight = wait_until(lambda: training(path, 2), "two trials training", driver)
    if with_its_trials:
        os.killpg(driver.pid, signal.SIGKILL)   # the driver's process group: the driver and its trial processes
    else:
        driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(0.5)
    report = run_study(path, progress=False, log=lambda _: None)
    trials = assert_consistent(path)
    if with_its_trials:
        assert report.requeued == 2 and report.reattached == 0
        lost = [t for t in trials if t.user_attrs.get("lost")]
        assert {t.number for t in lost} == {t.number for t in in_flight}
        counted = [t for t in trials if not t.user_attrs.get("lost")]
        assert len(counted) == 3 and all(t.state.name == "COMPLETE" for t in counted)
    else:
        assert report.reattached == 2 and report.requeued == 0
        assert [t.state.name for t in trials] == ["COMPLETE"] * 3


@pytest.mark.extended  # test_tracking_down and test_tracking_study kill the server mid-trial and mid-study
def test_kill_9_of_the_mlflow_server_during_a_study_then_a_rerun(tmp_path, monkeypatch):
    """The server dies while two trials train and stays down until both have ended; started again, the
    driver (and the re-run) bring every run up to date: nothing the trials reported is missing."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")   # inherited by the driver and its trials
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    server = MlflowServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlartifacts", log_path=tmp_path / "server.log")
    server.start()
    try:
        server.wait_healthy()
        path = study_file(tmp_path, uri=server.url, n_trials=4, steps=16, step_seconds=0.25)
        driver = start_driver(path)
        down = wait_until(lambda: training(path, 2), "two trials training", driver)
        server.stop(timeout=0)   # SIGKILL to the server's process group
        wait_until(lambda: all(t.state.is_finished() for t in trials_of(path) if t.number in {d.number for d in down}),
                   "the two trials ended while the server is down", driver)
        spills = [Path(t.user_attrs["trial_dir"]) / TRACKING_SPILL_FILE for t in down]
        assert all(spill.exists() for spill in spills)   # what they could not send outlived their processes
        server.start()
        server.wait_healthy()
        assert driver.wait(timeout=240) == 0
        run_study(path, progress=False, log=lambda _: None)   # the re-run
        trials = assert_consistent(path)
        assert [t.state.name for t in trials] == ["COMPLETE"] * 4
        assert not any(spill.exists() for spill in spills)   # sent, then removed
    finally:
        server.stop(timeout=5)
