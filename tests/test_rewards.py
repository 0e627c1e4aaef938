"""Reward functions and their registry, on hand-written completions."""

from __future__ import annotations

import threading

import pytest

from trainers.rewards import extract_leading_number, get_extractor, get_reward, register_reward, registered_rewards


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("19", "19", 1.0),
        (" 19 ", "19", 1.0),
        ("019", "19", 1.0),
        ("19.0", "19", 1.0),
        ("-5", "-5", 1.0),
        ("+7", "7", 1.0),
        ("19+3", "19", 1.0),  # only the leading number counts
        ("18", "19", 0.0),
        ("-19", "19", 0.0),
        ("1 9", "19", 0.0),  # the leading number is 1
        ("", "19", 0.0),
        ("=*+", "19", 0.0),
        ("abc 19", "19", 0.0),  # no leading number
        ("0.5", "0.50", 1.0),
        ("1000", "1,000", 1.0),
    ],
)
def test_exact_numeric(completion, answer, expected):
    assert get_reward("exact_numeric")(completion, answer) == expected


def test_exact_numeric_rejects_a_non_numeric_reference():
    with pytest.raises(ValueError, match="math_verify"):
        get_reward("exact_numeric")("3", "\\frac{1}{2}")


def test_exact_numeric_extractor_normalizes():
    extract = get_extractor("exact_numeric")
    assert extract(" 019x") == "19"
    assert extract("19.0") == "19"
    assert extract("-0.50") == "-0.5"
    assert extract("no number") is None
    assert extract("") is None
    assert extract_leading_number("-") is None


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("The answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", 1.0),
        ("So we get \\boxed{0.5}", "\\frac{1}{2}", 1.0),
        ("So we get \\boxed{\\dfrac{2}{4}}", "1/2", 1.0),
        ("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}", 0.0),
        ("First 3, then \\boxed{7}, not 9", "7", 1.0),  # boxed wins over other numbers
        ("She has 72 apples.", "Natalia sold 48/2 = 24 clips in May. #### 72", 1.0),  # GSM8K reference
        ("\\boxed{71}", "#### 72", 0.0),
        ("I don't know", "72", 0.0),
        ("", "72", 0.0),
        ("\\boxed{\\sqrt{2}}", "\\sqrt{2}", 1.0),
    ],
)
def test_math_verify(completion, answer, expected):
    assert get_reward("math_verify")(completion, answer) == expected


def test_math_verify_works_outside_the_main_thread():
    results = []
    thread = threading.Thread(target=lambda: results.append(get_reward("math_verify")("\\boxed{0.5}", "\\frac{1}{2}")))
    thread.start()
    thread.join()
    assert results == [1.0]


def test_math_verify_extractor():
    extract = get_extractor("math_verify")
    assert extract("so \\boxed{\\frac{1}{2}}") == "1/2"
    assert extract("nothing here") is None


def test_unknown_reward_lists_registered_names():
    with pytest.raises(ValueError) as error:
        get_reward("exact")
    message = str(error.value)
    assert "data.reward" in message and "'exact'" in message
    assert "exact_numeric" in message and "math_verify" in message


def test_register_reward_adds_a_name_and_refuses_duplicates(monkeypatch):
    import trainers.rewards as rewards

    # register into copies so the name does not leak into other tests
    monkeypatch.setattr(rewards, "_REWARDS", dict(rewards._REWARDS))
    monkeypatch.setattr(rewards, "_EXTRACTORS", dict(rewards._EXTRACTORS))

    @register_reward("test_always_one")
    def always_one(completion: str, answer: str) -> float:
        return 1.0

    assert "test_always_one" in registered_rewards()
    assert get_reward("test_always_one")("x", "y") == 1.0
    assert get_extractor("test_always_one")("  x ") == "x"  # default extractor: the stripped completion
    with pytest.raises(ValueError, match="already registered"):
        register_reward("test_always_one")(lambda completion, answer: 0.0)


def test_the_contract_declares_the_registered_rewards():
    """trainers.config.BUILTIN_REWARDS (what the sweeper checks data.reward against, torch-free) is the registry."""
    from trainers.config import BUILTIN_REWARDS

    assert sorted(BUILTIN_REWARDS) == registered_rewards()
