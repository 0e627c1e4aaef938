"""SIGTERM (kill, systemd, a container stop, Slurm) and SIGHUP (a closed terminal) stop the driver like
Ctrl-C: the trials in flight are cancelled and re-queued, or left running with detach and re-attached by
the next run. Real driver processes, real submitit jobs running the stand-in trainer, a real storage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from _signals import default_stop_signals
from sweeper.run.driver import run_study
from sweeper.run.interrupts import Interrupted, stop_signals_interrupt
from sweeper.run.lock import is_lease_study
from sweeper.study.spec import load_spec
from sweeper.run.storage import make_storage
from test_sweeper_driver import REPO, _ran_once, _wait_for_running, quiet, study_file, trials_of


def leases(path) -> list[str]:
    """The driver leases (sweeper.run.lock) left in the study's storage."""
    spec = load_spec(path)
    return [name for name in optuna.get_all_study_names(make_storage(spec.study.storage)) if is_lease_study(name)]


def start_driver(path):
    return subprocess.Popen([sys.executable, "-m", "sweeper", "run", str(path), "--no-progress"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=default_stop_signals)


def test_sigterm_cancels_trials_in_flight_and_a_rerun_requeues_them(tmp_path):
    path = study_file(tmp_path, step_seconds=0.15, base={"train": {"steps": 40, "eval_every": 2}},
                      budget={"n_trials": 3, "max_parallel": 2})
    driver = start_driver(path)
    in_flight = _wait_for_running(path, 2, driver)
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=60) == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM" in driver.stderr.read()
    after = {t.number: t for t in trials_of(path)}
    for t in in_flight:
        stopped = after[t.number]
        assert stopped.state.name == "FAIL" and stopped.user_attrs["lost"] is True
        assert "cancelled: the driver was interrupted" in stopped.user_attrs["fail_reason"]
    assert not leases(path)   # the driver's lease was released on the way out
    report = run_study(path, progress=False, log=quiet)
    counted = [t for t in trials_of(path) if not t.user_attrs.get("lost")]
    assert len(counted) == 3 and all(t.state.name == "COMPLETE" for t in counted)
    assert {t.user_attrs.get("requeued_from") for t in counted} >= {t.number for t in in_flight}
    assert report.reattached == 0
    _ran_once(counted)


def test_sighup_with_detach_leaves_trials_running_and_a_rerun_reattaches(tmp_path):
    path = study_file(tmp_path, step_seconds=0.15, base={"train": {"steps": 30, "eval_every": 2}},
                      budget={"n_trials": 3, "max_parallel": 2},
                      executor={"type": "local", "entrypoint": f"{REPO / 'tests' / 'standin_trainer.py'}:train",
                                "env": {"STANDIN_STEP_SECONDS": "0.15"}, "on_interrupt": "detach"})
    driver = start_driver(path)
    in_flight = _wait_for_running(path, 2, driver)
    driver.send_signal(signal.SIGHUP)
    assert driver.wait(timeout=60) == 128 + signal.SIGHUP
    still = {t.number: t for t in trials_of(path)}
    assert all(still[t.number].state.name == "RUNNING" for t in in_flight)   # detached, not cancelled
    assert not leases(path)
    report = run_study(path, progress=False, log=quiet)
    trials = trials_of(path)
    assert report.reattached == 2 and report.requeued == 0
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 and not any(t.user_attrs.get("lost") for t in trials)
    _ran_once(trials)


def test_a_second_signal_while_stopping_is_ignored_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as caught:
        with stop_signals_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises here
    assert caught.value.signum == signal.SIGTERM
    with pytest.raises(Interrupted):
        with stop_signals_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGHUP)
                time.sleep(1)
            except Interrupted:
                os.kill(os.getpid(), signal.SIGTERM)  # during the cleanup: ignored, the cleanup finishes
                time.sleep(0.2)
                raise
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_ignored_sighup_stays_ignored_under_nohup():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_signals_interrupt():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.2)  # nothing raised: nohup'ed drivers keep running when the terminal closes
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
