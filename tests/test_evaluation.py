"""pass@k, maj@k, mean@k against hand-computed values and brute-force references."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from math import comb

import pytest

from trainers.evaluation import (
    evaluation_metrics,
    per_prompt_metrics,
    standard_error,
    standard_errors,
    maj_at_k,
    majority_vote,
    mean_at_k,
    mean_pass_at_k,
    pass_at_k,
)


def brute_force_pass_at_k(outcomes: list[bool], k: int) -> float:
    """Fraction of all k-subsets of the n samples that contain at least one correct sample."""
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(subset) for subset in subsets) / len(subsets)


# --------------------------------------------------------------------------- pass@k


def test_pass_at_k_hand_computed():
    assert pass_at_k(8, 0, 1) == 0.0
    assert pass_at_k(8, 8, 8) == 1.0
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)
    # n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    # n=5, c=2, k=3: 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)
    # n - c < k: every k-subset holds a correct sample
    assert pass_at_k(4, 2, 3) == 1.0
    assert pass_at_k(8, 1, 8) == 1.0


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_brute_force_over_all_subsets(n):
    for c in range(n + 1):
        outcomes = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(outcomes, k), abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    # the binomial form overflows floats here; the product form agrees with exact integer arithmetic
    n, c, k = 2000, 7, 500
    exact = 1 - comb(n - c, k) / comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("n, c, k", [(4, 1, 0), (4, 1, 5), (4, 5, 1), (4, -1, 1), (0, 0, 1)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_averages_prompts_and_matches_brute_force():
    rng = random.Random(0)
    correct = [[rng.random() < 0.3 for _ in range(6)] for _ in range(20)]
    for k in range(1, 7):
        expected = sum(brute_force_pass_at_k(row, k) for row in correct) / len(correct)
        assert mean_pass_at_k(correct, k) == pytest.approx(expected)
    # rewards as floats work like booleans
    assert mean_pass_at_k([[1.0, 0.0], [0.0, 0.0]], 1) == pytest.approx(0.25)


def test_mean_pass_at_k_needs_equal_sample_counts():
    with pytest.raises(ValueError, match="same number of samples"):
        mean_pass_at_k([[True, False], [True]], 1)
    with pytest.raises(ValueError, match="eval.k"):
        mean_pass_at_k([[True, False]], 3)


# --------------------------------------------------------------------------- maj@k


def test_majority_vote_hand_computed():
    assert majority_vote(["3", "5", "5", "3", "5"]) == 1  # "5" has 3 votes; its first sample is index 1
    assert majority_vote([None, "7", None]) == 1  # no-answer samples do not vote
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None
    # tie 2-2: the answer whose first vote comes first wins, whatever the string order
    assert majority_vote(["9", "1", "1", "9"]) == 0
    assert majority_vote(["1", "9", "9", "1"]) == 0


def test_maj_at_k_hand_computed():
    answers = [
        ["4", "5", "4", "5"],  # k=4: tie 2-2 -> "4" (first seen) -> correct
        ["7", "8", "8", None],  # k=4: "8" wins -> wrong; k=1: "7" -> right
        [None, None, None, "2"],  # k<4: no votes -> 0; k=4: "2" -> right
    ]
    correct = [
        [True, False, True, False],
        [True, False, False, False],
        [False, False, False, True],
    ]
    assert maj_at_k(answers, correct, 1) == pytest.approx(2 / 3)
    assert maj_at_k(answers, correct, 3) == pytest.approx(1 / 3)  # prompt 0: "4" 2-1; prompt 1: "8"; prompt 2: none
    assert maj_at_k(answers, correct, 4) == pytest.approx(2 / 3)


def brute_force_maj(answers: list[str | None], correct: list[bool], k: int) -> bool:
    """Reference: count with Counter, break ties by earliest first occurrence, by a separate path."""
    votes = [(i, a) for i, a in enumerate(answers[:k]) if a is not None]
    if not votes:
        return False
    counts = Counter(a for _, a in votes)
    best = max(counts.values())
    winner = next(a for _, a in votes if counts[a] == best)  # earliest sample among the most voted
    return correct[answers.index(winner)]


def test_maj_at_k_matches_reference_on_random_votes():
    rng = random.Random(1)
    for _ in range(200):
        n = rng.randint(1, 8)
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(n)]
        correct = [a == "2" for a in answers]
        for k in range(1, n + 1):
            assert maj_at_k([answers], [correct], k) == float(brute_force_maj(answers, correct, k))


# --------------------------------------------------------------------------- mean@k and the bundle


def test_mean_at_k_uses_first_k_samples():
    correct = [[True, False, False, True], [False, False, True, True]]
    assert mean_at_k(correct, 1) == pytest.approx(0.5)
    assert mean_at_k(correct, 2) == pytest.approx(0.25)
    assert mean_at_k(correct, 4) == pytest.approx(0.5)


def test_evaluation_metrics_keys_and_values():
    correct = [[True, False], [False, False]]
    answers = [["3", "4"], ["5", None]]
    metrics = evaluation_metrics(correct, answers, [1, 2])
    assert set(metrics) == {"pass@1", "maj@1", "mean@1", "pass@2", "maj@2", "mean@2"}
    assert metrics["pass@1"] == pytest.approx(0.25)
    assert metrics["pass@2"] == pytest.approx(0.5)
    assert metrics["mean@2"] == pytest.approx(0.25)
    assert metrics["maj@2"] == pytest.approx(0.5)  # prompt 0: tie -> "3" (first) is right


# --------------------------------------------------------------------------- per prompt


def test_per_prompt_metrics_hand_computed():
    correct = [[True, False, True, False], [False, False, False, False], [True, True, True, True]]
    answers = [["4", "5", "4", "5"], ["1", "2", "2", None], ["7", "7", "7", "7"]]
    per_prompt = per_prompt_metrics(correct, answers, [1, 2])
    assert per_prompt["pass@1"] == pytest.approx([0.5, 0.0, 1.0])
    # pass@2 with c of 4: 1 - C(4-c, 2)/C(4, 2): c=2 -> 1 - 1/6
    assert per_prompt["pass@2"] == pytest.approx([5 / 6, 0.0, 1.0])
    assert per_prompt["maj@1"] == [1.0, 0.0, 1.0]
    assert per_prompt["maj@2"] == [1.0, 0.0, 1.0]  # prompt 0: tie "4"/"5" -> "4", right
    assert per_prompt["mean@2"] == pytest.approx([0.5, 0.0, 1.0])
    means = evaluation_metrics(correct, answers, [1, 2])
    assert means == {name: pytest.approx(sum(v) / 3) for name, v in per_prompt.items()}


def test_standard_error_hand_computed():
    # values 0, 0.5, 1: mean 0.5, sample variance (0.25 + 0 + 0.25) / 2 = 0.25, SE = sqrt(0.25 / 3)
    assert standard_error([0.0, 0.5, 1.0]) == pytest.approx(math.sqrt(0.25 / 3))
    assert standard_error([0.3, 0.3]) == 0.0
    assert math.isnan(standard_error([0.7]))
    errors = standard_errors({"pass@1": [0.0, 0.5, 1.0], "pass@8": [1.0]})
    assert errors == {"pass@1_se": pytest.approx(math.sqrt(0.25 / 3))}  # one prompt: no SE reported
