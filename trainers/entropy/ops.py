"""Entropy from logits, computed in chunks over positions.

A [positions, vocab] logit block is turned into a float32 softmax one chunk of positions at a time,
so a 152k vocabulary x 8k positions never materializes twice in float32. Gradients flow through
when the input requires grad (each chunk keeps only what its backward needs).
"""

from __future__ import annotations

import torch


def token_entropy(logits: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """H = -sum_v p_v log p_v for each position. logits [..., V] -> entropy [...] (float32)."""
    flat = logits.reshape(-1, logits.shape[-1])
    pieces = []
    for start in range(0, flat.shape[0], chunk_size):
        chunk = flat[start:start + chunk_size].float()
        log_probs = torch.log_softmax(chunk, dim=-1)
        pieces.append(-(log_probs.exp() * log_probs).sum(-1))
    if not pieces:
        return flat.new_zeros(logits.shape[:-1], dtype=torch.float32)
    return torch.cat(pieces).reshape(logits.shape[:-1])


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """log p(token) per position. logits [..., V], tokens [...] -> [...] (float32)."""
    flat = logits.reshape(-1, logits.shape[-1])
    flat_tokens = tokens.reshape(-1)
    pieces = []
    for start in range(0, flat.shape[0], chunk_size):
        chunk = flat[start:start + chunk_size].float()
        picked = chunk.gather(-1, flat_tokens[start:start + chunk_size, None]).squeeze(-1)
        pieces.append(picked - torch.logsumexp(chunk, dim=-1))
    if not pieces:
        return flat.new_zeros(tokens.shape, dtype=torch.float32)
    return torch.cat(pieces).reshape(tokens.shape)
