"""Random step batches and micro-batches for the entropy-intervention tests, built the way the GRPO
step builds them (old-policy pass -> StepBatch; a slice with grad -> MicroBatch)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainers.algorithms import grpo_advantages, ppo_clip_loss
from trainers.config import ClipConfig
from trainers.entropy import MicroBatch, StepBatch
from trainers.entropy.ops import token_entropy, token_logprobs


@dataclass
class RandomRollout:
    old_logits: torch.Tensor      # [B, T, V]
    new_logits: torch.Tensor      # [B, T, V] current policy (old + a small perturbation), leaf without grad
    tokens: torch.Tensor          # [B, T]
    response_mask: torch.Tensor   # [B, T] float
    rewards: torch.Tensor         # [B]
    group_size: int


def random_rollout(seed: int = 0, group_size: int = 4, lengths=(5, 1, 7, 3, 7, 6, 2, 7, 4, 7, 7, 5),
                   vocab: int = 11, logit_scale: float = 2.0, drift: float = 0.3,
                   rewards=(1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0)) -> RandomRollout:
    """Three prompts x 4 responses by default: an all-correct group, an all-wrong group (both zero
    reward variance) and a mixed one; responses of different lengths (one of length 1)."""
    generator = torch.Generator().manual_seed(seed)
    batch, length = len(lengths), max(lengths)
    old_logits = torch.randn(batch, length, vocab, generator=generator) * logit_scale
    new_logits = old_logits + drift * torch.randn(batch, length, vocab, generator=generator)
    probs = torch.softmax(old_logits, -1)
    tokens = torch.multinomial(probs.reshape(-1, vocab), 1, generator=generator).reshape(batch, length)
    response_mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).float()
    return RandomRollout(old_logits, new_logits, tokens, response_mask, torch.tensor(rewards, dtype=torch.float32),
                         group_size)


def step_batch(rollout: RandomRollout, intervention=None, step: int = 1, chunk_size: int = 4) -> StepBatch:
    with torch.no_grad():
        features = {} if intervention is None else intervention.old_policy_features(rollout.old_logits,
                                                                                    rollout.response_mask)
        G = rollout.group_size
        return StepBatch(
            step=step, response_mask=rollout.response_mask,
            old_logp=token_logprobs(rollout.old_logits, rollout.tokens, chunk_size),
            old_entropy=token_entropy(rollout.old_logits, chunk_size),
            advantages=grpo_advantages(rollout.rewards, G), rewards=rollout.rewards,
            group_index=torch.arange(len(rollout.rewards) // G).repeat_interleave(G),
            group_accuracy=rollout.rewards.reshape(-1, G).mean(-1).repeat_interleave(G),
            old_features=features)


def micro_batch(rollout: RandomRollout, batch: StepBatch, rows, chunk_size: int = 4,
                logits: torch.Tensor | None = None, clip=None, seed: int = 0) -> MicroBatch:
    """A micro-batch over ``rows`` whose logits require grad (``logits`` = a leaf to differentiate), with the
    clip statistics the GRPO step hands the hooks (``ppo_clip_loss`` with ``clip``, default ClipConfig())."""
    rows = torch.as_tensor(rows, dtype=torch.long)
    if logits is None:
        logits = rollout.new_logits[rows].clone().requires_grad_(True)
    logp = token_logprobs(logits, rollout.tokens[rows], chunk_size)
    clip = clip if clip is not None else ClipConfig()
    advantages = batch.advantages[rows][:, None].expand_as(logp)
    _, clip_stats = ppo_clip_loss(logp.detach(), batch.old_logp[rows], advantages, clip.eps_low, clip.eps_high,
                                  clip.dual_c)
    return MicroBatch(
        logits=logits, logp=logp, old_logp=batch.old_logp[rows], old_entropy=batch.old_entropy[rows],
        response_mask=batch.response_mask[rows], advantages=advantages,
        group_accuracy=batch.group_accuracy[rows], rows=rows,
        old_features={k: v[rows] for k, v in batch.old_features.items()}, chunk_size=chunk_size, seed=seed,
        clip_stats=clip_stats)


def python_quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile of a list, by hand (numpy/torch 'linear')."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --------------------------------------------------------------------------- slow references


def full_entropy_reference(row: torch.Tensor) -> torch.Tensor:
    """-sum p log p for one position, one vocabulary entry at a time (differentiable)."""
    top = max(row.tolist())
    exps = [torch.exp(row[v] - top) for v in range(row.numel())]
    total = sum(exps)
    entropy = row.new_zeros(())
    for e in exps:
        p = e / total
        entropy = entropy - p * torch.log(p)
    return entropy


def nucleus_entropy_reference(row: torch.Tensor, top_p: float, top_k: int) -> torch.Tensor:
    """methods.md SIREN step 1 for one position: sort descending, walk the top-K while the running
    mass stays strictly below top_p (the crossing token is excluded), renormalize, entropy."""
    top = max(row.tolist())
    exps = [torch.exp(row[v] - top) for v in range(row.numel())]
    total = sum(exps)
    probs = [e / total for e in exps]
    order = sorted(range(row.numel()), key=lambda v: -row[v].item())[:top_k]
    nucleus, running = [], 0.0
    for v in order:
        running += probs[v].item()
        if running >= top_p:
            break
        nucleus.append(v)
    mass = sum((probs[v] for v in nucleus), row.new_zeros(()))
    entropy = row.new_zeros(())
    for v in nucleus:
        q = probs[v] / (mass + 1e-12)
        entropy = entropy - q * torch.log(q + 1e-12)
    return entropy


def loop_over_positions(fn, logits: torch.Tensor) -> torch.Tensor:
    flat = logits.reshape(-1, logits.shape[-1])
    return torch.stack([fn(flat[i]) for i in range(flat.shape[0])]).reshape(logits.shape[:-1])
