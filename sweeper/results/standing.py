"""Where each trial of a single-objective study stands: its paired gain over the best and over the baseline,
whether it is still in the race, and why it stopped.

* Gains of every complete trial, and of every trial stopped after finishing seeds (over those seeds)
  (:func:`sweeper.results.compare.paired_gain`, through :func:`sweeper.decisions.seed_gain`, the
  futility pruner's statistic) pair common training seeds, SE from the sd of a paired difference pooled
  over the configs compared against the same reference (:func:`sweeper.results.compare.study_pool`: the
  best for the gains over the best, the baseline for those over the baseline); without replicated
  configs, over the prompts of the common seed (training randomness not included: said so).
* In the race: a RUNNING (or waiting) trial; a COMPLETE trial not ruled out within ``delta`` of the best
  (:func:`sweeper.results.gains.ruled_out`: the ``1 - alpha`` upper bound of its gain over the best is
  below ``-delta``). ``delta`` and ``alpha`` come from the pruner's section when it has them (the futility
  pruner's ``delta``, ``alpha``), else from the command line (``--delta``); without a delta, no trial is
  ruled out on its score.
* Why it stopped: the pruner's stop reason (user attr ``stop_reason`` when the pruner records one, e.g.
  "stopped after seed 1: gain <= +0.012 (90% UCB) < delta 0.03"), else the prune reason with its step, the
  failure reason, or the trial whose result a duplicate config reuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweeper.contract import (ATTR_FAIL_REASON, ATTR_PRUNE_REASON, ATTR_PRUNED_AT_STEP, ATTR_REPLICATES, ATTR_SAME_CONFIG,
                              ATTR_RACE_END, ATTR_RACE_WAITING, ATTR_STOP_REASON, trial_state)
from sweeper.results.compare import Gain, Pool, baseline_trial, paired_gain, study_pool
from sweeper.results.gains import ruled_out, upper_bound
from sweeper.study.schema import SpecError

STOP_REASON_ATTRS = (ATTR_STOP_REASON,)   # read first when a pruner records its own reason
DEFAULT_ALPHA = 0.1


@dataclass(frozen=True)
class Standing:
    number: int
    state: str
    over_best: Gain | None
    over_baseline: Gain | None
    race: str               # "running", "in the race", "ruled out", "best", "stopped", "failed", ...
    why: str                # why it stopped or was ruled out ("" otherwise)
    same_as: int | None = None   # a duplicate config: the trial whose result it reuses


def race_settings(spec: Any, delta: float | None = None, alpha: float | None = None) -> tuple[float | None, float]:
    """``(delta, alpha)``: the given ones, else the pruner section's (``pruner.delta``, ``pruner.alpha``), else
    (None, 0.1)."""
    if delta is None:
        delta = getattr(spec.pruner, "delta", None)
    if alpha is None:
        alpha = getattr(spec.pruner, "alpha", None) or DEFAULT_ALPHA
    if delta is not None and delta < 0:
        raise SpecError(f"--delta must be >= 0 (the smallest gain worth finding, in the objective's units), got {delta}")
    return delta, alpha


def stop_text(trial: Any) -> str:
    """Why a trial stopped: its pruner's ``stop_reason``, else the prune reason and step, else the failure."""
    attrs = trial.user_attrs
    for key in STOP_REASON_ATTRS:
        if attrs.get(key):
            return str(attrs[key])
    if attrs.get(ATTR_PRUNE_REASON) == "futility" and attrs.get("prune_message"):
        return str(attrs["prune_message"])       # "stopped after seed 1: gain <= ... < delta 0.03 vs trial 0 ..."
    if attrs.get(ATTR_PRUNE_REASON):
        step = attrs.get(ATTR_PRUNED_AT_STEP)
        return f"{attrs[ATTR_PRUNE_REASON]}" + (f" at step {step}" if step is not None else "")
    return str(attrs.get(ATTR_FAIL_REASON) or "")


def _ruled_out_text(gain: Gain, delta: float, alpha: float) -> str | None:
    d = gain.difference
    df = gain.pool.df if gain.pool is not None else 0
    if not ruled_out(d.mean, d.se, df, delta, alpha):
        return None
    return f"gain over the best <= {upper_bound(d.mean, d.se, df, alpha):+.3g} ({100 * (1 - alpha):.0f}% UCB) < -delta {delta:g}"


def study_standings(spec: Any, study: Any, *, delta: float | None = None, alpha: float | None = None,
                    best: Any | None = None) -> tuple[dict[int, Standing], Any | None, Any | None, Pool]:
    """``(standings by trial number, best trial, baseline trial, pool)`` of a single-objective study (``pool``:
    the sd of a paired difference against the best, which the "ruled out" rule rests on)."""
    delta, alpha = race_settings(spec, delta, alpha)
    direction = spec.directions[0]
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    if best is None and complete:
        pick = max if direction == "maximize" else min
        best = pick(complete, key=lambda t: t.value)
    baseline = baseline_trial(study)
    pool = study_pool(trials, direction, best)
    base_pool = study_pool(trials, direction, baseline) if baseline is not None else pool
    out: dict[int, Standing] = {}
    for trial in trials:
        state = trial_state(trial)
        if state == "REJECTED":
            continue
        over_best = over_baseline = None
        seeded = state == "COMPLETE" or (state == "PRUNED" and trial.user_attrs.get(ATTR_REPLICATES))  # finished seeds
        if seeded and best is not None and trial.number != best.number:
            over_best = paired_gain(trial, best, direction, pool)
        if seeded and baseline is not None and trial.number != baseline.number:
            over_baseline = paired_gain(trial, baseline, direction, base_pool)
        why = ""
        if state in ("RUNNING", "WAITING"):
            race = state.lower()
            if trial.user_attrs.get(ATTR_RACE_WAITING):      # budget.race rounds (sweeper.run.race)
                race, why = "waits for its round", f"waits after {trial.user_attrs[ATTR_RACE_WAITING]}"
        elif state == "COMPLETE":
            same = trial.user_attrs.get(ATTR_SAME_CONFIG)
            if best is not None and trial.number == best.number:
                race = "best"
            elif over_best is not None and delta is not None and (text := _ruled_out_text(over_best, delta, alpha)):
                race, why = "ruled out", text
            else:
                race = "in the race" if delta is not None else "complete"
            if same is not None:
                why = (why + "; " if why else "") + f"same config as #{same}"
            if trial.user_attrs.get(ATTR_RACE_END):
                why = (why + "; " if why else "") + str(trial.user_attrs[ATTR_RACE_END])
        elif state == "PRUNED":
            race, why = "stopped", stop_text(trial)
        else:
            race, why = state.lower(), stop_text(trial)
        out[trial.number] = Standing(trial.number, state, over_best, over_baseline, race, why,
                                     trial.user_attrs.get(ATTR_SAME_CONFIG))
    return out, best, baseline, pool


def contenders(standings: dict[int, Standing]) -> list[int]:
    """The complete configs not ruled out within delta of the best (the best first, then by number; a duplicate
    config is listed once, under its first trial)."""
    keep = [s.number for s in standings.values() if s.state == "COMPLETE" and s.race != "ruled out" and s.same_as is None]
    best = [s.number for s in standings.values() if s.race == "best"]
    return best + sorted(n for n in keep if n not in best)
