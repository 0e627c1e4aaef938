"""Comparing two complete trials of a study: the paired gain of one over the other, with a 95% interval.

A study's *baseline* is the config every result is measured against: ``objective.baseline`` (parameter
values, like an ``enqueue`` entry), else the first ``enqueue`` entry. The driver runs it first and marks
its trial (user attr ``baseline``); score-based pruners leave it alone (health rules do not), so that it
ends with a complete result.

:func:`paired_gain` pairs the two trials' results by training seed, always over the seeds **both** ran
(a seed of one and the same seed of the other share their random numbers; the n-th runs of two trials
need not: sweeper.results.gains):

* over seeds, when the run-to-run spread is known: :func:`sweeper.decisions.seed_gain`, the one gain
  statistic (the futility pruner's too): the mean gain over the common seeds, SE = the sd of one seed's
  paired difference (``pool``: :func:`study_pool`, pooled over the configs compared against the same
  reference, df = sum(n_i - 1); by default the two trials alone) / sqrt(n), a Student-t interval on that
  df. With a single common seed per config it falls back, and says so, to sqrt(2) x the single-config sd
  pooled over replicated configs. This interval includes the run-to-run randomness of training;
* else (every config ran one seed) over the validation prompts of the common seed(s) (same prompts, same
  sampling seeds): the differences of each prompt's objective. This interval covers the prompts and the
  validation sampling, **not** the training randomness of a single run: two seeds of one config can differ
  by more. ``sweeper verify`` reruns both configs with fresh seeds to measure that.

A gain of a config *chosen* as the best on these same seeds and prompts (``selected``) is biased upwards
(the winner's curse): its text says so instead of calling it significant; ``sweeper verify`` measures it
on held-out prompts with fresh seeds.

The gain is signed so that a positive gain is an improvement (``a - b`` for a maximized objective,
``b - a`` for a minimized one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweeper.contract import ATTR_BASELINE, ATTR_REPLICATES, ATTR_SAME_CONFIG
from sweeper.decisions import DifferenceSD, SeedGain, difference_sd, seed_gain
from sweeper.statistics import PairedDifference, paired_difference

SELECTION_BIAS = ("selection-biased: chosen as the best on these same seeds and prompts, so the gain is biased upwards "
                  "(winner's curse); `sweeper verify` measures it on held-out prompts with fresh seeds")


Pool = DifferenceSD   # the sd a gain's SE rests on: one seed's paired difference, pooled (sweeper.decisions)


@dataclass(frozen=True)
class Gain:
    """The paired gain of trial ``better`` over trial ``reference`` (positive: an improvement)."""

    better: int
    reference: int
    difference: PairedDifference | SeedGain
    unit: str            # "seeds" or "prompts"
    pool: Pool | None = None
    selected: bool = False

    def text(self) -> str:
        d = self.difference
        if self.selected:
            verdict = SELECTION_BIAS
        else:
            verdict = "significant" if d.significant else "NOT significant: the interval includes 0"
        if self.unit == "seeds":
            basis = f"paired over {d.count} common seed{'s' if d.count != 1 else ''}; {self.pool.basis}"
        else:
            basis = f"paired over {d.count} prompts of the common seed, one run each: training randomness not included"
        return f"{d.mean:+.4g} [{d.low:+.3g}, {d.high:+.3g}] (95% interval, {basis}; {verdict})"


def baseline_trial(study: Any) -> Any | None:
    """The study's complete baseline trial (the newest if it was re-queued), or None."""
    marked = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(ATTR_BASELINE) and t.state.name == "COMPLETE"]
    return marked[-1] if marked else None


def seed_values(trial: Any, direction: str = "maximize", index: int = 0) -> dict[int, float]:
    """seed -> the trial's objective ``index`` on that seed, signed so that larger is better."""
    sign = 1.0 if direction == "maximize" else -1.0
    return {int(r["seed"]): sign * float(r["values"][index]) for r in trial.user_attrs.get(ATTR_REPLICATES) or []}


def study_pool(trials: Any, direction: str = "maximize", reference: Any | None = None) -> Pool:
    """The sd of one seed's paired difference, pooled over the complete ``trials`` (and the finished seeds of
    stopped ones, as the futility pruner pools them) compared against
    ``reference`` (default: the study's baseline among them, else the one with the most seeds), df =
    sum(n_i - 1) over their common seeds; with no config sharing 2 seeds with it, the flagged fallback
    sqrt(2) x the single-config sd pooled over the replicated trials (:func:`sweeper.decisions.difference_sd`).
    A duplicate that reuses another trial's result is counted once."""
    complete = [t for t in trials if (t.state.name == "COMPLETE" or (t.state.name == "PRUNED" and t.user_attrs.get(ATTR_REPLICATES)))
                and t.user_attrs.get(ATTR_SAME_CONFIG) is None]   # a stopped trial's finished seeds count too
    if reference is None and complete:
        marked = [t for t in complete if t.user_attrs.get(ATTR_BASELINE)]
        reference = marked[-1] if marked else max(complete, key=lambda t: (len(seed_values(t, direction)), -t.number))
    if reference is None:
        return difference_sd({}, {})
    configs = {t.number: seed_values(t, direction) for t in complete if t.number != reference.number}
    return difference_sd(configs, seed_values(reference, direction))


def paired_gain(better: Any, reference: Any, direction: str = "maximize", pool: Pool | None = None,
                selected: bool = False) -> Gain | None:
    """The paired gain of trial ``better`` over trial ``reference`` on the first objective over their common
    seeds: with the sd of a paired difference (``pool``, default: these two trials alone) when it is known,
    else over the prompts of the common seeds (per prompt, the mean over them); None when they share no seed
    or have no per-prompt results to pair."""
    mine, theirs = seed_values(better, direction), seed_values(reference, direction)
    common = sorted(set(mine) & set(theirs))
    if not common:
        return None
    pool = pool if pool is not None else study_pool([better, reference], direction, reference)
    if pool.df > 0:
        return Gain(better.number, reference.number, seed_gain(mine, theirs, pool), "seeds", pool, selected)
    sign = 1.0 if direction == "maximize" else -1.0
    vectors = []
    for trial in (better, reference):
        by_seed = {int(r["seed"]): r.get("per_prompt") for r in trial.user_attrs.get(ATTR_REPLICATES) or []}
        rows = [by_seed[s] for s in common]
        if any(not row for row in rows) or len({len(row) for row in rows}) != 1:
            return None
        vectors.append([sign * sum(column) / len(column) for column in zip(*rows)])
    if len(vectors[0]) != len(vectors[1]):
        return None
    return Gain(better.number, reference.number, paired_difference(*vectors), "prompts", None, selected)


def prompt_differences(better: Any, reference: Any, direction: str = "maximize") -> list[list[float]] | None:
    """``d[s][i]``: trial ``better`` minus trial ``reference`` on prompt i of common seed s (signed so that positive
    is an improvement), from each seed's per-prompt objective (user attr ``replicates``), for
    :func:`sweeper.decisions.prompt_seed_gain`. Prompts pair by position: runs that validate the same prompts
    report them in the same order (the reporter's ``prompt_digest``). None when a common seed lacks its per-prompt
    results or the vectors differ in length (no pairing by prompt is possible)."""
    sign = 1.0 if direction == "maximize" else -1.0
    rows = [{int(r["seed"]): r.get("per_prompt") for r in t.user_attrs.get(ATTR_REPLICATES) or []}
            for t in (better, reference)]
    common = sorted(set(rows[0]) & set(rows[1]))
    vectors = [(rows[0][s], rows[1][s]) for s in common]
    if not vectors or any(not a or not b for a, b in vectors) or len({len(v) for pair in vectors for v in pair}) != 1:
        return None
    return [[sign * (x - y) for x, y in zip(a, b)] for a, b in vectors]
