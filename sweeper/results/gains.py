"""The gain of one config over another, paired by training seed, with the run-to-run variance pooled over
the study's replicated configs; and the rule that rules a config out of "within delta of the best".

Pure functions over plain numbers (scipy for the t quantile); no optuna.

* :func:`seed_gain` (re-exported from :mod:`sweeper.decisions`: the one gain statistic, which the
  futility pruner uses too): the gain ``a - b`` over the seeds both configs ran (always the *common*
  seeds, never "each one's first run": seed s of a and seed s of b share their random numbers), its
  standard error ``sd_diff / sqrt(n)`` with ``sd_diff`` the sd of one seed's paired difference pooled over
  the configs compared against the same reference (:func:`sweeper.decisions.difference_sd`, df =
  sum(n_i - 1)), and a Student-t interval on that df. Only when every config shares a single seed with
  the reference does it fall back, flagged, to ``sqrt(2)`` x the single-config sd (``sd * sqrt(2 / n)``).
* :func:`upper_bound` and :func:`ruled_out`: a config is *ruled out* of the set within ``delta`` of the best
  when the one-sided ``1 - alpha`` upper confidence bound of its gain over the best is below ``-delta``
  (it is shown to be more than delta worse); the others are interchangeable with the best at that
  resolution (docs: /work/shared/decisions.md, "configs within delta of each other are interchangeable").
"""

from __future__ import annotations

import math

from sweeper.decisions import SeedGain, seed_gain, t_upper  # noqa: F401 (re-exported)


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
