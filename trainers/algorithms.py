"""GRPO's math as pure tensor functions, registered by name (the verl ``core_algos`` pattern).

Notation (``shared/methods.md`` section 0): responses o_i in groups of G per prompt, tokens t,
r_{i,t} = pi(o_t|s)/pi_old(o_t|s), A_i the group-relative advantage, M_{i,t} the loss mask.

- Advantages  ``grpo``:    A_i = (R_i - mean_G R) / (std_G R + 1e-6), std unbiased (torch.std);
              ``dr_grpo``: A_i = R_i - mean_G R.          Groups of size 1: mean 0, std 1.
- PPO loss    l = max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high)); dual clip for A < 0:
              l = min(l, -A c). r = exp(clamp(logp - logp_old, -20, 20)).
- Aggregation ``token_mean``:              sum(l M) / sum(M)
              ``seq_mean_token_mean``:     mean_i [ sum_t l M / sum_t M ]
              ``seq_mean_token_sum_norm``: mean_i [ sum_t l M ] / T  (Dr.GRPO; T a constant: the trainer
                                           passes rollout.max_new_tokens, as verl pads to the maximum length)
              The sums and means run over the whole mini-batch (every micro-batch, every process), as verl
              0.9.1's ``agg_loss`` with ``batch_num_tokens``/``global_batch_size``: given the mini-batch's
              :class:`BatchTotals`, each micro-batch returns its share (its sums over the mini-batch's token or
              sequence count) and the shares add up to the mini-batch's value, so the gradient does not depend
              on the micro-batch size or the process count. Without totals: the tensor's own (one piece).
- KL          k3 estimator: exp(ref - logp) - (ref - logp) - 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

ADVANTAGE_ESTIMATORS: dict[str, Callable[..., torch.Tensor]] = {}
LOSS_AGGREGATIONS: dict[str, Callable[..., torch.Tensor]] = {}


def register_advantage(name: str):
    def wrap(fn):
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn
    return wrap


def register_aggregation(name: str):
    def wrap(fn):
        LOSS_AGGREGATIONS[name] = fn
        return fn
    return wrap


def _group_stats(rewards: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased std per group, broadcast back to [B]. Rewards are ordered group by group."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.float().reshape(-1, group_size)
    if group_size == 1:
        mean, std = torch.zeros_like(grouped), torch.ones_like(grouped)
    else:
        mean = grouped.mean(-1, keepdim=True).expand_as(grouped)
        std = grouped.std(-1, keepdim=True).expand_as(grouped)
    return mean.reshape(-1), std.reshape(-1)


@register_advantage("grpo")
def grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    mean, std = _group_stats(rewards, group_size)
    return (rewards.float() - mean) / (std + eps)


@register_advantage("dr_grpo")
def dr_grpo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    mean, _ = _group_stats(rewards, group_size)
    return rewards.float() - mean


def compute_advantages(kind: str, rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if kind not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"advantage: unknown estimator {kind!r}; registered: {sorted(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[kind](rewards, group_size)


def ppo_clip_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                  eps_low: float, eps_high: float, dual_c: float | None = None
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token clipped surrogate loss and its [B, T] diagnostics (no grad), which the GRPO step also
    hands to the entropy hooks (``MicroBatch.clip_stats``):

    ``ratio``, ``log_ratio``: r and log r (clamped to [-20, 20]);
    ``clipped_low``: A < 0 and r < 1 - eps_low (the clipped branch is active, no gradient);
    ``clipped_high``: A > 0 and r > 1 + eps_high; ``clipped_dual``: the dual-clip bound is active;
    ``clipped``: any of the three: the token's loss has no gradient through r (STEER's I_clip = 0);
    ``clipped_term_larger``: -A clip(r) > -A r, the clipped term strictly wins the max, dual clip not
    considered (Clip-Cov's "already clipped" test, as verl's ``compute_policy_loss_clip_cov``).
    """
    log_ratio = torch.clamp(logp - old_logp, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    token_loss = torch.maximum(unclipped, clipped)
    clipped_term_larger = clipped > unclipped
    clipped_dual = torch.zeros_like(ratio, dtype=torch.bool)
    if dual_c is not None:
        dual_bound = -advantages * dual_c
        clipped_dual = (advantages < 0) & (token_loss > dual_bound)
        token_loss = torch.where(advantages < 0, torch.minimum(token_loss, dual_bound), token_loss)
    clipped_low = ((advantages < 0) & (ratio < 1.0 - eps_low)).detach()
    clipped_high = ((advantages > 0) & (ratio > 1.0 + eps_high)).detach()
    stats = {
        "ratio": ratio.detach(),
        "log_ratio": log_ratio.detach(),
        "clipped_low": clipped_low,
        "clipped_high": clipped_high,
        "clipped_dual": clipped_dual.detach(),
        "clipped": clipped_low | clipped_high | clipped_dual.detach(),
        "clipped_term_larger": clipped_term_larger.detach(),
    }
    return token_loss, stats


@dataclass(frozen=True)
class BatchTotals:
    """The denominators of ``loss_agg`` over a whole mini-batch (all its micro-batches, all processes).

    ``tokens``: response tokens (sum of the response mask: verl 0.9.1's ``batch_num_tokens``, all-reduced once
    per mini-batch); ``sequences``: responses (verl's ``global_batch_size``). A method's loss mask (80/20)
    zeroes tokens in the numerator; the denominator stays the response-token count, as in verl.
    """

    tokens: float
    sequences: float

    @classmethod
    def of(cls, mask: torch.Tensor) -> "BatchTotals":
        """The totals of one piece holding the whole mini-batch (no micro-batches, one process)."""
        return cls(tokens=float(mask.sum()), sequences=float(mask.shape[0]))


@register_aggregation("token_mean")
def token_mean(token_values: torch.Tensor, mask: torch.Tensor, norm_length: int | None = None,
               totals: BatchTotals | None = None) -> torch.Tensor:
    """sum(l M) / N, N the mini-batch's response tokens (``totals.tokens``; None: ``sum(M)`` of this tensor)."""
    tokens = mask.sum().clamp(min=1.0) if totals is None else max(totals.tokens, 1.0)
    return (token_values * mask).sum() / tokens


@register_aggregation("seq_mean_token_mean")
def seq_mean_token_mean(token_values: torch.Tensor, mask: torch.Tensor, norm_length: int | None = None,
                        totals: BatchTotals | None = None) -> torch.Tensor:
    per_sequence = (token_values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return per_sequence.mean() if totals is None else per_sequence.sum() / max(totals.sequences, 1.0)


@register_aggregation("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(token_values: torch.Tensor, mask: torch.Tensor, norm_length: int | None = None,
                            totals: BatchTotals | None = None) -> torch.Tensor:
    """mean_i [ sum_t l M ] / norm_length; ``norm_length`` None = the padded length ``mask.shape[-1]``."""
    per_sequence = (token_values * mask).sum(-1)
    mean = per_sequence.mean() if totals is None else per_sequence.sum() / max(totals.sequences, 1.0)
    return mean / (mask.shape[-1] if norm_length is None else norm_length)


def aggregate(mode: str, token_values: torch.Tensor, mask: torch.Tensor, norm_length: int | None = None,
              totals: BatchTotals | None = None) -> torch.Tensor:
    """Aggregate [B, T] token values over ``mask`` with ``loss_agg`` mode ``mode``. ``norm_length``: Dr.GRPO's
    constant T (``seq_mean_token_sum_norm``; the trainer passes ``rollout.max_new_tokens``), ignored by the
    other modes. ``totals``: the mini-batch's token and sequence counts when ``token_values`` is one micro-batch
    of it (on one process of several): the result is then this piece's share, and the shares of all pieces sum
    to the mini-batch's aggregate; None: the tensor is the whole batch."""
    if mode not in LOSS_AGGREGATIONS:
        raise ValueError(f"loss_agg: unknown mode {mode!r}; registered: {sorted(LOSS_AGGREGATIONS)}")
    return LOSS_AGGREGATIONS[mode](token_values, mask.to(token_values.dtype), norm_length, totals)


def truncated_importance_weights(trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance sampling (verl's TIS, TRL's ``vllm_importance_sampling_cap``): per token
    w = min(pi_trainer / pi_sampler, C) = min(exp(trainer_logp - sampler_logp), C), no grad. The PG token loss is
    multiplied by w, so samples the sampler over-drew count less (a sampler that matches the trainer: w = 1)."""
    log_ratio = torch.clamp(trainer_logp.detach() - sampler_logp.detach(), max=20.0)
    return torch.exp(log_ratio).clamp(max=cap)


def rollout_mismatch_metrics(trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """How far a rollout engine's log-probs of its sampled tokens are from the trainer's (pi_old), over ``mask``:
    ``train/rollout_logprob_diff`` mean |log pi_trainer - log pi_sampler|, ``..._max`` the largest, and
    ``train/rollout_kl`` the k3 estimate of KL(sampler || trainer) on the sampler's tokens."""
    from .collectives import global_max, global_ratio

    mask = mask.to(trainer_logp.dtype)
    diff = (trainer_logp.detach() - sampler_logp.detach()).abs() * mask
    delta = torch.clamp(trainer_logp.detach() - sampler_logp.detach(), -20.0, 20.0)
    k3 = (torch.exp(delta) - delta - 1.0) * mask
    return {
        "train/rollout_logprob_diff": global_ratio(diff.sum(), mask.sum()),
        "train/rollout_logprob_diff_max": float(global_max(diff.max().reshape(1))),
        "train/rollout_kl": global_ratio(k3.sum(), mask.sum()),
    }


def importance_weight_metrics(trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor,
                              cap: float) -> dict[str, float]:
    """The truncated importance weights' mean and the fraction of tokens the cap truncated, over ``mask``."""
    from .collectives import global_ratio

    mask = mask.to(trainer_logp.dtype)
    ratio = torch.exp(torch.clamp(trainer_logp.detach() - sampler_logp.detach(), max=20.0))
    return {
        "train/rollout_is_weight_mean": global_ratio((ratio.clamp(max=cap) * mask).sum(), mask.sum()),
        "train/rollout_is_truncated_fraction": global_ratio(((ratio > cap).to(mask.dtype) * mask).sum(), mask.sum()),
    }


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref): exp(ref - logp) - (ref - logp) - 1 >= 0."""
    delta = torch.clamp(ref_logp - logp, -20.0, 20.0)
    return torch.exp(delta) - delta - 1.0


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    mask = mask.to(values.dtype)
    return float((values * mask).sum() / mask.sum().clamp(min=1.0))
