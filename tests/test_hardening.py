"""Faults and attacks of issue 26, each reproduced on real parts first: a real driver and Optuna storage,
real trial processes (the stand-in trainer), MLflow unreachable for real (a closed port) or a real
``mlflow server``, the real lock on a real storage, real include files on disk.

The threat matrix in docs/threats.md names the test of each row.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from sweeper.contract import TRACKING_SPILL_FILE, trial_folder
from sweeper.run.driver import run_study
from sweeper.run.storage import make_storage
from sweeper.study.spec import load_spec

from _studies import quiet, trials_of

REPO = Path(__file__).resolve().parents[1]
STANDIN = f"{REPO / 'tests' / 'standin_trainer.py'}:train"


@pytest.fixture(autouse=True)
def fast_failing_http(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]    # nothing listens once the socket is closed


def study_file(tmp_path: Path, *, executor: dict | None = None, **sections) -> Path:
    spec = {
        "study": {"name": "hard"},
        "objective": {"metric": "val/pass@8"},
        "base": {"train": {"steps": 4, "eval_every": 2}},
        "space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.4}}},
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "budget": {"n_trials": 1, "max_parallel": 1},
        "executor": executor or {"type": "debug", "entrypoint": STANDIN},
        "tracking": {"enabled": False},
    }
    spec.update(sections)
    path = tmp_path / "hard.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# ------------------------------------------------------------------ M4: a constraint that cannot be evaluated

DIVIDING_SPACE = {
    "params": {"optim.warmup_steps": {"type": "int", "low": 0, "high": 4}},
    "constraints": ["train.steps / optim.warmup_steps >= 0.1"],
}


def test_a_constraint_dividing_by_zero_rejects_that_config_not_the_study(tmp_path):
    path = study_file(tmp_path, space=DIVIDING_SPACE, enqueue=[{"optim.warmup_steps": 0}, {"optim.warmup_steps": 2}],
                      budget={"n_trials": 2, "max_parallel": 1})
    report = run_study(path, progress=False, log=quiet)
    trials = trials_of(path)
    assert [t.params["optim.warmup_steps"] for t in trials[:2]] == [0, 2]
    assert "division by zero" in trials[0].user_attrs["rejected"]
    assert "optim.warmup_steps=0" in trials[0].user_attrs["rejected"]
    assert [t.state.name for t in trials[1:]] == ["COMPLETE", "COMPLETE"]   # a rejected config is not in the budget
    assert report.rejected == 1


def test_a_string_or_missing_operand_rejects_that_config_with_the_reason():
    from sweeper.study.space import Rejected, evaluate_constraint

    with pytest.raises(Rejected, match=r"cannot be evaluated.*model.path='standin:a'.*TypeError"):
        evaluate_constraint("model.path / 2 >= 1", {"model": {"path": "standin:a"}})
    with pytest.raises(Rejected, match="cannot be evaluated"):
        evaluate_constraint("train.steps >= model.path", {"train": {"steps": 3}, "model": {"path": "x"}})
    with pytest.raises(Rejected, match="cannot be evaluated"):
        evaluate_constraint("train.steps / optim.warmup_steps >= 1", {"train": {"steps": 3}})  # None operand
    assert evaluate_constraint("train.steps / optim.warmup_steps >= 1", {"train": {"steps": 3}, "optim": {"warmup_steps": 2}})


def test_a_resumed_study_whose_requeued_config_divides_by_zero_goes_on(tmp_path):
    """The old driver died on this config and left its trial RUNNING; the re-run re-queues it (lost), then
    rejects it, and the study runs to its budget."""
    path = study_file(tmp_path, space=DIVIDING_SPACE, enqueue=[{"optim.warmup_steps": 2}], budget={"n_trials": 2, "max_parallel": 1})
    spec = load_spec(path)
    study = optuna.create_study(study_name=spec.study.name, storage=make_storage(spec.study.storage), direction="maximize")
    study.enqueue_trial({"optim.warmup_steps": 0})
    crashed = study.ask()                           # what a driver had sampled when it died on it
    crashed.suggest_int("optim.warmup_steps", 0, 4)
    report = run_study(path, progress=False, log=quiet)
    trials = trials_of(path)
    assert trials[0].user_attrs.get("lost") and report.requeued == 1
    requeued = [t for t in trials if t.user_attrs.get("requeued_from") == 0]
    assert len(requeued) == 1 and "division by zero" in requeued[0].user_attrs["rejected"]
    assert [t.state.name for t in trials if t.user_attrs.get("rejected") is None and not t.user_attrs.get("lost")] == ["COMPLETE", "COMPLETE"]


# ------------------------------------------------------------------ M5: buffered metrics survive a raise or a preemption


def test_a_trainer_that_raises_with_mlflow_unreachable_keeps_its_metrics(tmp_path):
    path = study_file(tmp_path, base={"model": {"path": "standin:crash"}, "train": {"steps": 6, "eval_every": 2}},
                      executor={"type": "local", "entrypoint": STANDIN},
                      tracking={"enabled": True, "uri": f"http://127.0.0.1:{closed_port()}"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_study(path, progress=False, log=quiet)
    trial = trials_of(path)[0]
    assert trial.state.name == "FAIL"
    spill = trial_folder(load_spec(path).study.dir, 0) / TRACKING_SPILL_FILE
    assert spill.exists(), "the buffered metrics died with the trial process"
    kept = json.loads(spill.read_text())
    assert sorted({step for key, _, _, step in kept["metrics"] if key == "train/entropy"}) == [1, 2]
    assert kept["terminal_status"] == "FAILED"


def test_a_preempted_trial_keeps_its_metrics_and_the_requeued_job_sends_them(tmp_path):
    from sweeper.tracking import TrialTracker

    spill = tmp_path / TRACKING_SPILL_FILE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first_job = TrialTracker(f"http://127.0.0.1:{closed_port()}", "exp", None, 0, {"a": 1}, {}, "job-1", {},
                                 retry_interval=3600, spill_path=spill)
        for step in (1, 2, 3):
            first_job.on_train_step(step, {"train/loss": float(step)})
        assert first_job.keep_unsent("was preempted")            # what the trial process does on PREEMPTED
    assert spill.exists()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"                  # MLflow is back for the requeued job
    second_job = TrialTracker(uri, "exp", None, 0, {"a": 1}, {}, "job-1", {}, spill_path=spill)
    for step in (4, 5):
        second_job.on_train_step(step, {"train/loss": float(step)})
    second_job.on_end({"status": "completed", "step": 5})
    assert not spill.exists()
    history = MlflowClient(tracking_uri=uri).get_metric_history(second_job.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5]


def test_a_corrupt_spill_file_costs_its_metrics_not_the_trial(tmp_path):
    from sweeper.tracking import TrialTracker

    spill = tmp_path / TRACKING_SPILL_FILE
    spill.write_text('{"trial_number": 0, "metrics": [[')
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = TrialTracker(uri, "exp", None, 0, {"a": 1}, {}, "job", {}, spill_path=spill)
    tracker.on_train_step(1, {"train/loss": 1.0})
    tracker.on_end({"status": "completed", "step": 1})
    assert tracker.unsent_metrics == 0 and spill.exists()      # left for a person to look at


# ------------------------------------------------------------------ M2: sweeper ui serves no writable artifact store


def test_sweeper_ui_refuses_artifact_uploads_from_any_local_user(tmp_path, monkeypatch):
    from sweeper.results.ui import MlflowServer, free_port

    monkeypatch.chdir(tmp_path)                                   # where the old server wrote ./mlartifacts
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)                       # a run as the sweeper logs it: its own artifact location
    experiment = client.create_experiment("exp", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    client.log_text(run_id, "per-prompt results", "per_prompt/step_000002.json")
    server = MlflowServer(uri, (tmp_path / "artifacts").as_uri(), port=free_port(), log_path=tmp_path / "ui.log")
    with server:
        listed = json.loads(urllib.request.urlopen(f"{server.url}/ajax-api/2.0/mlflow/artifacts/list?run_id={run_id}"
                                                   f"&path=per_prompt", timeout=30).read())
        assert [f["path"] for f in listed["files"]] == ["per_prompt/step_000002.json"]   # the UI still shows them
        shown = urllib.request.urlopen(f"{server.url}/get-artifact?path=per_prompt/step_000002.json&run_uuid={run_id}",
                                       timeout=30).read()
        assert shown == b"per-prompt results"
        put = urllib.request.Request(f"{server.url}/api/2.0/mlflow-artifacts/artifacts/0/evil.txt", data=b"owned",
                                     method="PUT")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(put, timeout=30)
        assert refused.value.code in (404, 405, 503)
    assert not (tmp_path / "mlartifacts").exists()
    assert not list(tmp_path.rglob("evil.txt"))


# ------------------------------------------------------------------ L5: a cancel that does not stop the job


def test_a_trial_that_outlives_its_cancel_is_reported_and_not_requeued_while_it_runs(tmp_path):
    """The job's controller is stopped (SIGSTOP: a frozen process) when the driver is interrupted: the cancel
    cannot end it within the wait. It used to be told lost and re-queued while it might still run (twice);
    now the driver says so and leaves it RUNNING, and the next run decides from the job itself."""
    import os
    import signal as signals
    import subprocess
    import sys

    from _signals import default_stop_signals
    from test_sweeper_driver import _wait_for_running

    path = study_file(tmp_path, base={"train": {"steps": 100, "eval_every": 2}},
                      executor={"type": "local", "entrypoint": STANDIN,
                                "env": {"STANDIN_STEP_SECONDS": "0.2"}})
    log = tmp_path / "driver.log"   # a file, not a pipe: the job inherits the driver's stdout and outlives it
    with log.open("w") as out:
        driver = subprocess.Popen([sys.executable, "-m", "sweeper", "run", str(path), "--no-progress"], cwd=REPO,
                                  stdout=out, stderr=subprocess.STDOUT, preexec_fn=default_stop_signals)
    running = _wait_for_running(path, 1, driver)
    controller = int(running[0].user_attrs["job_id"])            # the submitit job: its pid
    os.kill(controller, signals.SIGSTOP)
    try:
        driver.send_signal(signals.SIGTERM)
        driver.wait(timeout=120)
        output = log.read_text()
        assert "may still be running" in output and "re-attaches" in output, output
        trial = trials_of(path)[0]
        assert trial.state.name == "RUNNING" and not trial.user_attrs.get("lost")   # not re-queued while alive
    finally:
        os.kill(controller, signals.SIGCONT)                       # it now takes the cancel and ends
    deadline = time.time() + 60
    while Path(f"/proc/{controller}").exists() and time.time() < deadline:
        time.sleep(0.2)
    run_study(path, progress=False, log=quiet)
    trials = trials_of(path)   # finished from what the job itself wrote when it took the cancel: one run, not two
    assert [t.state.name for t in trials] == ["FAIL"] and "KeyboardInterrupt" in trials[0].user_attrs["fail_reason"]


# ------------------------------------------------------------------ L1: the driver lease and clocks that disagree

SKEWED_ACQUIRE = """
import sys, time
real_time = time.time
time.time = lambda: real_time() + float(sys.argv[2])     # this host's wall clock is off by argv[2] seconds
from sweeper.run.lock import LeaseHeld, StudyLease
from sweeper.run.storage import make_storage
try:
    lease = StudyLease(make_storage(sys.argv[1]), "s", ttl=30, log=lambda m: print(m, flush=True)).acquire()
except LeaseHeld as refused:
    print("REFUSED", refused)
else:
    print("ACQUIRED")
    lease.release()
"""


def acquire_from_a_skewed_host(storage_url: str, skew_s: float) -> str:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", SKEWED_ACQUIRE, storage_url, str(skew_s)], capture_output=True,
                          text=True, env=env, timeout=120, check=True).stdout


def test_a_host_whose_clock_runs_ahead_cannot_take_over_a_live_lease(tmp_path):
    from sweeper.run.lock import Owner, StudyLease

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    remote = Owner(host="node7", pid=4242, process_start=None, machine="boot-of-node7/1", token="token-node7")
    holder = StudyLease(make_storage(url), "s", ttl=2, owner=remote, log=quiet).acquire().start_heartbeat()
    try:
        ahead = acquire_from_a_skewed_host(url, +65)               # the case: 65 s ahead, heartbeat 0 s old
        assert "REFUSED" in ahead and "heartbeat moved" in ahead, ahead
        behind = acquire_from_a_skewed_host(url, -65)              # a heartbeat stamped in the future: watched too
        assert "REFUSED" in behind, behind
    finally:
        holder._stop.set()                                         # the holder hangs: no more heartbeats
    taken = acquire_from_a_skewed_host(url, +65)                   # now its count stands still for a whole ttl
    assert "ACQUIRED" in taken and "did not move for 2 s" in taken, taken
    from sweeper.run.lock import LeaseLost

    holder.refresh()                                               # the stale holder wakes up: it is fenced
    with pytest.raises(LeaseLost, match="lost its lease"):
        holder.check()                                             # (the driver checks before every ask and tell)
