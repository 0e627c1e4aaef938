"""The search space: its schema (parameters, conditions, constraints), its files (``include``), config
paths, and sampling a trial's config from it (define-by-run, conditional, constrained).

A parameter is keyed by its Optuna name and sets a dotted path of the run config (``path``, default:
the key): ``float`` / ``int`` ranges (``log``, ``step``), ``categorical`` choices, or a ``fixed`` value;
``when`` samples it only when other config paths hold given values. A constraint is one comparison
between config paths and numbers (``clip.eps_high >= clip.eps_low``), optionally under a ``when``.

:func:`sample` walks the parameters in dependency order (a parameter comes after those that set the
paths its ``when`` reads) on a copy of the base config, and asks Optuna for a value only when the
parameter's condition holds on the config built so far. So a parameter of a method that was not
chosen is never sampled: it does not appear in ``trial.params``, Optuna's TPE (``group``) models it
only on the trials where it exists, and the trial's config keeps the base value.

Constraints are enforced by *rejection*: :func:`resolve` checks them on the resolved config, and
validates that config through ``trainers.config.parse_config``, so a combination the trainer would
refuse is caught before any job starts. The driver tells Optuna such a trial FAILed with the user attr
``rejected`` (the reason), never launches it, does not count it in the budget, and asks again.
(Optuna's ``constraints_func`` is not used: it only informs the sampler after a trial *completes*, so
it cannot keep an infeasible config from being run; rejection can.)

Only ``trainers.config`` is imported from the trainer side (torch-free by contract).
"""

from __future__ import annotations

import ast
import copy
import functools
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Mapping, Union

from pydantic import Field, field_validator, model_validator

from trainers.config import ConfigError, RunConfig, as_model, parse_config

from sweeper.paths import get_path, leaves, set_path  # noqa: F401 (re-exported: the space speaks in dotted paths)
from sweeper.study.schema import Scalar, SpecError, SpecModel



# --------------------------------------------------------------------------- config paths


def check_config_path(path: str) -> str | None:
    """None if ``path`` names a value of the run config, else a message listing what exists."""
    if not isinstance(path, str) or not path:
        return "the path must be a dotted field name such as clip.eps_high"
    model: Any = RunConfig
    parts = path.split(".")
    for depth, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            prefix = ".".join(parts[:depth]) or "the run config"
            return f"{prefix} has no field {part!r}; accepted: {', '.join(fields)}"
        sub = as_model(fields[part].annotation)
        if depth == len(parts) - 1:
            if sub is not None:
                sweepable = ", ".join(f"{path}.{name}" for name in sub.model_fields)
                return f"{path} is a section, not a value; sweep one of its fields: {sweepable}"
            return None
        if sub is None:
            return f"{'.'.join(parts[: depth + 1])} is a value, it has no field {parts[depth + 1]!r}"
        model = sub
    return None


# --------------------------------------------------------------------------- parameters

Condition = dict[str, Union[Scalar, list[Scalar]]]


class _ParamBase(SpecModel):
    path: str | None = Field(None, description="Dotted path into the run config; default: the parameter's key.")
    when: Condition | None = Field(None, description="Sample only when every listed config path has (one of) the given value(s).")


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(f"low ({low}) must be <= high ({high})")
    if log and low <= 0:
        raise ValueError(f"log: true needs low > 0 (got low={low})")
    if log and step is not None:
        raise ValueError("log and step cannot be combined (Optuna samples either on a log scale or on a step grid)")


class FloatParam(_ParamBase):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> "FloatParam":
        _check_range(self.low, self.high, self.log, self.step)
        return self


class IntParam(_ParamBase):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, gt=0)

    @model_validator(mode="after")
    def _range(self) -> "IntParam":
        _check_range(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self


class CategoricalParam(_ParamBase):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(..., min_length=1)


class FixedParam(_ParamBase):
    type: Literal["fixed"]
    value: Any


Param = Annotated[Union[FloatParam, IntParam, CategoricalParam, FixedParam], Field(discriminator="type")]


def param_path(name: str, param: Any) -> str:
    return param.path or name


def condition_holds(when: Condition | None, config: Mapping[str, Any]) -> bool:
    if not when:
        return True
    for path, wanted in when.items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if get_path(config, path) not in allowed:
            return False
    return True


# --------------------------------------------------------------------------- constraints

_COMPARE = {ast.GtE: ">=", ast.LtE: "<=", ast.Gt: ">", ast.Lt: "<", ast.Eq: "==", ast.NotEq: "!="}
_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


@functools.lru_cache(maxsize=4096)  # a constraint is parsed once, not at every sampled config
def parse_constraint(expr: str) -> tuple[ast.Expression, list[str]]:
    """Parse ``lhs OP rhs`` (OP one of >= <= > < == !=, sides: config paths, numbers, + - * /).
    Returns the tree and the config paths it reads; raises ValueError naming what is not allowed."""
    if len(expr) > MAX_CONSTRAINT_CHARS:
        raise ValueError(f"{expr[:40]!r}... has {len(expr)} characters; a constraint may have at most {MAX_CONSTRAINT_CHARS}")
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, RecursionError, MemoryError):
        raise ValueError(f"{expr!r} is not a comparison such as 'clip.eps_high >= clip.eps_low'") from None
    body = tree.body
    if not isinstance(body, ast.Compare) or len(body.ops) != 1 or type(body.ops[0]) not in _COMPARE:
        raise ValueError(f"{expr!r} must be one comparison (>=, <=, >, <, ==, !=) between two sides, e.g. 'clip.eps_high >= clip.eps_low'")
    paths: list[str] = []

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return
        if isinstance(node, (ast.Name, ast.Attribute)):
            paths.append(_dotted(node, expr))
            return
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            walk(node.left)
            walk(node.right)
            return
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            walk(node.operand)
            return
        raise ValueError(f"{expr!r}: only config paths, numbers and + - * / are allowed on each side")

    walk(body.left)
    walk(body.comparators[0])
    return tree, paths


def _dotted(node: ast.AST, expr: str) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value, expr)}.{node.attr}"
    raise ValueError(f"{expr!r}: only config paths, numbers and + - * / are allowed on each side")


def evaluate_constraint(expr: str, config: Mapping[str, Any]) -> bool:
    """Evaluate a constraint on a (resolved) config; False when a path it reads has no value.

    Raises :class:`Rejected` (the config, never the study) when it cannot be evaluated for this config: a
    division by zero, an overflow, a value that is no number (a string, a list) where arithmetic or an
    ordering needs one."""
    try:
        return _evaluate(expr, config)
    except (ArithmeticError, TypeError, ValueError) as error:
        _, paths = parse_constraint(expr)
        shown = ", ".join(f"{p}={_short(get_path(config, p))}" for p in paths)
        reason = "division by zero" if isinstance(error, ZeroDivisionError) else f"{type(error).__name__}: {error}"
        raise Rejected(f"constraint {expr!r} cannot be evaluated for this config ({shown}): {reason}") from None


def _evaluate(expr: str, config: Mapping[str, Any]) -> bool:
    tree, _ = parse_constraint(expr)

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.Name, ast.Attribute)):
            return get_path(config, _dotted(node, expr))
        if isinstance(node, ast.UnaryOp):
            return -value(node.operand)
        left, right = value(node.left), value(node.right)
        op = _ARITH[type(node.op)]
        return left + right if op == "+" else left - right if op == "-" else left * right if op == "*" else left / right

    body = tree.body
    left, right = value(body.left), value(body.comparators[0])
    if left is None or right is None:
        return False
    op = _COMPARE[type(body.ops[0])]
    return {">=": left >= right, "<=": left <= right, ">": left > right, "<": left < right, "==": left == right, "!=": left != right}[op]


class ConstraintSpec(SpecModel):
    expr: str = Field(..., description="A comparison between config paths and numbers, e.g. clip.eps_high >= clip.eps_low.")
    when: Condition | None = None

    @field_validator("expr")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_constraint(value)
        return value

    @property
    def paths(self) -> list[str]:
        return parse_constraint(self.expr)[1]


# --------------------------------------------------------------------------- the space section


# Sizes that keep every check of a space (some compare parameters pairwise) within a second; a study tunes
# a few dozen parameters.
MAX_PARAMS = 256
MAX_CONSTRAINTS = 256
MAX_SHARING_A_PATH = 32
MAX_CONSTRAINT_CHARS = 1000


class SpaceSpec(SpecModel):
    params: dict[str, Param] = Field(default_factory=dict, description="Optuna parameter name -> distribution.")
    constraints: list[ConstraintSpec] = Field(default_factory=list)

    @field_validator("params", mode="before")
    @classmethod
    def _shorthands(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        if len(value) > MAX_PARAMS:
            raise ValueError(f"{len(value)} parameters; a space may have at most {MAX_PARAMS}")
        out = {}
        for name, param in value.items():
            if isinstance(param, list):
                param = {"type": "categorical", "choices": param}
            elif not isinstance(param, dict):
                param = {"type": "fixed", "value": param}
            out[name] = param
        return out

    @field_validator("constraints", mode="before")
    @classmethod
    def _constraint_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            if len(value) > MAX_CONSTRAINTS:
                raise ValueError(f"{len(value)} constraints; a space may have at most {MAX_CONSTRAINTS}")
            return [{"expr": c} if isinstance(c, str) else c for c in value]
        return value

    @model_validator(mode="after")
    def _coherent(self) -> "SpaceSpec":
        problems: list[str] = []
        for name, param in self.params.items():
            problem = check_config_path(param_path(name, param))
            if problem:
                problems.append(f"space.params[{name}]: {problem}")
            for key in (param.when or {}):
                problem = check_config_path(key)
                if problem:
                    problems.append(f"space.params[{name}].when: {problem}")
        problems += _check_when_values(self.params)
        problems += _check_duplicate_paths(self.params)
        for index, constraint in enumerate(self.constraints):
            for path in constraint.paths:
                problem = check_config_path(path)
                if problem:
                    problems.append(f"space.constraints[{index}]: {problem}")
        if not problems:
            try:
                ordered_params(self.params)
            except ValueError as error:
                problems.append(f"space.params: {error}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def sampled(self) -> dict[str, Any]:
        """The parameters Optuna samples (every one but the fixed)."""
        return {n: p for n, p in self.params.items() if not isinstance(p, FixedParam)}


def _check_when_values(params: dict[str, Any]) -> list[str]:
    """A `when` on a categorical/fixed parameter's path must name values that parameter can take."""
    problems = []
    takes: dict[str, set] = {}
    for name, param in params.items():
        values = param.choices if isinstance(param, CategoricalParam) else [param.value] if isinstance(param, FixedParam) else None
        if values is not None:
            takes.setdefault(param_path(name, param), set()).update(v for v in values if not isinstance(v, (list, dict)))
    for name, param in params.items():
        for key, wanted in (param.when or {}).items():
            if key not in takes:
                continue
            for value in wanted if isinstance(wanted, list) else [wanted]:
                if value not in takes[key]:
                    problems.append(
                        f"space.params[{name}].when.{key}: {value!r} is never taken by {key}; "
                        f"it takes: {', '.join(repr(v) for v in sorted(takes[key], key=str))}"
                    )
    return problems


def _check_duplicate_paths(params: dict[str, Any]) -> list[str]:
    """Two parameters may set the same config path only under mutually exclusive conditions."""
    problems = []
    by_path: dict[str, list[str]] = {}
    for name, param in params.items():
        by_path.setdefault(param_path(name, param), []).append(name)
    for path, names in by_path.items():
        if len(names) > MAX_SHARING_A_PATH:
            problems.append(f"space.params: {len(names)} parameters set {path}; at most {MAX_SHARING_A_PATH} may share a path")
            continue
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if not _exclusive(params[a].when, params[b].when):
                    problems.append(
                        f"space.params[{b}]: sets {path} like space.params[{a}]; two parameters may share a path "
                        f"only with `when` conditions that exclude each other (e.g. when: {{entropy.method: aer}} vs siren)"
                    )
    return problems


def _exclusive(a: Condition | None, b: Condition | None) -> bool:
    if not a or not b:
        return False
    for key in set(a) & set(b):
        va = set(map(repr, a[key] if isinstance(a[key], list) else [a[key]]))
        vb = set(map(repr, b[key] if isinstance(b[key], list) else [b[key]]))
        if not va & vb:
            return True
    return False


def ordered_params(params: dict[str, Any]) -> list[str]:
    """Parameter names in sampling order: a parameter comes after every parameter that sets a path its
    `when` reads (declared order otherwise). Raises ValueError on a cycle."""
    setters: dict[str, list[str]] = {}
    for name, param in params.items():
        setters.setdefault(param_path(name, param), []).append(name)
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError(f"the `when` conditions form a cycle: {' -> '.join(chain + [name])}")
        state[name] = "visiting"
        for key in (params[name].when or {}):
            for dep in setters.get(key, []):
                if dep != name:
                    visit(dep, chain + [name])
        state[name] = "done"
        order.append(name)

    for name in params:
        visit(name, [])
    return order


# --------------------------------------------------------------------------- sampling


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


def sample_params(space: "SpaceSpec", base: Mapping[str, Any], trial: Any) -> SampledConfig:
    """Suggest every active parameter of ``space`` on ``trial`` (an ``optuna.Trial``) over a copy of the
    ``base`` config and return the trial config (unvalidated: see :func:`resolve_config`)."""
    params = space.params
    config = copy.deepcopy(dict(base))
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


def resolve_config(space: "SpaceSpec", sampled: SampledConfig, *, steps: int | None = None, output_dir: str | None = None,
                   step0_cache: str | None = None) -> dict[str, Any]:
    """Apply the budget's step override (``steps``), the trial's output folder and the study's step-0 validation cache
    (unless the base config names its own), check the constraints, and validate through ``parse_config``.
    Returns the RunConfig as plain data; raises :class:`Rejected`."""
    config = copy.deepcopy(sampled.config)
    if steps:
        set_path(config, "train.steps", steps)
    if output_dir is not None:
        set_path(config, "train.output_dir", output_dir)
    if step0_cache is not None and get_path(config, "eval.step0_cache") is None:
        set_path(config, "eval.step0_cache", step0_cache)
    for constraint in space.constraints:
        if condition_holds(constraint.when, config) and not evaluate_constraint(constraint.expr, config):
            shown = ", ".join(f"{p}={_short(get_path(config, p))}" for p in constraint.paths)
            raise Rejected(f"constraint {constraint.expr!r} is false ({shown})")
    try:
        return parse_config(config, "sampled config").model_dump(mode="json")
    except ConfigError as error:
        raise Rejected(" ".join(str(error).split("\n", 1)[-1].split())) from None


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def grid_search_space(space: "SpaceSpec") -> dict[str, list[Any]]:
    """The GridSampler's grid: every sampled parameter's values (categorical choices, int and
    stepped float ranges). Conditional parameters are part of the grid; a grid point whose
    parameter is inactive repeats a config (Optuna's grid does not know conditions)."""
    grid: dict[str, list[Any]] = {}
    for name, param in space.params.items():
        if isinstance(param, CategoricalParam):
            grid[name] = list(param.choices)
        elif isinstance(param, IntParam):
            grid[name] = list(range(param.low, param.high + 1, param.step))
        elif isinstance(param, FloatParam):
            count = int(math.floor((param.high - param.low) / param.step + 1e-9)) + 1
            grid[name] = [round(param.low + i * param.step, 12) for i in range(count)]
    return grid


def describe_params(space: "SpaceSpec", origins: Mapping[str, str] | None = None, source_file: str | None = None) -> list[str]:
    """Human-readable lines, one per parameter and constraint (for ``sweeper validate``); ``origins``: the
    file that defined each parameter, shown when it is not ``source_file``."""
    lines = []
    params = space.params
    origins = origins or {}
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
        source = f"  ({origin})" if origin and origin != source_file else ""
        lines.append(f"{head:32s} {dist}{when}{source}")
    for constraint in space.constraints:
        when = ""
        if constraint.when:
            when = "  when " + " and ".join(f"{k} == {v}" for k, v in constraint.when.items())
        lines.append(f"constraint: {constraint.expr}{when}")
    return lines
