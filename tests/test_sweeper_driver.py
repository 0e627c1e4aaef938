"""The driver end to end: real Optuna storages (SQLite, journal), real submitit local executor, real
trial processes running the stand-in trainer (tests/standin_trainer.py) whose metrics are steered by
the sampled config. Kept small: each trial process starts Python, Optuna and the trial in ~1-2 s."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from _signals import default_sigint
from sweeper.run.driver import run_study
from _studies import quiet, trials_of

REPO = Path(__file__).resolve().parents[1]
STANDIN = f"{REPO / 'tests' / 'standin_trainer.py'}:train"


def study_file(tmp_path: Path, *, name="s", storage=None, step_seconds=0.01, **sections) -> Path:
    spec = {
        "study": {"name": name, **({"storage": storage} if storage else {})},
        "objective": {"metric": "val/pass@8"},
        "base": {"train": {"steps": 10, "eval_every": 2}},
        "space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.4}}},
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "budget": {"n_trials": 2, "max_parallel": 1},
        "executor": {"type": "local", "entrypoint": STANDIN, "env": {"STANDIN_STEP_SECONDS": str(step_seconds)}},
        "tracking": {"enabled": False},
    }
    spec.update(sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def pass_at(eps_high: float, step: int) -> float:  # the stand-in's curve
    return max(0.0, 1 - 4 * abs(eps_high - 0.28)) * (1 - math.exp(-step / 10)) + 0.05


def test_pruning_by_pass_at_k_with_the_median_pruner(tmp_path):
    path = study_file(
        tmp_path,
        pruner={"type": "median", "n_startup_trials": 2},
        space={"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.4}, "entropy.method": "steer"}},
        enqueue=[{"clip.eps_high": 0.28}, {"clip.eps_high": 0.28}, {"clip.eps_high": 0.2}, {"clip.eps_high": 0.4}],
        budget={"n_trials": 4, "max_parallel": 1},
    )
    report = run_study(path, progress=False, log=quiet)
    trials = trials_of(path)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]
    assert trials[0].value == pytest.approx(pass_at(0.28, 10))
    for t in trials[2:]:
        assert t.user_attrs["prune_reason"] == "pass@k"
        assert t.user_attrs["pruned_at_step"] == 2          # the first validation below the median
        assert t.intermediate_values[2] == pytest.approx(pass_at(t.params["clip.eps_high"], 2))
        assert t.user_attrs["last_step"] == 2                # the trainer stopped right there
    # step 0 (the untrained model, the same for every trial) is not reported to Optuna
    assert trials[0].intermediate_values == pytest.approx({s: pass_at(0.28, s) for s in range(2, 11, 2)})
    assert report.counts == {"COMPLETE": 2, "PRUNED": 2}


def test_each_entropy_health_rule_prunes_with_its_reason(tmp_path):
    path = study_file(
        tmp_path,
        pruner={"type": "none", "health": {"collapse": {"fraction": 0.5, "patience": 2},
                                            "explosion": {"multiple": 2.0, "patience": 2}, "nan": True}},
        space={"params": {"entropy.method": ["none", "entropy_bonus", "steer"],
                          "entropy.bonus.coef": {"type": "float", "low": 1e-4, "high": 5e-2, "log": True,
                                                 "when": {"entropy.method": "entropy_bonus"}},
                          "optim.lr": [1e-5, 1.0]}},
        enqueue=[{"entropy.method": "none", "optim.lr": 1e-5},                                   # collapses
                 {"entropy.method": "entropy_bonus", "entropy.bonus.coef": 0.02, "optim.lr": 1e-5},  # explodes
                 {"entropy.method": "steer", "optim.lr": 1.0},                                    # NaN loss
                 {"entropy.method": "steer", "optim.lr": 1e-5}],                                  # healthy
        budget={"n_trials": 4, "max_parallel": 2},
    )
    run_study(path, progress=False, log=quiet)
    trials = trials_of(path)
    outcome = [(t.state.name, t.user_attrs.get("prune_reason")) for t in trials]
    assert outcome == [("PRUNED", "entropy_collapse"), ("PRUNED", "entropy_explosion"), ("PRUNED", "nan"), ("COMPLETE", None)]
    # train: 0.8^t vs 0.5 x its first report 0.8 -> below at t = 5, 6; val (every 2 steps): below at 4, 6
    assert trials[0].user_attrs["pruned_at_step"] == 6 and "entropy" in trials[0].user_attrs["prune_message"]
    assert trials[1].user_attrs["pruned_at_step"] == 4     # 1 + 2t vs 2 x first: t = 4 is the second report above
    assert trials[2].user_attrs["pruned_at_step"] == 3 and "train/loss" in trials[2].user_attrs["prune_message"]
    assert trials[3].user_attrs["last_step"] == 10


def test_failed_trials_record_reason_and_stderr_tail_and_the_study_goes_on(tmp_path):
    path = study_file(
        tmp_path,
        space={"params": {"model.path": ["standin:crash", "standin:die", "builtin:tiny-arith"]}},
        enqueue=[{"model.path": "standin:crash"}, {"model.path": "standin:die"}, {"model.path": "builtin:tiny-arith"}],
        budget={"n_trials": 3, "max_parallel": 2},
    )
    run_study(path, progress=False, log=quiet)
    crash, die, ok = trials_of(path)
    assert (crash.state.name, die.state.name, ok.state.name) == ("FAIL", "FAIL", "COMPLETE")
    assert "RuntimeError: standin: simulated crash at step 3" in crash.user_attrs["fail_reason"]
    assert "simulated crash at step 3" in crash.user_attrs["stderr_tail"] and "Traceback" in crash.user_attrs["stderr_tail"]
    assert "ended without an outcome" in die.user_attrs["fail_reason"]
    assert "simulated failure at step 3" in die.user_attrs["stderr_tail"]


def test_slots_are_refilled_the_moment_a_trial_ends(tmp_path):
    # trial 0 (seed 1) holds until a release file exists; 1, 2, 3 are short. With P = 2, trials 2 and 3 can
    # only run if the driver refills the slot of 1 while 0 still runs (a batch barrier would wait for 0).
    release = tmp_path / "release"
    path = study_file(
        tmp_path,
        space={"params": {"seed": [1, 0, 2, 3]}},    # distinct configs: an identical one would reuse a result
        enqueue=[{"seed": 1}, {"seed": 0}, {"seed": 2}, {"seed": 3}],
        budget={"n_trials": 4, "max_parallel": 2},
        executor={"type": "local", "entrypoint": STANDIN, "env": {"STANDIN_RELEASE_FILE": str(release)}},
    )
    seen_before_release: list[set[int]] = []

    def release_when_short_trials_are_done():
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                complete = {t.number for t in trials_of(path) if t.state.name == "COMPLETE"}
            except Exception:  # noqa: BLE001 - the study may not exist yet
                complete = set()
            if {1, 2, 3} <= complete:
                break
            time.sleep(0.2)
        seen_before_release.append(complete)
        release.touch()   # always release, so a failing driver cannot hang the test

    releaser = threading.Thread(target=release_when_short_trials_are_done)
    releaser.start()
    report = run_study(path, progress=False, log=quiet)
    releaser.join()
    trials = trials_of(path)
    assert seen_before_release == [{1, 2, 3}]            # done while trial 0 was still holding its slot
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert trials[0].datetime_complete > max(t.datetime_complete for t in trials[1:])
    # never more than max_parallel in flight
    events = sorted([(t.datetime_start, 1) for t in trials] + [(t.datetime_complete, -1) for t in trials])
    in_flight = peak = 0
    for _, delta in events:
        in_flight += delta
        peak = max(peak, in_flight)
    assert peak == 2
    assert report.launched == 4 and report.finished == 4


def test_constraints_hold_for_every_launched_trial_and_rejections_do_not_count(tmp_path):
    path = study_file(
        tmp_path,
        space={"include": "builtin:clip",   # eps_high >= eps_low, here with ranges that overlap half the time
               "params": {"clip.dual_c": None, "clip.eps_low": {"type": "float", "low": 0.2, "high": 0.4}}},
        executor={"type": "debug", "entrypoint": STANDIN},
        budget={"n_trials": 6},
        sampler={"type": "random", "seed": 5},
    )
    report = run_study(path, progress=False, log=quiet)
    trials = trials_of(path)
    launched = [t for t in trials if not t.user_attrs.get("rejected")]
    rejected = [t for t in trials if t.user_attrs.get("rejected")]
    assert len(launched) == 6 and report.rejected == len(rejected) > 0
    for t in launched:
        assert t.state.name == "COMPLETE"
        assert t.user_attrs["config"]["clip"]["eps_high"] >= t.user_attrs["config"]["clip"]["eps_low"]
    for t in rejected:
        assert t.state.name == "FAIL" and t.params["clip.eps_high"] < t.params["clip.eps_low"]
        assert "trial_dir" not in t.user_attrs and "job_id" not in t.user_attrs
    # re-running the finished study launches nothing: the budget counts what is in storage
    again = run_study(path, progress=False, log=quiet)
    assert again.launched == 0


def _start_driver(path: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sweeper", "run", str(path), "--no-progress"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=default_sigint, **popen)


def _wait_for_running(path: Path, count: int, driver: subprocess.Popen, timeout: float = 90) -> list:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert driver.poll() is None, "the driver ended before trials were in flight"
        try:
            running = [t for t in trials_of(path) if t.state.name == "RUNNING" and "job_id" in t.user_attrs]
        except Exception:  # noqa: BLE001 - the study may not exist yet
            running = []
        if len(running) >= count:
            # and their processes have started training (a validation was reported)
            if all(t.intermediate_values for t in running):
                return running
        time.sleep(0.2)
    raise AssertionError("trials never got in flight")


def _ran_once(trials) -> None:
    for t in trials:
        if t.user_attrs.get("rejected") or "trial_dir" not in t.user_attrs:
            continue
        submissions = list((Path(t.user_attrs["trial_dir"]) / "submitit").glob("*_submitted.pkl"))
        assert len(submissions) == 1, f"trial {t.number} was submitted {len(submissions)} times"


def test_resume_after_the_driver_is_killed_reattaches_to_running_trials(tmp_path):
    path = study_file(tmp_path, storage="journal://journal.log", step_seconds=0.15,
                      base={"train": {"steps": 24, "eval_every": 2}}, budget={"n_trials": 4, "max_parallel": 2})
    driver = _start_driver(path)
    try:
        in_flight = _wait_for_running(path, 2, driver)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    report = run_study(path, progress=False, log=quiet)
    trials = trials_of(path)
    assert report.reattached == 2 and report.requeued == 0
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4            # 0 lost
    assert {t.number for t in in_flight} <= {t.number for t in trials}
    assert len({t.params["clip.eps_high"] for t in trials}) == 4          # 0 duplicated
    _ran_once(trials)


def test_resume_after_driver_and_its_jobs_are_killed_requeues_their_params(tmp_path):
    path = study_file(tmp_path, step_seconds=0.15, base={"train": {"steps": 24, "eval_every": 2}},
                      budget={"n_trials": 4, "max_parallel": 2})
    driver = _start_driver(path, start_new_session=True)   # its own process group: the driver and its jobs
    try:
        in_flight = _wait_for_running(path, 2, driver)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    time.sleep(0.5)
    report = run_study(path, progress=False, log=quiet)
    trials = trials_of(path)
    lost = [t for t in trials if t.user_attrs.get("lost")]
    counted = [t for t in trials if not t.user_attrs.get("lost") and not t.user_attrs.get("rejected")]
    assert {t.number for t in lost} == {t.number for t in in_flight} and report.requeued == 2
    assert all(t.state.name == "FAIL" and "lost" in t.user_attrs["fail_reason"] for t in lost)
    assert len(counted) == 4 and all(t.state.name == "COMPLETE" for t in counted)
    requeued = {t.user_attrs["requeued_from"]: t for t in counted if "requeued_from" in t.user_attrs}
    assert set(requeued) == {t.number for t in lost}
    for number, copy in requeued.items():
        assert copy.params == next(t for t in lost if t.number == number).params
    _ran_once(counted)


def test_dry_run_samples_configs_without_touching_storage(tmp_path):
    path = study_file(tmp_path, space={"include": "builtin:all_methods"})
    result = subprocess.run([sys.executable, "-m", "sweeper", "run", str(path), "--dry-run", "--samples", "4"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\ntrial ") == 4 and "entropy.method" in result.stdout
    assert "cpu / 0 gpu per trial" in result.stdout
    assert not (tmp_path / "studies").exists()


def test_ctrl_c_cancels_trials_in_flight_and_a_rerun_requeues_them(tmp_path):
    path = study_file(tmp_path, step_seconds=0.15, base={"train": {"steps": 40, "eval_every": 2}},
                      budget={"n_trials": 3, "max_parallel": 2})
    driver = _start_driver(path)
    in_flight = _wait_for_running(path, 2, driver)
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=60) == 130
    after_interrupt = {t.number: t for t in trials_of(path)}
    for t in in_flight:
        stopped = after_interrupt[t.number]
        assert stopped.state.name == "FAIL" and stopped.user_attrs["lost"] is True
        assert "cancelled: the driver was interrupted" in stopped.user_attrs["fail_reason"]
    assert not (path.parent / "studies" / "s" / "driver.lock").exists()
    report = run_study(path, progress=False, log=quiet)
    trials = trials_of(path)
    counted = [t for t in trials if not t.user_attrs.get("lost")]
    assert len(counted) == 3 and all(t.state.name == "COMPLETE" for t in counted)
    assert {t.user_attrs.get("requeued_from") for t in counted} >= {t.number for t in in_flight}
    assert report.reattached == 0
