"""Slot utilization and driver overhead of the sweeper's ask/tell loop.

Runs a real study -- SQLite storage, submitit local executor, one process per trial -- whose trials
are the stand-in trainer (tests/standin_trainer.py: pure Python, metrics steered by the config), with
``max_parallel`` = 2 and pruning on (median pruner on pass@k plus the entropy-collapse rule, so
trials end at different times). Prints:

* slot utilization: busy slot-time / (P x loop time), busy = submission -> the driver noticing the
  trial ended (includes each trial's process start); target >= 95 %;
* idle slot-time per trial, i.e. what the driver costs a slot between a trial's end and the next
  submission (done-detection poll + tell + ask + sampling + files + submit);
* driver time per trial (CPU-side work in ask/sample/submit/tell, no waiting);
* done-detection lag: the trial's outcome.json written -> noticed by the driver.

    .venv/bin/python benchmarks/sweeper_slots.py [--trials 16] [--parallel 2] [--step-seconds 0.05] [--tracking]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sweeper.run.driver import run_study  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--step-seconds", type=float, default=0.05, help="stand-in trainer wall time per step")
    parser.add_argument("--tracking", action="store_true", help="MLflow tracking on (default off: this measures the loop)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="sweeper-bench-"))
    spec = {
        "study": {"name": "slots"},
        "objective": {"metric": "val/pass@8"},
        "base": {"train": {"steps": args.steps, "eval_every": 4}},
        "space": {"params": {"entropy.method": ["steer", "none"],
                             "clip.eps_high": {"type": "float", "low": 0.2, "high": 0.4}}},
        "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 4},
        "pruner": {"type": "median", "n_startup_trials": 3,
                   "health": {"collapse": {"fraction": 0.3, "patience": 2}}},
        "budget": {"n_trials": args.trials, "max_parallel": args.parallel},
        "executor": {"type": "local", "entrypoint": f"{REPO / 'tests' / 'standin_trainer.py'}:train",
                     "env": {"STANDIN_STEP_SECONDS": str(args.step_seconds)}},
        "tracking": {"enabled": args.tracking},
    }
    path = folder / "slots.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))

    print(f"study in {folder}: {args.trials} trials, P = {args.parallel}, stand-in trainer "
          f"({args.steps} steps x {args.step_seconds} s), median pruner + entropy-collapse rule, "
          f"tracking {'on' if args.tracking else 'off'}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    started = time.time()
    report = run_study(path, progress=False, log=lambda message: None)
    total = time.time() - started

    lags = []
    for number, _submitted, noticed in report.intervals:
        outcome = folder / "studies" / "slots" / "trials" / f"{number:05d}" / "outcome.json"
        if outcome.exists():
            lags.append(noticed - outcome.stat().st_mtime)
    durations = [done - submitted for _, submitted, done in report.intervals]
    idle = args.parallel * report.loop_seconds - report.slot_busy_seconds
    print(f"trials: {report.counts}  (launched {report.launched}, rejected {report.rejected})")
    print(f"trial length (submit -> done): median {statistics.median(durations):.2f} s, "
          f"min {min(durations):.2f} s, max {max(durations):.2f} s; inside the process: "
          f"median {statistics.median(report.trial_seconds):.2f} s")
    print(f"loop time {report.loop_seconds:.1f} s (whole run {total:.1f} s incl. setup {report.wall_seconds - report.loop_seconds:.1f} s)")
    print(f"slot utilization: {100 * report.slot_utilization:.1f} %  (target >= 95 %)")
    print(f"idle slot-time per trial: {idle / max(report.finished, 1) * 1000:.0f} ms")
    print(f"driver time per trial (ask + sample + files + submit + tell): {report.driver_seconds / max(report.launched, 1) * 1000:.0f} ms")
    if lags:
        print(f"done-detection lag (outcome written -> noticed): median {statistics.median(lags) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
