"""The paired pruner (``pruner.type: paired``): stop a trial whose per-prompt results are worse than the
incumbent's at the same step, by a one-sided Wilcoxon signed-rank test over the validation prompts.

Every trial of a study validates the same prompts with the same sampling seeds, and the trial process
stores each validation's per-prompt objective values (trial user attr ``per_prompt/<step>``). At a
validation of step s (from ``n_warmup_steps`` on, once ``n_startup_trials`` trials are complete) the
pruner pairs the trial's values with those of the incumbent (the best complete trial) at step s, prompt
by prompt, and prunes when the test says the trial is worse with p below the per-look threshold:
``p_threshold`` divided by the number of validations the trial is judged at (Bonferroni), so that a
trial as good as the incumbent is pruned with probability at most about ``p_threshold`` over its whole
run (``correction: none`` tests each look at ``p_threshold``).

What the test does and does not see: prompts are the paired units, so it accounts for which prompts are
easy and for the sampling noise of each validation; it does not see the run-to-run randomness of training
(two runs of one config with different seeds differ on every prompt in the same direction), and the
incumbent is the luckiest run so far. ``min_difference`` (in the objective's units) prunes only a trial
worse than the incumbent by more than that margin (the test of the differences shifted by it): set it to
the run-to-run spread you expect (``sweeper verify`` measures it) to keep such randomness from pruning
good configs. Trials of a study share their training seed unless the space sweeps ``seed``;
``benchmarks/pruning_quality.py`` measures the false-prune rate and the power in both cases.
"""

from __future__ import annotations

from typing import Any

import optuna

from sweeper.contract import per_prompt_attr
from sweeper.statistics import wilcoxon_worse_p


class PairedPruner(optuna.pruners.BasePruner):
    """See the module docstring. ``validation_steps``: the steps a trial validates at (the looks of the
    Bonferroni correction are those from ``n_warmup_steps`` on; None = one look)."""

    def __init__(self, p_threshold: float = 0.05, n_startup_trials: int = 1, n_warmup_steps: int = 0,
                 correction: str = "bonferroni", validation_steps: list[int] | None = None, min_difference: float = 0.0):
        if not 0 < p_threshold < 1:
            raise ValueError(f"p_threshold must be in (0, 1), got {p_threshold}")
        if correction not in ("bonferroni", "none"):
            raise ValueError(f"correction must be 'bonferroni' or 'none', got {correction!r}")
        if min_difference < 0:
            raise ValueError(f"min_difference must be >= 0, got {min_difference}")
        self.min_difference = min_difference
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
        margin = self.min_difference
        p_value = wilcoxon_worse_p(mine, theirs, margin) if maximize else wilcoxon_worse_p(theirs, mine, margin)
        self.last_test = {"p": p_value, "threshold": self.threshold, "incumbent": incumbent.number, "step": step,
                          "prompts": len(mine)}
        return p_value < self.threshold

    def explain(self) -> str:
        """Why the last call pruned: ``paired Wilcoxon p = 0.003 < 0.0083 vs trial 3 over 64 prompts``."""
        test = self.last_test or {}
        margin = f" by more than {self.min_difference:g}" if self.min_difference else ""
        return (f"paired Wilcoxon p = {test.get('p', float('nan')):.2g} < {test.get('threshold', float('nan')):.2g} "
                f"(worse{margin}) vs trial {test.get('incumbent')} (the incumbent) over {test.get('prompts')} prompts")
