"""A trial's start-up: from its process's start to its first training step, with MLflow tracking on and off.

Each variant runs real one-trial studies (the driver, submitit's local executor, the real trainer on the
shipped model, 2 steps, the step-0 validation off, SQLite for Optuna and MLflow), in turn, ``--rounds``
times: per trial, job start (submitit's first log line) -> the first step's start (its metrics record's time
minus its ``time/step``), and job start -> the trial's ``outcome.json``. Medians, and the ratio of each
variant's median to the tracked one's, with the lowest and highest ratio over the rounds.

Where the time goes (one trial process, 2 loaded cores, load ~5; seconds since the process started):
Python and submitit 0.4, ``sweeper.trial.process`` 0.25, the entry point's module (torch) 1.0, the Optuna
storage 0.4, the MLflow ``TrialTracker`` 1.5 (importing mlflow ~1.1, its store and run ~0.4), ``load_policy``
2.6 (transformers' lazy imports behind the tokenizer and the model: torch.distributed.tensor, sympy, jinja2),
first step at ~6.4 s. Nearly all of it is CPU-bound imports, which threads cannot overlap (the GIL); a
companion process that imports MLflow on another core measured 1.10x slower with every core busy.

    .venv/bin/python benchmarks/trial_startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from conftest import tiny_run_config  # noqa: E402
from slurm_dispatch import first_step_start, job_start  # noqa: E402
import optuna  # noqa: E402

from sweeper.driver import run_study  # noqa: E402
from sweeper.spec import load_spec  # noqa: E402
from sweeper.storage import make_storage  # noqa: E402

def one_trial(folder: Path, name: str, tracking: bool, python: str | None) -> dict[str, float]:
    base = tiny_run_config(folder / "unused", train={"steps": 2, "eval_every": 2, "eval_at_start": False})
    base["train"].pop("output_dir")
    executor = {"type": "local", "resources": {"cpus_per_trial": 1, "timeout_min": 10}}
    if python:
        executor["python"] = python
    spec = {
        "study": {"name": name}, "objective": {"metric": "val/pass@4"}, "base": base,
        "space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.3}}},
        "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"},
        "budget": {"n_trials": 1, "max_parallel": 1}, "executor": executor, "tracking": {"enabled": tracking},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run_study(path, progress=False, log=lambda message: None)
    loaded = load_spec(path)
    trial = optuna.load_study(study_name=loaded.study.name, storage=make_storage(loaded.study.storage)).trials[0]
    trial_dir = Path(trial.user_attrs["trial_dir"])
    start = job_start(Path(trial.user_attrs["log_paths"]["stdout"]))
    return {"to_step": first_step_start(trial_dir / "run" / "metrics.jsonl") - start,
            "to_end": (trial_dir / "outcome.json").stat().st_mtime - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="trial-startup-"))
    variants = {"tracking on": (True, None), "tracking off": (False, None)}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    load_before = os.getloadavg()
    for round_index in range(args.rounds):
        for name, (tracking, python) in variants.items():
            rows[name].append(one_trial(folder, f"{name.replace(' ', '-')}-{round_index}", tracking, python))
    load_after = os.getloadavg()
    med = statistics.median
    print(f"{args.rounds} rounds of one trial per variant (tiny-arith, 2 steps, no step-0 validation), "
          f"{os.cpu_count()} cores, load average {load_before[0]:.1f} -> {load_after[0]:.1f}; folder {folder}")
    print(f"{'variant':<13} {'start->step':>12} {'vs tracking on':>24} {'start->end':>11}")
    for name in variants:
        to_step = [row["to_step"] for row in rows[name]]
        ratios = [row["to_step"] / base["to_step"] for row, base in zip(rows[name], rows["tracking on"])]
        print(f"{name:<13} {med(to_step):>11.2f}s {med(to_step) / med(r['to_step'] for r in rows['tracking on']):>8.2f} "
              f"[{min(ratios):.2f}, {max(ratios):.2f}] {med(row['to_end'] for row in rows[name]):>10.2f}s")


if __name__ == "__main__":
    main()
