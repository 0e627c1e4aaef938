"""Decisions of a study, as pure functions: how far a config can still be better than the incumbent
(futility), whether it is shown worse (harm), and the run-to-run spread both rest on.

A config c has run r_c training seeds; its value is the mean of its seeds' objective values. Seeds are
common to every config (seed, seed + 1, ... of the base config), so two configs are paired by seed
number, never by replicate position (:func:`paired_by_seed`).

* :func:`pooled_sd`: the run-to-run standard deviation of the objective over training seeds, pooled over
  every replicated config (each config's sum of squares around its own mean; degrees of freedom
  ``df = sum(R_i - 1)``), optionally with a prior ``prior_sd`` weighted as ``prior_df`` degrees of
  freedom (``sweeper verify``'s spread, or the user's). The baseline runs all its seeds first, so its
  seeds are the first estimate.
* :func:`pooled_pair_sd`: the sd of one seed's difference between two configs, pooled over the configs
  paired with the baseline by seed (df = sum(n_c - 1)): under common seeds the seed's shared effect
  cancels, so it can be far below sqrt(2) x a single config's sd.
* :func:`difference_sd`: the sd a gain's SE rests on: :func:`pooled_pair_sd` when it has ``min_df`` df,
  else (every config paired with the reference on one seed only) the stated fallback ``sqrt(2)`` x the
  single-config sd of :func:`pooled_sd`, flagged ``paired=False`` (an upper bound when seeds correlate
  positively, as common seeds make them).
* :func:`seed_gain`: THE gain of config a over config b, used by the futility rule, ``export``,
  ``verify`` and ``status``: the mean of ``a_s - b_s`` over their n common seeds, SE
  ``difference_sd / sqrt(n)`` (the unpaired fallback gives ``sd * sqrt(2 / n)``), and a Student-t
  interval on the sd's df.
* :func:`prompt_seed_gain`: the gain of a over b from per-prompt results on R common seeds x P common
  prompts, with an SE for new seeds **and new prompts** (two-way random effects: seed, prompt x config
  interaction, residual). :func:`seed_gain` treats the prompts as fixed: prompt difficulty cancels in the
  pairing, the prompt x config interaction does not, so its interval speaks of these P prompts only.
* :func:`paired_gain` (common seeds, through :func:`seed_gain`) or :func:`unpaired_gain` (the sketch's
  form, each mean over its own seeds) give c's difference from the incumbent, its SE and the allowance for
  the incumbent being a selected maximum (a = 1 by default: one SE of the incumbent's own noise);
  :func:`gain_bound` adds them up to the upper confidence bound::

      g   = difference + allowance
      UCB = g + t(1 - alpha / K, df) * SE                 (K looks per config: Bonferroni)

  c is *futile* when ``UCB < delta`` (:func:`is_futile`): it is not shown able to be ``delta`` better.
  Guarantee (normal errors, a common sd): a config whose true gain over the incumbent is at least
  ``delta`` is stopped with probability at most ``alpha`` over its K looks.
* :func:`harm_p_value`: the one-sided p-value that c is worse than the incumbent by more than
  ``margin`` (objective units), from the mean difference and its SE (Student's t with the pooled sd's
  df, or the normal when the sd is known). It is 1 whenever c's mean is at least the incumbent's.
* :func:`harm_se`: the SE of a one-seed difference compared prompt by prompt: the prompts' SE combined
  with the run-to-run variance of two runs, ``sqrt(se_prompts^2 + 2 sd^2)`` (the per-prompt test cannot
  see training randomness: two seeds move every prompt the same way).

No optuna, no torch: the pruners (:mod:`sweeper.study.futility`, :mod:`sweeper.study.paired_pruner`), the
simulation of ``benchmarks/pruning_quality.py`` and the results code call these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence


def paired_by_seed(a: Mapping[int, float], b: Mapping[int, float]) -> list[tuple[int, float, float]]:
    """(seed, a's value, b's value) for every seed both ran, in seed order: pairs by seed number, never by
    the position of a replicate in either list."""
    return [(seed, float(a[seed]), float(b[seed])) for seed in sorted(set(a) & set(b), key=int)]


def seed_values(raw: Mapping[str, float] | Sequence[Mapping[str, object]] | None) -> dict[int, float]:
    """A trial's {seed: objective value} from the trial attr ``seed_values`` ({"0": 0.8, ...}) or from its
    ``replicates`` ([{"seed": 0, "values": [0.8, ...]}, ...]: the first objective); {} for None."""
    if not raw:
        return {}
    if isinstance(raw, Mapping):
        return {int(seed): float(value) for seed, value in raw.items() if value is not None and math.isfinite(float(value))}
    out: dict[int, float] = {}
    for record in raw:
        values = record.get("values") or []
        if values and values[0] is not None and math.isfinite(float(values[0])):
            out[int(record["seed"])] = float(values[0])
    return out


@dataclass(frozen=True)
class PooledSD:
    """The run-to-run sd and its degrees of freedom (0: no estimate, sd is NaN)."""

    sd: float
    df: int

    @property
    def known(self) -> bool:
        return self.df > 0 and math.isfinite(self.sd)


def pooled_sd(groups: Sequence[Sequence[float]], prior_sd: float | None = None, prior_df: int = 0) -> PooledSD:
    """The sd pooled over groups (one group per config: its seeds' values), df = sum(R_i - 1) over the
    groups with 2 or more values, plus ``prior_df`` degrees of freedom at ``prior_sd`` when given."""
    if prior_sd is not None and (prior_sd < 0 or not math.isfinite(prior_sd)):
        raise ValueError(f"pooled_sd: prior_sd must be a finite sd >= 0, got {prior_sd}")
    squares, df = 0.0, 0
    for values in groups:
        if len(values) < 2:
            continue
        mean = sum(values) / len(values)
        squares += sum((v - mean) ** 2 for v in values)
        df += len(values) - 1
    if prior_sd is not None and prior_df > 0:
        squares += prior_df * prior_sd ** 2
        df += prior_df
    return PooledSD(math.sqrt(squares / df), df) if df > 0 else PooledSD(math.nan, 0)


@lru_cache(maxsize=4096)
def t_upper(probability: float, df: float) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom (the normal for inf);
    cached: a study asks for a handful of (level, df) pairs, a simulation for them thousands of times."""
    from scipy.stats import norm, t

    return float(norm.ppf(probability)) if math.isinf(df) else float(t.ppf(probability, df))


@dataclass(frozen=True)
class GainBound:
    """A config's gain over the incumbent: the estimate (with the allowance), its SE, the upper bound."""

    gain: float
    se: float
    ucb: float
    quantile: float      # t(1 - alpha / K, df)
    level: float         # 1 - alpha / K: the one-sided level of one look

    def text(self, delta: float) -> str:
        """``gain <= +0.012 (95% UCB) < delta 0.03``."""
        relation = "<" if self.ucb < delta else ">="
        return f"gain <= {self.ucb:+.3g} ({100 * self.level:.3g}% UCB) {relation} delta {delta:g}"


def gain_bound(difference: float, se: float, allowance: float, df: float, alpha: float, looks: int = 1) -> GainBound:
    """The upper confidence bound of a gain: ``gain = difference + allowance`` (the allowance for the
    incumbent's selection), ``UCB = gain + t(1 - alpha / looks, df) * se``."""
    if not 0 < alpha < 1 or looks < 1:
        raise ValueError(f"gain_bound: alpha in (0, 1) and looks >= 1 (got {alpha}, {looks})")
    if se < 0 or allowance < 0:
        raise ValueError(f"gain_bound: se and allowance are >= 0 (got {se}, {allowance})")
    level = 1 - alpha / looks
    quantile = t_upper(level, df)
    gain = difference + allowance
    return GainBound(gain, se, gain + quantile * se, quantile, level)


def unpaired_gain(mean_c: float, seeds_c: int, mean_inc: float, seeds_inc: int, sd: float,
                  allowance: float = 1.0) -> tuple[float, float, float]:
    """(difference, SE, allowance term) from two means over their own seeds and a single config's
    run-to-run sd: ``mean_c - mean_inc``, ``sd * sqrt(1/r_c + 1/R_inc)``, ``a * sd / sqrt(R_inc)``."""
    if seeds_c < 1 or seeds_inc < 1:
        raise ValueError(f"unpaired_gain: both configs need a seed (got {seeds_c} and {seeds_inc})")
    return mean_c - mean_inc, sd * math.sqrt(1 / seeds_c + 1 / seeds_inc), allowance * sd / math.sqrt(seeds_inc)


@dataclass(frozen=True)
class DifferenceSD:
    """The sd of one seed's difference between two configs, its df, the configs it is pooled over, and
    whether it was measured on paired differences (False: the fallback sqrt(2) x a single config's sd)."""

    sd: float
    df: int
    configs: int
    paired: bool

    @property
    def known(self) -> bool:
        return self.df > 0 and math.isfinite(self.sd)

    @property
    def basis(self) -> str:
        """``sd of a paired difference 0.012 pooled over 3 configs vs the reference, 6 df`` (or the fallback)."""
        many = "s" if self.configs != 1 else ""
        if self.paired:
            return (f"sd of a paired difference {self.sd:.3g} pooled over {self.configs} config{many} vs the reference, "
                    f"{self.df} df")
        return (f"UNPAIRED fallback (fewer than 2 common seeds with the reference): sqrt(2) x run-to-run sd "
                f"{self.sd / math.sqrt(2):.3g} pooled over {self.configs} replicated config{many}, {self.df} df")


def difference_sd(configs: Mapping[object, Mapping[int, float]], reference: Mapping[int, float], min_df: int = 1,
                  prior_sd: float | None = None, prior_df: int = 0) -> DifferenceSD:
    """The sd of one seed's difference of two configs: :func:`pooled_pair_sd` of ``configs`` against the
    ``reference`` when it has at least ``min_df`` df; else ``sqrt(2)`` x :func:`pooled_sd` over the single
    configs' own seeds (``configs`` and the reference; ``prior_sd`` weighted ``prior_df``), ``paired=False``."""
    paired = pooled_pair_sd(configs, reference)
    if paired.df >= min_df:
        count = sum(1 for values in configs.values() if len(paired_by_seed(values, reference)) >= 2)
        return DifferenceSD(paired.sd, paired.df, count, True)
    groups = [list(reference.values())] + [list(values.values()) for values in configs.values()]
    single = pooled_sd(groups, prior_sd, prior_df if prior_sd is not None else 0)
    return DifferenceSD(math.sqrt(2) * single.sd, single.df, sum(1 for g in groups if len(g) >= 2), False)


@dataclass(frozen=True)
class SeedGain:
    """The mean gain over ``count`` common seeds, its SE, the df of its sd and an interval at ``level`` (NaN
    bounds when the sd is unknown); ``paired`` False when the SE rests on the unpaired fallback."""

    mean: float
    se: float
    count: int
    df: int
    low: float
    high: float
    sd: float
    level: float = 0.95
    paired: bool = True

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0."""
        return self.low > 0 or self.high < 0


def seed_gain(a: Mapping[int, float], b: Mapping[int, float], spread: DifferenceSD, level: float = 0.95) -> SeedGain | None:
    """``a - b`` paired over the seeds both ran (seed -> objective value, larger is better), SE
    ``spread.sd / sqrt(n)`` over the n common seeds, and a two-sided ``level`` Student-t interval on
    ``spread.df``; None when they share no seed."""
    pairs = paired_by_seed(a, b)
    if not pairs:
        return None
    count = len(pairs)
    mean = sum(x - y for _, x, y in pairs) / count
    if not spread.known:
        return SeedGain(mean, math.nan, count, spread.df, math.nan, math.nan, spread.sd, level, spread.paired)
    se = spread.sd / math.sqrt(count)
    half = t_upper(0.5 + level / 2, spread.df) * se
    return SeedGain(mean, se, count, spread.df, mean - half, mean + half, spread.sd, level, spread.paired)


@dataclass(frozen=True)
class PromptSeedGain:
    """The mean of the per-prompt differences over R seeds x P prompts, its SE over new seeds and new prompts
    (``df``: Satterthwaite), a two-sided ``level`` interval, the variance components (clipped at 0) and, for
    comparison, ``seed_se``: the SE over seeds alone, the prompts held fixed (what :func:`seed_gain` gives)."""

    mean: float
    se: float
    seeds: int
    prompts: int
    df: float
    low: float
    high: float
    seed_variance: float        # sigma^2_seed: a seed's effect on the difference, shared by its prompts
    prompt_variance: float      # sigma^2_prompt: the prompt x config interaction (prompt difficulty cancels)
    residual_variance: float    # sigma^2_e: seed x prompt, validation sampling
    seed_se: float
    level: float = 0.95

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0."""
        return self.low > 0 or self.high < 0


def prompt_seed_gain(differences: Sequence[Sequence[float]], level: float = 0.95) -> PromptSeedGain:
    """The gain of a over b from ``differences[s][i] = a - b`` on seed s and prompt i (R >= 2 common seeds x
    P >= 2 common prompts, the same prompts in the same order on every seed), generalizing over new seeds and
    new prompts.

    Model (two-way random effects, one value per cell): ``d_si = mu + a_s + b_i + e_si``, a_s ~ (0, s2_seed),
    b_i ~ (0, s2_prompt) (the prompt x config interaction), e_si ~ (0, s2_e). With d_s. and d_.i the seed and
    prompt means and d.. the grand mean, the ANOVA mean squares::

        MS_seed   = P sum_s (d_s. - d..)^2 / (R - 1)                      E = s2_e + P s2_seed
        MS_prompt = R sum_i (d_.i - d..)^2 / (P - 1)                      E = s2_e + R s2_prompt
        MS_e      = sum_si (d_si - d_s. - d_.i + d..)^2 / ((R-1)(P-1))    E = s2_e

    give ``s2_seed = max(0, (MS_seed - MS_e) / P)``, ``s2_prompt = max(0, (MS_prompt - MS_e) / R)``,
    ``s2_e = MS_e``, and::

        Var(d..) = s2_seed / R + s2_prompt / P + s2_e / (R P)
                 = (max(MS_seed, MS_e) + max(MS_prompt, MS_e) - MS_e) / (R P)
        SE = sqrt(Var(d..))

    This is never below the seed-only SE ``sqrt(MS_seed / (R P))`` (= sd of the seed means / sqrt(R), what
    :func:`seed_gain` gives on the same values) nor the prompt-only SE ``sqrt(MS_prompt / (R P))``. Its df:
    Satterthwaite's for the combination of mean squares in the last line, ``(sum c_k MS_k)^2 /
    sum (c_k MS_k)^2 / df_k`` (df_seed = R - 1, df_prompt = P - 1, df_e = (R-1)(P-1); a clipped component
    drops its term), and the interval ``mean +- t(0.5 + level / 2, df) SE``. With a negative MS_e term the
    Satterthwaite df can exceed the smaller df it rests on; with few seeds and a dominant seed variance it is
    near R - 1, the seed-only form's.
    """
    rows = [[float(v) for v in row] for row in differences]
    seeds = len(rows)
    prompts = len(rows[0]) if rows else 0
    if seeds < 2 or prompts < 2 or any(len(row) != prompts for row in rows):
        raise ValueError(f"prompt_seed_gain: needs R >= 2 seeds x P >= 2 prompts, every seed with the same prompts "
                         f"(got {seeds} rows of lengths {sorted({len(row) for row in rows})})")
    if not 0 < level < 1:
        raise ValueError(f"prompt_seed_gain: level must be in (0, 1), got {level}")
    grand = sum(map(sum, rows)) / (seeds * prompts)
    seed_means = [sum(row) / prompts for row in rows]
    prompt_means = [sum(row[i] for row in rows) / seeds for i in range(prompts)]
    df_seed, df_prompt = seeds - 1, prompts - 1
    df_e = df_seed * df_prompt
    ms_seed = prompts * sum((m - grand) ** 2 for m in seed_means) / df_seed
    ms_prompt = seeds * sum((m - grand) ** 2 for m in prompt_means) / df_prompt
    ms_e = sum((rows[s][i] - seed_means[s] - prompt_means[i] + grand) ** 2
               for s in range(seeds) for i in range(prompts)) / df_e
    cells = seeds * prompts
    terms = [(ms, df) for ms, df in ((ms_seed, df_seed), (ms_prompt, df_prompt)) if ms > ms_e]
    terms.append((ms_e * (1 - len(terms)), df_e))          # + MS_e, 0, or - MS_e (see the docstring)
    total = sum(term for term, _ in terms)
    variance = max(total, 0.0) / cells
    spread = sum(term ** 2 / df for term, df in terms if term)
    df = total ** 2 / spread if spread > 0 else math.inf
    se = math.sqrt(variance)
    half = t_upper(0.5 + level / 2, df) * se if se > 0 else 0.0
    return PromptSeedGain(grand, se, seeds, prompts, df, grand - half, grand + half,
                          max(0.0, (ms_seed - ms_e) / prompts), max(0.0, (ms_prompt - ms_e) / seeds), ms_e,
                          math.sqrt(ms_seed / cells), level)


def paired_gain(mine: Mapping[int, float], incumbent: Mapping[int, float], pair_sd: float,
                allowance: float = 1.0) -> tuple[float, float, float, int] | None:
    """(difference, SE, allowance term, common seeds) of c over the incumbent on the seeds both ran
    (:func:`seed_gain`): the mean of ``c_s - inc_s``, ``pair_sd / sqrt(n)`` with ``pair_sd`` the sd of one
    seed's difference of two configs, and ``a * pair_sd / sqrt(2 R_inc)`` (the incumbent's own noise over
    its R_inc seeds: a difference's variance is twice one config's). None when they share no seed."""
    gain = seed_gain(mine, incumbent, DifferenceSD(pair_sd, 1, 1, True))
    if gain is None:
        return None
    return gain.mean, gain.se, allowance * pair_sd / math.sqrt(2 * len(incumbent)), gain.count


def pooled_pair_sd(configs: Mapping[object, Mapping[int, float]], reference: Mapping[int, float]) -> PooledSD:
    """The sd of one seed's difference between two configs, pooled over the configs paired with the
    ``reference`` (the baseline) by seed: each config's differences ``c_s - ref_s`` around their mean,
    df = sum(n_c - 1) over configs with 2 or more common seeds. Under common seeds the shared part of a
    seed's effect cancels, so this is smaller than sqrt(2) x a single config's sd when seeds correlate."""
    groups = [[a - b for _, a, b in paired_by_seed(values, reference)] for values in configs.values()]
    return pooled_sd(groups)


def is_futile(bound: GainBound, delta: float) -> bool:
    """The config cannot be ``delta`` better than the incumbent (at this look's level)."""
    return bound.ucb < delta


def harm_se(se_prompts: float, run_sd: float) -> float:
    """SE of one run's mean difference from another run, compared over shared prompts:
    ``sqrt(se_prompts^2 + 2 run_sd^2)``."""
    return math.sqrt(se_prompts ** 2 + 2 * run_sd ** 2)


def harm_p_value(mean_difference: float, se: float, margin: float = 0.0, df: float = math.inf) -> float:
    """One-sided p-value of "c is worse than the incumbent by more than ``margin``" from c's mean minus the
    incumbent's (objective units, maximized) and its SE: ``P(T_df <= (mean_difference + margin) / se)``.
    1.0 when c's mean is at least the incumbent's, or when the SE is unknown or 0 and the difference is not
    below ``-margin``."""
    if margin < 0:
        raise ValueError(f"harm_p_value: margin must be >= 0, got {margin}")
    if mean_difference >= 0 or not math.isfinite(mean_difference):
        return 1.0
    if not math.isfinite(se) or se <= 0:
        return 0.0 if mean_difference < -margin and se == 0 else 1.0
    from scipy.stats import norm, t

    z = (mean_difference + margin) / se
    return float(norm.cdf(z)) if math.isinf(df) else float(t.cdf(z, df))
