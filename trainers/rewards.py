"""Verifiable rewards, registered by name: ``data.reward`` in the run config picks one.

A reward function is ``reward(completion: str, answer: str) -> float`` returning 1.0 when the
model's completion states the reference answer and 0.0 otherwise. ``completion`` is the decoded
response only (prompt excluded, special tokens stripped: it ends where the model emitted EOS).

Each reward also has an answer extractor ``extract(completion) -> str | None`` giving the normalized
answer the completion states (None when it states none). Majority voting (maj@k in
:mod:`trainers.evaluation`) counts votes over these strings.

Registered:

- ``exact_numeric``: the completion's leading number (after stripping whitespace; ``-12``, ``+3``,
  ``0.50`` are numbers) must equal the answer numerically (``"019"`` == ``"19"`` == ``"19.0"``).
  Anything after the leading number is ignored; no leading number scores 0. For the synthetic task.
- ``math_verify``: the ``math-verify`` package parses the completion (a ``\\boxed{...}`` answer first,
  else the last LaTeX or plain expression) and the answer, and checks them for mathematical
  equivalence (``\\frac{1}{2}`` == ``0.5``). A GSM8K-style answer ``"<reasoning> #### 72"`` is reduced to
  the text after ``####``. For GSM8K/MATH-style data.

Add one with::

    @register_reward("my_reward", extract=my_extractor)
    def my_reward(completion: str, answer: str) -> float: ...
"""

from __future__ import annotations

import re
import threading
from decimal import Decimal, InvalidOperation
from typing import Callable

RewardFn = Callable[[str, str], float]
ExtractFn = Callable[[str], "str | None"]

_REWARDS: dict[str, RewardFn] = {}
_EXTRACTORS: dict[str, ExtractFn] = {}


def register_reward(name: str, extract: ExtractFn | None = None) -> Callable[[RewardFn], RewardFn]:
    """Decorator: register ``reward(completion, answer) -> float`` under ``name``, with its answer extractor."""

    def decorator(function: RewardFn) -> RewardFn:
        if name in _REWARDS:
            raise ValueError(f"reward {name!r} is already registered")
        _REWARDS[name] = function
        _EXTRACTORS[name] = extract if extract is not None else (lambda completion: completion.strip() or None)
        return function

    return decorator


def registered_rewards() -> list[str]:
    return sorted(_REWARDS)


def _check_name(name: str) -> None:
    if name not in _REWARDS:
        raise ValueError(f"data.reward: unknown reward {name!r}; registered rewards: {registered_rewards()}")


def get_reward(name: str) -> RewardFn:
    """The reward function registered as ``name``; ValueError listing the registered names otherwise."""
    _check_name(name)
    return _REWARDS[name]


def get_extractor(name: str) -> ExtractFn:
    """The answer extractor of reward ``name``: completion -> normalized answer string or None."""
    _check_name(name)
    return _EXTRACTORS[name]


# --------------------------------------------------------------------------- exact_numeric

_LEADING_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")


def _to_decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _normalize_decimal(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_leading_number(completion: str) -> str | None:
    """The completion's leading number, normalized (``" 019"`` -> ``"19"``, ``"-0.50x"`` -> ``"-0.5"``), or None."""
    match = _LEADING_NUMBER.match(completion.strip())
    if match is None:
        return None
    value = _to_decimal(match.group(0))
    return None if value is None else _normalize_decimal(value)


@register_reward("exact_numeric", extract=extract_leading_number)
def exact_numeric(completion: str, answer: str) -> float:
    """1.0 if the completion's leading number equals ``answer`` numerically, else 0.0."""
    expected = _to_decimal(answer.strip().replace(",", ""))
    if expected is None:
        raise ValueError(
            f"exact_numeric: reference answer {answer!r} is not a number; use data.reward: math_verify "
            f"for non-numeric answers"
        )
    stated = extract_leading_number(completion)
    return 1.0 if stated is not None and Decimal(stated) == expected else 0.0


# --------------------------------------------------------------------------- math_verify


def _math_verify_timeout() -> int | None:
    # math-verify's timeout uses signal.alarm, which works only in the main thread.
    return 5 if threading.current_thread() is threading.main_thread() else None


def _parse_completion(completion: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return parse(completion, extraction_config=config, parsing_timeout=_math_verify_timeout())


def _parse_reference(answer: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    text = answer.split("####")[-1].strip() if "####" in answer else answer.strip()
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    timeout = _math_verify_timeout()
    if "$" not in text and "\\boxed" not in text:
        gold = parse(f"${text}$", extraction_config=config, parsing_timeout=timeout)
        if gold:
            return gold
    return parse(text, extraction_config=config, parsing_timeout=timeout)


def extract_math_answer(completion: str) -> str | None:
    """The answer math-verify reads in the completion (``\\boxed{}`` first), as a normalized string, or None."""
    parsed = _parse_completion(completion)
    return str(parsed[0]) if parsed else None


@register_reward("math_verify", extract=extract_math_answer)
def math_verify_reward(completion: str, answer: str) -> float:
    """1.0 if math-verify finds the completion's answer equivalent to ``answer``, else 0.0."""
    from math_verify import verify

    gold = _parse_reference(answer)
    if not gold:
        raise ValueError(f"math_verify: cannot parse the reference answer {answer!r} as a math expression")
    predicted = _parse_completion(completion)
    if not predicted:
        return 0.0
    return 1.0 if verify(gold, predicted, timeout_seconds=_math_verify_timeout()) else 0.0
