"""The loss of one micro-batch: the GRPO step's hook chain, shared by every engine.

The native trainer (``trainers.grpo.GRPOTrainer._micro_batch_loss``), the TRL adapter
(``trainers.engines.trl``) and the verl plugin (``trainers.engines.verl_plugin``) all call
:func:`micro_batch_loss`, so a method's formula exists once (its module in ``trainers/entropy``) and the
order of its hooks exists once (here)::

    A'   = intervention.token_advantages(micro)                         (3)
    l    = ppo_clip_loss(logp, logp_old, A', eps_low, eps_high, dual_c)
    l    = intervention.modify_token_loss(micro, l, A')                 (4)
    l    = l * intervention.token_weights(micro)        (detached)      (5)
    M'   = intervention.loss_mask(micro) * M                            (6)
    L    = aggregate(loss_agg, l, M', max_new_tokens)
         + intervention.extra_loss(micro)                               (7)
         + beta * aggregate(loss_agg, k3(logp, logp_ref), M, max_new_tokens)

The caller divides ``L`` by the number of micro-batches of the optimizer step before ``backward``.
"""

from __future__ import annotations

from typing import Any

import torch

from .algorithms import aggregate, kl_k3, masked_mean, ppo_clip_loss
from .entropy.base import EntropyIntervention, MicroBatch


def micro_batch_loss(config: Any, intervention: EntropyIntervention, micro: MicroBatch,
                     ref_logp: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """``(loss, metrics)`` of ``micro`` under the run config ``config`` (``RunConfig``: ``clip``, ``loss_agg``,
    ``kl.beta``, ``rollout.max_new_tokens``); ``ref_logp``: log pi_ref of the micro-batch's tokens, or None
    (no KL term). Metrics: the method's under ``<method>/``, the step's under ``train/``."""
    cfg = config
    logp, mask = micro.logp, micro.response_mask
    prefix = f"{intervention.name}/"
    metrics: dict[str, float] = {}

    advantages = intervention.token_advantages(micro)
    token_loss, clip = ppo_clip_loss(logp, micro.old_logp, advantages, cfg.clip.eps_low, cfg.clip.eps_high, cfg.clip.dual_c)
    micro.clip_stats = clip  # the hooks below read which tokens are clipped from here
    token_loss, hook_metrics = intervention.modify_token_loss(micro, token_loss, advantages)
    metrics.update({prefix + k: v for k, v in hook_metrics.items()})
    weights, hook_metrics = intervention.token_weights(micro)
    metrics.update({prefix + k: v for k, v in hook_metrics.items()})
    if weights is not None:
        token_loss = token_loss * weights.detach()
    loss_mask, hook_metrics = intervention.loss_mask(micro)
    metrics.update({prefix + k: v for k, v in hook_metrics.items()})
    loss_mask = mask if loss_mask is None else loss_mask.to(mask.dtype) * mask
    pg_loss = aggregate(cfg.loss_agg, token_loss, loss_mask, cfg.rollout.max_new_tokens)
    loss = pg_loss
    extra, hook_metrics = intervention.extra_loss(micro)
    metrics.update({prefix + k: v for k, v in hook_metrics.items()})
    if extra is not None:
        loss = loss + extra
        metrics["train/extra_loss"] = float(extra.detach())
    if ref_logp is not None:
        kl_ref = kl_k3(logp, ref_logp)
        loss = loss + cfg.kl.beta * aggregate(cfg.loss_agg, kl_ref, mask, cfg.rollout.max_new_tokens)
        metrics["train/kl_ref"] = masked_mean(kl_ref.detach(), mask)

    metrics.update({
        "train/pg_loss": float(pg_loss.detach()),
        "train/loss": float(loss.detach()),
        "train/clip_frac_low": masked_mean(clip["clipped_low"].float(), mask),
        "train/clip_frac_high": masked_mean(clip["clipped_high"].float(), mask),
        "train/clip_frac_dual": masked_mean(clip["clipped_dual"].float(), mask),
        "train/ratio_mean": masked_mean(clip["ratio"], mask),
        "train/kl_old": masked_mean(kl_k3(micro.old_logp, logp.detach()), mask),
    })
    return loss, metrics
