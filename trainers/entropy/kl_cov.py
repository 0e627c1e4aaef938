"""KL-Cov (Cui et al., arXiv 2505.22617; verl ``compute_policy_loss_kl_cov``, as in the SIREN and STEER
repos): a KL-like penalty on the few tokens with the largest advantage/log-prob covariance, and NO
ratio clipping anywhere::

    cov_{i,t} = (A_{i,t} - mean_M A) * (logp_{i,t} - mean_M logp)      valid tokens of the micro-batch
    top       = the max(1, floor(k * #valid)) valid tokens with the largest cov
    l_{i,t}   = -A r + coef * |logp - logp_old|    on top
              = -A r                               elsewhere

This REPLACES the trainer's clipped (and dual-clipped) PPO token loss. ``max(1, ...)`` follows the
code (``k_percent_nums = max(1, int(len * kl_cov_ratio))``); methods.md writes floor(k * #valid),
which would select nothing below 1/k = 5000 tokens. r = exp(clamp(logp - logp_old, -20, 20)) as in the
trainer (verl's KL-Cov does not clamp).

Hyperparameters (``entropy.kl_cov.*``): ``ratio`` (k, kl_cov_ratio) 2e-4 (SIREN code and the STEER
repo's verl yaml; the original paper recommends ~2e-3 for 7B, recalled, unverified), ``coef``
(ppo_kl_coef) 1.0 (SIREN code; the STEER repo's yaml uses 0.1).

Hook: ``modify_token_loss`` (it receives the advantages after ``token_advantages``). Metrics: fraction
of tokens penalized, mean |logp - logp_old| over them.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import EntropyIntervention, MicroBatch, register_intervention
from .clip_cov import token_covariance


def kl_cov_selection(advantages: torch.Tensor, logp: torch.Tensor, mask: torch.Tensor, ratio: float = 2e-4) -> torch.Tensor:
    """bool [B, T]: the max(1, floor(ratio * #valid)) valid tokens with the largest covariance."""
    with torch.no_grad():
        valid = mask.bool()
        chosen = torch.zeros_like(valid)
        valid_count = int(valid.sum())
        if valid_count == 0:
            return chosen
        cov = token_covariance(advantages, logp, mask).masked_fill(~valid, float("-inf"))
        count = min(max(1, int(valid_count * ratio)), valid_count)
        top = torch.topk(cov.reshape(-1), count, largest=True).indices
        chosen.reshape(-1)[top] = True
        return chosen


def kl_cov_token_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, chosen: torch.Tensor,
                      coef: float) -> torch.Tensor:
    """-A r everywhere, plus coef * |logp - logp_old| on ``chosen`` (keeps grad through logp)."""
    log_ratio = logp - old_logp
    token_ratio = torch.exp(torch.clamp(log_ratio, -20.0, 20.0))
    loss = -advantages * token_ratio
    return loss + chosen.to(loss.dtype) * coef * log_ratio.abs()


@register_intervention("kl_cov")
class KLCov(EntropyIntervention):
    """KL-Cov at ``modify_token_loss``: unclipped PG loss plus |logp - logp_old| on the top-cov tokens."""

    def __init__(self, config: Any = None, entropy_config: Any = None, run_config: Any = None):
        from ..config import KLCovConfig

        super().__init__(config if config is not None else KLCovConfig(), entropy_config, run_config)

    def modify_token_loss(self, micro: MicroBatch, token_loss: torch.Tensor,
                          advantages: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        chosen = kl_cov_selection(advantages, micro.logp, micro.response_mask, self.config.ratio)
        new_loss = kl_cov_token_loss(micro.logp, micro.old_logp, advantages, chosen, self.config.coef)
        valid = micro.response_mask.sum().clamp(min=1.0)
        penalized = chosen.float()
        metrics = {"penalized_fraction": float(penalized.sum() / valid)}
        if penalized.sum() > 0:
            gap = (micro.logp.detach() - micro.old_logp).abs()
            metrics["penalized_abs_log_ratio"] = float((gap * penalized).sum() / penalized.sum())
        return new_loss, metrics
