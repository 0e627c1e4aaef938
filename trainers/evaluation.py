"""Validation metrics from n sampled answers per prompt: pass@k, maj@k, mean@k.

Pure functions over plain Python values (no torch). The trainer samples n responses for each
validation prompt, scores each with the run's reward (``correct[p][i]``: truthy = sample i of prompt
p is right) and extracts each answer with the reward's extractor (``answers[p][i]``: normalized string,
None = no answer stated), then calls :func:`evaluation_metrics`.

- pass@k: the unbiased estimator of Chen et al. 2021 (Codex), per prompt with c correct of n samples
  ``1 - C(n-c, k) / C(n, k)``, computed as the product ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (no huge
  binomials), averaged over prompts. Needs 1 <= k <= n. It uses all n samples.
- maj@k: majority vote over the first k samples' extracted answers; the prompt counts as solved if
  the winning answer is correct. Samples with no answer (None) do not vote; a prompt with no votes
  scores 0. Ties go to the answer whose first vote comes earliest among the k samples (deterministic,
  and independent of string order). The winner's correctness is that of its earliest sample.
- mean@k: mean correctness of the first k samples, averaged over prompts (mean@n = plain accuracy).

maj@k and mean@k use the first k samples (one draw), not an average over all k-subsets.

Per prompt: :func:`per_prompt_metrics` gives each prompt's pass@k, maj@k and mean@k (the metrics above
are their means over prompts), and :func:`standard_error` the standard error of such a mean over
prompts, s / sqrt(P) with s the sample standard deviation (ddof 1). Two runs validated on the same
prompts (and the same sampling seeds) are compared prompt by prompt from these values.
"""

from __future__ import annotations

import math
from typing import Sequence


def _check_k(n: int, k: int) -> None:
    if k < 1 or k > n:
        raise ValueError(f"k={k} needs 1 <= k <= n (n={n} samples per prompt): lower eval.k or raise eval.n_samples")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one prompt with ``c`` correct out of ``n`` samples: 1 - C(n-c,k)/C(n,k)."""
    if n < 1:
        raise ValueError(f"pass_at_k: n={n} must be >= 1")
    if c < 0 or c > n:
        raise ValueError(f"pass_at_k: c={c} correct samples must lie in [0, n={n}]")
    _check_k(n, k)
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def _num_samples(correct: Sequence[Sequence[object]]) -> int:
    if len(correct) == 0:
        raise ValueError("no prompts to evaluate")
    sizes = {len(row) for row in correct}
    if len(sizes) != 1:
        raise ValueError(f"every prompt needs the same number of samples n, got sizes {sorted(sizes)}")
    return sizes.pop()


def mean_pass_at_k(correct: Sequence[Sequence[object]], k: int) -> float:
    """pass@k averaged over prompts; ``correct[p][i]`` truthy when sample i of prompt p is right."""
    n = _num_samples(correct)
    return sum(pass_at_k(n, sum(1 for value in row if value), k) for row in correct) / len(correct)


def majority_vote(answers: Sequence[str | None]) -> int | None:
    """Index of the sample holding the majority answer (its earliest occurrence), or None if no sample voted.

    Ties between answers with equally many votes go to the answer that occurs first.
    """
    counts: dict[str, int] = {}
    first_index: dict[str, int] = {}
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        counts[answer] = counts.get(answer, 0) + 1
        first_index.setdefault(answer, index)
    if not counts:
        return None
    winner = min(counts, key=lambda answer: (-counts[answer], first_index[answer]))
    return first_index[winner]


def _majority_correct(answers: Sequence[str | None], correct: Sequence[object]) -> float:
    winner = majority_vote(answers)
    return float(winner is not None and bool(correct[winner]))


def _check_shapes(answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[object]]) -> None:
    if len(answers) != len(correct) or any(len(a) != len(c) for a, c in zip(answers, correct)):
        raise ValueError("answers and correct must have the same shape (prompts x samples)")


def maj_at_k(answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[object]], k: int) -> float:
    """Fraction of prompts whose majority answer among the first k samples is correct."""
    n = _num_samples(correct)
    _check_k(n, k)
    _check_shapes(answers, correct)
    return sum(_majority_correct(a[:k], c) for a, c in zip(answers, correct)) / len(correct)


def mean_at_k(correct: Sequence[Sequence[object]], k: int) -> float:
    """Mean correctness of the first k samples of each prompt, averaged over prompts."""
    n = _num_samples(correct)
    _check_k(n, k)
    return sum(sum(1 for value in row[:k] if value) / k for row in correct) / len(correct)


def per_prompt_metrics(
    correct: Sequence[Sequence[object]], answers: Sequence[Sequence[str | None]], ks: Sequence[int]
) -> dict[str, list[float]]:
    """``{"pass@k": [value of prompt 0, prompt 1, ...], "maj@k": [...], "mean@k": [...]}`` for every k in
    ``ks``: each prompt's own estimate; their means over prompts are :func:`evaluation_metrics`."""
    n = _num_samples(correct)
    _check_shapes(answers, correct)
    counts = [sum(1 for value in row if value) for row in correct]
    metrics: dict[str, list[float]] = {}
    for k in ks:
        _check_k(n, k)
        metrics[f"pass@{k}"] = [pass_at_k(n, c, k) for c in counts]
        metrics[f"maj@{k}"] = [_majority_correct(a[:k], c) for a, c in zip(answers, correct)]
        metrics[f"mean@{k}"] = [sum(1 for value in row[:k] if value) / k for row in correct]
    return metrics


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean of ``values``: s / sqrt(len), s the sample standard deviation (ddof 1).
    NaN for fewer than 2 values (no spread can be estimated from one)."""
    count = len(values)
    if count < 2:
        return math.nan
    mean = sum(values) / count
    variance = sum((v - mean) ** 2 for v in values) / (count - 1)
    return math.sqrt(variance / count)


def evaluation_metrics(
    correct: Sequence[Sequence[object]], answers: Sequence[Sequence[str | None]], ks: Sequence[int]
) -> dict[str, float]:
    """``{"pass@k": ..., "maj@k": ..., "mean@k": ...}`` for every k in ``ks`` (the trainer prefixes ``val/``):
    the means over prompts of :func:`per_prompt_metrics`."""
    return {name: sum(values) / len(values) for name, values in per_prompt_metrics(correct, answers, ks).items()}


def standard_errors(per_prompt: dict[str, Sequence[float]]) -> dict[str, float]:
    """``{"<metric>_se": standard error over prompts}`` for each per-prompt metric with 2 prompts or more."""
    return {f"{name}_se": standard_error(values) for name, values in per_prompt.items() if len(values) > 1}
