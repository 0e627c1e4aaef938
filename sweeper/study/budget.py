"""The ``budget`` section: how many trials, for how long, how many at once, and the training seeds of each
config (a number, or a range that races configs over seeds with the futility pruner)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sweeper.study.schema import SpecModel

__all__ = ["BudgetSpec", "MAX_SEEDS", "parse_duration"]


def parse_duration(value: Any) -> float | None:
    """Seconds from a number or a string like '90s', '30m', '2h', '1d'."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration; give seconds (3600) or a string such as 90s, 30m, 2h, 1d")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


MAX_SEEDS = 100  # replicate seeds per config; papers use 3 to 10, and a trial runs them one after another


class BudgetSpec(SpecModel):
    n_trials: int | None = Field(None, gt=0, description="Trials to run in total, counting those already in storage.")
    timeout: float | None = Field(None, gt=0, description="Seconds (or 30m, 2h) after which no new trial starts.")
    max_parallel: int = Field(1, gt=0, description="Trials in flight at once.")
    steps: int | None = Field(None, gt=0, description="Override train.steps for every trial.")
    seeds: int = Field(
        1,
        ge=1,
        le=MAX_SEEDS,
        description="Training seeds per sampled config (seed, seed + 1, ...): a trial runs its config once per seed "
        "and its value is their mean, with a standard error over seeds and validation prompts. At most "
        f"{MAX_SEEDS}: the seeds of a config run one after another inside its trial.",
    )
    seeds_min: int | None = Field(
        None,
        ge=1,
        description='Racing (budget.seeds as a range, {min: 1, max: 3} or "1-3"): every config runs this many '
        "seeds, the rest only while the futility pruner keeps it in the race. None = all budget.seeds.",
    )
    race: Literal["in_trial", "rounds"] = Field(
        "in_trial",
        description="Racing order (budget.seeds a range): in_trial = a config runs its seeds one after another in its "
        "trial; rounds = after each seed past the first min a config waits, new configs run their first seeds "
        "first, then the waiting ones are judged together and the race ends once one config is left "
        "(sweeper.run.race).",
    )
    trial_steps: int | None = Field(
        None,
        gt=0,
        description="Stop launching trials once this many training steps (over every trial and seed) are spent.",
    )

    @model_validator(mode="before")
    @classmethod
    def _seed_range(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "seeds" not in data:
            return data
        seeds, bounds = data["seeds"], None
        if isinstance(seeds, str) and re.fullmatch(r"\s*\d+\s*-\s*\d+\s*", seeds):
            bounds = [int(part) for part in seeds.split("-")]
        elif isinstance(seeds, dict):
            if set(seeds) != {"min", "max"}:
                raise ValueError(f'budget.seeds: {seeds!r} is not a range; give {{min: 1, max: 3}}, "1-3" or a number')
            bounds = [seeds["min"], seeds["max"]]
        if bounds is None:
            return data
        low, high = bounds
        if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
            raise ValueError(f'budget.seeds: {seeds!r} is not a range of seeds; give 1 <= min <= max, e.g. "1-3"')
        return {**data, "seeds": high, "seeds_min": low}

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)

    @model_validator(mode="after")
    def _bounded(self) -> "BudgetSpec":
        if self.race == "rounds" and not (self.seeds_min is not None and self.seeds_min < self.seeds):
            raise ValueError(
                f"budget.race: rounds races configs over seeds; give budget.seeds as a range "
                f'(e.g. "1-3"), or drop budget.race (budget.seeds is {self.seeds})'
            )
        if self.n_trials is None and self.timeout is None and self.trial_steps is None:
            raise ValueError("give n_trials, timeout or trial_steps (or several): a study needs a budget")
        return self
