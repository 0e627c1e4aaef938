"""entropy-sweeper's sweeper: a study YAML -> an Optuna study -> trials dispatched through submitit.

The Python API does what the CLI does::

    from sweeper import load_spec, run_study, export_best
    spec = load_spec("examples/quickstart.yaml")     # validated, immutable StudySpec (SpecError if bad)
    report = run_study(spec)                          # run or resume to the budget; a StudyReport
    export_best(spec, "best.yaml", steps=500)         # the best trial's training config, with provenance

Module map: spec (YAML -> StudySpec), space (sampling, conditions, constraints), driver (ask/tell
loop, slots, resume), executors (local / debug / slurm), trial (the trial process), pruning (Optuna
pruners + entropy-health rules), samplers, storage, export, status, cli, tracking (MLflow).
Nothing here imports torch; only ``sweeper.trial`` imports the trainer, inside functions.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_spec", "run_study", "export_best", "SpecError"]


def __getattr__(name: str) -> Any:  # lazy: `import sweeper` stays cheap
    if name in ("load_spec", "SpecError"):
        from . import spec

        return getattr(spec, name)
    if name == "run_study":
        from .driver import run_study

        return run_study
    if name == "export_best":
        from .export import export_best

        return export_best
    raise AttributeError(f"module 'sweeper' has no attribute {name!r}")
