"""Sampling a trial's config from the space: define-by-run, conditional, constrained.

:func:`sample` walks the space's parameters in dependency order (a parameter comes after those that
set the paths its ``when`` reads) on a copy of the base config, and asks Optuna for a value only
when the parameter's condition holds on the config built so far. So a parameter of a method that
was not chosen is never sampled: it does not appear in ``trial.params``, Optuna's TPE (``group``)
models it only on the trials where it exists, and the trial's config keeps the base value.

Constraints (``clip.eps_high >= clip.eps_low``) are enforced by *rejection*: :func:`resolve`
checks them on the resolved config, and validates that config through
``trainers.config.parse_config``, so a combination the trainer would refuse is caught before any
job starts. The driver tells Optuna such a trial FAILed with the user attr ``rejected`` (the reason),
never launches it, does not count it in the budget, and asks again. (Optuna's ``constraints_func``
is not used: it only informs the sampler after a trial *completes*, so it cannot keep an infeasible
config from being run; rejection can.)

Only ``trainers.config`` is imported from the trainer side (torch-free by contract).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from trainers.config import ConfigError, parse_config

from .spec import (
    CategoricalParam,
    FixedParam,
    FloatParam,
    IntParam,
    StudySpec,
    condition_holds,
    evaluate_constraint,
    ordered_params,
    param_path,
    set_path,
)


class Rejected(ValueError):
    """A sampled config breaks a constraint or is refused by the run config schema."""


@dataclass
class SampledConfig:
    """The outcome of sampling one trial."""

    config: dict[str, Any]                                   # resolved RunConfig as plain data
    sampled: dict[str, Any] = field(default_factory=dict)    # Optuna name -> value (what the sampler chose)
    assigned: dict[str, Any] = field(default_factory=dict)   # config path -> value (sampled and fixed)
    sampled_paths: dict[str, Any] = field(default_factory=dict)  # config path -> value (sampled only)
    skipped: list[str] = field(default_factory=list)         # parameters whose `when` did not hold


def sample(spec: StudySpec, trial: Any) -> SampledConfig:
    """Suggest every active parameter on ``trial`` (an ``optuna.Trial``) and return the trial config
    (unvalidated: see :func:`resolve`)."""
    params = spec.space.params
    config = copy.deepcopy(spec.base)
    out = SampledConfig(config=config)
    for name in ordered_params(params):
        param = params[name]
        if not condition_holds(param.when, config):
            out.skipped.append(name)
            continue
        value = suggest(trial, name, param)
        path = param_path(name, param)
        if not isinstance(param, FixedParam):
            out.sampled[name] = value
            out.sampled_paths[path] = value
        out.assigned[path] = value
        set_path(config, path, value)
    return out


def suggest(trial: Any, name: str, param: Any) -> Any:
    if isinstance(param, FloatParam):
        return trial.suggest_float(name, param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, IntParam):
        return trial.suggest_int(name, param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, CategoricalParam):
        return trial.suggest_categorical(name, param.choices)
    return copy.deepcopy(param.value)


def resolve(spec: StudySpec, sampled: SampledConfig, *, output_dir: str | None = None) -> dict[str, Any]:
    """Apply the budget's step override and the trial's output folder, check the constraints, and
    validate through ``parse_config``. Returns the RunConfig as plain data; raises :class:`Rejected`."""
    config = copy.deepcopy(sampled.config)
    if spec.budget.steps:
        set_path(config, "train.steps", spec.budget.steps)
    if output_dir is not None:
        set_path(config, "train.output_dir", output_dir)
    for constraint in spec.space.constraints:
        if condition_holds(constraint.when, config) and not evaluate_constraint(constraint.expr, config):
            shown = ", ".join(f"{p}={_short(_get(config, p))}" for p in constraint.paths)
            raise Rejected(f"constraint {constraint.expr!r} is false ({shown})")
    try:
        return parse_config(config, "sampled config").model_dump(mode="json")
    except ConfigError as error:
        raise Rejected(" ".join(str(error).split("\n", 1)[-1].split())) from None


def _get(config: dict[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def grid_search_space(spec: StudySpec) -> dict[str, list[Any]]:
    """The GridSampler's grid: every sampled parameter's values (categorical choices, int and
    stepped float ranges). Conditional parameters are part of the grid; a grid point whose
    parameter is inactive repeats a config (Optuna's grid does not know conditions)."""
    grid: dict[str, list[Any]] = {}
    for name, param in spec.space.params.items():
        if isinstance(param, CategoricalParam):
            grid[name] = list(param.choices)
        elif isinstance(param, IntParam):
            grid[name] = list(range(param.low, param.high + 1, param.step))
        elif isinstance(param, FloatParam):
            count = int(math.floor((param.high - param.low) / param.step + 1e-9)) + 1
            grid[name] = [round(param.low + i * param.step, 12) for i in range(count)]
    return grid


def describe_space(spec: StudySpec) -> list[str]:
    """Human-readable lines, one per parameter and constraint (for ``sweeper validate``)."""
    lines = []
    params = spec.space.params
    origins = spec._param_origins
    for name in ordered_params(params):
        param = params[name]
        path = param_path(name, param)
        head = name if path == name else f"{name} -> {path}"
        if isinstance(param, FloatParam):
            dist = f"float [{param.low:g}, {param.high:g}]" + (" log" if param.log else "") + (f" step {param.step:g}" if param.step else "")
        elif isinstance(param, IntParam):
            dist = f"int [{param.low}, {param.high}]" + (" log" if param.log else "") + (f" step {param.step}" if param.step != 1 else "")
        elif isinstance(param, CategoricalParam):
            dist = "categorical " + ", ".join(map(str, param.choices))
        else:
            dist = f"fixed {param.value!r}"
        when = ""
        if param.when:
            when = "  when " + " and ".join(
                f"{k} in {v}" if isinstance(v, list) else f"{k} == {v}" for k, v in param.when.items()
            )
        origin = origins.get(name)
        source = f"  ({origin})" if origin and origin != spec.source_file else ""
        lines.append(f"{head:32s} {dist}{when}{source}")
    for constraint in spec.space.constraints:
        when = ""
        if constraint.when:
            when = "  when " + " and ".join(f"{k} == {v}" for k, v in constraint.when.items())
        lines.append(f"constraint: {constraint.expr}{when}")
    return lines
