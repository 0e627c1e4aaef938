"""The futility pruner (``pruner.type: futility``): stop a config that cannot be ``delta`` better than
the incumbent, and race configs over training seeds.

    pruner: {type: futility, delta: 0.03, alpha: 0.1}
    budget: {seeds: "1-3", ...}     # every config runs its first seed; the 2nd and 3rd only while in the race

A trial runs its config once per training seed (seed, seed + 1, ...; the same seeds in every trial, so
configs pair by seed). After each finished seed r with ``seeds_min <= r < seeds_max`` (a *seed look*)
and, with ``warmup_step``, at each validation of any seed from that step on (before the last step: a
*validation look*), the rule (:class:`FutilityRule`, pure) takes every trial's values:

* the reference: the baseline (without one, the other config with the most seeds); every config is
  ranked by its mean difference from the reference over their common seeds, and the incumbent is the
  best other config by that rank (running, complete or stopped; at a validation look, with every
  config's values at that step);
* the sd of one seed's difference between two configs, pooled over the configs paired with the
  reference (:func:`sweeper.decisions.pooled_pair_sd`, df = sum(n_c - 1)); until it has ``min_df`` df,
  sqrt(2) x the run-to-run sd of single configs pooled over every replicated config (the baseline runs
  all its seeds, so its seeds are the first estimate), with the prior ``sd`` (weight ``sd_df``) when
  given: an upper bound when seeds correlate positively; with neither, nothing stops
  (:func:`sweeper.decisions.difference_sd`: the same sd export, verify and status use);
* c's gain over the incumbent on their common seeds (:func:`sweeper.decisions.seed_gain`, the one gain
  statistic of the project) with the allowance ``allowance`` for the incumbent's selection, and its upper bound
  (:func:`sweeper.decisions.gain_bound`) with K = the looks a config can get (Bonferroni): the config
  stops when the bound is below ``delta``.

Never stopped: the baseline, and a config whose mean is at least the incumbent's.

Guarantee: a config whose true gain over the incumbent is at least ``delta`` is stopped with probability
at most ``alpha`` (normal errors with a common sd; at validation looks, also that the gap at a step does
not reverse later). ``benchmarks/pruning_quality.py simulate`` measures it over 200+ studies. A stopped
config is *not shown to be delta better*, never "worse": it is a PRUNED trial with prune_reason
``futility`` and the message ``stopped after seed 1: gain <= +0.012 (95% UCB) < delta 0.03 vs trial 0``.

Trial attrs read (written by the trial process): ``seed_values`` ({seed: objective}) after each finished
seed, ``seed_curve/<seed>`` ({step: value}) at each validation; a complete trial's ``replicates``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from sweeper.contract import (ATTR_BASELINE, ATTR_REJECTED, ATTR_REPLICATES, ATTR_SEED_VALUES,  # noqa: F401 (re-exported)
                              FUTILITY_PRUNE_REASON, SEED_CURVE_PREFIX, seed_curve_attr, trial_seed_values)
from sweeper.decisions import GainBound, difference_sd, gain_bound, is_futile, paired_by_seed, seed_gain, seed_values

PRUNE_REASON = FUTILITY_PRUNE_REASON


@dataclass(frozen=True)
class Look:
    """One judgment: stop or not, and why (``message``); ``bound`` None when no comparison was possible."""

    stop: bool
    message: str
    bound: GainBound | None = None
    incumbent: int | None = None


@dataclass(frozen=True)
class FutilityRule:
    """The rule over plain data (see the module docstring). ``looks``: K, the looks one config can get."""

    delta: float
    alpha: float = 0.1
    allowance: float = 1.0
    sd: float | None = None
    sd_df: int = 4
    min_df: int = 2
    looks: int = 1

    def judge(self, mine: Mapping[int, float], others: Mapping[int, Mapping[int, float]], baseline: bool = False,
              maximize: bool = True, reference: int | None = None) -> Look:
        """``mine``: {seed: value} of the config judged; ``others``: {trial number: {seed: value}};
        ``reference``: the baseline's trial number (None: the other config with the most seeds)."""
        if baseline:
            return Look(False, "the baseline is never stopped")
        others = {n: v for n, v in others.items() if v}
        if not mine or not others:
            return Look(False, "nothing to compare yet")
        sign = 1.0 if maximize else -1.0
        mine = {s: sign * v for s, v in mine.items()}
        others = {n: {s: sign * v for s, v in values.items()} for n, values in others.items()}
        if reference not in others:
            reference = max(others, key=lambda n: (len(others[n]), -n))
        base = others[reference]
        rest = {n: v for n, v in others.items() if n != reference}
        spread = difference_sd({**rest, "judged": mine}, base, self.min_df, self.sd, self.sd_df)
        if spread.df < self.min_df or not spread.known:
            return Look(False, f"run-to-run sd not known yet (df {spread.df} < {self.min_df}; pruner.sd gives a prior)")
        pair_sd, df, basis = spread.sd, spread.df, "paired" if spread.paired else "unpaired"
        if not paired_by_seed(mine, base):
            return Look(False, f"no seed in common with trial {reference} yet")
        rank = {n: (sum(a - b for _, a, b in paired_by_seed(v, base)) / max(1, len(paired_by_seed(v, base))))
                for n, v in rest.items() if paired_by_seed(v, base)}
        rank[reference] = 0.0
        incumbent = max(rank, key=rank.get)
        mine_rank = sum(a - b for _, a, b in paired_by_seed(mine, base)) / len(paired_by_seed(mine, base))
        if mine_rank >= rank[incumbent]:
            return Look(False, f"at least as good as the incumbent (trial {incumbent})", None, incumbent)
        gain = seed_gain(mine, others[incumbent], spread)
        if gain is None:
            return Look(False, f"no seed in common with the incumbent (trial {incumbent}) yet", None, incumbent)
        difference, se, common = gain.mean, gain.se, gain.count
        allowance = self.allowance * pair_sd / math.sqrt(2 * len(others[incumbent]))
        bound = gain_bound(difference, se, allowance, df, self.alpha, self.looks)
        return Look(is_futile(bound, self.delta), f"{bound.text(self.delta)} vs trial {incumbent} over {common} common "
                    f"seed{'s' if common > 1 else ''} (sd of a difference {pair_sd:.3g}, {basis}, {df} df)", bound, incumbent)


def trial_values_at(attrs: Mapping[str, Any], step: int) -> dict[int, float]:
    """{seed: the objective's validation value at ``step``} from the trial's seed curves."""
    out: dict[int, float] = {}
    for key, curve in attrs.items():
        if key.startswith(SEED_CURVE_PREFIX) and isinstance(curve, Mapping):
            value = curve.get(str(step))
            if value is not None and math.isfinite(float(value)):
                out[int(key[len(SEED_CURVE_PREFIX):])] = float(value)
    return out


def steps_used(attrs: Mapping[str, Any]) -> int:
    """Trial-steps a trial has trained, as far as its seed curves show (each seed: its last validation)."""
    return sum(max((int(s) for s in curve), default=0) for key, curve in attrs.items()
               if key.startswith(SEED_CURVE_PREFIX) and isinstance(curve, Mapping))


def race_looks(seeds_min: int, seeds_max: int, validation_steps: list[int] | None, warmup_step: int | None) -> int:
    """K: seed looks (after seeds seeds_min .. seeds_max - 1) plus validation looks (every seed's validations
    from ``warmup_step`` on, before its last step); at least 1."""
    looks = max(0, seeds_max - seeds_min)
    if warmup_step is not None and validation_steps:
        last = max(validation_steps)
        looks += seeds_max * sum(1 for step in validation_steps if warmup_step <= step < last)
    return max(1, looks)


def _optuna_base():
    import optuna

    return optuna.pruners.BasePruner


class FutilityPruner(_optuna_base()):
    """Optuna's face of :class:`FutilityRule`. ``prune()`` (Optuna's should_prune, the first seed's
    validations) answers validation looks; the trial process calls :meth:`after_seed` and
    :meth:`at_validation` directly for the other looks. ``last`` holds the latest :class:`Look`."""

    def __init__(self, delta: float, alpha: float = 0.1, allowance: float = 1.0, sd: float | None = None,
                 sd_df: int = 4, min_df: int = 2, warmup_step: int | None = None,
                 validation_steps: list[int] | None = None, seeds_min: int = 1, seeds_max: int = 1):
        if not delta > 0:
            raise ValueError(f"delta must be > 0 (the smallest gain worth finding, objective units), got {delta}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.delta, self.alpha, self.allowance, self.sd, self.sd_df, self.min_df = delta, alpha, allowance, sd, sd_df, min_df
        self.warmup_step = warmup_step
        self.validation_steps = sorted(validation_steps or [])
        self.last: Look | None = None
        self.set_race(seeds_min, seeds_max)

    def set_race(self, seeds_min: int, seeds_max: int) -> None:
        """The trial's seeds: at least ``seeds_min``, at most ``seeds_max`` (fixes K)."""
        self.seeds_min, self.seeds_max = max(1, seeds_min), max(1, seeds_max)
        self.rule = FutilityRule(self.delta, self.alpha, self.allowance, self.sd, self.sd_df, self.min_df,
                                 race_looks(self.seeds_min, self.seeds_max, self.validation_steps, self.warmup_step))

    def _others(self, trials: Any, number: int, values_of) -> dict[int, dict[int, float]]:
        others = {}
        for other in trials:
            if other.number == number or other.user_attrs.get(ATTR_REJECTED):
                continue
            values = values_of(other.user_attrs)
            if values:
                others[other.number] = values
        return others

    def _judge(self, study: Any, trial: Any, mine: dict[int, float], values_of) -> Look:
        import optuna

        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        trials = study.get_trials(deepcopy=False)
        reference = next((t.number for t in trials if t.user_attrs.get(ATTR_BASELINE) and t.number != trial.number), None)
        self.last = self.rule.judge(mine, self._others(trials, trial.number, values_of),
                                    bool(trial.user_attrs.get(ATTR_BASELINE)), maximize, reference)
        return self.last

    def after_seed(self, study: Any, frozen: Any, finished: int) -> Look | None:
        """The seed look after ``finished`` seeds of the trial ``frozen`` (a FrozenTrial, read after its
        ``seed_values`` were stored); None when no look is due (before seeds_min, after the last seed)."""
        if not self.seeds_min <= finished < self.seeds_max:
            return None
        return self._judge(study, frozen, trial_seed_values(frozen.user_attrs), trial_seed_values)

    def at_validation(self, study: Any, frozen: Any, step: int) -> Look | None:
        """The validation look at ``step`` (None when none is due: no warmup_step, before it, the last step)."""
        if self.warmup_step is None or step < self.warmup_step or (self.validation_steps and step >= max(self.validation_steps)):
            return None
        return self._judge(study, frozen, trial_values_at(frozen.user_attrs, step), lambda a: trial_values_at(a, step))

    def prune(self, study: Any, trial: Any) -> bool:
        """Optuna's interface (a FrozenTrial): the validation look at its last step."""
        step = trial.last_step
        look = self.at_validation(study, trial, step) if step is not None else None
        return bool(look and look.stop)

    def explain(self) -> str:
        return self.last.message if self.last else ""
