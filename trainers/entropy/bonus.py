"""Naive entropy bonus: L = L_pg - beta * agg(H) (the baseline every entropy paper compares against).

H is the full-vocabulary entropy of the CURRENT policy at each response position, with grad, from the
micro-batch's logits (chunked, ``ops.token_entropy``). ``agg`` is the run's ``loss_agg`` (token_mean |
seq_mean_token_mean | seq_mean_token_sum_norm), the same aggregation as the PG loss, as in SIREN's
``naive*`` experiments (entropy_agg forced to loss_agg_mode) and verl/STEER (agg with loss_agg_mode).
``trainers.algorithms.aggregate`` does the aggregation, so the bonus and the PG loss cannot disagree.

Hyperparameters (``entropy.bonus.*``):

- ``coef`` (beta) 1e-3 here. Papers: SIREN's appendix uses 1e-4 (higher is unstable); its figures with
  1e-3 and 5e-3 show entropy explosion. verl's default ``entropy_coeff`` is 0 (off) / 1e-3 in older
  releases.

Hook: ``extra_loss`` (at the micro-batch's scale; the trainer divides by the number of micro-batches).
Metrics: the current entropy (token mean) and the bonus term. No state.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import EntropyIntervention, MicroBatch, register_intervention
from .ops import masked_token_mean, token_entropy


def entropy_bonus_loss(entropy: torch.Tensor, mask: torch.Tensor, coef: float, agg: str = "token_mean",
                       norm_length: int | None = None) -> torch.Tensor:
    """-beta * agg(H, M) with the PG loss's aggregation ``agg`` (and its Dr.GRPO length ``norm_length``)."""
    from ..algorithms import aggregate

    return -coef * aggregate(agg, entropy, mask, norm_length)


@register_intervention("entropy_bonus")
class EntropyBonus(EntropyIntervention):
    """L_pg - beta * agg(H) at ``extra_loss``."""

    def __init__(self, config: Any = None, entropy_config: Any = None, run_config: Any = None):
        from ..config import BonusConfig

        super().__init__(config if config is not None else BonusConfig(), entropy_config, run_config)
        self.loss_agg = run_config.loss_agg if run_config is not None else "token_mean"
        self.norm_length = run_config.rollout.max_new_tokens if run_config is not None else None

    def extra_loss(self, micro: MicroBatch) -> tuple[torch.Tensor | None, dict[str, float]]:
        if self.config.coef == 0.0:
            return None, {}
        entropy = token_entropy(micro.logits, micro.chunk_size)
        loss = entropy_bonus_loss(entropy, micro.response_mask, self.config.coef, self.loss_agg, self.norm_length)
        return loss, {
            "current_entropy": float(masked_token_mean(entropy.detach(), micro.response_mask)),
            "bonus": float(-loss.detach()),
        }
