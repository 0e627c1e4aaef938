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
``lower`` (clip_cov_lb) 1.0, ``upper`` (clip_cov_ub) 5.0. The "clipped already" test uses the run's
``clip.eps_low`` / ``clip.eps_high``. The trainer still applies its dual clip if ``clip.dual_c`` is set
(verl's Clip-Cov has none); the chosen tokens have weight 0 either way.

The random draw uses the intervention's own ``torch.Generator`` (seeded from the run's ``seed``), so it
neither consumes nor perturbs the trainer's RNG stream, and its state is checkpointed.

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


def clip_cov_selection(advantages: torch.Tensor, logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor,
                       eps_low: float, eps_high: float, ratio: float = 2e-4, lower: float = 1.0, upper: float = 5.0,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, candidates): bool [B, T] masks of the tokens whose loss Clip-Cov detaches, and of all
    tokens eligible for it."""
    with torch.no_grad():
        valid = mask.bool()
        cov = token_covariance(advantages, logp, mask)
        log_ratio = torch.clamp(logp.detach().float() - old_logp.detach().float(), -20.0, 20.0)
        token_ratio = torch.exp(log_ratio)
        advantages = advantages.detach().float()
        unclipped = -advantages * token_ratio
        clipped = -advantages * torch.clamp(token_ratio, 1.0 - eps_low, 1.0 + eps_high)
        clipped_already = clipped > unclipped
        candidates = valid & ~clipped_already & (cov > lower) & (cov < upper)
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
        from ..config import ClipConfig, ClipCovConfig

        super().__init__(config if config is not None else ClipCovConfig(), entropy_config, run_config)
        self.clip = run_config.clip if run_config is not None else ClipConfig()
        seed = run_config.seed if run_config is not None else 0
        self.generator = torch.Generator().manual_seed(int(seed) * SEED_SALT + 1)

    def token_weights(self, micro: MicroBatch) -> tuple[torch.Tensor | None, dict[str, float]]:
        cfg = self.config
        chosen, candidates = clip_cov_selection(micro.advantages, micro.logp, micro.old_logp, micro.response_mask,
                                                self.clip.eps_low, self.clip.eps_high, cfg.ratio, cfg.lower,
                                                cfg.upper, self.generator)
        weights = (~chosen).float() * micro.response_mask.float()
        valid = micro.response_mask.sum().clamp(min=1.0)
        return weights, {"detached_fraction": float(chosen.sum() / valid),
                         "candidate_fraction": float(candidates.sum() / valid)}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])
