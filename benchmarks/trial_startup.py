"""A trial's start-up: from its submission to its first training step (every trial starts cold).

Runs real studies of ``--trials`` trials one after another (the driver, submitit's local executor, the real
trainer on the shipped model, 2 steps, the step-0 validation off, SQLite for Optuna and MLflow, MLflow
tracking on), ``--rounds`` times. Every trial is a fresh interpreter that imports torch, transformers,
MLflow and Optuna itself (the warm start that forked trials from a per-study server was removed: it saved
~5.9 s of a default ~130 s trial and nothing measurable on the quickstart; README, docs/sweeper.md).

Per trial: submission (submitit's pickle of the job) -> the first step's start (its metrics record's time
minus its ``time/step``). Medians [lowest, highest] over the rounds of the first trial of each study, of the
later ones and of the study's wall time, and the share of a trial's wall time that start-up takes.

Where a cold trial's time goes (one trial process, 2 loaded cores, load ~5; seconds since the process
started): Python and submitit 0.4, ``sweeper.run.trial.process`` 0.25, the entry point's module (torch) 1.0,
the Optuna storage 0.4, the MLflow ``TrialTracker`` 1.5 (importing mlflow ~1.1, its store and run ~0.4),
``load_policy`` 2.6 (transformers' lazy imports behind the tokenizer and the model: torch.distributed.tensor,
sympy, jinja2), first step at ~6.4 s: nearly all of it imports.

    .venv/bin/python benchmarks/trial_startup.py [--rounds 3] [--trials 4]
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
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

import optuna  # noqa: E402
from conftest import tiny_run_config  # noqa: E402
from slurm_dispatch import first_step_start  # noqa: E402

from sweeper.run.driver import run_study  # noqa: E402
from sweeper.run.storage import make_storage  # noqa: E402
from sweeper.study.spec import load_spec  # noqa: E402


def one_study(folder: Path, name: str, trials: int) -> dict[str, float]:
    base = tiny_run_config(folder / "unused", train={"steps": 2, "eval_every": 2, "eval_at_start": False})
    base["train"].pop("output_dir")
    spec = {
        "study": {"name": name},
        "objective": {"metric": "val/pass@4"},
        "base": base,
        "space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.3}}},
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "budget": {"n_trials": trials, "max_parallel": 1},
        "executor": {"type": "local", "resources": {"cpus_per_trial": 1, "timeout_min": 10}},
        "tracking": {"enabled": True},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    started = time.time()
    run_study(path, progress=False, log=lambda message: None)
    wall = time.time() - started
    loaded = load_spec(path)
    to_step = []
    for trial in optuna.load_study(study_name=loaded.study.name, storage=make_storage(loaded.study.storage)).trials:
        trial_dir = Path(trial.user_attrs["trial_dir"])
        submitted = min(pickle.stat().st_mtime for pickle in (trial_dir / "submitit").glob("*_submitted.pkl"))
        to_step.append(first_step_start(trial_dir / "run" / "metrics.jsonl") - submitted)
    return {"first": to_step[0], "later": statistics.median(to_step[1:]), "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=4, help="trials per study, one at a time (at least 2)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="trial-startup-"))
    trials = max(2, args.trials)
    load_before = os.getloadavg()
    rows = [one_study(folder, f"cold-{round_index}", trials) for round_index in range(args.rounds)]
    load_after = os.getloadavg()
    med = statistics.median
    print(
        f"{args.rounds} rounds of a {trials}-trial study (tiny-arith, 2 steps, no step-0 validation, MLflow on, cold "
        f"trials), {os.cpu_count()} cores, load average {load_before[0]:.1f} -> {load_after[0]:.1f}; folder {folder}"
    )
    for key, label in [
        ("first", "submission -> first step, first trial"),
        ("later", "submission -> first step, later trials"),
        ("wall", "the study's wall time"),
    ]:
        values = [row[key] for row in rows]
        print(f"{label:<42} {med(values):>7.2f} s [{min(values):.2f}, {max(values):.2f}]")
    shares = [row["later"] / (row["wall"] / trials) for row in rows]
    print(f"{'start-up / a trial of this study':<42} {med(shares):>7.2f}   [{min(shares):.2f}, {max(shares):.2f}]")


if __name__ == "__main__":
    main()
