"""The gain of one config over another, paired by training seed, with the run-to-run variance pooled over
the study's replicated configs; and the rule that rules a config out of "within delta of the best".

Pure functions over plain numbers (scipy for the t quantile); no optuna.

* the run-to-run standard deviation they rest on is :func:`sweeper.decisions.pooled_sd` (pooled over the
  configs that ran 2 or more seeds, ``df = sum_i (R_i - 1)``), the one the pruners use.
* :func:`seed_gain`: the gain ``a - b`` over the seeds both configs ran (always the *common* seeds, never
  "each one's first run": seed s of a and seed s of b share their random numbers), its standard error
  ``sd * sqrt(2 / n)`` over n common seeds (``sd * sqrt(1/r_a + 1/r_b)`` with ``r_a = r_b = n``; the two
  means' variances add; the positive correlation common seeds give is left out, so the SE is on the safe
  side) and a Student-t interval with the pooled ``df``.
* :func:`upper_bound` and :func:`ruled_out`: a config is *ruled out* of the set within ``delta`` of the best
  when the one-sided ``1 - alpha`` upper confidence bound of its gain over the best is below ``-delta``
  (it is shown to be more than delta worse); the others are interchangeable with the best at that
  resolution (docs: /work/shared/decisions.md, "configs within delta of each other are interchangeable").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from sweeper.decisions import paired_by_seed, t_upper


@dataclass(frozen=True)
class SeedGain:
    """The mean gain over ``count`` common seeds, its SE from the pooled sd (``df`` degrees of freedom) and an
    interval at ``level`` (NaN bounds when the sd is unknown)."""

    mean: float
    se: float
    count: int
    df: int
    low: float
    high: float
    sd: float
    level: float = 0.95

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0."""
        return self.low > 0 or self.high < 0


def seed_gain(a: Mapping[int, float], b: Mapping[int, float], sd: float, df: int, level: float = 0.95) -> SeedGain | None:
    """``a - b`` paired over the seeds in both ``a`` and ``b`` (seed -> objective value, signed so that larger
    is better), with the SE ``sd * sqrt(2 / n)`` and a ``level`` Student-t interval on ``df`` degrees of
    freedom; None when the two share no seed."""
    pairs = paired_by_seed(a, b)
    if not pairs:
        return None
    count = len(pairs)
    mean = sum(x - y for _, x, y in pairs) / count
    se = sd * math.sqrt(2.0 / count) if df > 0 and math.isfinite(sd) else math.nan
    if not math.isfinite(se):
        return SeedGain(mean, se, count, df, math.nan, math.nan, sd, level)
    half = t_upper(0.5 + level / 2, df) * se
    return SeedGain(mean, se, count, df, mean - half, mean + half, sd, level)


def upper_bound(gain: float, se: float, df: int, alpha: float) -> float:
    """The one-sided ``1 - alpha`` upper confidence bound ``gain + t(1 - alpha, df) * se`` (the normal quantile
    when ``df`` is None or 0: an SE over many prompts)."""
    return gain + t_upper(1 - alpha, df or math.inf) * se


def ruled_out(gain: float, se: float, df: int, delta: float, alpha: float = 0.1) -> bool:
    """True when a config is shown to be more than ``delta`` worse than the best: the ``1 - alpha`` upper bound of
    its gain over the best is below ``-delta``. An unknown SE (NaN) rules nothing out."""
    if delta < 0:
        raise ValueError(f"delta must be >= 0 (the smallest gain worth finding, in the objective's units), got {delta}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not math.isfinite(se):
        return False
    return upper_bound(gain, se, df, alpha) < -delta
