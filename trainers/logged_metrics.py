"""What the default trainer (``trainers.grpo``) reports, by name, known from the run config alone (no torch).

The sweeper checks the metric names a study gives (the objective, the health rules' ``metrics``) against
this before any trial starts: a typo in a health rule would otherwise make the rule silently never fire.
``tests/test_logged_metrics.py`` runs the real trainer for every entropy method and compares what it
reports with this declaration, so the two cannot drift apart.

Every logged train step reports :data:`TRAIN_METRICS` (on ``engine: trl``: ``time/step`` of them, not its split),
``train/kl_ref`` when ``kl.beta > 0``, the vLLM
sampler's mismatch (``train/rollout_*``) when ``rollout.engine`` is vllm, and the
method's own metrics under ``<method>/`` (declared on its config section: ``MethodSection.metrics`` and
``logged_metrics()`` in :mod:`trainers.config`); every validation reports
``val/pass@k``, ``val/maj@k`` and ``val/mean@k`` for each k of ``eval.k``, their standard errors over
prompts (``..._se``, with 2 prompts or more), ``val/entropy`` and ``time/eval``.

Some metrics depend on the batch (AER's entropy of the regularized groups exists only when a group is
regularized): they are declared *sometimes*, the others *always*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TRAIN_METRICS = (
    "train/reward_mean", "train/reward_std", "train/accuracy", "train/entropy", "train/response_length",
    "train/zero_variance_groups", "train/advantage_abs_mean", "train/grad_norm", "train/lr",
    "train/pg_loss", "train/loss", "train/clip_frac_low", "train/clip_frac_high", "train/clip_frac_dual",
    "train/ratio_mean", "train/kl_old",
    "time/rollout", "time/train", "time/other", "time/step",
)
EVAL_KINDS = ("pass", "maj", "mean")

@dataclass(frozen=True)
class LoggedMetrics:
    """Metric names of one run config: at every logged train step / validation, or only when the batch allows."""

    train: frozenset[str]
    train_sometimes: frozenset[str]
    validation: frozenset[str]
    validation_sometimes: frozenset[str]

    @property
    def possible(self) -> frozenset[str]:
        return self.train | self.train_sometimes | self.validation | self.validation_sometimes


def logged_metrics(config: Any) -> LoggedMetrics:
    """The names ``trainers.grpo.train(config)`` reports for a :class:`trainers.config.RunConfig` (see the
    module docstring); the method's own names come from its section's declarations."""
    method = config.entropy.method
    section = config.entropy.active_section()
    always, sometimes = section.logged_metrics() if section is not None else ((), ())
    train = set(TRAIN_METRICS) | {f"{method}/{name}" for name in always}
    train_sometimes = {f"{method}/{name}" for name in sometimes}
    extra_loss = section.logs_extra_loss() if section is not None else None
    if extra_loss is not None:
        (train if extra_loss == "always" else train_sometimes).add("train/extra_loss")
    if getattr(config, "engine", "native") == "trl":   # TRL's loop: the step's time as a whole (TRL's own under trl/)
        train -= {"time/rollout", "time/train", "time/other"}
    if config.kl.beta > 0:
        train.add("train/kl_ref")
    if config.rollout.engine == "vllm":   # the sampler/trainer mismatch (trainers.algorithms.rollout_mismatch_metrics)
        train |= {"train/rollout_logprob_diff", "train/rollout_logprob_diff_max", "train/rollout_kl"}
        if config.rollout.importance_sampling_cap is not None:
            train |= {"train/rollout_is_weight_mean", "train/rollout_is_truncated_fraction"}

    scores = {f"val/{kind}@{k}" for kind in EVAL_KINDS for k in config.eval.k}
    errors = {f"{name}_se" for name in scores}
    validation = scores | {"val/entropy", "time/eval"}
    several_prompts = config.eval.num_prompts > 1 and config.data.source == "synthetic" and config.data.synthetic.val_size > 1
    validation |= errors if several_prompts else set()
    return LoggedMetrics(frozenset(train), frozenset(train_sometimes), frozenset(validation),
                         frozenset(set() if several_prompts else errors))
