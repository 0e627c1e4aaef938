"""Pruning: the ``pruner`` section's schema, Optuna's pruner built from it, and the entropy-health
rules that apply on top of any pruner.

The Optuna pruner (``median``, ``successive_halving``, ``hyperband``, ``wilcoxon``, ``none``) judges the
objective's intermediate values (reported at each validation) against other trials: a trial it stops
records ``prune_reason = "pass@k"`` (whatever the objective metric is: the name says "the score
curve"). Each kind's fields are the Optuna pruner's own arguments (same names), passed through by
:func:`build_pruner`. ``paired`` (:mod:`sweeper.study.paired_pruner`) compares a trial's per-prompt results with
the incumbent's at the same step (a test of the mean difference with the run-to-run variance);
``futility`` (:mod:`sweeper.study.futility`) stops configs that cannot be ``delta`` better and races seeds.

The health rules (``pruner.health``) judge a trial on its own metric histories, whatever the other
trials did. Each rule is its own spec (frozen, validated) with one method, pure over the histories::

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
import warnings
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Mapping, Protocol, Sequence, Union

from pydantic import Field, field_validator, model_validator

from sweeper.study.schema import SpecModel

PRUNE_REASONS = ("pass@k", "entropy_collapse", "entropy_explosion", "nan", "futility")
DEFAULT_ENTROPY_METRICS = ("train/entropy", "val/entropy")


@dataclass(frozen=True)
class Verdict:
    reason: str      # one of PRUNE_REASONS
    message: str     # what was seen, for the trial's user attrs and logs


class HealthRule(Protocol):
    reason: str

    def check(self, history: Mapping[str, Sequence[float]]) -> Verdict | None: ...


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


class _RatioRule(SpecModel):
    """Shared logic: the last ``patience`` finite reports all beyond ``factor`` x the first one."""

    reason: ClassVar[str] = ""
    word: ClassVar[str] = ""

    @property
    def factor(self) -> float:
        raise NotImplementedError

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
    fraction: float = Field(0.3, gt=0, lt=1, description="Collapse when the metric is below fraction x its first value...")
    patience: int = Field(3, gt=0, description="...for this many consecutive reports of that metric.")
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_ENTROPY_METRICS), min_length=1)

    @property
    def factor(self) -> float:
        return self.fraction

    def _beyond(self, value: float, threshold: float) -> bool:
        return value < threshold


class EntropyExplosion(_RatioRule):
    """Entropy exploded: above ``multiple`` x its first value for ``patience`` consecutive reports."""

    reason = "entropy_explosion"
    word = "above"
    multiple: float = Field(3.0, gt=1, description="Explosion when the metric is above multiple x its first value...")
    patience: int = Field(3, gt=0, description="...for this many consecutive reports of that metric.")
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_ENTROPY_METRICS), min_length=1)

    @property
    def factor(self) -> float:
        return self.multiple

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


class HealthSpec(SpecModel):
    """``pruner.health``: ``collapse`` and ``explosion`` are the rules themselves (``true`` = defaults)."""

    collapse: EntropyCollapse | None = None
    explosion: EntropyExplosion | None = None
    nan: bool = Field(True, description="Prune a trial whose loss or any metric becomes NaN or inf.")

    @field_validator("collapse", "explosion", mode="before")
    @classmethod
    def _bool_shorthand(cls, value: Any) -> Any:
        if value is True:
            return {}
        if value is False:
            return None
        return value


def health_rules(health: HealthSpec | None) -> list[HealthRule]:
    """The rules a spec's ``pruner.health`` section asks for (NaN first: it explains the others)."""
    if health is None:
        return []
    rules: list[HealthRule] = [NonFinite()] if health.nan else []
    return rules + [rule for rule in (health.collapse, health.explosion) if rule is not None]


def first_verdict(rules: Sequence[HealthRule], history: Mapping[str, Sequence[float]]) -> Verdict | None:
    for rule in rules:
        verdict = rule.check(history)
        if verdict is not None:
            return verdict
    return None


# --------------------------------------------------------------------------- Optuna pruners


class PrunerSpecBase(SpecModel):
    """What every ``pruner`` section has. A kind adds ``type: Literal[name]`` and its fields and is listed in
    :data:`sweeper.registry.PRUNERS`; :meth:`build` makes the pruner from the section plus the trial's
    steps and validation steps (the default passes the fields to ``optuna.pruners.<optuna_class>``)."""

    optuna_class: ClassVar[str]
    prunes: ClassVar[bool] = True  # False: never stops a trial on its score (type none; the health rules still apply)
    judges_validations: ClassVar[bool] = True  # the trial reports each validation to the pruner (Optuna's should_prune)
    health: HealthSpec = Field(default_factory=HealthSpec)

    def problems_for(self, trial_steps: int) -> list[str]:
        """What makes this pruner useless for trials of at most ``trial_steps`` steps (``sweeper validate``)."""
        return []

    def describe(self) -> str:
        """One line for ``sweeper validate``: the type and its own fields."""
        options = {k: v for k, v in self.model_dump().items() if k not in ("type", "health")}
        return self.type + (" (" + ", ".join(f"{k} {v}" for k, v in options.items()) + ")" if options else "")

    def optuna_arguments(self, trial_steps: int | None) -> dict[str, Any]:
        """The Optuna pruner's arguments: this spec's own fields."""
        return self.model_dump(exclude={"type", "health"})

    def build(self, trial_steps: int | None, validation_steps: list[int] | None) -> Any:
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return getattr(optuna.pruners, self.optuna_class)(**self.optuna_arguments(trial_steps))


class NoPrunerSpec(PrunerSpecBase):
    optuna_class = "NopPruner"
    prunes = False
    type: Literal["none"]


class MedianPrunerSpec(PrunerSpecBase):
    optuna_class = "MedianPruner"
    type: Literal["median"]
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    interval_steps: int = Field(1, gt=0)
    n_min_trials: int = Field(1, gt=0)

    def problems_for(self, trial_steps: int) -> list[str]:
        if self.n_warmup_steps < trial_steps:
            return []
        return [f"pruner.n_warmup_steps: {self.n_warmup_steps} is not below the trial's {trial_steps} steps: the median "
                f"pruner would never prune; give fewer warm-up steps, or pruner: none"]


class SuccessiveHalvingPrunerSpec(PrunerSpecBase):
    optuna_class = "SuccessiveHalvingPruner"
    type: Literal["successive_halving"]
    min_resource: int | Literal["auto"] = Field("auto", description="Steps before the first rung (>= 1), or auto.")
    reduction_factor: int = Field(4, ge=2)
    min_early_stopping_rate: int = Field(0, ge=0)
    bootstrap_count: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _as_optuna_checks(self) -> "SuccessiveHalvingPrunerSpec":
        # Optuna raises these only when the pruner is built, in the driver, after the study started
        if isinstance(self.min_resource, int) and self.min_resource < 1:
            raise ValueError(f"min_resource: {self.min_resource} is not a number of steps; give 1 or more, or auto")
        if self.bootstrap_count > 0 and self.min_resource == "auto":
            raise ValueError(f"bootstrap_count: {self.bootstrap_count} needs a fixed min_resource (Optuna cannot "
                             f"combine it with min_resource: auto); give min_resource, or bootstrap_count: 0")
        return self


    def problems_for(self, trial_steps: int) -> list[str]:
        if not isinstance(self.min_resource, int) or self.min_resource <= trial_steps:
            return []
        return [f"pruner.min_resource: {self.min_resource} is beyond the trial's {trial_steps} steps: no trial reaches the "
                f"first rung, so nothing would be pruned; give at most {trial_steps}"]


class HyperbandPrunerSpec(PrunerSpecBase):
    optuna_class = "HyperbandPruner"
    type: Literal["hyperband"]
    min_resource: int = Field(1, gt=0)
    max_resource: int | Literal["auto"] | None = Field(None, description="None = the trial's train.steps.")
    reduction_factor: int = Field(3, ge=2)
    bootstrap_count: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _as_optuna_checks(self) -> "HyperbandPrunerSpec":
        # Optuna builds no bracket when max_resource < min_resource: the pruner would silently never prune
        if isinstance(self.max_resource, int) and self.max_resource < self.min_resource:
            raise ValueError(f"max_resource: {self.max_resource} is below min_resource ({self.min_resource}): "
                             f"Hyperband would have no bracket and never prune; give max_resource >= min_resource")
        if self.bootstrap_count > 0 and self.max_resource == "auto":
            raise ValueError(f"bootstrap_count: {self.bootstrap_count} needs a known max_resource (Optuna cannot combine "
                             f"it with max_resource: auto); leave max_resource out (= the trial's steps) or give a number")
        return self

    def optuna_arguments(self, trial_steps: int | None) -> dict[str, Any]:
        arguments = super().optuna_arguments(trial_steps)
        if self.max_resource is None:
            arguments["max_resource"] = trial_steps or "auto"
        return arguments

    def problems_for(self, trial_steps: int) -> list[str]:
        if not isinstance(self.min_resource, int) or self.min_resource <= trial_steps:
            return []
        return [f"pruner.min_resource: {self.min_resource} is beyond the trial's {trial_steps} steps: no trial reaches the "
                f"first rung, so nothing would be pruned; give at most {trial_steps}"]


class WilcoxonPrunerSpec(PrunerSpecBase):
    optuna_class = "WilcoxonPruner"
    type: Literal["wilcoxon"]
    p_threshold: float = Field(0.1, gt=0, lt=1)
    n_startup_steps: int = Field(2, ge=0)


class PairedPrunerSpec(PrunerSpecBase):
    """Prune a trial worse than the incumbent at the same step, by a paired test over the validation prompts."""

    type: Literal["paired"]
    p_threshold: float = Field(0.05, gt=0, lt=1, description="Prune when the one-sided p-value is below this "
                               "(divided by the validations judged, with the Bonferroni correction).")
    n_startup_trials: int = Field(1, ge=1, description="Complete trials before any pruning (the first incumbent).")
    n_warmup_steps: int = Field(0, ge=0, description="Validations before this step are not judged.")
    correction: Literal["bonferroni", "none"] = Field("bonferroni", description="Over the validations a trial is judged at.")
    min_difference: float = Field(0.0, ge=0, description="Prune only a trial whose mean is worse than the incumbent's "
                                  "by more than this (objective units).")
    run_sd: float | None = Field(None, ge=0, description="The run-to-run sd of the objective (sweeper verify's); None = "
                                 "pooled over the study's replicated trials (budget.seeds >= 2); with neither, no pruning.")
    allowance: float = Field(1.0, ge=0, description="The incumbent's selection allowance, in its SEs over seeds.")

    def build(self, trial_steps: int | None, validation_steps: list[int] | None) -> Any:
        from sweeper.study.paired_pruner import PairedPruner

        return PairedPruner(self.p_threshold, self.n_startup_trials, self.n_warmup_steps, self.correction, validation_steps,
                            self.min_difference, self.run_sd, self.allowance)


class FutilityPrunerSpec(PrunerSpecBase):
    """Stop a config that cannot be ``delta`` better than the incumbent (:mod:`sweeper.study.futility`)."""

    judges_validations = False  # it looks after each seed (and at validations) through its own rule, not should_prune

    type: Literal["futility"]
    delta: float = Field(..., gt=0, description="The smallest gain worth finding, in the objective's units.")
    alpha: float = Field(0.1, gt=0, lt=1, description="At most this chance of stopping a config delta better.")
    allowance: float = Field(1.0, ge=0, description="Incumbent's selection allowance, in its SEs (sd / sqrt(R)).")
    sd: float | None = Field(None, gt=0, description="A prior run-to-run sd of the objective (e.g. sweeper verify's).")
    sd_df: int = Field(4, ge=1, description="The prior sd's weight, in degrees of freedom.")
    min_df: int = Field(2, ge=1, description="Without a prior: no stop before the pooled sd has this many df.")
    warmup_step: int | None = Field(None, ge=1, description="Also look at validations from this step on (None: "
                                    "only after each seed).")

    def build(self, trial_steps: int | None, validation_steps: list[int] | None) -> Any:
        from sweeper.study.futility import FutilityPruner

        return FutilityPruner(**self.model_dump(exclude={"type", "health"}), validation_steps=validation_steps)


PrunerSpec = Annotated[  # the built-in kinds (the spec and the trial read sweeper.registry.PRUNERS, which may hold more)
    Union[NoPrunerSpec, MedianPrunerSpec, SuccessiveHalvingPrunerSpec, HyperbandPrunerSpec, WilcoxonPrunerSpec,
          PairedPrunerSpec, FutilityPrunerSpec],
    Field(discriminator="type"),
]


def build_pruner(pruner: Any, trial_steps: int | None = None, validation_steps: list[int] | None = None):
    """The Optuna pruner for a spec's ``pruner`` section. Built identically in the driver and in
    every trial process (Optuna does not store the pruner in the storage). ``validation_steps``: the steps a
    trial validates at (the paired pruner's Bonferroni correction; the trial process passes them)."""
    return pruner.build(trial_steps, validation_steps)
