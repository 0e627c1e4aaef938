"""The paired pruner (``pruner.type: paired``): stop a trial shown worse than the incumbent at the same
step, by a test of the *mean* difference over the validation prompts that includes the run-to-run
randomness of training.

Every trial of a study validates the same prompts with the same sampling seeds, and the trial process
stores each validation's per-prompt objective values (trial user attr ``per_prompt/<step>``). At a
validation of step s (from ``n_warmup_steps`` on, once ``n_startup_trials`` trials are complete) the
pruner pairs the trial's values with those of the incumbent (the best complete trial) at step s, prompt
by prompt (:func:`harm_test`):

    d = mean over prompts of (mine - incumbent's)                    (objective units, maximized)
    SE = sqrt(SE_prompts(d)^2 + 2 sd_run^2)                          (:func:`sweeper.decisions.harm_se`)
    p = P(T_df <= (d + a sd_run / sqrt(R_inc) + min_difference) / SE)   (:func:`sweeper.decisions.harm_p_value`)

and prunes when p is below ``p_threshold`` divided by the validations the trial is judged at
(Bonferroni). ``sd_run`` is the run-to-run sd of the objective (two runs of one config differ on every
prompt the same way, which the prompts' SE cannot see): ``run_sd`` when given (``sweeper verify``
measures it; df infinite), else pooled over the study's replicated trials (``budget.seeds`` >= 2; df =
sum(R_i - 1)). With neither, the pruner prunes nothing and says so. A trial whose mean is at least the
incumbent's is never pruned. ``allowance`` a (default 1) moves the incumbent's value down by a of its
SEs over its R_inc seeds: it is the best of several, a selected maximum, biased upwards.

The error rate, stated: a trial whose true mean is ``min_difference`` below the incumbent's is pruned
with probability at most ``p_threshold`` over its looks (normal approximation; the incumbent taken as
fixed); over a study of N such trials at most N x ``p_threshold`` (union bound: the incumbent is a
selected maximum, shared by every trial). ``benchmarks/pruning_quality.py simulate`` measures both.
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from sweeper.contract import per_prompt_attr, trial_seed_values
from sweeper.decisions import harm_p_value, harm_se, pooled_sd
from sweeper.statistics import mean_and_se


def harm_test(mine: list[float], theirs: list[float], margin: float, run_sd: float, run_df: float,
              allowance: float = 0.0) -> dict[str, float]:
    """The harm test over paired prompts (see the module docstring): mean difference, its SE and p.
    ``allowance`` (objective units) is added to the difference before the test (the incumbent's selection)."""
    if len(mine) != len(theirs) or len(mine) < 2:
        raise ValueError(f"harm_test: two equally long per-prompt vectors of 2 or more (got {len(mine)} and {len(theirs)})")
    difference, se_prompts = mean_and_se([a - b for a, b in zip(mine, theirs)])
    se = harm_se(se_prompts, run_sd)
    return {"difference": difference, "se": se, "p": harm_p_value(difference + allowance, se, margin, run_df)}


def study_run_sd(trials) -> tuple[float, float]:
    """(sd, df) of the objective over training seeds, pooled over trials with 2 or more seeds (NaN, 0: none)."""
    pooled = pooled_sd([list(trial_seed_values(t.user_attrs).values()) for t in trials])
    return pooled.sd, pooled.df


class PairedPruner(optuna.pruners.BasePruner):
    """See the module docstring. ``validation_steps``: the steps a trial validates at (the looks of the
    Bonferroni correction are those from ``n_warmup_steps`` on; None = one look)."""

    def __init__(self, p_threshold: float = 0.05, n_startup_trials: int = 1, n_warmup_steps: int = 0,
                 correction: str = "bonferroni", validation_steps: list[int] | None = None, min_difference: float = 0.0,
                 run_sd: float | None = None, allowance: float = 1.0):
        if not 0 < p_threshold < 1:
            raise ValueError(f"p_threshold must be in (0, 1), got {p_threshold}")
        if correction not in ("bonferroni", "none"):
            raise ValueError(f"correction must be 'bonferroni' or 'none', got {correction!r}")
        if min_difference < 0:
            raise ValueError(f"min_difference must be >= 0, got {min_difference}")
        if run_sd is not None and run_sd < 0:
            raise ValueError(f"run_sd must be >= 0 (the run-to-run sd of the objective), got {run_sd}")
        self.min_difference = min_difference
        self.run_sd = run_sd
        self.allowance = allowance
        self.p_threshold = p_threshold
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        judged = [step for step in (validation_steps or []) if step > 0 and step >= n_warmup_steps]
        self.looks = max(1, len(judged)) if correction == "bonferroni" else 1
        self.last_test: dict[str, Any] | None = None   # the latest comparison: p, threshold, incumbent, step, prompts

    @property
    def threshold(self) -> float:
        """The p-value below which one look prunes."""
        return self.p_threshold / self.looks

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        self.last_test = None
        step = trial.last_step
        if step is None or step < self.n_warmup_steps or len(study.directions) != 1:
            return False
        mine = trial.user_attrs.get(per_prompt_attr(step))
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not mine or len(complete) < self.n_startup_trials:
            return False
        incumbent = study.best_trial
        theirs = incumbent.user_attrs.get(per_prompt_attr(step))
        if not theirs or len(theirs) != len(mine):
            return False  # the incumbent did not validate the same prompts at this step
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        if self.run_sd is not None:
            run_sd, run_df = self.run_sd, math.inf
        else:
            run_sd, run_df = study_run_sd(study.get_trials(deepcopy=False))
        if run_df == 0:
            self.last_test = {"skipped": "no run-to-run sd: give pruner.run_sd or budget.seeds >= 2"}
            return False
        # the incumbent is the best of several: its value is shifted down by allowance x its SE over seeds
        shift = self.allowance * run_sd / math.sqrt(max(1, len(trial_seed_values(incumbent.user_attrs))))
        test = harm_test(mine, theirs, self.min_difference, run_sd, run_df, shift) if maximize else \
            harm_test(theirs, mine, self.min_difference, run_sd, run_df, shift)
        self.last_test = {**test, "threshold": self.threshold, "incumbent": incumbent.number, "step": step,
                          "prompts": len(mine), "run_sd": run_sd}
        return test["p"] < self.threshold

    def explain(self) -> str:
        """Why the last call pruned: ``mean -0.081 (SE 0.021, run sd 0.01) below -0.02: p = 0.002 < 0.0125 vs
        trial 3 (the incumbent) over 64 prompts``."""
        test = self.last_test or {}
        if "skipped" in test:
            return test["skipped"]
        margin = f" by more than {self.min_difference:g}" if self.min_difference else ""
        return (f"mean {test.get('difference', math.nan):+.3g} (SE {test.get('se', math.nan):.2g} with run sd "
                f"{test.get('run_sd', math.nan):.2g}): worse{margin} at p = {test.get('p', math.nan):.2g} < "
                f"{test.get('threshold', math.nan):.2g} vs trial {test.get('incumbent')} (the incumbent) over "
                f"{test.get('prompts')} prompts")
