"""Executors: where a trial process runs. Small classes behind one interface.

    executor = make_executor(spec.executor)
    job = executor.submit(trial_dir, job_name)      # starts sweeper.run.trial.run_trial(trial_dir)
    job.done() -> bool                              # cheap, polled by the driver
    job.failure_text() -> str                       # stderr tail / exception, when no outcome.json
    job.end_reason() -> str | None                  # why it ended without an outcome, if the scheduler knows
    job.outlives_driver                             # True: re-attach whatever its state (Slurm)
    job.cancel()
    executor.reattach(job_id, trial_dir) -> job | None   # a job started by a previous driver
    executor.close()                                # the driver submits nothing more (jobs may run on)

* ``local`` (the default, :mod:`.local`): submitit's LocalExecutor, one process per trial on this machine,
  each a fresh interpreter (the warm start that forked trials from a server was removed: docs/sweeper.md).
* ``debug`` (:mod:`.local`): the trial runs in the driver's process, one at a time.
* ``slurm`` (:mod:`.slurm`): one Slurm job per trial through submitit's AutoExecutor.

Each kind's spec (the ``executor`` section) lives beside its code and builds its executor; the kinds are
listed in :data:`sweeper.registry.EXECUTORS`. A job's *outcome* is never read from
submitit: the trial writes ``outcome.json`` itself (:mod:`sweeper.contract`); a job that ends without
one was killed, and the driver records it as FAIL with :meth:`failure_text` (and :meth:`end_reason`).
"""

from __future__ import annotations

from typing import Any

from sweeper.run.executors.base import DEFAULT_ENTRYPOINT, Executor, ExecutorSpecBase, ResourcesSpec, TrialJob

__all__ = ["DEFAULT_ENTRYPOINT", "Executor", "ExecutorSpecBase", "ResourcesSpec", "TrialJob", "make_executor"]


def make_executor(section: Any) -> Executor:
    """The executor of an ``executor`` section: the section builds it (kinds: :data:`sweeper.registry.EXECUTORS`)."""
    return section.build()
