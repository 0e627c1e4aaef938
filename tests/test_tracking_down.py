"""Tracking with the MLflow store down: the trial keeps going, warns once, never raises, loses nothing it can keep.

Three backends that fail for real: a closed port (connection refused), a TCP listener that accepts
and hangs up (counts how often the tracker really tries, which shows reporter calls do not go to
the network each time), and a real ``mlflow server`` killed mid-trial and started again (the
buffered metrics arrive, every step is in the history).
"""

from __future__ import annotations

import socket
import threading
import warnings

import pytest
from mlflow.tracking import MlflowClient

from sweeper import tracking
from sweeper.tracking import StudyTracker, TrackingUnavailableWarning, TrialTracker, mark_trial
from sweeper.results.ui import MlflowServer, free_port

CONFIG = {"clip": {"eps_high": 0.28}, "entropy": {"method": "siren", "siren": {"top_p": 0.8}}, "eval": {"k": [1, 8]}}
SAMPLED = {"clip.eps_high": 0.28}


@pytest.fixture(autouse=True)
def fast_failing_http(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")


def drive_like_trainer(tracker, first_step: int, last_step: int, eval_every: int = 5) -> None:
    for step in range(first_step, last_step + 1):
        tracker.on_train_step(step, {"train/entropy": 1.0 - 0.01 * step, "train/loss": 0.5})
        assert tracker.stop_reason() is None
        if step % eval_every == 0:
            tracker.on_validation(step, {"val/pass@8": 0.01 * step, "val/entropy": 0.9})
            assert tracker.stop_reason() is None


def tracking_warnings(caught) -> list:
    return [w for w in caught if issubclass(w.category, TrackingUnavailableWarning)]


def test_closed_port_trial_warns_once_and_never_raises():
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = TrialTracker(uri, "down", "0" * 32, 7, CONFIG, SAMPLED, "job-7", {"stderr": "/tmp/x"}, retry_interval=0)
        tracker.on_start({"config": CONFIG, "output_dir": "/tmp/out", "resumed_from_step": 0, "num_processes": 1})
        drive_like_trainer(tracker, 1, 60)
        tracker.on_end({"status": "completed", "step": 60, "stop_reason": None})
    assert tracker.run_id is None
    found = tracking_warnings(caught)
    assert len(found) == 1, [str(w.message) for w in found]
    message = str(found[0].message)
    assert uri in message and "trial 7 goes on without it" in message
    assert tracker.unsent_metrics == 60 * 2 + 12 * 2  # kept in memory, not silently counted as sent


def test_driver_side_calls_never_raise_when_down(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study_tracker = StudyTracker(uri, "down", "down", retry_interval=0)
        assert study_tracker.start() is None
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study()
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        study_tracker.refresh(study)
        (tmp_path / "best.yaml").write_text("seed: 1\n")
        study_tracker.log_export(tmp_path / "best.yaml")
        study_tracker.end("FINISHED")
        assert mark_trial(uri, "0" * 32, "FAIL", None, "Traceback: boom") is False
        assert tracking.find_trial_run_id(uri, "0" * 32, 3) is None
    assert len([w for w in tracking_warnings(caught) if "study down goes on" in str(w.message)]) == 1


class HangUpServer:
    """A TCP listener that accepts every connection and closes it at once, counting them."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self):
        self.sock.close()


def test_unreachable_store_is_not_retried_on_every_reporter_call():
    server = HangUpServer()
    try:
        uri = f"http://127.0.0.1:{server.port}"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracker = TrialTracker(uri, "down", "0" * 32, 3, CONFIG, SAMPLED, retry_interval=3600)
            attempts_at_start = server.connections
            drive_like_trainer(tracker, 1, 200)
            attempts_during_training = server.connections - attempts_at_start
            tracker.on_end({"status": "stopped", "step": 200, "stop_reason": "pass@k"})
        assert attempts_at_start >= 1  # it did try the store
        assert attempts_during_training == 0  # 240 reporter calls, no network: they return at once
        assert server.connections - attempts_at_start - attempts_during_training >= 1  # one last try at the end
        assert len(tracking_warnings(caught)) == 1
        assert tracker.unsent_metrics == 200 * 2 + 40 * 2
    finally:
        server.close()


@pytest.mark.slow
def test_server_killed_mid_trial_and_restarted_loses_no_metric(tmp_path):
    """A real MLflow server dies at step 10 and comes back at step 20: all 30 steps end up in the run."""
    db_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = tmp_path / "mlartifacts"
    port = free_port()
    server = MlflowServer(db_uri, artifacts, port=port, log_path=tmp_path / "server.log")
    try:
        server.start()
        server.wait_healthy()
        uri = server.url
        parent_run_id = StudyTracker(uri, "flaky", "flaky").start()
        assert parent_run_id is not None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracker = TrialTracker(uri, "flaky", parent_run_id, 0, CONFIG, SAMPLED, "job-0", {}, retry_interval=0)
            assert tracker.run_id is not None
            drive_like_trainer(tracker, 1, 10)
            assert tracker.unsent_metrics == 0

            server.stop(timeout=0)  # SIGKILL-like: the whole group goes at once
            drive_like_trainer(tracker, 11, 20)
            assert tracker.unsent_metrics == 10 * 2 + 2 * 2
            assert len(tracking_warnings(caught)) == 1

            server.start()
            server.wait_healthy()
            drive_like_trainer(tracker, 21, 30)
            tracker.on_end({"status": "completed", "step": 30, "stop_reason": None})
        assert tracker.unsent_metrics == 0
        assert len(tracking_warnings(caught)) == 1

        client = MlflowClient(tracking_uri=uri)
        run = client.get_run(tracker.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags[tracking.TAG_PARENT] == parent_run_id
        history = sorted((m.step, m.value) for m in client.get_metric_history(tracker.run_id, "train/entropy"))
        assert history == [(step, pytest.approx(1.0 - 0.01 * step)) for step in range(1, 31)]
        val_steps = sorted(m.step for m in client.get_metric_history(tracker.run_id, "val/pass_at_8"))
        assert val_steps == [5, 10, 15, 20, 25, 30]
    finally:
        server.stop(timeout=5)
