"""Forking tokens (the 80/20 rule; Wang et al., arXiv 2506.01939): policy gradient only on the
highest-entropy tokens.

    threshold = (1 - top_fraction)-quantile (linear interpolation) of the OLD policy's full entropy
                over the valid tokens of the scope
    M'_{i,t}  = M_{i,t} * 1[H_{i,t} >= threshold]       -> the PG loss averages over M' only

The 80/20 paper keeps the top 20% of tokens of the whole batch ("the 80th percentile of entropy over
all tokens in the batch"), with ">=" as in TRL's ``get_high_entropy_mask``, so ``top_fraction`` = 1
keeps every token. SIREN's reimplementation used a per-response 0.8 quantile with a strict ">"
(``scope: response`` here keeps ">=" so both scopes share one rule; ties at the threshold are kept).

Hyperparameters (``entropy.forking.*``):

- ``top_fraction`` 0.2 (paper).
- ``scope`` ``batch`` (paper: one threshold over all valid tokens of the whole rollout step batch,
  computed once in ``begin_step``; with several processes over every process's shard, gathered) | ``response`` (one threshold per response).

The entropy is the old policy's (the rollout batch's, from the old-policy pass), so the mask is fixed
for the step and costs nothing in the training pass; in the 80/20 verl code the entropy comes from the
training forward, which equals the old policy's on the first (on-policy) mini-batch.

Hooks: ``begin_step`` (the mask for the step batch), ``loss_mask`` (its rows for the micro-batch).
Metrics: selected fraction, the threshold (scope batch), entropy over the selected and the unselected tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from ..collectives import global_quantile, global_ratio
from .base import EntropyIntervention, MicroBatch, StepBatch, register_intervention
from .ops import linear_quantile, masked_token_mean


def entropy_threshold(entropy: torch.Tensor, mask: torch.Tensor, top_fraction: float, scope: str = "batch",
                      across_processes: bool = False) -> torch.Tensor | None:
    """The (1 - top_fraction)-quantile (linear interpolation) of the valid entropies of the scope: a scalar
    for ``batch`` (with ``across_processes``: over the valid tokens of every process's tensor), [B, 1] for
    ``response`` (NaN for a row without valid tokens); None for a batch without valid tokens."""
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"entropy.forking.top_fraction must be in (0, 1], got {top_fraction}")
    valid = mask.bool()
    values = entropy.detach().float()
    level = 1.0 - top_fraction
    if scope == "batch":
        if across_processes:
            return global_quantile(values[valid], level)   # every rank takes part, even without tokens
        return linear_quantile(values[valid], level) if valid.any() else None
    if scope == "response":
        masked = values.masked_fill(~valid, float("nan"))
        return torch.nanquantile(masked, level, dim=-1, keepdim=True, interpolation="linear")
    raise ValueError(f"entropy.forking.scope must be 'batch' or 'response', got {scope!r}")


def top_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, top_fraction: float, scope: str = "batch",
                     across_processes: bool = False, threshold: torch.Tensor | None = None) -> torch.Tensor:
    """bool [B, T]: valid tokens with entropy >= the (1 - top_fraction)-quantile of their scope
    (``entropy_threshold``, unless the ``threshold`` is given)."""
    if threshold is None:
        threshold = entropy_threshold(entropy, mask, top_fraction, scope, across_processes)
    valid = mask.bool()
    if threshold is None:
        return torch.zeros_like(valid)
    return (entropy.detach().float() >= threshold) & valid


@register_intervention("forking_tokens")
class ForkingTokens(EntropyIntervention):
    """80/20: the PG loss mask keeps only the top ``top_fraction`` old-policy-entropy tokens."""

    def __init__(self, config: Any = None, entropy_config: Any = None, run_config: Any = None):
        from ..config import ForkingConfig

        super().__init__(config if config is not None else ForkingConfig(), entropy_config, run_config)
        self._step_mask: torch.Tensor | None = None

    def begin_step(self, batch: StepBatch) -> dict[str, float]:
        mask = batch.response_mask
        threshold = entropy_threshold(batch.old_entropy, mask, self.config.top_fraction, self.config.scope,
                                      across_processes=True)
        self._step_mask = top_entropy_mask(batch.old_entropy, mask, self.config.top_fraction, self.config.scope,
                                           threshold=threshold)
        selected = self._step_mask.float()
        metrics = {"selected_fraction": global_ratio(selected.sum(), mask.sum())}
        if threshold is not None and threshold.numel() == 1:
            metrics["threshold"] = float(threshold)   # scope batch: one threshold for the whole step batch
        if selected.sum() > 0:
            metrics["entropy_selected"] = float(masked_token_mean(batch.old_entropy, selected))
        unselected = mask * (1.0 - selected)
        if unselected.sum() > 0:
            metrics["entropy_unselected"] = float(masked_token_mean(batch.old_entropy, unselected))
        return metrics

    def loss_mask(self, micro: MicroBatch) -> tuple[torch.Tensor | None, dict[str, float]]:
        if self._step_mask is None:
            raise RuntimeError("forking_tokens: loss_mask before begin_step; the trainer must call begin_step first")
        return self._step_mask[micro.rows].to(micro.response_mask.dtype), {}
