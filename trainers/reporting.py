"""The one way metrics leave the trainer: a Reporter.

The trainer calls ``on_train_step`` after every rollout step (keys ``train/...``, ``entropy/...``,
``time/...``, method keys like ``siren/...``) and ``on_validation`` after each evaluation (keys
``val/...``: ``val/pass@1``, ``val/pass@8``, ``val/maj@8``, ``val/mean@8``, ``val/entropy``).
After each call it asks ``stop_reason()``: a non-None string stops training cleanly (pruning).

The sweeper and MLflow plug in by implementing this interface; the trainer never imports them.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping

PREEMPTED = "preempted"
"""A stop reason that asks the trainer to save a checkpoint before it stops (Slurm preemption)."""


class Reporter:
    """Base class: every hook is a no-op. Subclass and override what you need."""

    def on_start(self, run_info: Mapping[str, Any]) -> None:
        """Called once with {'config': dict, 'output_dir': str, 'resumed_from_step': int, 'num_processes': int}."""

    def on_train_step(self, step: int, metrics: Mapping[str, float]) -> None:
        pass

    def on_validation(self, step: int, metrics: Mapping[str, float]) -> None:
        pass

    def stop_reason(self) -> str | None:
        return None

    def on_end(self, summary: Mapping[str, Any]) -> None:
        """Called once with {'status': 'completed'|'stopped'|'failed', 'step': int, 'stop_reason': str|None, ...}."""


class ConsoleReporter(Reporter):
    """Prints a compact line per logged step and every validation."""

    KEYS = ("train/reward_mean", "train/entropy", "train/clip_frac_low", "train/clip_frac_high", "train/kl_old", "time/step")

    def __init__(self, every: int = 1, stream=None):
        self.every = every
        self.stream = stream or sys.stdout

    def on_train_step(self, step: int, metrics: Mapping[str, float]) -> None:
        if step % self.every:
            return
        parts = [f"{k.split('/', 1)[1]}={metrics[k]:.4g}" for k in self.KEYS if k in metrics]
        print(f"step {step:5d} " + " ".join(parts), file=self.stream, flush=True)

    def on_validation(self, step: int, metrics: Mapping[str, float]) -> None:
        parts = [f"{k}={v:.4g}" for k, v in sorted(metrics.items())]
        print(f"eval {step:5d} " + " ".join(parts), file=self.stream, flush=True)

    def on_end(self, summary: Mapping[str, Any]) -> None:
        print(f"end: {summary.get('status')} at step {summary.get('step')}"
              + (f" ({summary['stop_reason']})" if summary.get("stop_reason") else ""), file=self.stream, flush=True)


def _clean(value: float) -> float | str:
    value = float(value)
    return value if math.isfinite(value) else str(value)  # JSON has no NaN/inf


class JsonlReporter(Reporter):
    """Appends one JSON object per event to ``path``: {"kind": "train"|"val", "step": N, "time": t, ...metrics}."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _write(self, kind: str, step: int, metrics: Mapping[str, float]) -> None:
        record = {"kind": kind, "step": step, "time": time.time(), **{k: _clean(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_step(self, step: int, metrics: Mapping[str, float]) -> None:
        self._write("train", step, metrics)

    def on_validation(self, step: int, metrics: Mapping[str, float]) -> None:
        self._write("val", step, metrics)


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Read a JsonlReporter file back (non-finite values come back as floats)."""
    records = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        for key, value in record.items():
            if isinstance(value, str) and value in ("nan", "inf", "-inf"):
                record[key] = float(value)
        if kind is None or record["kind"] == kind:
            records.append(record)
    return records


class MultiReporter(Reporter):
    """Fans every hook out to several reporters; stops when any of them asks to."""

    def __init__(self, reporters: list[Reporter]):
        self.reporters = list(reporters)

    def on_start(self, run_info):
        for r in self.reporters:
            r.on_start(run_info)

    def on_train_step(self, step, metrics):
        for r in self.reporters:
            r.on_train_step(step, metrics)

    def on_validation(self, step, metrics):
        for r in self.reporters:
            r.on_validation(step, metrics)

    def stop_reason(self):
        for r in self.reporters:
            reason = r.stop_reason()
            if reason:
                return reason
        return None

    def on_end(self, summary):
        for r in self.reporters:
            r.on_end(summary)
