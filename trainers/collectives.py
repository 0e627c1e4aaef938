"""Statistics over the whole step batch when each process holds a shard of it (data parallel).

An entropy method's state (SIREN's anchor, AER's H_t and alpha, STEER's step-level |Omega| range, the
80/20 threshold) must be what one process over the whole batch would compute, or the ranks drift apart
and a checkpoint (saved by rank 0, loaded by every rank) changes the others' behaviour on resume. These
helpers reduce over the default ``torch.distributed`` group; with one process (or no group) each is the
identity, so single-process code and unit tests run them unchanged.

- ``global_ratio(numerator, denominator)``  sum over ranks of each, then the ratio (means of sums)
- ``global_max`` / ``global_min``           elementwise over ranks
- ``gather_values(values)``                 1-D tensors of any length, concatenated in rank order
- ``global_quantile(values, q)``            ``linear_quantile`` of the concatenation (exact: a quantile
                                            is not a sum, so the values are gathered, not reduced)
"""

from __future__ import annotations

import torch


def world_size() -> int:
    distributed = torch.distributed
    if not (distributed.is_available() and distributed.is_initialized()):
        return 1
    return distributed.get_world_size()


def _all_reduce(tensor: torch.Tensor, op) -> torch.Tensor:
    if world_size() > 1:
        torch.distributed.all_reduce(tensor, op=op)
    return tensor


def global_sum(values: torch.Tensor) -> torch.Tensor:
    """Elementwise sum over ranks, in float64 (so the sum's rounding does not depend on the rank count)."""
    return _all_reduce(values.detach().to(torch.float64).clone(), torch.distributed.ReduceOp.SUM)


def global_ratio(numerator: torch.Tensor, denominator: torch.Tensor, empty: float = 0.0) -> float:
    """sum_ranks(numerator) / sum_ranks(denominator) for two scalar tensors; ``empty`` when the denominator
    sums to 0."""
    total = global_sum(torch.stack([numerator.detach().reshape(()).to(torch.float64),
                                    denominator.detach().reshape(()).to(torch.float64)]))
    return float(total[0] / total[1]) if float(total[1]) > 0 else empty


def global_max(values: torch.Tensor) -> torch.Tensor:
    return _all_reduce(values.detach().clone(), torch.distributed.ReduceOp.MAX)


def global_min(values: torch.Tensor) -> torch.Tensor:
    return _all_reduce(values.detach().clone(), torch.distributed.ReduceOp.MIN)


def gather_values(values: torch.Tensor) -> torch.Tensor:
    """Every rank's 1-D ``values`` (lengths may differ), concatenated in rank order, on every rank."""
    values = values.detach().reshape(-1)
    world = world_size()
    if world == 1:
        return values
    length = torch.tensor([values.numel()], dtype=torch.long, device=values.device)
    lengths = [torch.zeros_like(length) for _ in range(world)]
    torch.distributed.all_gather(lengths, length)
    longest = max(int(n) for n in lengths)
    padded = torch.zeros(longest, dtype=values.dtype, device=values.device)
    padded[:values.numel()] = values
    pieces = [torch.zeros_like(padded) for _ in range(world)]
    torch.distributed.all_gather(pieces, padded)
    return torch.cat([piece[:int(n)] for piece, n in zip(pieces, lengths)])


def global_quantile(values: torch.Tensor, q: float) -> torch.Tensor | None:
    """The q-quantile (linear interpolation) of the values of all ranks; None if there are none."""
    from .entropy.ops import linear_quantile

    every = gather_values(values)
    return linear_quantile(every, q) if every.numel() else None
