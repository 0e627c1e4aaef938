"""verl plugin: this project's Clip-Cov and KL-Cov in verl 0.9's policy-loss registry.

Importing this module registers ``entropy_sweeper.clip_cov`` and ``entropy_sweeper.kl_cov`` with
``verl.trainer.ppo.core_algos.register_policy_loss``; ``actor_rollout_ref.actor.policy_loss.loss_mode`` picks
them (``sweeper export --format verl`` writes it). verl's workers import it through the ``verl.plugins``
entry point of this package (pyproject.toml; ``verl/__init__.py`` loads the group) or with
``VERL_USE_EXTERNAL_MODULES=trainers.engines.verl_plugin``.

Each registered loss builds a :class:`~trainers.entropy.base.MicroBatch` from what verl hands a policy loss
(log-probs, old log-probs, token advantages, the response mask) and calls the same
:func:`trainers.step_loss.micro_batch_loss` as the native trainer, with the method's module
(``trainers.entropy.clip_cov`` / ``kl_cov``): no second copy of a formula. The knobs come from verl's own
fields: ``clip_ratio_low/high/c`` (``clip.*``; an infinite ``clip_ratio_c`` is no dual clip),
``policy_loss.clip_cov_ratio/lb/ub`` (``entropy.clip_cov.*``), ``policy_loss.kl_cov_ratio`` and ``ppo_kl_coef``
(``entropy.kl_cov.*``), ``loss_agg_mode`` and ``loss_scale_factor`` (``loss_agg``, ``rollout.max_new_tokens``).

Scale: the native loss of a micro-batch is its own aggregate (the caller divides by the number of micro-batches);
verl 0.9 aggregates over the global mini-batch (``config.global_batch_info``: tokens, sequences, data-parallel
size) and back-propagates the result as is. The loss here is the native aggregate times the micro-batch's share
of that global batch (``global_share``), so a mini-batch taken as one micro-batch on one process gives the
native loss exactly, and several micro-batches sum to the mini-batch's token (or sequence) mean, as verl's own
losses do.

Not here (``MethodSection.refused_on``): SIREN, AER, STEER, the 80/20 rule and the entropy advantage need
logits, entropies or step-batch state that verl's policy-loss entry point does not receive.

Clip-Cov's random draw: seeded from a per-process counter of calls (verl's own Clip-Cov draws from the global
RNG); the native trainer seeds it from (seed, step, micro-batch), so the tokens chosen differ, not their law.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from ..config import ClipCovConfig, KLCovConfig, RunConfig
from ..entropy.base import MicroBatch
from ..entropy.clip_cov import ClipCov
from ..entropy.kl_cov import KLCov
from ..step_loss import micro_batch_loss

PREFIX = "entropy_sweeper."
LOSS_AGG_FROM_VERL = {"token-mean": "token_mean", "seq-mean-token-mean": "seq_mean_token_mean",
                      "seq-mean-token-sum-norm": "seq_mean_token_sum_norm"}
_calls = itertools.count()


def _get(config: Any, name: str, default: Any = None) -> Any:
    value = config.get(name, default) if hasattr(config, "get") else getattr(config, name, default)
    return default if value is None else value


def run_config_of(config: Any, loss_agg_mode: str, horizon: int) -> RunConfig:
    """The RunConfig fields the loss reads, from verl's actor config (``ActorConfig`` or its DictConfig)."""
    if loss_agg_mode not in LOSS_AGG_FROM_VERL:
        raise ValueError(f"actor.loss_agg_mode {loss_agg_mode!r} has no equivalent in this project's loss_agg; accepted "
                         f"with the entropy_sweeper losses: {sorted(LOSS_AGG_FROM_VERL)}")
    dual_c = float(_get(config, "clip_ratio_c", math.inf))
    clip_low = float(_get(config, "clip_ratio_low", _get(config, "clip_ratio", 0.2)))
    clip_high = float(_get(config, "clip_ratio_high", _get(config, "clip_ratio", 0.2)))
    factor = _get(config, "loss_scale_factor", None)
    return RunConfig.model_validate({
        "loss_agg": LOSS_AGG_FROM_VERL[loss_agg_mode],
        "clip": {"eps_low": clip_low, "eps_high": clip_high, "dual_c": None if math.isinf(dual_c) else dual_c},
        "rollout": {"max_new_tokens": int(factor) if factor else horizon},
    })


def global_share(loss_agg_mode: str, mask: torch.Tensor, info: dict[str, Any]) -> float:
    """This micro-batch's share of verl's global batch for ``loss_agg_mode``: local tokens (token-mean) or local
    sequences (seq-mean modes) over the global count, times the data-parallel size; 1 without global info."""
    dp_size = int(info.get("dp_size") or 1)
    if loss_agg_mode == "token-mean":
        total = info.get("batch_num_tokens")
        local = float(mask.sum())
    else:
        total = info.get("global_batch_size")
        local = float(mask.shape[0])
    if total is None:
        return 1.0
    return local * dp_size / max(float(total), 1.0)


def _policy_loss(intervention, old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config):
    mask = response_mask.to(log_prob.dtype)
    run_config = run_config_of(config, loss_agg_mode, response_mask.shape[-1])
    micro = MicroBatch(logits=log_prob.new_zeros(0), logp=log_prob, old_logp=old_log_prob, old_entropy=torch.zeros_like(mask),
                       response_mask=mask, advantages=advantages, group_accuracy=mask.new_zeros(mask.shape[0]),
                       rows=torch.arange(mask.shape[0], device=mask.device), seed=next(_calls))
    loss, metrics = micro_batch_loss(run_config, intervention, micro)
    info = dict(_get(config, "global_batch_info", {}) or {})
    scaled = loss * global_share(loss_agg_mode, response_mask, info)
    return scaled, {f"actor/{key.replace('/', '_')}": value for key, value in metrics.items()}


def clip_cov_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                  rollout_is_weights=None):
    """``entropy_sweeper.clip_cov``: ``trainers.entropy.clip_cov`` through ``micro_batch_loss``."""
    policy = _get(config, "policy_loss", {})
    section = ClipCovConfig(ratio=_get(policy, "clip_cov_ratio", 2e-4), lower=_get(policy, "clip_cov_lb", 1.0),
                            upper=_get(policy, "clip_cov_ub", 5.0))
    _refuse_rollout_weights(rollout_is_weights, "clip_cov")
    return _policy_loss(ClipCov(section), old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config)


def kl_cov_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                rollout_is_weights=None):
    """``entropy_sweeper.kl_cov``: ``trainers.entropy.kl_cov`` through ``micro_batch_loss``."""
    policy = _get(config, "policy_loss", {})
    section = KLCovConfig(ratio=_get(policy, "kl_cov_ratio", 2e-4), coef=_get(policy, "ppo_kl_coef", 1.0))
    _refuse_rollout_weights(rollout_is_weights, "kl_cov")
    return _policy_loss(KLCov(section), old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config)


def _refuse_rollout_weights(weights: torch.Tensor | None, method: str) -> None:
    if weights is not None:
        raise ValueError(f"{PREFIX}{method}: verl passed rollout importance-sampling weights "
                         "(algorithm.rollout_correction); the trial ran without them: turn rollout_correction off")


LOSSES = {"clip_cov": clip_cov_loss, "kl_cov": kl_cov_loss}


def register() -> list[str]:
    """Register the losses in verl's policy-loss registry (idempotent); returns their names."""
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, register_policy_loss

    for method, function in LOSSES.items():
        if POLICY_LOSS_REGISTRY.get(PREFIX + method) is not function:
            register_policy_loss(PREFIX + method)(function)
    return [PREFIX + method for method in LOSSES]


register()
