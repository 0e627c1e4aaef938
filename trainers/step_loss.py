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
    L    = world * aggregate(loss_agg, l, M', max_new_tokens, totals)
         + intervention.extra_loss(micro) / num_micro                   (7)
         + world * beta * aggregate(loss_agg, k3(logp, logp_ref), M, max_new_tokens, totals)

``totals``: the mini-batch's response-token and response counts over every micro-batch and process (verl
0.9.1's ``batch_num_tokens`` / global batch size): each micro-batch's PG and KL terms are its share of the
mini-batch's aggregate, so the shares' gradients sum to the mini-batch's whatever the split (times ``world``:
data parallel averages gradients over processes). None: this micro-batch is the whole batch (one piece, one
process) -- how the TRL adapter and the verl plugin call it, each scaling the result as its engine expects.
The methods' extra terms are their own aggregates of the micro-batch, averaged over the ``num_micro`` pieces.
"""

from __future__ import annotations

from typing import Any

import torch

from .algorithms import BatchTotals, aggregate, kl_k3, masked_mean, ppo_clip_loss
from .entropy.base import EntropyIntervention, MicroBatch


def micro_batch_loss(config: Any, intervention: EntropyIntervention, micro: MicroBatch,
                     ref_logp: torch.Tensor | None = None, *, totals: BatchTotals | None = None, world: int = 1,
                     num_micro: int = 1, is_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """``(loss, metrics)`` of ``micro`` under the run config ``config`` (``RunConfig``: ``clip``, ``loss_agg``,
    ``kl.beta``, ``rollout.max_new_tokens``); ``ref_logp``: log pi_ref of the micro-batch's tokens, or None
    (no KL term); ``totals``, ``world``, ``num_micro``: see the module docstring; ``is_weights``: truncated
    importance weights of the micro-batch's tokens (``rollout.importance_sampling_cap``), or None. The loss is
    back-propagated as is. Metrics: the method's under ``<method>/``, the step's under ``train/``; the logged
    losses in mini-batch units (each share times ``num_micro x world``)."""
    cfg = config
    logp, mask = micro.logp, micro.response_mask
    if totals is None:
        totals, world, num_micro = BatchTotals.of(mask), 1, 1
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
    if is_weights is not None:   # rollout.importance_sampling_cap: vLLM's samples reweighted to the trainer's pi_old
        token_loss = token_loss * is_weights
    loss_mask, hook_metrics = intervention.loss_mask(micro)
    metrics.update({prefix + k: v for k, v in hook_metrics.items()})
    loss_mask = mask if loss_mask is None else loss_mask.to(mask.dtype) * mask
    share = aggregate(cfg.loss_agg, token_loss, loss_mask, cfg.rollout.max_new_tokens, totals)
    to_mini_batch_units = num_micro * world
    pg_loss = float(share.detach()) * to_mini_batch_units
    logged_loss = pg_loss
    extra, hook_metrics = intervention.extra_loss(micro)
    metrics.update({prefix + k: v for k, v in hook_metrics.items()})
    if ref_logp is not None:
        kl_ref = kl_k3(logp, ref_logp)
        kl_share = cfg.kl.beta * aggregate(cfg.loss_agg, kl_ref, mask, cfg.rollout.max_new_tokens, totals)
        share = share + kl_share
        logged_loss += float(kl_share.detach()) * to_mini_batch_units
        metrics["train/kl_ref"] = masked_mean(kl_ref.detach(), mask)
    loss = share * world
    if extra is not None:
        loss = loss + extra / num_micro
        logged_loss += float(extra.detach())
        metrics["train/extra_loss"] = float(extra.detach())

    metrics.update({
        "train/pg_loss": pg_loss,
        "train/loss": logged_loss,
        "train/clip_frac_low": masked_mean(clip["clipped_low"].float(), mask),
        "train/clip_frac_high": masked_mean(clip["clipped_high"].float(), mask),
        "train/clip_frac_dual": masked_mean(clip["clipped_dual"].float(), mask),
        "train/ratio_mean": masked_mean(clip["ratio"], mask),
        "train/kl_old": masked_mean(kl_k3(micro.old_logp, logp.detach()), mask),
    })
    return loss, metrics
