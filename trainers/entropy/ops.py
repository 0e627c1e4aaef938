"""Entropy from logits, computed in chunks over positions.

A [positions, vocab] logit block is turned into a float32 softmax one chunk of ``chunk_size`` positions
at a time, so a 152k vocabulary x 8k positions never materializes twice in float32. Without grad, each
chunk works in place (a few float32 [chunk, vocab] blocks at most). With grad, the forward keeps nothing
but the logits (stored anyway) and the backward pass recomputes each chunk and writes its gradient into
one [positions, vocab] buffer (``_RecomputedChunks``), so neither the float32 probabilities of all
positions nor per-chunk full-size gradient blocks are ever held at once.

- ``token_entropy``    H = -sum_v p_v log p_v (full vocabulary).
- ``nucleus_entropy``  SIREN's top-p entropy (arXiv 2509.25133, repo Linn3a/siren
                       ``efficient_top_p_sampling``): entropy of the renormalized nucleus.
- ``token_logprobs``   log p(token) per position.
"""

from __future__ import annotations

from typing import Callable

import torch


class _RecomputedChunks(torch.autograd.Function):
    """``fn`` ([n, V] -> [n]) applied chunk by chunk: the forward runs without grad and keeps only the logits;
    the backward recomputes each chunk with grad and writes d fn / d logits of that chunk into one buffer
    (activation checkpointing per chunk, without the full-size zero block that slicing's backward adds
    per chunk)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], chunk_size: int) -> torch.Tensor:
        ctx.save_for_backward(logits)
        ctx.fn, ctx.chunk_size = fn, chunk_size
        return torch.cat([fn(logits[start:start + chunk_size]) for start in range(0, logits.shape[0], chunk_size)])

    @staticmethod
    def backward(ctx, grad_values: torch.Tensor):
        (logits,) = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk_size):
            stop = start + ctx.chunk_size
            with torch.enable_grad():
                chunk = logits[start:stop].detach().requires_grad_(True)
                (grad_logits[start:stop],) = torch.autograd.grad(ctx.fn(chunk), chunk, grad_values[start:stop])
        return grad_logits, None, None


def _map_position_chunks(fn: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor,
                         chunk_size: int) -> torch.Tensor:
    """Apply ``fn`` ([n, V] -> [n]) to chunks of ``chunk_size`` positions of ``logits`` [..., V]."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive number of positions, got {chunk_size}")
    flat = logits.reshape(-1, logits.shape[-1])
    if flat.shape[0] == 0:
        return flat.new_zeros(logits.shape[:-1], dtype=torch.float32)
    if torch.is_grad_enabled() and flat.requires_grad:
        return _RecomputedChunks.apply(flat, fn, chunk_size).reshape(logits.shape[:-1])
    pieces = [fn(flat[start:start + chunk_size]) for start in range(0, flat.shape[0], chunk_size)]
    return torch.cat(pieces).reshape(logits.shape[:-1])


def _upcast(chunk: torch.Tensor) -> torch.Tensor:
    """float32 for half/bfloat16/float32 logits; float64 logits stay float64 (exact tests)."""
    return chunk if chunk.dtype == torch.float64 else chunk.float()


def _entropy_from_log_probs(log_probs: torch.Tensor) -> torch.Tensor:
    """-sum_v p_v log p_v with 0 log 0 = 0: a logit of -inf (top-k masking, banned ids) has p = 0 and
    log p = -inf, whose product would be NaN; such terms are 0 (value and gradient). Without grad it
    works in place and overwrites ``log_probs``."""
    probs = log_probs.exp()
    if torch.is_grad_enabled() and log_probs.requires_grad:
        return -(probs * log_probs.masked_fill(probs == 0, 0.0)).sum(-1)
    log_probs.masked_fill_(probs == 0, 0.0)
    return -probs.mul_(log_probs).sum(-1)


def _entropy_of_chunk(chunk: torch.Tensor) -> torch.Tensor:
    return _entropy_from_log_probs(torch.log_softmax(_upcast(chunk), dim=-1))


def token_entropy(logits: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """H = -sum_v p_v log p_v for each position. logits [..., V] -> entropy [...] (float32; float64 in,
    float64 out)."""
    return _map_position_chunks(_entropy_of_chunk, logits, chunk_size)


def _nucleus_entropy_of_chunk(chunk: torch.Tensor, top_p: float, top_k: int) -> torch.Tensor:
    logits = _upcast(chunk)
    k = min(top_k, logits.shape[-1])
    top_logits, top_indices = torch.topk(logits, k=k, dim=-1)                 # descending
    # p_k = exp(z_k - logsumexp(z)) for the top K only: the same softmax, without a full [n, V] block
    top_probs = torch.exp(top_logits - torch.logsumexp(logits, dim=-1, keepdim=True))   # [n, K], differentiable
    cumulative = torch.cumsum(top_probs.detach(), dim=-1)
    threshold = torch.full((cumulative.shape[0], 1), top_p, dtype=cumulative.dtype, device=cumulative.device)
    cutoff = torch.searchsorted(cumulative, threshold, right=False)           # n*: first c >= top_p
    rank = torch.arange(k, device=logits.device)[None, :]
    in_nucleus = (rank < cutoff).to(top_probs.dtype)                          # the crossing token is excluded
    nucleus_probs = top_probs * in_nucleus
    renormalized = nucleus_probs / (nucleus_probs.sum(-1, keepdim=True) + 1e-12)
    return -(renormalized * torch.log(renormalized + 1e-12)).sum(-1)


def nucleus_entropy(logits: torch.Tensor, top_p: float = 0.8, top_k: int = 10000,
                    chunk_size: int = 1024) -> torch.Tensor:
    """SIREN's top-p (nucleus) entropy per position. logits [..., V] -> [...] (float32; float64 stays).

    p = softmax(logits); take the ``top_k`` largest probabilities in descending order, c = their
    cumulative sum, n* = searchsorted(c, top_p, left) = the first index with c >= top_p. The nucleus N
    is the n* tokens before that index (cumulative mass strictly below ``top_p``; the token that crosses
    ``top_p`` is excluded). q_k = p_k / (sum_N p + 1e-12) on N, and H = -sum_k q_k log(q_k + 1e-12).
    If the top-1 probability is >= ``top_p`` the nucleus is empty and H = 0. If the top-K mass never
    reaches ``top_p`` (e.g. ``top_p`` = 1.0 and float rounding), all K tokens form the nucleus.
    Gradients flow through the softmax into the logits (the nucleus membership itself is discrete).
    """
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k <= 0:
        raise ValueError(f"top_k must be a positive number of tokens, got {top_k}")
    return _map_position_chunks(lambda chunk: _nucleus_entropy_of_chunk(chunk, top_p, top_k), logits, chunk_size)


class _TokenLogprobs(torch.autograd.Function):
    """log p(token) = z_token - logsumexp(z) over [N, V] logits, chunk by chunk in float32.

    Autograd through ``chunk.float()`` would keep a float32 copy of every chunk until the backward pass
    (for bf16 logits: twice the logits' own memory). This function keeps only the logits (alive anyway)
    and the per-position logsumexp, and rebuilds each chunk's softmax in the backward pass:
    d log p(token) / dz = onehot(token) - softmax(z)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, tokens: torch.Tensor, chunk_size: int) -> torch.Tensor:
        logp = torch.empty(tokens.shape[0], dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(logp)
        for start in range(0, logits.shape[0], chunk_size):
            chunk = logits[start:start + chunk_size].float()
            lse[start:start + chunk_size] = torch.logsumexp(chunk, dim=-1)
            picked = chunk.gather(-1, tokens[start:start + chunk_size, None]).squeeze(-1)
            logp[start:start + chunk_size] = picked - lse[start:start + chunk_size]
        ctx.save_for_backward(logits, tokens, lse)
        ctx.chunk_size = chunk_size
        return logp

    @staticmethod
    def backward(ctx, grad_logp: torch.Tensor):
        logits, tokens, lse = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk_size):
            stop = start + ctx.chunk_size
            grad = grad_logp[start:stop, None].float()
            chunk_grad = torch.exp(logits[start:stop].float() - lse[start:stop, None]).mul_(-grad)
            chunk_grad.scatter_add_(-1, tokens[start:stop, None], grad)
            grad_logits[start:stop] = chunk_grad
        return grad_logits, None, None


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """log p(token) per position. logits [..., V], tokens [...] -> [...] (float32), computed in float32
    chunks of ``chunk_size`` positions; with grad, memory beyond the logits is one chunk's float32 block."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive number of positions, got {chunk_size}")
    flat = logits.reshape(-1, logits.shape[-1])
    if flat.shape[0] == 0:
        return flat.new_zeros(tokens.shape, dtype=torch.float32)
    return _TokenLogprobs.apply(flat, tokens.reshape(-1), chunk_size).reshape(tokens.shape)


@torch.no_grad()
def token_logprobs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor,
                               chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """``(token_logprobs, token_entropy)`` from one log-softmax per chunk, for the no-grad old-policy
    pass (the two separate calls would each normalize the full vocabulary)."""
    flat = logits.reshape(-1, logits.shape[-1])
    flat_tokens = tokens.reshape(-1)
    logps, entropies = [], []
    for start in range(0, flat.shape[0], chunk_size):
        log_probs = torch.log_softmax(_upcast(flat[start:start + chunk_size]), dim=-1)
        logps.append(log_probs.gather(-1, flat_tokens[start:start + chunk_size, None]).squeeze(-1))
        entropies.append(_entropy_from_log_probs(log_probs))    # in place: overwrites log_probs
    if not logps:
        empty = flat.new_zeros(tokens.shape, dtype=torch.float32)
        return empty, empty.clone()
    return torch.cat(logps).reshape(tokens.shape), torch.cat(entropies).reshape(tokens.shape)


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(values * mask) / max(sum(mask), 1) as a tensor (keeps grad)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def linear_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of a 1-D tensor with linear interpolation (``torch.quantile``'s default), without
    ``torch.quantile``'s 16M-element input limit (a whole step batch can exceed it)."""
    flat = values.reshape(-1)
    if flat.numel() <= 1_000_000:
        return torch.quantile(flat, q, interpolation="linear")
    ordered = flat.sort().values
    position = q * (ordered.numel() - 1)
    low = int(position)
    high = min(low + 1, ordered.numel() - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
