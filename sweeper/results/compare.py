"""Comparing two complete trials of a study: the paired gain of one over the other, with a 95% interval.

A study's *baseline* is the config every result is measured against: ``objective.baseline`` (parameter
values, like an ``enqueue`` entry), else the first ``enqueue`` entry. The driver runs it first and marks
its trial (user attr ``baseline``); score-based pruners leave it alone (health rules do not), so that it
ends with a complete result.

:func:`paired_gain` pairs the two trials' results unit by unit:

* over seeds, when both ran the same training seeds (``budget.seeds`` R > 1, or ``sweeper verify``):
  the per-seed differences of the objective, a Student-t interval with R - 1 degrees of freedom. This
  interval includes the run-to-run randomness of training;
* else over the validation prompts (same prompts, same sampling seeds): the differences of each prompt's
  objective. This interval covers the prompts and the validation sampling, **not** the training
  randomness of a single run: two seeds of one config can differ by more. ``sweeper verify`` reruns both
  configs with fresh seeds to measure that.

The gain is signed so that a positive gain is an improvement (``a - b`` for a maximized objective,
``b - a`` for a minimized one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweeper.contract import ATTR_BASELINE, ATTR_REPLICATES
from sweeper.statistics import PairedDifference, paired_difference


@dataclass(frozen=True)
class Gain:
    """The paired gain of trial ``better`` over trial ``reference`` (positive: an improvement)."""

    better: int
    reference: int
    difference: PairedDifference
    unit: str            # "seeds" or "prompts"

    def text(self) -> str:
        d = self.difference
        verdict = "significant" if d.significant else "NOT significant: the interval includes 0"
        return (f"{d.mean:+.4g} [{d.low:+.3g}, {d.high:+.3g}] (95% interval, paired over {d.count} {self.unit}; "
                f"{verdict})")


def baseline_trial(study: Any) -> Any | None:
    """The study's complete baseline trial (the newest if it was re-queued), or None."""
    marked = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(ATTR_BASELINE) and t.state.name == "COMPLETE"]
    return marked[-1] if marked else None


def paired_gain(better: Any, reference: Any, direction: str = "maximize") -> Gain | None:
    """The paired gain of trial ``better`` over trial ``reference`` on the first objective, over their common
    seeds (if both ran 2 or more) or else over the prompts of their first seed; None when they have no
    per-prompt results to pair (e.g. a custom trainer that reports none)."""
    mine = {r["seed"]: r for r in better.user_attrs.get(ATTR_REPLICATES) or []}
    theirs = {r["seed"]: r for r in reference.user_attrs.get(ATTR_REPLICATES) or []}
    sign = 1.0 if direction == "maximize" else -1.0
    common = sorted(set(mine) & set(theirs))
    if len(common) >= 2:
        a = [sign * mine[s]["values"][0] for s in common]
        b = [sign * theirs[s]["values"][0] for s in common]
        return Gain(better.number, reference.number, paired_difference(a, b), "seeds")
    first_a = next(iter(mine.values()), {}).get("per_prompt")
    first_b = next(iter(theirs.values()), {}).get("per_prompt")
    if not first_a or not first_b or len(first_a) != len(first_b):
        return None
    return Gain(better.number, reference.number,
                paired_difference([sign * v for v in first_a], [sign * v for v in first_b]), "prompts")
