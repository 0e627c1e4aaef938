"""SIREN: selective entropy regularization (Jiang et al., arXiv 2509.25133; code Linn3a/siren @ fa59a8d).

Regularize entropy only (a) over the probability nucleus of each next-token distribution and (b) at
the highest-entropy positions of each response, and pull that selective entropy toward an anchor
with a two-sided squared error instead of maximizing it::

    H^top_{i,t} = entropy of the renormalized top-p nucleus of pi(.|s_{i,t})      (ops.nucleus_entropy)
    S_{i,t}     = 1[ H^top_{i,t} > nanquantile_q(H^top_{i,.}) ]   over valid tokens, strict ">"
    H_sel       = mean_i [ sum_t S H^top / sum_t S ]   (an empty S_i contributes 0 but counts in the mean)
    L           = L_pg + beta * (H_sel - H_target)^2,   H_target = ratio x anchor

Hyperparameters (``entropy.siren.*``; code defaults, paper values where known):

- ``top_p`` (p_top, ``entropy_topp``) 0.8: the actor default the released script effectively uses;
  a seed summary says 0.95 (unverified). Nucleus = tokens whose cumulative mass is strictly below p.
- ``top_k`` (``entropy_topk``) 10000: cap on the nucleus search.
- ``peak_quantile`` (``mask_ratio``) 0.8: keep positions strictly above the 0.8-quantile = top ~20%.
- ``peak_scope``: ``response`` (SIREN code: one quantile per response, ``dim=-1``) | ``batch`` (the
  80/20 paper's reading: one quantile over all valid tokens). In the loss, ``batch`` means the valid
  tokens of the MICRO-batch being trained (the current policy's entropies exist only there; the
  80/20 verl code also thresholds per micro-batch); for the anchor measurement it means the whole
  step batch (old policy).
- ``coef`` (beta, ``entropy_coeff``) 0.005.
- ``agg`` (``entropy_agg_mode``) ``seq_mean_token_mean`` (code default) | ``token_mean``.
- ``entropy.anchor``: ``source`` initial (SIREN code HEAD: measured ONCE at step 1 from the old policy
  over the whole first rollout batch, with the same nucleus entropy, mask and aggregation) | previous
  (the previous step's value of that quantity) | fixed (``anchor.value``); ``ratio`` default 1.0.

Where each quantity comes from:

- ``old_policy_features``: the old policy's nucleus entropy (no grad), ``siren_nucleus_entropy``.
- ``begin_step``: H_sel of the old policy over the whole step batch -> the anchor (see anchor.py); with
  several processes, over every process's shard (the batch quantile gathered, the aggregate's sums
  all-reduced: ``trainers.collectives``), so every rank holds the anchor one process would.
- ``extra_loss``: the current policy's nucleus entropy with grad; the peak mask is computed from its
  detached values (as in SIREN's ``update_policy``); the loss is beta (H_sel - H_target)^2 at the
  micro-batch's scale (the trainer divides it by the number of micro-batches like the PG loss).
"""

from __future__ import annotations

from typing import Any

import torch

from ..collectives import global_quantile, global_ratio
from .anchor import TargetAnchor
from .base import EntropyIntervention, MicroBatch, StepBatch, register_intervention
from .ops import linear_quantile, masked_token_mean, nucleus_entropy

FEATURE = "siren_nucleus_entropy"
DEFAULT_RATIO = 1.0


def peak_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, quantile: float,
                      scope: str = "response", across_processes: bool = False) -> torch.Tensor:
    """S = 1[entropy > q-quantile of the valid entropies] (bool [B, T]), strict ">", valid tokens only.

    ``scope: response``: one ``torch.nanquantile`` (linear interpolation) per row over its valid tokens;
    ``scope: batch``: one quantile over all valid tokens of the tensor, or with ``across_processes`` of
    every process's tensor (the step batch's shards). A row (or batch) without valid tokens selects
    nothing. Ties at the threshold are not selected, so all-equal entropies select nothing.
    """
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"peak_quantile must be in [0, 1), got {quantile}")
    valid = mask.bool()
    values = entropy.detach().float()
    masked = values.masked_fill(~valid, float("nan"))
    if scope == "response":
        threshold = torch.nanquantile(masked, quantile, dim=-1, keepdim=True, interpolation="linear")
    elif scope == "batch":
        if across_processes:
            threshold = global_quantile(values[valid], quantile)   # every rank takes part, even without tokens
            if threshold is None or not valid.any():
                return torch.zeros_like(valid)
        else:
            if not valid.any():
                return torch.zeros_like(valid)
            threshold = linear_quantile(values[valid], quantile)
    else:
        raise ValueError(f"peak_scope must be 'response' or 'batch', got {scope!r}")
    return (values > threshold) & valid   # NaN thresholds (rows without valid tokens) compare False


def selected_entropy_parts(entropy: torch.Tensor, selection: torch.Tensor,
                           agg: str = "seq_mean_token_mean") -> tuple[torch.Tensor, torch.Tensor]:
    """(numerator, denominator) of H_sel, so shards of a batch sum to the whole batch's:
    ``seq_mean_token_mean``: (sum of the rows' selected means, number of rows);
    ``token_mean``: (sum S H, sum S)."""
    selection = selection.to(entropy.dtype)
    if agg == "seq_mean_token_mean":
        per_row = (entropy * selection).sum(-1) / selection.sum(-1).clamp(min=1.0)
        return per_row.sum(), entropy.new_tensor(float(per_row.numel()))
    if agg == "token_mean":
        return (entropy * selection).sum(), selection.sum()
    raise ValueError(f"entropy.siren.agg must be 'seq_mean_token_mean' or 'token_mean', got {agg!r}")


def selected_entropy(entropy: torch.Tensor, selection: torch.Tensor, agg: str = "seq_mean_token_mean") -> torch.Tensor:
    """H_sel: the aggregate of ``entropy`` over ``selection`` (scalar tensor, keeps grad).

    ``seq_mean_token_mean``: mean over ALL rows of (sum_t S H / sum_t S), an empty row contributing 0;
    ``token_mean``: sum(S H) / sum(S), 0 if nothing is selected.
    """
    selection = selection.to(entropy.dtype)
    if agg == "seq_mean_token_mean":
        per_row = (entropy * selection).sum(-1) / selection.sum(-1).clamp(min=1.0)
        return per_row.mean() if per_row.numel() else entropy.new_zeros(())
    if agg == "token_mean":
        return (entropy * selection).sum() / selection.sum().clamp(min=1.0)
    raise ValueError(f"entropy.siren.agg must be 'seq_mean_token_mean' or 'token_mean', got {agg!r}")


def anchored_entropy_loss(selected: torch.Tensor, target: float, coef: float) -> torch.Tensor:
    """beta * (H_sel - H_target)^2: penalizes both collapse below and explosion above the target."""
    return coef * (selected - target) ** 2


@register_intervention("siren")
class Siren(EntropyIntervention):
    """SIREN at the hooks: old_policy_features, begin_step (anchor), extra_loss (anchored MSE)."""

    def __init__(self, config: Any = None, entropy_config: Any = None, run_config: Any = None):
        if config is None:
            from ..config import SirenConfig
            config = SirenConfig()
        super().__init__(config, entropy_config, run_config)
        anchor_config = entropy_config.anchor if entropy_config is not None else None
        self.anchor = TargetAnchor.from_config(anchor_config, DEFAULT_RATIO)
        self.chunk_size = entropy_config.chunk_size if entropy_config is not None else 1024

    def _nucleus_entropy(self, logits: torch.Tensor, chunk_size: int) -> torch.Tensor:
        return nucleus_entropy(logits, self.config.top_p, self.config.top_k, chunk_size)

    def old_policy_features(self, logits: torch.Tensor, response_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {FEATURE: self._nucleus_entropy(logits, self.chunk_size)}

    def begin_step(self, batch: StepBatch) -> dict[str, float]:
        cfg = self.config
        old_nucleus = batch.old_features[FEATURE]
        # H_sel over the whole step batch: every process's shard (SIREN's code computes it on the global batch)
        selection = peak_entropy_mask(old_nucleus, batch.response_mask, cfg.peak_quantile, cfg.peak_scope,
                                      across_processes=True)
        measured = global_ratio(*selected_entropy_parts(old_nucleus, selection, cfg.agg))
        anchor = self.anchor.update(measured)
        return {
            "anchor": anchor,
            "target": self.anchor.target,
            "old_selected_entropy": measured,
            "old_nucleus_entropy": global_ratio((old_nucleus * batch.response_mask).sum(), batch.response_mask.sum()),
            "old_selected_fraction": global_ratio(selection.float().sum(), batch.response_mask.sum()),
        }

    def extra_loss(self, micro: MicroBatch) -> tuple[torch.Tensor | None, dict[str, float]]:
        cfg = self.config
        if self.anchor.target is None:
            raise RuntimeError("siren: extra_loss before begin_step; the trainer must call begin_step first")
        current = self._nucleus_entropy(micro.logits, micro.chunk_size)
        selection = peak_entropy_mask(current.detach(), micro.response_mask, cfg.peak_quantile, cfg.peak_scope)
        selected = selected_entropy(current, selection, cfg.agg)
        loss = anchored_entropy_loss(selected, self.anchor.target, cfg.coef)
        valid = micro.response_mask.sum().clamp(min=1.0)
        selected_tokens = selection.sum()
        metrics = {
            "selected_entropy": float(selected.detach()),
            "mse": float(((selected.detach() - self.anchor.target) ** 2)),
            "selected_fraction": float(selected_tokens / valid),
            "nucleus_entropy": float(masked_token_mean(current.detach(), micro.response_mask)),
            "entropy_selected": float((current.detach() * selection).sum() / selected_tokens.clamp(min=1.0)),
        }
        return loss, metrics

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "anchor" in state:
            self.anchor.load_state_dict(state["anchor"])
