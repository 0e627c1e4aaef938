"""The study spec: one YAML file -> a validated, immutable :class:`StudySpec`.

A study file names the study, the objective, the base training config, the search space, the
sampler, the pruner (with entropy-health rules), the budget, the executor and the tracking::

    study:
      name: siren-vs-steer            # also names the folder studies/<name> and the MLflow experiment
      storage: null                   # default sqlite:///<study dir>/optuna.db (slurm: journal:///<study dir>/optuna.journal);
                                      # journal:///abs/path.log;
                                      # any SQLAlchemy URL (postgresql://user@host/db)
      dir: null                       # default studies/<name>, next to this file
    objective:                        # or a list of them (multi-objective)
      metric: val/pass@8
      direction: maximize             # maximize | minimize
      aggregation: last               # last | best | mean_last_n  (over the trial's validations)
      last_n: 3                       # for mean_last_n
    base: run.yaml                    # the RunConfig: a path (relative to this file) or inline mapping
    space:
      include: [builtin:siren, builtin:steer]     # ready spaces (search_spaces/NAME.yaml) or paths
      params:                                     # key = Optuna parameter name; path defaults to it
        entropy.method: {type: categorical, choices: [none, siren, steer]}
        clip.eps_high: {type: float, low: 0.2, high: 0.4}
        entropy.siren.coef: {type: float, low: 1.0e-4, high: 1.0e-2, log: true, when: {entropy.method: siren}}
        aer.tau: {path: entropy.anchor.ratio, type: float, low: 0.3, high: 1.0, when: {entropy.method: aer}}
        rollout.group_size: [4, 8]                # shorthand: a list is categorical, a scalar is fixed
      constraints:
        - clip.eps_high >= clip.eps_low
        - {expr: entropy.aer.alpha_init <= entropy.aer.alpha_max, when: {entropy.method: aer}}
    enqueue:                          # configs tried first, by parameter name (e.g. the papers' defaults)
      - {entropy.method: siren, entropy.siren.coef: 0.005}
    sampler: {type: tpe, seed: 0}     # tpe | random | grid | cmaes | gp | nsga2 (or just `sampler: tpe`)
    pruner:                           # none | median | successive_halving | hyperband | wilcoxon
      type: median
      n_startup_trials: 4
      health:                         # entropy-health rules, on top of any pruner
        collapse: {fraction: 0.3, patience: 3}
        explosion: {multiple: 3.0, patience: 3}
        nan: true
    budget: {n_trials: 40, timeout: 2h, max_parallel: 2, steps: 200}
    executor:
      type: local                     # local (submitit, default) | debug (in-process) | slurm
      resources: {cpus_per_trial: 1, gpus_per_trial: 0, timeout_min: 240}
      # slurm: profile: local-test (slurm/profiles/) plus partition, account, qos, time_limit_min, nodes,
      # tasks_per_node, gpus_per_node, cpus_per_task, mem_gb, constraint, job_name, setup, python, ...
    tracking: {enabled: true, uri: null, experiment: null, artifact_location: null}

Every relative path in a study file (``base``, ``include``, ``study.dir``, a relative
``journal://`` or ``sqlite:///`` path, a ``file.py:function`` entrypoint) is resolved against the
folder of the file that holds it, never against the current directory: the same command finds the
same study wherever it is run from.

:func:`load_spec` reads a file (or a mapping), expands includes, validates everything with pydantic
(unknown keys rejected) and returns a frozen :class:`StudySpec` whose ``study.dir``, ``study.storage``
and ``tracking`` fields are resolved to absolute values. A bad spec raises :class:`SpecError` whose
message has one line per bad field: the field path, what is wrong, and what would be accepted.

This module imports neither torch nor optuna (the spec is checked on a login node in milliseconds);
it imports ``trainers.config`` only, which is torch-free by contract.
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from trainers.config import RunConfig, format_validation_error

SEARCH_SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
BUILTIN_PREFIX = "builtin:"
DEFAULT_ENTRYPOINT = "trainers.grpo:train"


class SpecError(ValueError):
    """A study spec is invalid. ``str(error)`` is the user-facing message (one line per bad field)."""


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``; users write ``1e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: Path, what: str) -> Any:
    if not path.exists():
        raise SpecError(f"{what} {path} does not exist")
    try:
        return yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as error:
        raise SpecError(f"{what} {path} is not valid YAML: {error}") from None


# --------------------------------------------------------------------------- RunConfig paths


def _model_at(path: str) -> tuple[type[BaseModel] | None, str | None]:
    """Walk RunConfig by a dotted path. Returns (model holding the leaf, error message or None)."""
    model: type[BaseModel] = RunConfig
    parts = path.split(".")
    for depth, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            prefix = ".".join(parts[:depth]) or "the run config"
            return None, f"{prefix} has no field {part!r}; accepted: {', '.join(fields)}"
        annotation = fields[part].annotation
        sub = _submodel(annotation)
        if depth == len(parts) - 1:
            if sub is not None:
                leaves = ", ".join(f"{path}.{name}" for name in sub.model_fields)
                return None, f"{path} is a section, not a value; sweep one of its fields: {leaves}"
            return model, None
        if sub is None:
            return None, f"{'.'.join(parts[: depth + 1])} is a value, it has no field {parts[depth + 1]!r}"
        model = sub
    return model, None


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def check_config_path(path: str) -> str | None:
    """None if ``path`` names a value of the run config, else a message listing what exists."""
    if not isinstance(path, str) or not path:
        return "the path must be a dotted field name such as clip.eps_high"
    return _model_at(path)[1]


def get_path(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        node = node[part] if isinstance(node, dict) and part in node else None
    return node


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


# --------------------------------------------------------------------------- base model


class _Spec(BaseModel):
    """Frozen; unknown keys are rejected (the error lists the accepted keys, see format_spec_error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)



Scalar = Union[None, bool, int, float, str]


# --------------------------------------------------------------------------- study / objective


class StudySection(_Spec):
    name: str = Field(..., description="Study name: names the study in storage, its folder and the MLflow experiment.")
    storage: str | None = Field(None, description="None = sqlite:///<dir>/optuna.db; journal:///path.log; any SQLAlchemy URL.")
    dir: str | None = Field(None, description="Study folder (trial files, logs, default storage); default studies/<name> next to the study file.")

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value or ""):
            raise ValueError(f"{value!r} is not a usable study name: use letters, digits, '_', '-', '.' (it names a folder)")
        return value

    @field_validator("storage")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        schemes = ("sqlite://", "journal://", "postgresql", "mysql", "oracle", "mssql")
        if not value.startswith(schemes) or "://" not in value:
            raise ValueError(
                f"{value!r} is not a storage URL; accepted: sqlite:///path.db, journal:///path.log "
                f"(Optuna journal file, for shared filesystems), or a SQLAlchemy URL such as postgresql://user@host/db"
            )
        return value


class ObjectiveSpec(_Spec):
    metric: str = Field(..., description="A validation metric the trainer reports, e.g. val/pass@8.")
    direction: Literal["maximize", "minimize"] = "maximize"
    aggregation: Literal["last", "best", "mean_last_n"] = "last"
    last_n: int = Field(3, gt=0, description="Validations averaged by mean_last_n.")

    @field_validator("metric")
    @classmethod
    def _validation_metric(cls, value: str) -> str:
        if not value.startswith("val/"):
            raise ValueError(
                f"{value!r}: the objective is read from validation results, so it must be a val/ metric "
                f"(val/pass@K, val/maj@K, val/mean@K, val/entropy)"
            )
        return value


# --------------------------------------------------------------------------- space


Condition = dict[str, Union[Scalar, list[Scalar]]]


class _ParamBase(_Spec):
    path: str | None = Field(None, description="Dotted path into the run config; default: the parameter's key.")
    when: Condition | None = Field(None, description="Sample only when every listed config path has (one of) the given value(s).")


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


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(f"low ({low}) must be <= high ({high})")
    if log and low <= 0:
        raise ValueError(f"log: true needs low > 0 (got low={low})")
    if log and step is not None:
        raise ValueError("log and step cannot be combined (Optuna samples either on a log scale or on a step grid)")


Param = Annotated[Union[FloatParam, IntParam, CategoricalParam, FixedParam], Field(discriminator="type")]
PARAM_TYPES = ("float", "int", "categorical", "fixed")


class ConstraintSpec(_Spec):
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


_COMPARE = {ast.GtE: ">=", ast.LtE: "<=", ast.Gt: ">", ast.Lt: "<", ast.Eq: "==", ast.NotEq: "!="}
_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def parse_constraint(expr: str) -> tuple[ast.Expression, list[str]]:
    """Parse ``lhs OP rhs`` (OP one of >= <= > < == !=, sides: config paths, numbers, + - * /).
    Returns the tree and the config paths it reads; raises ValueError naming what is not allowed."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
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


def evaluate_constraint(expr: str, config: dict[str, Any]) -> bool:
    """Evaluate a constraint on a (resolved) config dict."""
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


def condition_holds(when: Condition | None, config: dict[str, Any]) -> bool:
    if not when:
        return True
    for path, wanted in when.items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if get_path(config, path) not in allowed:
            return False
    return True


class SpaceSpec(_Spec):
    params: dict[str, Param] = Field(default_factory=dict, description="Optuna parameter name -> distribution.")
    constraints: list[ConstraintSpec] = Field(default_factory=list)

    @field_validator("params", mode="before")
    @classmethod
    def _shorthands(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
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


def param_path(name: str, param: Any) -> str:
    return param.path or name


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


# --------------------------------------------------------------------------- sampler


class _SamplerBase(_Spec):
    seed: int | None = Field(None, description="Sampler seed (reproducible suggestions).")


class TPESamplerSpec(_SamplerBase):
    type: Literal["tpe"]
    n_startup_trials: int = Field(10, ge=0)
    n_ei_candidates: int = Field(24, gt=0)
    multivariate: bool = True
    group: bool = Field(True, description="Decompose conditional spaces into groups (needs multivariate).")
    constant_liar: bool | None = Field(None, description="None = on when budget.max_parallel > 1.")

    @model_validator(mode="after")
    def _group_needs_multivariate(self) -> "TPESamplerSpec":
        if self.group and not self.multivariate:
            raise ValueError("group: true needs multivariate: true (set group: false to use the independent TPE)")
        return self


class RandomSamplerSpec(_SamplerBase):
    type: Literal["random"]


class GridSamplerSpec(_SamplerBase):
    type: Literal["grid"]


class CmaEsSamplerSpec(_SamplerBase):
    type: Literal["cmaes"]
    n_startup_trials: int = Field(1, ge=0)
    sigma0: float | None = Field(None, gt=0)
    popsize: int | None = Field(None, gt=0)


class GPSamplerSpec(_SamplerBase):
    type: Literal["gp"]
    n_startup_trials: int = Field(10, ge=0)
    deterministic_objective: bool = False


class NSGA2SamplerSpec(_SamplerBase):
    type: Literal["nsga2"]
    population_size: int = Field(50, gt=1)
    mutation_prob: float | None = Field(None, ge=0, le=1)
    crossover_prob: float = Field(0.9, ge=0, le=1)
    swapping_prob: float = Field(0.5, ge=0, le=1)


SamplerSpec = Annotated[
    Union[TPESamplerSpec, RandomSamplerSpec, GridSamplerSpec, CmaEsSamplerSpec, GPSamplerSpec, NSGA2SamplerSpec],
    Field(discriminator="type"),
]
SAMPLER_TYPES = ("tpe", "random", "grid", "cmaes", "gp", "nsga2")


# --------------------------------------------------------------------------- pruner and health rules

DEFAULT_ENTROPY_METRICS = ("train/entropy", "val/entropy")


class CollapseSpec(_Spec):
    fraction: float = Field(0.3, gt=0, lt=1, description="Collapse when the metric is below fraction x its first value...")
    patience: int = Field(3, gt=0, description="...for this many consecutive reports of that metric.")
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_ENTROPY_METRICS), min_length=1)


class ExplosionSpec(_Spec):
    multiple: float = Field(3.0, gt=1, description="Explosion when the metric is above multiple x its first value...")
    patience: int = Field(3, gt=0, description="...for this many consecutive reports of that metric.")
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_ENTROPY_METRICS), min_length=1)


class HealthSpec(_Spec):
    collapse: CollapseSpec | None = None
    explosion: ExplosionSpec | None = None
    nan: bool = Field(True, description="Prune a trial whose loss or any metric becomes NaN or inf.")

    @field_validator("collapse", "explosion", mode="before")
    @classmethod
    def _bool_shorthand(cls, value: Any) -> Any:
        if value is True:
            return {}
        if value is False:
            return None
        return value


class _PrunerBase(_Spec):
    health: HealthSpec = Field(default_factory=HealthSpec)


class NoPrunerSpec(_PrunerBase):
    type: Literal["none"]


class MedianPrunerSpec(_PrunerBase):
    type: Literal["median"]
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    interval_steps: int = Field(1, gt=0)
    n_min_trials: int = Field(1, gt=0)


class SuccessiveHalvingPrunerSpec(_PrunerBase):
    type: Literal["successive_halving"]
    min_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(4, ge=2)
    min_early_stopping_rate: int = Field(0, ge=0)
    bootstrap_count: int = Field(0, ge=0)


class HyperbandPrunerSpec(_PrunerBase):
    type: Literal["hyperband"]
    min_resource: int = Field(1, gt=0)
    max_resource: int | Literal["auto"] | None = Field(None, description="None = the trial's train.steps.")
    reduction_factor: int = Field(3, ge=2)
    bootstrap_count: int = Field(0, ge=0)


class WilcoxonPrunerSpec(_PrunerBase):
    type: Literal["wilcoxon"]
    p_threshold: float = Field(0.1, gt=0, lt=1)
    n_startup_steps: int = Field(2, ge=0)


PrunerSpec = Annotated[
    Union[NoPrunerSpec, MedianPrunerSpec, SuccessiveHalvingPrunerSpec, HyperbandPrunerSpec, WilcoxonPrunerSpec],
    Field(discriminator="type"),
]
PRUNER_TYPES = ("none", "median", "successive_halving", "hyperband", "wilcoxon")


# --------------------------------------------------------------------------- budget / executor / tracking


def parse_duration(value: Any) -> float | None:
    """Seconds from a number or a string like '90s', '30m', '2h', '1d'."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration; give seconds (3600) or a string such as 90s, 30m, 2h, 1d")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


class BudgetSpec(_Spec):
    n_trials: int | None = Field(None, gt=0, description="Trials to run in total, counting those already in storage.")
    timeout: float | None = Field(None, gt=0, description="Seconds (or 30m, 2h) after which no new trial starts.")
    max_parallel: int = Field(1, gt=0, description="Trials in flight at once.")
    steps: int | None = Field(None, gt=0, description="Override train.steps for every trial.")

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)

    @model_validator(mode="after")
    def _bounded(self) -> "BudgetSpec":
        if self.n_trials is None and self.timeout is None:
            raise ValueError("give n_trials, timeout, or both: a study needs a budget")
        return self


class ResourcesSpec(_Spec):
    cpus_per_trial: int = Field(1, gt=0, description="Sets OMP_NUM_THREADS / MKL_NUM_THREADS of the trial process.")
    gpus_per_trial: int = Field(0, ge=0)
    mem_gb: float | None = Field(None, gt=0)
    timeout_min: float = Field(240, gt=0, description="A trial still running after this is killed (and FAILs).")


class _ExecutorBase(_Spec):
    entrypoint: str = Field(
        DEFAULT_ENTRYPOINT,
        description="The trainer: 'module:function' or 'file.py:function' taking (RunConfig, reporters) -> summary dict.",
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables of the trial process.")
    on_interrupt: Literal["cancel", "detach"] = Field(
        "cancel",
        description="Ctrl-C on the driver: cancel the trials in flight (re-queued by the next run), or detach "
        "(they keep running and the next run re-attaches to them); `sweeper run --detach` forces detach.",
    )

    @field_validator("entrypoint")
    @classmethod
    def _module_colon_function(cls, value: str) -> str:
        if not re.fullmatch(r"[^:]+:[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"{value!r} must be 'module:function' (e.g. trainers.grpo:train) or 'path/to/file.py:function'")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value


class LocalExecutorSpec(_ExecutorBase):
    """submitit's LocalExecutor: one subprocess per trial on this machine (the default)."""

    type: Literal["local"]
    python: str | None = Field(None, description="Python that runs the trial; default: the driver's.")
    setup: list[str] = Field(default_factory=list, description="Shell lines run before the trial (e.g. 'source venv/bin/activate').")


class DebugExecutorSpec(_ExecutorBase):
    """In-process, one trial at a time: for pdb and quick checks."""

    type: Literal["debug"]


SLURM_PROFILES_DIR = Path(__file__).resolve().parent.parent / "slurm" / "profiles"
SLURM_PROFILE_FIELDS = (
    "partition", "account", "qos", "time_limit_min", "nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task",
    "mem_gb", "constraint", "job_name", "additional_parameters", "setup", "python",
)


class SlurmExecutorSpec(_ExecutorBase):
    """Each trial is one Slurm job, submitted with submitit (docs/sweeper.md, slurm/README.md).

    ``profile`` names a preset of these fields (``slurm/profiles/<name>.yaml``, or a YAML path relative
    to the study file); fields given in the spec replace the profile's (``additional_parameters`` is
    merged key by key). ``resources`` is not used: the Slurm fields say it per task and per node."""

    type: Literal["slurm"]
    profile: str | None = Field(None, description="A preset of the fields below: local-test, gpu-a100, multi-node (slurm/profiles/) or a YAML path.")
    partition: str | None = Field(None, description="Slurm partition (None: the cluster's default partition).")
    account: str | None = Field(None, description="Account to charge (--account).")
    qos: str | None = Field(None, description="Quality of service (--qos).")
    time_limit_min: int = Field(240, gt=0, description="Wall-clock limit of each job, minutes; every job gets one, and a requeued trial gets it again.")
    nodes: int = Field(1, gt=0, description="Nodes per trial.")
    tasks_per_node: int = Field(1, gt=0, description="Processes per node; more than one task in all = a data-parallel trial (one rank per task).")
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node (--gpus-per-node).")
    cpus_per_task: int = Field(1, gt=0, description="CPUs per task; also the trial's OMP_NUM_THREADS.")
    mem_gb: float | None = Field(None, gt=0, description="Memory per node, GB (None: the partition's default).")
    constraint: str | None = Field(None, description="Node features (--constraint).")
    job_name: str | None = Field(None, description="Slurm job name of every trial (None: <study name>-<trial number>).")
    additional_parameters: dict[str, Any] = Field(default_factory=dict, description="Extra sbatch options: #SBATCH --key=value (true: --key).")
    setup: list[str] = Field(default_factory=list, description="Shell lines of the batch script before the trial (module load, source venv/bin/activate, exports).")
    python: str | None = Field(None, description="Interpreter on the nodes (shell variables expand there); None: the driver's sys.executable.")
    signal_delay_s: int = Field(90, gt=0, description="USR2 this many seconds before the time limit: the trial checkpoints and is requeued.")
    max_requeues: int = Field(3, ge=0, description="Times a trial that reaches its time limit is requeued from its checkpoint (submitit's max_num_timeout).")
    state_poll_s: float = Field(10.0, gt=0, description="Seconds between sacct queries for jobs that end without a result (killed, cancelled).")

    @model_validator(mode="after")
    def _no_resources(self) -> "SlurmExecutorSpec":
        if "resources" in self.model_fields_set:
            raise ValueError(
                "resources is not used by type slurm: set cpus_per_task, gpus_per_node, mem_gb and "
                "time_limit_min (or name a profile) instead"
            )
        return self


ExecutorSpec = Annotated[Union[LocalExecutorSpec, DebugExecutorSpec, SlurmExecutorSpec], Field(discriminator="type")]
EXECUTOR_TYPES = ("local", "debug", "slurm")


class TrackingSpec(_Spec):
    enabled: bool = True
    uri: str | None = Field(None, description="None = sqlite:///<study dir>/mlflow.db.")
    experiment: str | None = Field(None, description="None = the study name.")
    artifact_location: str | None = Field(
        None, description="Where a new experiment keeps its artifacts: a path (relative to the study file) or a URI. "
                          "None = <dir of mlflow.db>/mlartifacts/<experiment> for SQLite, <study dir>/mlartifacts/"
                          "<experiment> for a database server (postgresql://...), the server's choice for http(s)://.")


# --------------------------------------------------------------------------- the study spec


class StudySpec(_Spec):
    study: StudySection
    objective: list[ObjectiveSpec] = Field(..., min_length=1, description="One objective, or a list (multi-objective).")
    base: dict[str, Any] = Field(default_factory=dict, description="The resolved base RunConfig (as a plain dict).")
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    enqueue: list[dict[str, Any]] = Field(default_factory=list, description="Parameter values tried first, by parameter name.")
    sampler: SamplerSpec = Field(default_factory=lambda: TPESamplerSpec(type="tpe"))
    pruner: PrunerSpec = Field(default_factory=lambda: MedianPrunerSpec(type="median"))
    budget: BudgetSpec
    executor: ExecutorSpec = Field(default_factory=lambda: LocalExecutorSpec(type="local"))
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    _source_file: str | None = PrivateAttr(None)
    _base_source: str | None = PrivateAttr(None)
    _param_origins: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("objective", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("sampler", "pruner", mode="before")
    @classmethod
    def _name_shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @field_validator("executor", mode="before")
    @classmethod
    def _executor_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"type": value}
        if isinstance(value, dict) and "type" not in value:
            return {"type": "local", **value}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "StudySpec":
        problems: list[str] = []
        if len(self.objective) > 1:
            metrics = [o.metric for o in self.objective]
            if len(set(metrics)) != len(metrics):
                problems.append(f"objective: the same metric appears twice ({metrics})")
            if self.pruner.type != "none":
                problems.append(
                    f"pruner.type: {self.pruner.type!r} cannot prune a multi-objective study (Optuna prunes only "
                    f"single-objective studies); use type: none (the health rules still apply)"
                )
            if self.sampler.type == "cmaes":
                problems.append("sampler.type: 'cmaes' is single-objective; use nsga2, tpe, random or gp")
        problems += self._check_param_values()
        problems += self._check_objective_metrics()
        problems += self._check_enqueue()
        if self.sampler.type == "grid":
            for name, param in self.space.params.items():
                if isinstance(param, FloatParam) and param.step is None:
                    problems.append(f"space.params[{name}]: sampler grid needs a finite grid: give step, or make it categorical")
                if isinstance(param, (FloatParam, IntParam)) and param.log:
                    problems.append(f"space.params[{name}]: sampler grid cannot use log: true; list the values as a categorical")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _check_param_values(self) -> list[str]:
        """Each bound/choice/fixed value must be accepted by the run config field it sets."""
        problems = []
        for name, param in self.space.params.items():
            path = param_path(name, param)
            if isinstance(param, (FloatParam, IntParam)):
                candidates = [("low", param.low), ("high", param.high)]
            elif isinstance(param, CategoricalParam):
                candidates = [(f"choices[{i}]", c) for i, c in enumerate(param.choices)]
            else:
                candidates = [("value", param.value)]
            for where, value in candidates:
                data = copy.deepcopy(self.base)
                set_path(data, path, value)
                try:
                    RunConfig.model_validate(data)
                except ValidationError as error:
                    for item in error.errors():
                        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-after"))
                        if loc == path:
                            msg = item["msg"].removeprefix("Value error, ")
                            problems.append(f"space.params[{name}].{where}: {value!r} is refused by the run config field {path}: {msg}")
        return problems

    def _check_objective_metrics(self) -> list[str]:
        swept = {param_path(n, p) for n, p in self.space.params.items()}
        if "eval.k" in swept:
            return []
        ks = get_path(self.base, "eval.k") or RunConfig().eval.k
        problems = []
        for i, objective in enumerate(self.objective):
            match = re.fullmatch(r"val/(pass|maj|mean)@(\d+)", objective.metric)
            if match and int(match.group(2)) not in ks:
                where = "objective" if len(self.objective) == 1 else f"objective[{i}]"
                reported = ", ".join(f"val/{kind}@{k}" for kind in ("pass", "maj", "mean") for k in ks)
                problems.append(
                    f"{where}.metric: {objective.metric!r} is never reported: the base config has eval.k = {ks}; "
                    f"reported: {reported}, val/entropy (or add {match.group(2)} to base eval.k)"
                )
        return problems

    def _check_enqueue(self) -> list[str]:
        problems = []
        params = self.space.params
        for i, entry in enumerate(self.enqueue):
            for name, value in entry.items():
                param = params.get(name)
                where = f"enqueue[{i}].{name}"
                if param is None or isinstance(param, FixedParam):
                    sampled = [n for n, p in params.items() if not isinstance(p, FixedParam)]
                    problems.append(f"{where}: not a sampled parameter of the space; sampled: {', '.join(sampled) or '(none)'}")
                elif isinstance(param, CategoricalParam) and value not in param.choices:
                    problems.append(f"{where}: {value!r} is not one of the choices {param.choices}")
                elif isinstance(param, (FloatParam, IntParam)):
                    if not isinstance(value, (int, float)) or isinstance(value, bool) or not param.low <= value <= param.high:
                        problems.append(f"{where}: {value!r} is outside [{param.low}, {param.high}]")
        return problems

    # ---- resolved views

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objective]

    @property
    def is_multi_objective(self) -> bool:
        return len(self.objective) > 1

    @property
    def study_dir(self) -> Path:
        return Path(self.study.dir)

    @property
    def source_file(self) -> str | None:
        return self._source_file

    @property
    def base_source(self) -> str | None:
        return self._base_source

    @property
    def source_dir(self) -> Path:
        return Path(self._source_file).parent if self._source_file else Path.cwd()

    def trial_steps(self) -> int:
        return self.budget.steps or (self.base.get("train") or {}).get("steps") or RunConfig().train.steps

    def sampled_params(self) -> dict[str, Any]:
        return {n: p for n, p in self.space.params.items() if not isinstance(p, FixedParam)}


# --------------------------------------------------------------------------- loading


def load_spec(source: str | Path | dict[str, Any], *, base_dir: str | Path | None = None) -> StudySpec:
    """Read and validate a study spec from a YAML path or a mapping.

    ``base_dir`` resolves relative paths of a mapping (default: the current directory); for a file it
    is the file's folder. Raises :class:`SpecError` with one line per bad field."""
    if isinstance(source, dict):
        raw = copy.deepcopy(source)
        folder = Path(base_dir or Path.cwd()).resolve()
        source_file = None
    else:
        path = Path(source).resolve()
        raw = read_yaml(path, "study file")
        folder = path.parent
        source_file = str(path)
    where = source_file or "the study spec"
    if not isinstance(raw, dict):
        raise SpecError(f"{where} must be a mapping with keys study, objective, base, space, budget, ...; got {type(raw).__name__}")

    origins: dict[str, str] = {}
    problems: list[str] = []
    if "space" in raw:
        try:
            raw["space"] = expand_space(raw["space"], folder, origins, stack=[source_file or "<spec>"])
        except SpecError as error:
            problems.append(f"  {error}")
            raw["space"] = {}
    try:
        base, base_source = _load_base(raw.get("base"), folder)
    except SpecError as error:
        problems += [line if line.startswith("  ") else f"  {line}" for line in str(error).splitlines()]
        base, base_source = RunConfig().model_dump(mode="json"), None
    raw["base"] = base
    try:
        raw = _apply_slurm_profile(raw, folder)
    except SpecError as error:
        problems.append(f"  {error}")
    raw = _resolve_paths(raw, folder)

    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as error:
        problems += format_spec_error(error, raw, origins, source_file).splitlines()
    if problems:
        raise SpecError(f"invalid study spec {where}:\n" + "\n".join(problems))

    study_dir = Path(spec.study.dir) if spec.study.dir else folder / "studies" / spec.study.name
    study_dir = study_dir.resolve()
    if spec.study.storage:
        storage = spec.study.storage
    elif spec.executor.type == "slurm":  # trials on other nodes write to it: a file that needs no locking server
        storage = f"journal://{study_dir / 'optuna.journal'}"
    else:
        storage = f"sqlite:///{study_dir / 'optuna.db'}"
    tracking = spec.tracking.model_copy(
        update={
            "uri": spec.tracking.uri or f"sqlite:///{study_dir / 'mlflow.db'}",
            "experiment": spec.tracking.experiment or spec.study.name,
        }
    )
    tracking = tracking.model_copy(update={"artifact_location": _artifact_location(tracking, study_dir, folder)})
    _check_database_drivers(storage, tracking)
    spec = spec.model_copy(
        update={"study": spec.study.model_copy(update={"dir": str(study_dir), "storage": storage}), "tracking": tracking}
    )
    spec._source_file = source_file
    spec._base_source = base_source
    spec._param_origins = origins
    return spec


def _artifact_location(tracking: TrackingSpec, study_dir: Path, folder: Path) -> str | None:
    """``tracking.artifact_location`` made absolute (a path is relative to the study file); for a
    database-server store (postgresql://...), default ``<study dir>/mlartifacts/<experiment>`` (MLflow
    would otherwise use ./mlruns of whatever directory a process runs in)."""
    location = tracking.artifact_location
    if location:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", location):  # a URI: file:///..., s3://..., mlflow-artifacts:/...
            return location
        return (folder / Path(location).expanduser()).resolve().as_uri()
    scheme = (tracking.uri or "").split("://", 1)[0].split("+", 1)[0]
    if "://" in (tracking.uri or "") and scheme in ("postgresql", "mysql", "mssql"):
        slug = re.sub(r"[^\w.-]+", "_", tracking.experiment or "").strip("._") or "experiment"
        return (study_dir / "mlartifacts" / slug).as_uri()
    return None


def _check_database_drivers(storage: str, tracking: TrackingSpec) -> None:
    """The database driver of the Optuna storage and of the MLflow store must be importable
    (``SpecError`` naming the package, e.g. ``entropy-sweeper[postgres]``)."""
    from .storage import check_database_driver

    check_database_driver(storage, "study.storage")
    if tracking.enabled:
        check_database_driver(tracking.uri, "tracking.uri")


def expand_space(space: Any, folder: Path, origins: dict[str, str], stack: list[str]) -> Any:
    """Merge ``include`` d space files (in order, then this file's own params: a later definition of
    a parameter name replaces an earlier one; constraints are concatenated)."""
    if not isinstance(space, dict):
        return space
    includes = space.get("include")
    if includes is None:
        for name in space.get("params") or {}:
            origins.setdefault(name, stack[-1])
        return space
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise SpecError(f"space.include: give a file or a list of files (builtin:NAME for search_spaces/NAME.yaml), got {includes!r}")
    params: dict[str, Any] = {}
    constraints: list[Any] = []
    for include in includes:
        path = resolve_include(include, folder)
        if str(path) in stack:
            raise SpecError(f"space.include: {include} includes itself (chain: {' -> '.join(stack + [str(path)])})")
        data = read_yaml(path, f"space.include: {include}:")
        if not isinstance(data, dict):
            raise SpecError(f"space.include: {path} must be a mapping with params (and constraints, include)")
        unknown = set(data) - {"params", "constraints", "include", "description"}
        if unknown:
            raise SpecError(f"space.include: {path} has unknown key(s) {sorted(unknown)}; accepted: params, constraints, include, description")
        data.pop("description", None)
        inner_origins: dict[str, str] = {}
        data = expand_space(data, path.parent, inner_origins, stack + [str(path)])
        for name, param in (data.get("params") or {}).items():
            params[name] = param
            origins[name] = inner_origins.get(name, str(path))
        constraints += data.get("constraints") or []
    own = space.get("params") or {}
    if not isinstance(own, dict):
        return space  # let validation report it
    for name, param in own.items():
        params.pop(name, None)
        params[name] = param
        origins[name] = stack[-1]
    merged = {k: v for k, v in space.items() if k != "include"}
    merged["params"] = params
    merged["constraints"] = constraints + list(space.get("constraints") or [])
    return merged


def resolve_include(include: str, folder: Path) -> Path:
    if include.startswith(BUILTIN_PREFIX):
        name = include[len(BUILTIN_PREFIX):]
        path = SEARCH_SPACES_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
        if not path.exists():
            shipped = sorted(p.stem for p in SEARCH_SPACES_DIR.glob("*.yaml"))
            raise SpecError(f"space.include: no ready space {include!r}; shipped: {', '.join('builtin:' + s for s in shipped)}")
        return path
    path = Path(include)
    return (path if path.is_absolute() else folder / path).resolve()


def _load_base(base: Any, folder: Path) -> tuple[dict[str, Any], str | None]:
    if base is None:
        data, source = {}, None
    elif isinstance(base, str):
        path = Path(base)
        path = (path if path.is_absolute() else folder / path).resolve()
        data = read_yaml(path, "base: run config")
        source = str(path)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise SpecError(f"base: {path} must be a mapping of run config fields, got {type(data).__name__}")
    elif isinstance(base, dict):
        data, source = base, None
    else:
        raise SpecError(f"base: give a run config file path or an inline mapping, got {type(base).__name__}")
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as error:
        lines = format_validation_error(error, prefix="base.")
        if source:
            lines = "\n".join(f"{line}  [in {source}]" for line in lines.splitlines())
        raise SpecError(lines) from None
    # the full config with defaults: `when` conditions and constraints read values the user left out
    return config.model_dump(mode="json"), source


def resolve_slurm_profile(profile: str, folder: Path) -> Path:
    """A profile name (``slurm/profiles/<name>.yaml``) or a YAML path relative to ``folder``."""
    path = Path(profile).expanduser()
    if path.suffix in (".yaml", ".yml") or "/" in profile:
        return path if path.is_absolute() else (folder / path).resolve()
    return SLURM_PROFILES_DIR / f"{profile}.yaml"


def _apply_slurm_profile(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """executor.profile -> the profile's fields under the spec's own (``additional_parameters`` merged by key)."""
    executor = raw.get("executor")
    if not isinstance(executor, dict) or executor.get("type") != "slurm" or not isinstance(executor.get("profile"), str):
        return raw
    path = resolve_slurm_profile(executor["profile"], folder)
    if not path.exists():
        shipped = ", ".join(sorted(p.stem for p in SLURM_PROFILES_DIR.glob("*.yaml")))
        raise SpecError(f"executor.profile: {executor['profile']!r}: no file {path}; shipped profiles: {shipped}, or give a YAML path")
    profile = read_yaml(path, "executor.profile:")
    if not isinstance(profile, dict):
        raise SpecError(f"executor.profile: {path} must be a mapping of {', '.join(SLURM_PROFILE_FIELDS)}")
    unknown = sorted(set(profile) - set(SLURM_PROFILE_FIELDS))
    if unknown:
        raise SpecError(f"executor.profile: {path} has unknown key(s) {unknown}; accepted: {', '.join(SLURM_PROFILE_FIELDS)}")
    merged = {**profile, **executor}
    if isinstance(profile.get("additional_parameters"), dict) and isinstance(executor.get("additional_parameters"), dict):
        merged["additional_parameters"] = {**profile["additional_parameters"], **executor["additional_parameters"]}
    raw["executor"] = merged
    return raw


def _resolve_paths(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Make file-relative paths absolute before validation (study.dir, storage, entrypoint file)."""
    study = raw.get("study")
    if isinstance(study, dict):
        if isinstance(study.get("dir"), str) and not Path(study["dir"]).is_absolute():
            study["dir"] = str((folder / study["dir"]).resolve())
        storage = study.get("storage")
        if isinstance(storage, str):
            study["storage"] = resolve_storage_url(storage, folder)
    executor = raw.get("executor")
    if isinstance(executor, dict) and isinstance(executor.get("entrypoint"), str):
        target, _, func = executor["entrypoint"].rpartition(":")
        if target.endswith(".py") and not Path(target).is_absolute():
            executor["entrypoint"] = f"{(folder / target).resolve()}:{func}"
    tracking = raw.get("tracking")
    if isinstance(tracking, dict) and isinstance(tracking.get("uri"), str):
        tracking["uri"] = resolve_storage_url(tracking["uri"], folder) if tracking["uri"].startswith("sqlite:///") else tracking["uri"]
    return raw


def resolve_storage_url(url: str, folder: Path) -> str:
    """journal://rel and sqlite:///rel are made absolute against the study file's folder."""
    if url.startswith("journal://"):
        path = Path(url[len("journal://"):])
        return f"journal://{(path if path.is_absolute() else folder / path).resolve()}"
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///"):]
        if rest.startswith("/") or rest in ("", ":memory:"):
            return url
        return f"sqlite:///{(folder / rest).resolve()}"
    return url


# --------------------------------------------------------------------------- error messages


def format_spec_error(error: ValidationError, raw: Any, origins: dict[str, str] | None = None, source_file: str | None = None) -> str:
    """One line per error: the field path as the user wrote it, the problem, and what is accepted."""
    lines = []
    for item in error.errors():
        path = _render_loc(item["loc"], raw)
        msg = item["msg"]
        kind = item["type"]
        if kind == "missing":
            msg = "required field is missing"
        elif kind == "union_tag_not_found":
            msg = f"missing 'type': {_expected_tags(path)}"
        elif kind == "union_tag_invalid":
            ctx = item.get("ctx") or {}
            msg = f"type {ctx.get('tag')!r} is not known; accepted: {ctx.get('expected_tags')}"
        elif kind == "extra_forbidden":
            accepted = _accepted_keys(item["loc"][:-1])
            msg = "unknown key" + (f"; accepted: {', '.join(accepted)}" if accepted else "")
        msg = msg.removeprefix("Value error, ")
        got = item.get("input")
        suffix = "" if kind in ("missing", "value_error", "assertion_error") or isinstance(got, (dict, list)) else f" (got {got!r})"
        for line in msg.split("\n"):
            if line.startswith(("space.", "pruner.", "sampler.", "objective", "enqueue")):
                lines.append(f"  {line}")  # the validator already names the field
            else:
                lines.append(f"  {path}: {line}{suffix}")
    if origins:
        for i, line in enumerate(lines):
            match = re.search(r"space\.params\[([^\]]+)\]", line)
            origin = origins.get(match.group(1)) if match else None
            if origin and origin != source_file:
                lines[i] = f"{line}  [defined in {origin}]"
    return "\n".join(lines)


def _expected_tags(path: str) -> str:
    if path.startswith("space.params"):
        return "one of " + ", ".join(PARAM_TYPES)
    for section, types in (("sampler", SAMPLER_TYPES), ("pruner", PRUNER_TYPES), ("executor", EXECUTOR_TYPES)):
        if path.startswith(section):
            return "one of " + ", ".join(types)
    return "give a type"


def _render_loc(loc: tuple, raw: Any) -> str:
    """Render a pydantic location against the user's data: dict keys with dots as [key], list
    indices as [i]; union tags and internal markers (not present in the data) are dropped."""
    out = ""
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            key = str(part)
            out += f"[{key}]" if ("." in key or "/" in key) and out else (f".{key}" if out else key)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out += f"[{part}]"
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, int):
            continue  # a single mapping normalized to a one-item list (objective)
        elif isinstance(node, dict) and node.get("type") == part:
            continue  # discriminated-union tag
        elif isinstance(part, str) and (part.startswith(("function-", "list[", "dict[", "union[")) or part in PARAM_TYPES + SAMPLER_TYPES + PRUNER_TYPES + EXECUTOR_TYPES):
            continue
        else:
            out += f".{part}" if out else str(part)
            node = None
    return out or "<root>"


def _accepted_keys(loc: tuple) -> list[str] | None:
    """The field names of the spec model found at a pydantic location (union tags pick the member)."""
    annotation: Any = StudySpec
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return None
    model = _as_model(annotation)
    return list(model.model_fields) if model else None


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
    return annotation


def _as_model(annotation: Any) -> type[BaseModel] | None:
    annotation = _strip(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _step(annotation: Any, part: Any) -> Any:
    annotation = _strip(annotation)
    model = _as_model(annotation)
    if model is not None:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else None
    origin = get_origin(annotation)
    if origin in (list, tuple):
        return get_args(annotation)[0]
    if origin is dict:
        return get_args(annotation)[1]
    if origin in (Union, UnionType):
        for member in get_args(annotation):
            member_model = _as_model(member)
            type_field = member_model.model_fields.get("type") if member_model else None
            if type_field is not None and part in get_args(type_field.annotation):
                return member_model
        return annotation
    return None
