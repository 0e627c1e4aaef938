"""Statistics of trial results: the objective with its standard error, paired comparisons of two trials
over the same prompts (and seeds), and the one-sided Wilcoxon signed-rank test the paired pruner uses.

Every validation of a trial records one value per validation prompt (``per_prompt.jsonl``, see
``trainers.reporting``): pass@k, maj@k or mean@k of that prompt's n samples. All trials of a study
validate the same prompts with the same sampling seeds, so two trials are compared prompt by prompt.

* :func:`mean_and_se`: the mean of values and its standard error ``s / sqrt(n)`` (s with ddof 1).
* :class:`ObjectiveRule`: the one rule that turns a trial's validations into its objective (the reporter,
  the statistics, status and export all use it): :meth:`ObjectiveRule.value` over the validation values,
  :meth:`ObjectiveRule.per_prompt` over the per-prompt values.
* :func:`objective_per_prompt`: a trial's per-prompt objective, aggregated over its validations the way
  the objective is (``last``, ``mean_last_n``: per prompt, the mean of its last n values; ``best``: the
  values of the validation whose mean is best). Its mean is the objective; its standard error over
  prompts is the objective's SE for one seed.
* :func:`replicate_summary`: R seeds of one config: the objective is the mean of the seeds' values; its SE
  is over the prompts of the one seed when R = 1, and over the seeds (``s / sqrt(R)``) when R >= 2: the
  training randomness plus the seed-by-prompt noise of the validation, on these fixed prompts. The
  prompts' own difficulty is left out when R >= 2: every config is validated on the same prompts, so it
  cancels in any comparison (``sweeper verify`` measures a gain on held-out prompts). Until issue 23 it
  was ``sqrt(SE_seeds^2 + SE_prompts^2)``, which counted the seed-by-prompt residual twice (in the seed
  means and in the per-prompt means) and added the prompt difficulty that paired comparisons cancel.
* :func:`paired_difference`: the mean of ``a_i - b_i`` over paired units (prompts, or seeds) with its SE
  and a 95% interval ``mean +- t_{0.975, n-1} SE`` (Student's t).
* :func:`wilcoxon_worse_p`: the p-value of the one-sided Wilcoxon signed-rank test that the paired
  differences ``a_i - b_i`` are shifted below 0, or below ``-margin`` ("a is worse than b", by more than
  the margin, for a maximized objective); zero differences are dropped (Wilcoxon's method), and p = 1
  when none is left.

Pure functions over plain sequences (scipy for the t and Wilcoxon distributions); no torch, no optuna.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

Aggregation = Literal["last", "best", "mean_last_n"]
Direction = Literal["maximize", "minimize"]


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error of the mean); the SE is NaN for fewer than 2 values."""
    count = len(values)
    if count == 0:
        raise ValueError("mean_and_se: no values")
    mean = sum(values) / count
    if count < 2:
        return mean, math.nan
    variance = sum((v - mean) ** 2 for v in values) / (count - 1)
    return mean, math.sqrt(variance / count)


def objective_per_prompt(vectors: Sequence[Sequence[float]], aggregation: Aggregation = "last", last_n: int = 3,
                         direction: str = "maximize") -> list[float]:
    """A trial's objective per prompt from its validations' per-prompt values (``vectors[v][p]``, in step
    order; every vector holds the same prompts in the same order)."""
    if not vectors:
        raise ValueError("objective_per_prompt: no validation")
    if len({len(v) for v in vectors}) != 1:
        raise ValueError("objective_per_prompt: the validations hold different numbers of prompts")
    if aggregation == "last":
        return list(vectors[-1])
    if aggregation == "best":
        means = [sum(v) / len(v) for v in vectors]
        pick = max if direction == "maximize" else min
        return list(vectors[means.index(pick(means))])
    tail = vectors[-last_n:]
    return [sum(column) / len(tail) for column in zip(*tail)]


@dataclass(frozen=True)
class ObjectiveRule:
    """One objective of a study, as its trials are scored: the validation ``metric``, its ``direction``, and
    how a trial's validations make its value (``aggregation``: the last one, the best one, or the mean of the
    last ``last_n``). Built from the study's ``objective`` section (:meth:`from_section`), whose schema
    (``sweeper.study.spec.ObjectiveSpec``) holds the defaults."""

    metric: str
    direction: Direction
    aggregation: Aggregation
    last_n: int

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> "ObjectiveRule":
        """From a validated ``objective`` section's dump (every field present; extra keys ignored)."""
        names = ("metric", "direction", "aggregation", "last_n")
        missing = [name for name in names if name not in section]
        if missing:
            raise ValueError(f"objective: {missing} missing from {dict(section)!r}; give a validated objective section")
        return cls(**{name: section[name] for name in names})

    def value(self, values: Sequence[float]) -> float | None:
        """The objective from a trial's validation values in step order (None: no validation)."""
        if not values:
            return None
        if self.aggregation == "last":
            return float(values[-1])
        if self.aggregation == "best":
            finite = [v for v in values if math.isfinite(v)]
            if not finite:
                return float(values[-1])
            return max(finite) if self.direction == "maximize" else min(finite)
        tail = values[-int(self.last_n):]
        return float(sum(tail) / len(tail))

    def per_prompt(self, vectors: Sequence[Sequence[float]]) -> list[float]:
        """The objective per prompt from the validations' per-prompt values (:func:`objective_per_prompt`)."""
        return objective_per_prompt(vectors, self.aggregation, self.last_n, self.direction)


@dataclass(frozen=True)
class Estimate:
    """A value with its standard error, over ``prompts`` prompts and ``seeds`` seeds."""

    value: float
    se: float
    prompts: int
    seeds: int = 1

    @property
    def basis(self) -> str:
        """What the SE rests on: ``64 prompts`` (one seed) or ``over 3 seeds, 64 prompts`` (R >= 2: the spread over
        training seeds on these prompts)."""
        return f"over {self.seeds} seeds, {self.prompts} prompts" if self.seeds > 1 else f"{self.prompts} prompts"

    def text(self, digits: int = 4) -> str:
        """``0.6134 ± 0.042 (64 prompts)``, ``... (over 3 seeds, 64 prompts)``; the value alone when its SE is unknown."""
        if not math.isfinite(self.se):
            return f"{self.value:.{digits}g}"
        return f"{self.value:.{digits}g} ± {self.se:.2g} ({self.basis})"


def replicate_summary(seed_values: Sequence[float], seed_vectors: Sequence[Sequence[float]]) -> Estimate:
    """One config run with R seeds: the mean of the seeds' objective values. Its SE: over the prompts of the
    one seed's per-prompt objective when R = 1; over the seeds when R >= 2 (``s / sqrt(R)``: the spread a
    comparison on the same prompts sees; the prompts' difficulty, common to every config, is not in it), but
    never below the part the seed-by-prompt noise alone gives, ``sqrt(mean_p s_p^2 / (R P))`` with ``s_p^2``
    prompt p's variance over the seeds (estimated on P (R - 1) df, where the seeds' spread has R - 1: two
    seeds that tie exactly would otherwise give an SE of 0)."""
    if len(seed_values) != len(seed_vectors) or not seed_values:
        raise ValueError("replicate_summary: one objective value and one per-prompt vector per seed")
    prompts = len(seed_vectors[0]) if seed_vectors[0] else 0
    if len(seed_values) == 1:
        return Estimate(float(seed_values[0]), mean_and_se(seed_vectors[0])[1] if prompts > 1 else math.nan, prompts, 1)
    value, seed_se = mean_and_se([float(v) for v in seed_values])
    vectors = [v for v in seed_vectors if v]
    if len(vectors) == len(seed_values) and prompts and all(len(v) == prompts for v in vectors):
        residual = sum(statistics.variance([v[p] for v in vectors]) for p in range(prompts)) / prompts
        seed_se = max(seed_se, math.sqrt(residual / (len(vectors) * prompts)))
    return Estimate(value, seed_se, prompts, len(seed_values))


@dataclass(frozen=True)
class PairedDifference:
    """mean of a_i - b_i over ``count`` paired units, its SE and a 95% interval."""

    mean: float
    se: float
    count: int
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """True when the 95% interval excludes 0."""
        return self.low > 0 or self.high < 0


def t_quantile(probability: float, degrees_of_freedom: int) -> float:
    from scipy.stats import t

    return float(t.ppf(probability, degrees_of_freedom))


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> PairedDifference:
    """a_i - b_i over paired units with a Student-t interval at ``level`` (NaN interval for one unit)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_difference: needs two equally long, non-empty sequences (got {len(a)} and {len(b)})")
    differences = [x - y for x, y in zip(a, b)]
    mean, se = mean_and_se(differences)
    if len(differences) < 2:
        return PairedDifference(mean, se, 1, math.nan, math.nan)
    half = t_quantile(0.5 + level / 2, len(differences) - 1) * se
    return PairedDifference(mean, se, len(differences), mean - half, mean + half)


def wilcoxon_worse_p(a: Sequence[float], b: Sequence[float], margin: float = 0.0) -> float:
    """p-value of the one-sided Wilcoxon signed-rank test that ``a - b`` is shifted below ``-margin``, over
    paired units (``margin`` > 0: "a is worse than b by more than the margin"; the test of ``a - b + margin``).

    Zero differences are dropped; with none left, p = 1 (no evidence). Exact null distribution for fewer
    than 50 nonzero differences without ties, the normal approximation (with tie correction) otherwise
    (scipy's ``method="auto"``)."""
    if len(a) != len(b):
        raise ValueError(f"wilcoxon_worse_p: paired sequences differ in length ({len(a)} and {len(b)})")
    differences = [d for d in (x - y + margin for x, y in zip(a, b)) if d != 0]
    if not differences:
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(differences, alternative="less", zero_method="wilcox").pvalue)
