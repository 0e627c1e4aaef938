"""The trial's progress, for the driver's live view: ``progress.json`` in the trial folder.

A reporter in the trial process (:class:`ProgressReporter`, one per seed) writes, atomically and at most
once a second on training steps (at once on a validation and at the end)::

    {"seed": 12, "seed_index": 2, "seeds": 3, "step": 40, "steps": 60,
     "validation": {"step": 40, "metric": "val/pass@8", "value": 0.512}, "time": 1.7e9}

``seed_index`` counts from 1. The driver reads it (:mod:`sweeper.run.live`); nothing else depends on it,
so a trial process that writes none (a custom entrypoint without the reporter) only shows no progress.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

from trainers.reporting import Reporter

from sweeper.contract import PROGRESS_FILE, atomic_write


class ProgressReporter(Reporter):
    """A trainer reporter writing ``progress.json`` (see the module docstring)."""

    def __init__(self, trial_dir: str | Path, seed: int, seed_index: int, seeds: int, steps: int, metric: str,
                 every_seconds: float = 1.0):
        self.path = Path(trial_dir) / PROGRESS_FILE
        self.state: dict[str, Any] = {"seed": int(seed), "seed_index": int(seed_index), "seeds": int(seeds), "step": 0,
                                      "steps": int(steps), "validation": None}
        self.metric = metric
        self.every_seconds = every_seconds
        self._written = 0.0

    def _write(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._written < self.every_seconds:
            return
        self._written = now
        try:
            atomic_write(self.path, json.dumps({**self.state, "time": now}))
        except OSError:
            pass  # progress is for display only: never stop a training for it

    def on_start(self, run_info: Mapping[str, Any]) -> None:
        self._write(force=True)

    def on_train_step(self, step: int, metrics: Mapping[str, float]) -> None:
        self.state["step"] = int(step)
        self._write()

    def on_validation(self, step: int, metrics: Mapping[str, float], per_prompt: Mapping[str, Any] | None = None) -> None:
        self.state["step"] = int(step)
        if self.metric in metrics:
            self.state["validation"] = {"step": int(step), "metric": self.metric, "value": float(metrics[self.metric])}
        self._write(force=True)

    def on_end(self, summary: Mapping[str, Any]) -> None:
        self.state["step"] = int(summary.get("step") or self.state["step"])
        self._write(force=True)
