"""Clip-Cov (Cui et al., "The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617; verl
``compute_policy_loss_clip_cov``, as used by both the SIREN and STEER repos).

Entropy falls when the policy raises tokens whose log-prob covaries with the advantage. Clip-Cov
detaches (zeroes the loss of) a small random subset of the high-covariance tokens::

    cov_{i,t}  = (A_{i,t} - mean_M A) * (logp_{i,t} - mean_M logp)     over the micro-batch's valid
                                                                       tokens, logp detached
    candidates = valid tokens with lb < cov < ub, excluding tokens whose PPO loss is already clipped
                 (the clipped branch -A clip(r) is strictly larger than -A r)
    chosen     = max(1, floor(r * #valid)) candidates drawn uniformly without replacement
                 (all candidates if there are fewer)
    weight     = 0 on chosen tokens, 1 elsewhere -> l'_{i,t} = weight * l_{i,t}

Hyperparameters (``entropy.clip_cov.*``; verl defaults): ``ratio`` (clip_cov_ratio) 2e-4,
``lower`` (clip_cov_lb) 1.0, ``upper`` (clip_cov_ub) 5.0. The "clipped already" test is the step's own
PPO loss statistic ``clipped_term_larger`` (``MicroBatch.clip_stats``, from the run's ``clip.eps_low`` /
``clip.eps_high``, dual clip not considered). The trainer still applies its dual clip if ``clip.dual_c``
is set (verl's Clip-Cov has none); the chosen tokens have weight 0 either way.

The random draw uses a ``torch.Generator`` seeded from ``MicroBatch.seed`` (a function of the run's
seed, the step, epoch, mini-batch and the global index of the micro-batch), so it neither consumes nor
perturbs the trainer's RNG stream, draws the same on any number of processes as on one, and a resumed
run draws what an uninterrupted one would: there is no generator state to checkpoint.

Hook: ``token_weights``. Metrics: fraction of tokens detached, candidate fraction.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import EntropyIntervention, MicroBatch, register_intervention

SEED_SALT = 7919


def token_covariance(advantages: torch.Tensor, logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(A - mean_M A)(logp - mean_M logp) per token (no grad); means over the valid tokens of the tensor."""
    with torch.no_grad():
        valid = mask.to(torch.float32)
        count = valid.sum().clamp(min=1.0)
        advantages, logp = advantages.detach().float(), logp.detach().float()
        mean_advantage = (advantages * valid).sum() / count
        mean_logp = (logp * valid).sum() / count
        return (advantages - mean_advantage) * (logp - mean_logp)


def clip_cov_selection(advantages: torch.Tensor, logp: torch.Tensor, mask: torch.Tensor, clipped_already: torch.Tensor,
                       ratio: float = 2e-4, lower: float = 1.0, upper: float = 5.0,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, candidates): bool [B, T] masks of the tokens whose loss Clip-Cov detaches, and of all
    tokens eligible for it. ``clipped_already``: bool [B, T], True where the PPO loss's clipped term is
    strictly larger than the unclipped one (``ppo_clip_loss``'s ``clipped_term_larger``)."""
    with torch.no_grad():
        valid = mask.bool()
        cov = token_covariance(advantages, logp, mask)
        candidates = valid & ~clipped_already.bool() & (cov > lower) & (cov < upper)
        chosen = torch.zeros_like(valid)
        candidate_index = torch.nonzero(candidates.reshape(-1)).squeeze(-1)
        if candidate_index.numel() == 0:
            return chosen, candidates
        count = max(1, int(ratio * float(valid.sum())))
        order = torch.randperm(candidate_index.numel(), generator=generator)[:count].to(candidate_index.device)
        chosen.reshape(-1)[candidate_index[order]] = True
        return chosen, candidates


@register_intervention("clip_cov")
class ClipCov(EntropyIntervention):
    """Clip-Cov at ``token_weights``: weight 0 on a random few high-covariance tokens."""

    def __init__(self, config: Any = None, entropy_config: Any = None, run_config: Any = None):
        from ..config import ClipCovConfig

        super().__init__(config if config is not None else ClipCovConfig(), entropy_config, run_config)

    def token_weights(self, micro: MicroBatch) -> tuple[torch.Tensor | None, dict[str, float]]:
        cfg = self.config
        clipped_already = micro.require_clip_stats("clip_cov")["clipped_term_larger"]
        generator = torch.Generator().manual_seed((micro.seed + SEED_SALT) % (2**63 - 1))
        chosen, candidates = clip_cov_selection(micro.advantages, micro.logp, micro.response_mask, clipped_already,
                                                cfg.ratio, cfg.lower, cfg.upper, generator)
        weights = (~chosen).float() * micro.response_mask.float()
        valid = micro.response_mask.sum().clamp(min=1.0)
        return weights, {"detached_fraction": float(chosen.sum() / valid),
                         "candidate_fraction": float(candidates.sum() / valid)}
