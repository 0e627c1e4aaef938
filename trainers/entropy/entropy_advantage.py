"""Entropy advantage (Cheng et al., "Reasoning with Exploration: An Entropy Perspective",
arXiv 2506.14758): add a clipped, gradient-free entropy bonus to each token's advantage::

    A'_{i,t} = A_{i,t} + min(alpha * H_{i,t}.detach(), |A_{i,t}| / kappa)

The bonus is >= 0 and at most |A| / kappa, so with kappa >= 1 it never flips the sign of a negative
advantage, and tokens of zero-variance groups (A = 0) get no bonus. H is the full-vocabulary entropy
of the CURRENT policy at that position, detached (the paper's and SIREN's ``baseline_entropy_adv``
use the training forward's entropy; it equals the old policy's on the first, on-policy mini-batch).

Hyperparameters (``entropy.entropy_advantage.*``): ``alpha`` 0.4 (paper, SIREN code), ``kappa`` 2.0
(paper and SIREN's first commit; SIREN HEAD uses kappa = 1).

Hook: ``token_advantages`` (the trainer then uses A' in the clipped PPO loss). Metrics: mean bonus,
fraction of tokens where the |A|/kappa cap is active.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import EntropyIntervention, MicroBatch, register_intervention
from .ops import masked_token_mean, token_entropy


def entropy_shaped_advantages(advantages: torch.Tensor, entropy: torch.Tensor, alpha: float = 0.4,
                              kappa: float = 2.0) -> torch.Tensor:
    """A + min(alpha * H.detach(), |A| / kappa)."""
    bonus = torch.minimum(alpha * entropy.detach().to(advantages.dtype), advantages.abs() / kappa)
    return advantages + bonus


@register_intervention("entropy_advantage")
class EntropyAdvantage(EntropyIntervention):
    """Entropy-shaped advantages at ``token_advantages``."""

    def __init__(self, config: Any = None, entropy_config: Any = None, run_config: Any = None):
        from ..config import EntropyAdvantageConfig

        super().__init__(config if config is not None else EntropyAdvantageConfig(), entropy_config, run_config)
        self._last_metrics: dict[str, float] = {}

    def token_advantages(self, micro: MicroBatch) -> torch.Tensor:
        with torch.no_grad():
            entropy = token_entropy(micro.logits.detach(), micro.chunk_size)
        shaped = entropy_shaped_advantages(micro.advantages, entropy, self.config.alpha, self.config.kappa)
        self._last_metrics = {
            "bonus_mean": float(masked_token_mean(shaped - micro.advantages, micro.response_mask)),
            "cap_active_fraction": float(masked_token_mean(
                (self.config.alpha * entropy >= micro.advantages.abs() / self.config.kappa).float(), micro.response_mask)),
        }
        return shaped

    def modify_token_loss(self, micro: MicroBatch, token_loss: torch.Tensor,
                          advantages: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        # token_advantages returns a tensor only; its metrics are reported from the next hook.
        metrics, self._last_metrics = self._last_metrics, {}
        return token_loss, metrics
