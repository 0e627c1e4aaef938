"""The trial process: one Optuna trial = one training run (per replicate seed) in its own process.

The driver writes the trial's folder (``config.yaml`` and ``trial.json``: :mod:`sweeper.contract`) and
submits :func:`run_trial` with that folder as its only argument.

:func:`run_trial` re-opens the study from storage with the same pruner, wraps a
:class:`~sweeper.run.trial.reporter.TrialReporter` (plus the MLflow ``TrialTracker`` when tracking is on)
around the trainer, and calls the entry point ``train(config, reporters)``. At each validation the
reporter stores the objective's per-prompt values, reports the objective as an Optuna intermediate value
at that step and asks ``should_prune()``; at every report it runs the health rules. A verdict makes
``stop_reason()`` return ``"pruned:<reason>"`` and the trainer stops cleanly after the current step.
With ``budget.seeds`` R > 1 the trial runs its config once per seed (:mod:`sweeper.run.trial.process`).

The worker never ``tell``s Optuna: it writes ``outcome.json`` (an :class:`~sweeper.contract.Outcome`:
COMPLETE / PRUNED / FAIL, objective value(s) with standard errors, prune reason, message) and returns it.
The *driver* tells Optuna the final state, because only the driver sees every ending -- including a
process killed by the OS or the scheduler, which writes nothing. One writer of final states keeps them
consistent.

On Slurm the job runs :class:`~sweeper.run.trial.slurm.CheckpointableTrial` instead, which calls
:func:`run_trial` on rank 0 (in a worker thread, so the main thread can take submitit's checkpoint signal:
the trainer then saves a checkpoint, nothing final is written, and the requeued job resumes the same trial)
and runs the trainer without reporters on the other ranks of a data-parallel trial.

This package is the one place in ``sweeper/`` that imports trainer modules beyond ``trainers.config``
(the entry point, ``trainers.reporting``); nothing imports it but the executors, which submit it.
"""

from sweeper.run.trial.process import load_entrypoint, run_trial
from sweeper.run.trial.reporter import TrialReporter
from sweeper.run.trial.slurm import CheckpointableTrial, run_secondary_rank

__all__ = ["run_trial", "load_entrypoint", "TrialReporter", "CheckpointableTrial", "run_secondary_rank"]
