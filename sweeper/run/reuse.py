"""Identical configs reuse a complete trial's result instead of training again.

A sampler can propose a config the study already ran (TPE re-proposes its favourite once the space is
small; a categorical space runs out). Two trials run the same config when their resolved run configs
(after the run config's defaults, :func:`sweeper.study.space.resolve`) are equal, floats compared at 10
significant digits, ignoring what names the trial's own folders (``train.output_dir``,
``eval.step0_cache``): :func:`config_key`. A trial whose config equals a COMPLETE trial's that ran the same
training seeds is told that trial's values at once (Optuna's FAQ pattern for duplicate parameters: tell the
study the known value), with the result's user attrs copied (standard errors, seeds, per-seed replicates,
per-prompt values) and ``same_config_as`` naming the trial it reuses; nothing is launched. It counts as a
trial of the budget, like any told trial, so a sampler that keeps proposing known configs cannot loop
forever. ``sweeper status`` shows "same config as #N".

Only COMPLETE trials are reused: a pruned trial has no final value, and a running one may still fail.
"""

from __future__ import annotations

import json
from typing import Any

from sweeper.contract import (ATTR_CONFIG, ATTR_LAST_STEP, ATTR_OBJECTIVE_SE, ATTR_PROMPTS, ATTR_REPLICATES,
                              ATTR_SAME_CONFIG, ATTR_SEEDS, PER_PROMPT_ATTR_PREFIX)

IGNORED_PATHS = (("train", "output_dir"), ("eval", "step0_cache"))
DIGITS = 10
RESULT_ATTRS = (ATTR_OBJECTIVE_SE, ATTR_PROMPTS, ATTR_SEEDS, ATTR_REPLICATES, ATTR_LAST_STEP)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{DIGITS}g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def config_key(config: dict[str, Any]) -> str:
    """A canonical text of a resolved run config: equal keys = the same training (see the module docstring)."""
    canonical = json.loads(json.dumps(config))
    for section, name in IGNORED_PATHS:
        if isinstance(canonical.get(section), dict):
            canonical[section].pop(name, None)
    return json.dumps(_rounded(canonical), sort_keys=True)


def find_identical(study: Any, config: dict[str, Any], seeds: list[int]) -> Any | None:
    """The first COMPLETE trial (not itself a reuse) that ran ``config`` with the training ``seeds``, or None."""
    import optuna

    key = config_key(config)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        if attrs.get(ATTR_SAME_CONFIG) is not None or not isinstance(attrs.get(ATTR_CONFIG), dict):
            continue
        ran = [int(s) for s in attrs.get(ATTR_SEEDS) or []]
        if ran == [int(s) for s in seeds] and config_key(attrs[ATTR_CONFIG]) == key:
            return trial
    return None


def reuse_result(study: Any, trial: Any, source: Any, config: dict[str, Any], multi_objective: bool) -> None:
    """Give ``trial`` (asked, not launched) the result of ``source`` and tell the study its values."""
    trial.set_user_attr(ATTR_CONFIG, config)
    trial.set_user_attr(ATTR_SAME_CONFIG, source.number)
    for key, value in source.user_attrs.items():
        if key in RESULT_ATTRS or key.startswith(PER_PROMPT_ATTR_PREFIX):
            trial.set_user_attr(key, value)
    study.tell(trial, list(source.values) if multi_objective else source.values[0])
