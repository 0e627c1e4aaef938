"""The one way metrics leave the trainer: a Reporter.

The trainer calls ``on_train_step`` after every rollout step (keys ``train/...``, ``entropy/...``,
``time/...``, method keys like ``siren/...``) and ``on_validation`` after each evaluation (keys
``val/...``: ``val/pass@1``, ``val/pass@8``, ``val/maj@8``, ``val/mean@8``, ``val/entropy``, and the
standard error over prompts of each per-prompt metric, ``val/pass@8_se``...), with the validation's
per-prompt results (``per_prompt``, below). After each call it asks ``stop_reason()``: a non-None
string stops training cleanly (pruning).

Per-prompt results of one validation (a plain JSON-able dict, the same for every rank)::

    {"step": 25, "n_samples": 32, "k": [1, 8, 32], "eval_seed": 0,
     "prompt_digest": "3f2a...",          # identifies the validation prompts and their order
     "correct": [5, 0, 32, ...],          # correct samples out of n_samples, prompt by prompt
     "per_prompt": {"pass@1": [...], "maj@1": [...], "mean@1": [...], ..., "entropy": [...]}}

Every run that validates the same prompts (same ``prompt_digest``) with the same ``eval.seed`` draws its
samples from the same random numbers, so two runs are compared prompt by prompt (paired).
:class:`JsonlReporter` writes the metrics to ``metrics.jsonl`` and the per-prompt results to
``per_prompt.jsonl`` in the run's output folder.

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
METRICS_FILE = "metrics.jsonl"
"""The run's metrics stream in its output folder (one JSON object per train step and per validation)."""
PER_PROMPT_FILE = "per_prompt.jsonl"
"""The run's per-prompt validation results in its output folder (one JSON object per validation)."""

PerPrompt = Mapping[str, Any]


class Reporter:
    """Base class: every hook is a no-op. Subclass and override what you need."""

    def on_start(self, run_info: Mapping[str, Any]) -> None:
        """Called once with {'config': dict, 'output_dir': str, 'resumed_from_step': int, 'num_processes': int}."""

    def on_train_step(self, step: int, metrics: Mapping[str, float]) -> None:
        pass

    def on_validation(self, step: int, metrics: Mapping[str, float], per_prompt: PerPrompt | None = None) -> None:
        """``per_prompt``: the validation's per-prompt results (module docstring); None from trainers that have none."""

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

    def on_validation(self, step: int, metrics: Mapping[str, float], per_prompt: PerPrompt | None = None) -> None:
        parts = []
        for key, value in sorted(metrics.items()):
            if key.endswith("_se"):
                continue
            se = metrics.get(f"{key}_se")
            parts.append(f"{key}={value:.4g}" + (f"±{se:.2g}" if se is not None and math.isfinite(se) else ""))
        print(f"eval {step:5d} " + " ".join(parts), file=self.stream, flush=True)

    def on_end(self, summary: Mapping[str, Any]) -> None:
        print(f"end: {summary.get('status')} at step {summary.get('step')}"
              + (f" ({summary['stop_reason']})" if summary.get("stop_reason") else ""), file=self.stream, flush=True)


def _clean(value: float) -> float | str:
    value = float(value)
    return value if math.isfinite(value) else str(value)  # JSON has no NaN/inf


class JsonlReporter(Reporter):
    """Appends one JSON object per event to ``path``: {"kind": "train"|"val", "step": N, "time": t, ...metrics},
    and each validation's per-prompt results to ``per_prompt_path`` (default: ``per_prompt.jsonl`` beside it)."""

    def __init__(self, path: str | Path, per_prompt_path: str | Path | None = None):
        self.path = Path(path)
        self.per_prompt_path = Path(per_prompt_path) if per_prompt_path else self.path.with_name(PER_PROMPT_FILE)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _write(self, kind: str, step: int, metrics: Mapping[str, float]) -> None:
        record = {"kind": kind, "step": step, "time": time.time(), **{k: _clean(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_step(self, step: int, metrics: Mapping[str, float]) -> None:
        self._write("train", step, metrics)

    def on_validation(self, step: int, metrics: Mapping[str, float], per_prompt: PerPrompt | None = None) -> None:
        self._write("val", step, metrics)
        if per_prompt is not None:
            with self.per_prompt_path.open("a") as f:
                f.write(json.dumps(dict(per_prompt)) + "\n")


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


def read_per_prompt(path: str | Path) -> list[dict[str, Any]]:
    """Read a run's ``per_prompt.jsonl`` back: one dict per validation (module docstring), in step order."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_after(output_dir: str | Path, last_step: int) -> None:
    """Drop the records of steps after ``last_step`` from a run's metric files (a resumed run continues
    from its checkpoint's step, so the streams never hold a step twice)."""
    for name in (METRICS_FILE, PER_PROMPT_FILE):
        path = Path(output_dir) / name
        if not path.exists():
            continue
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
        path.write_text("".join(line + "\n" for line in kept))


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

    def on_validation(self, step, metrics, per_prompt=None):
        for r in self.reporters:
            r.on_validation(step, metrics, per_prompt)

    def stop_reason(self):
        for r in self.reporters:
            reason = r.stop_reason()
            if reason:
                return reason
        return None

    def on_end(self, summary):
        for r in self.reporters:
            r.on_end(summary)
