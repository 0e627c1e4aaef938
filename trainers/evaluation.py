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
"""

from __future__ import annotations

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


def maj_at_k(answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[object]], k: int) -> float:
    """Fraction of prompts whose majority answer among the first k samples is correct."""
    n = _num_samples(correct)
    _check_k(n, k)
    if len(answers) != len(correct) or any(len(a) != len(c) for a, c in zip(answers, correct)):
        raise ValueError("maj_at_k: answers and correct must have the same shape (prompts x samples)")
    solved = 0
    for prompt_answers, prompt_correct in zip(answers, correct):
        winner = majority_vote(prompt_answers[:k])
        solved += winner is not None and bool(prompt_correct[winner])
    return solved / len(correct)


def mean_at_k(correct: Sequence[Sequence[object]], k: int) -> float:
    """Mean correctness of the first k samples of each prompt, averaged over prompts."""
    n = _num_samples(correct)
    _check_k(n, k)
    return sum(sum(1 for value in row[:k] if value) / k for row in correct) / len(correct)


def evaluation_metrics(
    correct: Sequence[Sequence[object]], answers: Sequence[Sequence[str | None]], ks: Sequence[int]
) -> dict[str, float]:
    """``{"pass@k": ..., "maj@k": ..., "mean@k": ...}`` for every k in ``ks`` (the trainer prefixes ``val/``)."""
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"pass@{k}"] = mean_pass_at_k(correct, k)
        metrics[f"maj@{k}"] = maj_at_k(answers, correct, k)
        metrics[f"mean@{k}"] = mean_at_k(correct, k)
    return metrics
