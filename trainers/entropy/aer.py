"""AER: adaptive entropy regularization (arXiv 2510.10959, "Revisiting Entropy Regularization: ...").

RECONSTRUCTION. The AER paper has no public code and its exact equations could not be retrieved.
This module implements the reconstruction in ``shared/methods.md`` section 2, which is consistent with
the paper's description (three components: per-sample coefficients by prompt difficulty, a target
entropy anchored below the initial entropy, a global coefficient adjusted online toward the target)
but NOT verified against it. Every choice below is a config field so it can be swept or corrected::

    acc_q     = mean correctness of prompt q's G responses            (StepBatch.group_accuracy)
    w(acc)    = 1[acc <= rho]                                          (allocation: threshold)
              = clamp((1 - acc) / (1 - rho), 0, 1)                     (allocation: linear)
    alpha_i   = alpha_t * w(acc_q(i))
    H*        = tau * H_0,  H_0 = token-mean full entropy of the old policy on the first rollout batch
    alpha_t   = clip(alpha_{t-1} + eta_alpha * (H* - H_t), 0, alpha_max),  alpha_0 = alpha_init
    L         = L_pg - (1/|tokens|) sum_{i,t} alpha_i M_{i,t} H_{i,t}   (full-vocabulary current entropy)

H_t is the token-mean full entropy of the OLD policy on the step's whole rollout batch (with several
processes: over every process's shard, all-reduced). The update runs once per step in ``begin_step``,
before the step's updates, so the alpha used at step t already reacts to H_t (dual ascent on the
constraint H >= H*; alpha grows while entropy is below the target and decays to 0 while it is above).
The ``linear`` weight is 1 for acc <= rho and falls linearly to 0 at acc = 1:
it equals ``threshold`` at both ends, is continuous and decreasing, and gives all-correct groups 0
(they also have A = 0 in GRPO). With rho = 1 both allocations regularize every prompt.

Hyperparameters (``entropy.aer.*``; none has a published default, values are candidates):

- ``rho`` 0.5: difficulty threshold (a third-party summary names two thresholds "(tau, rho)").
- ``allocation`` ``threshold`` | ``linear`` (the smooth decreasing weight above).
- ``alpha_init`` 1e-3, ``alpha_lr`` (eta_alpha) 1e-3, ``alpha_max`` 1e-2: bounds of the dual update.
- tau = ``entropy.anchor.ratio`` (default 0.5 when None; tau ~ 0.4 reported best [2nd]).
- ``entropy.anchor.source``: ``initial`` (H_0 as above) | ``previous`` (the previous step's H_t, so the
  target trails the entropy by a factor tau) | ``fixed`` (``anchor.value``).

Related reference code: SIREN's ``naive_entropy_reg_adaptive`` baseline updates its coefficient after
every micro-batch with beta <- max(0, beta + lr (H_anchor - H_micro)) and no upper bound; AER here
updates once per step and clips to [0, alpha_max].

Hooks: ``begin_step`` (anchor, alpha update, allocation stats), ``extra_loss`` (weighted entropy bonus
at the micro-batch's scale). State (checkpointed): alpha and the anchor.
"""

from __future__ import annotations

from typing import Any

import torch

from ..collectives import global_ratio
from .anchor import TargetAnchor
from .base import EntropyIntervention, MicroBatch, StepBatch, register_intervention
from .ops import masked_token_mean, token_entropy

DEFAULT_TAU = 0.5


def aer_allocation_weights(group_accuracy: torch.Tensor, rho: float, allocation: str = "threshold") -> torch.Tensor:
    """w(acc) in [0, 1] per response: ``threshold`` 1[acc <= rho]; ``linear`` clamp((1-acc)/(1-rho), 0, 1)."""
    acc = group_accuracy.float()
    if allocation == "threshold":
        return (acc <= rho).float()
    if allocation == "linear":
        if rho >= 1.0:
            return torch.ones_like(acc)
        return ((1.0 - acc) / (1.0 - rho)).clamp(0.0, 1.0)
    raise ValueError(f"entropy.aer.allocation must be 'threshold' or 'linear', got {allocation!r}")


def aer_coefficients(group_accuracy: torch.Tensor, alpha: float, rho: float, allocation: str = "threshold") -> torch.Tensor:
    """alpha_i = alpha * w(acc_i) per response."""
    return alpha * aer_allocation_weights(group_accuracy, rho, allocation)


def aer_alpha_update(alpha: float, target_entropy: float, current_entropy: float, alpha_lr: float,
                     alpha_max: float) -> float:
    """alpha <- clip(alpha + alpha_lr * (H* - H_t), 0, alpha_max)."""
    return float(min(max(alpha + alpha_lr * (target_entropy - current_entropy), 0.0), alpha_max))


def aer_entropy_loss(entropy: torch.Tensor, mask: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """-(1/|tokens|) sum_{i,t} alpha_i M_{i,t} H_{i,t}; ``coefficients`` is [B], entropy/mask [B, T]."""
    mask = mask.to(entropy.dtype)
    return -(coefficients[:, None].to(entropy.dtype) * mask * entropy).sum() / mask.sum().clamp(min=1.0)


@register_intervention("aer")
class AdaptiveEntropyRegularization(EntropyIntervention):
    """AER (reconstruction) at the hooks: begin_step (anchor + alpha update), extra_loss."""

    def __init__(self, config: Any = None, entropy_config: Any = None, run_config: Any = None):
        if config is None:
            from ..config import AERConfig
            config = AERConfig()
        super().__init__(config, entropy_config, run_config)
        anchor_config = entropy_config.anchor if entropy_config is not None else None
        self.anchor = TargetAnchor.from_config(anchor_config, DEFAULT_TAU)
        self.alpha = float(config.alpha_init)

    def begin_step(self, batch: StepBatch) -> dict[str, float]:
        cfg = self.config
        # H_t over the whole step batch (every process's shard), so each rank updates the same alpha
        current_entropy = global_ratio((batch.old_entropy * batch.response_mask).sum(), batch.response_mask.sum())
        self.anchor.update(current_entropy)
        target = self.anchor.target
        self.alpha = aer_alpha_update(self.alpha, target, current_entropy, cfg.alpha_lr, cfg.alpha_max)
        weights = aer_allocation_weights(batch.group_accuracy, cfg.rho, cfg.allocation)
        regularized = weights > 0
        metrics = {
            "alpha": self.alpha,
            "entropy": current_entropy,
            "target": target,
            "anchor": self.anchor.anchor,
            "fraction_regularized": float(regularized.float().mean()) if regularized.numel() else 0.0,
            "weight_mean": float(weights.mean()) if weights.numel() else 0.0,
        }
        mask = batch.response_mask
        for name, rows in (("entropy_regularized", regularized), ("entropy_unregularized", ~regularized)):
            if bool(rows.any()) and float(mask[rows].sum()) > 0:
                metrics[name] = float(masked_token_mean(batch.old_entropy[rows], mask[rows]))
        return metrics

    def extra_loss(self, micro: MicroBatch) -> tuple[torch.Tensor | None, dict[str, float]]:
        cfg = self.config
        coefficients = aer_coefficients(micro.group_accuracy, self.alpha, cfg.rho, cfg.allocation).to(micro.logits.device)
        if not bool((coefficients > 0).any()):
            return None, {"coef_mean": 0.0}
        entropy = token_entropy(micro.logits, micro.chunk_size)
        loss = aer_entropy_loss(entropy, micro.response_mask, coefficients)
        return loss, {
            "coef_mean": float(coefficients.mean()),
            "current_entropy": float(masked_token_mean(entropy.detach(), micro.response_mask)),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "anchor": self.anchor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "alpha" in state:
            self.alpha = float(state["alpha"])
        if "anchor" in state:
            self.anchor.load_state_dict(state["anchor"])
