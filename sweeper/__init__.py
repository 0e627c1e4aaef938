"""entropy-sweeper's sweeper: a study YAML -> an Optuna study -> trials dispatched through submitit.

The Python API does what the CLI does::

    from sweeper import load_spec, run_study, export_best
    spec = load_spec("examples/quickstart.yaml")     # validated, immutable StudySpec (SpecError if bad)
    report = run_study(spec)                          # run or resume to the budget; a StudyReport
    export_best(spec, "best.yaml", steps=500)         # the best trial's training config, with provenance

Module map (data flows one way: spec -> trial config -> job -> trainer -> metrics -> Optuna and MLflow):

    spec        the study YAML -> a validated, frozen StudySpec (study, objective, budget, tracking sections)
    schema      what every section shares: the strict frozen base model, SpecError, the YAML reader
    space       the space section: parameters, conditions, constraints, config paths; sampling a trial config
    samplers    the sampler section and the Optuna sampler built from it
    pruning     the pruner section (Optuna pruners) and the entropy-health rules
    executors/  the executor section and where a trial runs: local, debug, slurm (submitit)
    contract    the driver-trial contract: trial folder files, the ticket, the outcome, a trial's state
    driver      the ask/tell loop: slots, resume, re-attach
    trial       the trial process: the one module that runs the trainer
    storage     Optuna storages, opening a study, cluster preflight
    tracking/   MLflow: the trial's run and the study's parent run
    report, status, export, formats (TRL / verl names), ui, cli

Nothing here imports torch. ``trainers.config`` (the run config schema, torch-free) is the one contract
shared with the trainer; only ``sweeper.run.trial`` imports other trainer modules, to run the trainer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_spec", "run_study", "export_best", "SpecError"]


def __getattr__(name: str) -> Any:  # lazy: `import sweeper` stays cheap
    if name in ("load_spec", "SpecError"):
        from sweeper.study import spec

        return getattr(spec, name)
    if name == "run_study":
        from sweeper.run.driver import run_study

        return run_study
    if name == "export_best":
        from sweeper.results.export import export_best

        return export_best
    raise AttributeError(f"module 'sweeper' has no attribute {name!r}")
