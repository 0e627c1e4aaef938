"""What a study run did (:class:`StudyReport`, returned by :func:`sweeper.run.driver.run_study`) and the
driver's record of a trial in flight (:class:`InFlight`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.run.executors.base import TrialJob


@dataclass
class InFlight:
    number: int
    trial_id: int
    job: TrialJob
    trial_dir: Path
    submitted: float
    reattached: bool = False


@dataclass
class StudyReport:
    """What a run did (returned by :func:`run_study`)."""

    study_name: str
    study_dir: str
    storage: str
    counts: dict[str, int]  # state (sweeper.contract.trial_state) -> trials in storage
    best_value: float | None = None
    best_params: dict[str, Any] | None = None
    best_trial: int | None = None
    launched: int = 0
    finished: int = 0
    rejected: int = 0
    reattached: int = 0
    requeued: int = 0
    wall_seconds: float = 0.0  # the whole run, setup included
    loop_seconds: float = 0.0  # first submission -> last trial told
    driver_seconds: float = 0.0  # time spent in ask/sample/submit/tell (not waiting)
    slot_busy_seconds: float = 0.0  # sum over trials of submit -> noticed done
    max_parallel: int = 1
    trial_seconds: list[float] = field(default_factory=list)  # inside the trial process
    intervals: list[tuple[int, float, float]] = field(default_factory=list)  # (trial, submitted, noticed done)

    @property
    def slot_utilization(self) -> float:
        """Busy slot-time / available slot-time over the loop (1.0 = a slot never waits on the driver)."""
        return self.slot_busy_seconds / (self.max_parallel * self.loop_seconds) if self.loop_seconds else 0.0
