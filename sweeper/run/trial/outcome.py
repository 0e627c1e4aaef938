"""A trial's outcome from its finished seeds (pure functions, used by the trial process and by the driver's race
in rounds, :mod:`sweeper.run.race`)."""

from __future__ import annotations

from typing import Any

from sweeper.contract import FUTILITY_PRUNE_REASON, Outcome
from sweeper.statistics import mean_and_se, replicate_summary

__all__ = ["validation_steps", "futility_stop", "with_uncertainty"]


def validation_steps(config: Any) -> list[int]:
    """The steps a run validates at after its start: every ``train.eval_every`` steps and the last step."""
    steps, every = config.train.steps, config.train.eval_every
    return sorted(set(range(every, steps + 1, every)) | {steps})


def futility_stop(message: str, finished: list[dict[str, Any]], steps: int) -> Outcome:
    """The PRUNED outcome of a futility stop after ``finished`` seeds (before :func:`with_uncertainty`)."""
    mean = sum(r["values"][0] for r in finished) / len(finished)
    return Outcome(
        "PRUNED",
        step=steps,
        prune_reason=FUTILITY_PRUNE_REASON,
        message=message,
        partial_values=[mean],
        pruned_at_step=steps,
    )


def with_uncertainty(ending: Outcome | None, finished: list[dict[str, Any]]) -> Outcome:
    """The trial's outcome: the run that ended it (or the last replicate), with the values averaged over the
    finished seeds and their standard errors: over prompts (R = 1); over seeds (R > 1)
    (:func:`~sweeper.statistics.replicate_summary`). A PRUNED trial that finished seeds before it stopped
    (a futility stop after a seed, or at a validation of a later seed) is valued as the mean over the seeds
    it finished, never its first seed's last validation; the driver gives Optuna that value."""
    outcome = ending if ending is not None else Outcome("COMPLETE")
    if outcome.state == "COMPLETE":
        if len(finished) > 1:
            columns = list(zip(*(r["values"] for r in finished)))
            # the first objective's per-prompt values are kept, so its SE also carries the validation's noise
            vectors = [[r.get("per_prompt") for r in finished]] + [[None] * len(finished)] * (len(columns) - 1)
            estimates = [
                replicate_summary(list(column), seed_vectors) for column, seed_vectors in zip(columns, vectors)
            ]
            outcome.values = [estimate.value for estimate in estimates]
            outcome.values_se = [estimate.se for estimate in estimates]
        else:
            outcome.values = finished[0]["values"]
            outcome.values_se = _prompt_se(outcome.per_prompt)
        outcome.replicates = finished
    elif outcome.state == "PRUNED" and finished:
        outcome.replicates = finished  # a futility stop after a seed: the seeds it finished still count
        columns = list(zip(*(r["values"] for r in finished)))
        outcome.partial_values = [sum(column) / len(column) for column in columns]
        if len(finished) > 1:
            outcome.values_se = [replicate_summary(list(column), [None] * len(finished)).se for column in columns]
        count = len(finished)
        outcome.message = (
            outcome.message or ""
        ) + f" (value: the mean over the {count} seed{'s' if count > 1 else ''} it finished)"
    vectors = [v for v in (outcome.per_prompt or []) if v] or [r["per_prompt"] for r in finished if r.get("per_prompt")]
    outcome.prompts = len(vectors[0]) if vectors else None
    return outcome


def _prompt_se(per_prompt: list[list[float] | None] | None) -> list[float | None] | None:
    """The standard error over prompts of each objective's per-prompt values (None where there are none)."""
    if per_prompt is None:
        return None
    return [mean_and_se(v)[1] if v and len(v) > 1 else None for v in per_prompt]
