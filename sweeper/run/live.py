"""The live view of a running study: each running trial's seed r/R, step s/S and last validation, and a line
for each trial that stops and why. The driver prints it to the terminal (stderr) and puts the same text in
the MLflow parent run's description (``mlflow.note.content``, :class:`sweeper.tracking.StudyTracker`).

    running: #3 seed 2/3 step 40/60 val/pass@8 0.512 (step 40) | #4 seed 1/3 step 12/60 no validation yet

The running trials come from their ``progress.json`` (:mod:`sweeper.run.trial.progress`); a line is printed
at most every ``interval`` seconds and only when it changed. Stops come from the driver when it reaps a trial
(the pruner's ``stop_reason`` user attr when it records one, else its prune reason and step).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from sweeper.contract import PROGRESS_FILE

MAX_STOPS = 20  # the most recent stops kept for the description


def read_progress(trial_dir: str | Path) -> dict[str, Any] | None:
    """A running trial's progress record, or None (not written yet, or half-read)."""
    try:
        record = json.loads((Path(trial_dir) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def progress_text(number: int, progress: dict[str, Any] | None) -> str:
    """``#3 seed 2/3 step 40/60 val/pass@8 0.512 (step 40)``; ``#3 starting`` before its first record."""
    if not progress:
        return f"#{number} starting"
    text = f"#{number} seed {progress.get('seed_index', 1)}/{progress.get('seeds', 1)} step {progress.get('step', 0)}/{progress.get('steps', '?')}"
    validation = progress.get("validation")
    if validation:
        return text + f" {validation['metric']} {validation['value']:.4g} (step {validation['step']})"
    return text + " no validation yet"


class LiveView:
    """What is running and what stopped (see the module docstring)."""

    def __init__(self, interval: float = 10.0):
        self.interval = interval
        self.stops: list[str] = []
        self._printed: str | None = None
        self._printed_at = 0.0

    def running(self, flights: Iterable[tuple[int, Path]]) -> str:
        parts = [progress_text(number, read_progress(trial_dir)) for number, trial_dir in sorted(flights)]
        return "running: " + (" | ".join(parts) if parts else "none")

    def tick(self, flights: Iterable[tuple[int, Path]], log: Callable[[str], None], now: float | None = None) -> bool:
        """Print the running line when ``interval`` has passed and it changed; True when printed."""
        now = time.time() if now is None else now
        if now - self._printed_at < self.interval:
            return False
        line = self.running(flights)
        self._printed_at = now
        if line == self._printed:
            return False
        self._printed = line
        log(line)
        return True

    def stopped(self, line: str) -> None:
        self.stops = (self.stops + [line])[-MAX_STOPS:]

    def note(self, flights: Iterable[tuple[int, Path]]) -> str:
        """The same view as text for the MLflow parent run's description."""
        lines = [self.running(flights)]
        if self.stops:
            lines += ["stopped (most recent last):"] + [f"- {line}" for line in self.stops]
        return "\n".join(lines)
