"""Per-trial dispatch overhead of ``executor: slurm`` on the local test cluster (slurm/cluster.sh).

Runs a real study whose trials are the real trainer on the shipped tiny model (2 steps, no eval at
start), one trial at a time, through the Slurm executor and, for reference, the local executor
(one subprocess per trial on this machine), and prints per trial and as medians:

* submit -> job start: the driver's submission (sbatch returned) -> submitit's first log line in the
  job (Slurm: scheduling, srun, Python start; local: the subprocess start);
* job start -> first step: imports (torch, transformers, optuna, mlflow), re-opening the study and the
  MLflow run, loading the model, building the trainer -- the same in both executors;
* submit -> first step: the sum, i.e. what a trial waits before it trains (the first step's own
  compute time is excluded: the first train record's time minus its ``time/step``);
* end -> noticed: the trial's outcome.json written -> the driver noticing the job is done;
* driver time per trial: the driver's own work per trial (ask, sample, trial files, the submit call
  -- sbatch for Slurm --, tell, MLflow marks).

    eval "$(slurm/cluster.sh env)"
    .venv/bin/python benchmarks/slurm_dispatch.py [--trials 4] [--executors slurm local] [--no-tracking]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import optuna  # noqa: E402

from conftest import tiny_run_config  # noqa: E402
from sweeper.run.driver import run_study  # noqa: E402
from sweeper.study.spec import load_spec  # noqa: E402
from sweeper.run.storage import make_storage  # noqa: E402

SUBMITIT_START = re.compile(r"submitit INFO \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\) - Starting with JobEnvironment")


def job_start(log: Path) -> float | None:
    """The first 'Starting with JobEnvironment' line of a submitit log, as a Unix time."""
    match = SUBMITIT_START.search(log.read_text()) if log.exists() else None
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def first_step_start(metrics_file: Path) -> float | None:
    for line in metrics_file.read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "train":
            return record["time"] - float(record.get("time/step", 0.0))
    return None


def run(executor: str, trials: int, tracking: bool, folder: Path) -> list[dict]:
    base = tiny_run_config(folder / "unused", train={"steps": 2, "eval_every": 2, "eval_at_start": False})
    base["train"].pop("output_dir")
    executor_spec = {"type": "slurm", "profile": "local-test", "state_poll_s": 1} if executor == "slurm" else \
        {"type": "local", "resources": {"cpus_per_trial": 1, "timeout_min": 10}}
    spec = {
        "study": {"name": f"dispatch-{executor}"},
        "objective": {"metric": "val/pass@4"},
        "base": base,
        "space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.3}}},
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "budget": {"n_trials": trials, "max_parallel": 1},
        "executor": executor_spec,
        "tracking": {"enabled": tracking},
    }
    path = folder / f"{executor}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    report = run_study(path, progress=False, log=lambda message: None)
    driver_per_trial = report.driver_seconds / max(1, report.launched)
    loaded = load_spec(path)
    study = optuna.load_study(study_name=loaded.study.name, storage=make_storage(loaded.study.storage))
    noticed = {number: done for number, _, done in report.intervals}
    submitted = {number: sub for number, sub, _ in report.intervals}
    rows = []
    for trial in study.trials:
        trial_dir = Path(trial.user_attrs["trial_dir"])
        log = Path(trial.user_attrs["log_paths"]["stdout"])
        start = job_start(log)
        step = first_step_start(trial_dir / "run" / "metrics.jsonl")
        outcome_written = (trial_dir / "outcome.json").stat().st_mtime
        rows.append({
            "trial": trial.number, "state": trial.state.name,
            "submit_to_job": start - submitted[trial.number],
            "job_to_step": step - start,
            "submit_to_step": step - submitted[trial.number],
            "end_to_noticed": noticed[trial.number] - outcome_written,
            "driver": driver_per_trial,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--executors", nargs="+", default=["slurm", "local"], choices=["slurm", "local"])
    parser.add_argument("--no-tracking", action="store_true", help="MLflow off (default on, as in a real study)")
    args = parser.parse_args()
    if "slurm" in args.executors and not os.environ.get("SLURM_CONF"):
        sys.exit('SLURM_CONF is not set: run `eval "$(slurm/cluster.sh env)"` first (and `sudo slurm/cluster.sh up`)')

    folder = Path(tempfile.mkdtemp(prefix="slurm-dispatch-"))
    print(f"{args.trials} trials per executor, one at a time, real trainer (tiny-arith, 2 steps), "
          f"MLflow {'off' if args.no_tracking else 'on'}; load average {os.getloadavg()[0]:.1f}; folder {folder}")
    medians = {}
    for executor in args.executors:
        started = time.time()
        rows = run(executor, args.trials, not args.no_tracking, folder)
        print(f"\n{executor} ({time.time() - started:.0f} s)")
        print(f"{'trial':>5} {'state':>9} {'submit->job':>12} {'job->step':>10} {'submit->step':>13} {'end->noticed':>13}")
        for row in rows:
            print(f"{row['trial']:>5} {row['state']:>9} {row['submit_to_job']:>11.2f}s {row['job_to_step']:>9.2f}s "
                  f"{row['submit_to_step']:>12.2f}s {row['end_to_noticed']:>12.2f}s")
        medians[executor] = {key: statistics.median(row[key] for row in rows)
                             for key in ("submit_to_job", "job_to_step", "submit_to_step", "end_to_noticed")}
        m = medians[executor]
        print(f"{'median':>15} {m['submit_to_job']:>11.2f}s {m['job_to_step']:>9.2f}s {m['submit_to_step']:>12.2f}s "
              f"{m['end_to_noticed']:>12.2f}s")
        print(f"driver time per trial (ask, sample, files, submit call, tell): {rows[0]['driver']:.2f} s")
    if {"slurm", "local"} <= set(medians):
        s, loc = medians["slurm"], medians["local"]
        print(f"\nSlurm dispatch overhead over local, per trial (medians): submit->step "
              f"{s['submit_to_step'] - loc['submit_to_step']:+.2f} s ({s['submit_to_step'] / loc['submit_to_step']:.2f}x), "
              f"of which submit->job {s['submit_to_job'] - loc['submit_to_job']:+.2f} s")


if __name__ == "__main__":
    main()
