"""Pruning: Optuna's pruner from the spec, plus entropy-health rules that apply on top of any of them.

The Optuna pruner (median, successive halving, hyperband, wilcoxon, none) judges the objective's
intermediate values (reported at each validation) against other trials: a trial it stops records
``prune_reason = "pass@k"`` (whatever the objective metric is: the name says "the score curve").

The health rules judge a trial on its own metric histories, whatever the other trials did. Each is
a small class with one method, pure over the histories::

    rule.check(history) -> Verdict | None        # history: {metric name: [values in report order]}

>>> rule = EntropyCollapse(fraction=0.5, patience=2, metrics=["train/entropy"])
>>> rule.check({"train/entropy": [1.0, 0.6, 0.4]}) is None      # only one report below 0.5
True
>>> rule.check({"train/entropy": [1.0, 0.4, 0.3]}).reason
'entropy_collapse'

* :class:`EntropyCollapse` (``entropy_collapse``): a watched metric stays below ``fraction`` x its
  first value for ``patience`` consecutive reports of that metric (train metrics report each step,
  val metrics each validation).
* :class:`EntropyExplosion` (``entropy_explosion``): above ``multiple`` x its first value, likewise.
* :class:`NonFinite` (``nan``): the latest value of the loss or of any metric is NaN or +-inf.

The first value of a metric is its first finite report; a metric whose first value is 0 is not
judged by ratio rules. Non-finite values are left to :class:`NonFinite`.

Imports optuna only inside :func:`build_pruner`; the rules themselves are plain Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

PRUNE_REASONS = ("pass@k", "entropy_collapse", "entropy_explosion", "nan")


@dataclass(frozen=True)
class Verdict:
    reason: str      # one of PRUNE_REASONS
    message: str     # what was seen, for the trial's user attrs and logs


class HealthRule(Protocol):
    reason: str

    def check(self, history: Mapping[str, Sequence[float]]) -> Verdict | None: ...


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


class _RatioRule:
    """Shared logic: the last ``patience`` finite reports all beyond ``factor`` x the first one."""

    reason = ""
    word = ""

    def __init__(self, factor: float, patience: int, metrics: Sequence[str]):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if not metrics:
            raise ValueError("metrics must name at least one metric, e.g. ['train/entropy', 'val/entropy']")
        self.factor = float(factor)
        self.patience = int(patience)
        self.metrics = list(metrics)

    def _beyond(self, value: float, threshold: float) -> bool:
        raise NotImplementedError

    def check(self, history: Mapping[str, Sequence[float]]) -> Verdict | None:
        for metric in self.metrics:
            values = _finite(history.get(metric, ()))
            if len(values) < self.patience + 1 or values[0] == 0:
                continue
            initial = values[0]
            threshold = self.factor * initial
            recent = values[-self.patience:]
            if all(self._beyond(v, threshold) for v in recent):
                return Verdict(
                    self.reason,
                    f"{metric} {self.word} {self.factor:g} x its first value {initial:.4g} "
                    f"(threshold {threshold:.4g}) for {self.patience} consecutive reports: "
                    + ", ".join(f"{v:.4g}" for v in recent),
                )
        return None


class EntropyCollapse(_RatioRule):
    """Entropy collapsed: below ``fraction`` x its first value for ``patience`` consecutive reports."""

    reason = "entropy_collapse"
    word = "below"

    def __init__(self, fraction: float = 0.3, patience: int = 3, metrics: Sequence[str] = ("train/entropy", "val/entropy")):
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        super().__init__(fraction, patience, metrics)

    def _beyond(self, value: float, threshold: float) -> bool:
        return value < threshold


class EntropyExplosion(_RatioRule):
    """Entropy exploded: above ``multiple`` x its first value for ``patience`` consecutive reports."""

    reason = "entropy_explosion"
    word = "above"

    def __init__(self, multiple: float = 3.0, patience: int = 3, metrics: Sequence[str] = ("train/entropy", "val/entropy")):
        if multiple <= 1:
            raise ValueError(f"multiple must be > 1, got {multiple}")
        super().__init__(multiple, patience, metrics)

    def _beyond(self, value: float, threshold: float) -> bool:
        return value > threshold


class NonFinite:
    """The latest value of the loss or any metric (or of ``metrics`` if given) is NaN or inf."""

    reason = "nan"

    def __init__(self, metrics: Sequence[str] | None = None):
        self.metrics = list(metrics) if metrics is not None else None

    def check(self, history: Mapping[str, Sequence[float]]) -> Verdict | None:
        names = self.metrics if self.metrics is not None else list(history)
        for name in names:
            values = history.get(name)
            if not values:
                continue
            last = values[-1]
            try:
                bad = last is None or not math.isfinite(float(last))
            except (TypeError, ValueError):
                continue
            if bad:
                return Verdict(self.reason, f"{name} is {last} at report {len(values)}")
        return None


def health_rules(health: Any) -> list[HealthRule]:
    """The rules a spec's ``pruner.health`` section asks for (NaN first: it explains the others)."""
    rules: list[HealthRule] = []
    if health is None:
        return rules
    if health.nan:
        rules.append(NonFinite())
    if health.collapse is not None:
        c = health.collapse
        rules.append(EntropyCollapse(c.fraction, c.patience, c.metrics))
    if health.explosion is not None:
        e = health.explosion
        rules.append(EntropyExplosion(e.multiple, e.patience, e.metrics))
    return rules


def first_verdict(rules: Sequence[HealthRule], history: Mapping[str, Sequence[float]]) -> Verdict | None:
    for rule in rules:
        verdict = rule.check(history)
        if verdict is not None:
            return verdict
    return None


def build_pruner(pruner: Any, trial_steps: int | None = None):
    """The Optuna pruner for a spec's ``pruner`` section. Built identically in the driver and in
    every trial process (Optuna does not store the pruner in the storage)."""
    import optuna

    kind = pruner.type
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner.n_startup_trials,
            n_warmup_steps=pruner.n_warmup_steps,
            interval_steps=pruner.interval_steps,
            n_min_trials=pruner.n_min_trials,
        )
    if kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=pruner.min_resource,
            reduction_factor=pruner.reduction_factor,
            min_early_stopping_rate=pruner.min_early_stopping_rate,
            bootstrap_count=pruner.bootstrap_count,
        )
    if kind == "hyperband":
        max_resource = pruner.max_resource if pruner.max_resource is not None else (trial_steps or "auto")
        return optuna.pruners.HyperbandPruner(
            min_resource=pruner.min_resource,
            max_resource=max_resource,
            reduction_factor=pruner.reduction_factor,
            bootstrap_count=pruner.bootstrap_count,
        )
    if kind == "wilcoxon":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=pruner.p_threshold, n_startup_steps=pruner.n_startup_steps)
    raise ValueError(f"pruner.type {kind!r} is not known")
