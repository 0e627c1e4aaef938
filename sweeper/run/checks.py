"""Checks before launch: what a valid spec can still get wrong, found by ``sweeper validate`` (and before
``sweeper run`` starts anything) rather than by every trial failing, or by a study that silently does
something else than asked.

    problems = launch_problems(spec)      # ["executor.entrypoint: ...", ...]; check_launch(spec) raises

The schema (:mod:`sweeper.study.spec`) checks each section's shape; this module checks what needs the
filesystem, the trainer's declarations or a look at the space as a whole:

* the entry point: the module found on the trial's search path (``importlib`` finders only: no user
  code runs) or the ``.py`` file present, and its top-level function defined (read from the source);
* for the default entry point (``trainers.grpo:train``), the run configs a trial can get: a ``builtin:``
  model that is not shipped, a local model folder that does not exist, a reward that is not registered
  (``trainers.config.launch_problems``), the objective and every health-rule metric against the names
  the trainer reports (``trainers.config.logged_metrics``); checked on the base config and on the base
  with each value a parameter can set;
* specs that can never work (:mod:`sweeper.run.sanity`): a doubled value in a list that is a set, a storage
  that can never hold a database, a tracking scheme MLflow does not have, a ``when`` that reads itself;
* the study folder (and a SQLite or journal storage's, a SQLite MLflow store's) can be created and written;
* the pruner against the trial's steps (a first rung beyond the last step prunes nothing);
* ``when`` conditions that can never hold (a value no parameter takes, or a path no parameter sets whose
  base value is another), for parameters and constraints;
* a grid too large to hold;
* the constraints, on a quick dry sampling (:data:`DRY_SAMPLES` configs drawn at random, no Optuna, no
  storage): a constraint false for every sampled config where it applies, or every config refused.

Imports neither optuna nor torch; from the trainer, ``trainers.config`` only.
"""

from __future__ import annotations

import ast
import copy
import difflib
import importlib.machinery
import math
import os
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trainers.config import RunConfig, launch_problems as run_config_problems, logged_metrics

from sweeper.run.executors.base import DEFAULT_ENTRYPOINT, PROJECT_ROOT
from sweeper.study.schema import SpecError
from sweeper.run.sanity import sanity_problems
from sweeper.urls import JOURNAL_PREFIX, sqlite_file
from sweeper.study.space import (CategoricalParam, FixedParam, FloatParam, IntParam, Rejected, condition_holds, evaluate_constraint,
                                 get_path, param_path, set_path)
from sweeper.study.spec import StudySpec, resolve, sample

DRY_SAMPLES = 200          # the driver gives up after as many rejections in a row (driver.MAX_CONSECUTIVE_REJECTIONS)
MIN_EVIDENCE = 20          # a constraint is reported only when it applied to at least this many sampled configs
MAX_GRID_POINTS = 1_000_000
MAX_SOURCE_BYTES = 4 << 20  # an entry point's source read to find its function


def check_launch(spec: "StudySpec") -> None:
    """Raise :class:`SpecError` listing every problem of :func:`launch_problems`."""
    problems = launch_problems(spec)
    if problems:
        where = spec.source_file or "the study spec"
        raise SpecError(f"study spec {where} cannot launch:\n" + "\n".join(f"  {p}" for p in problems))


def launch_problems(spec: "StudySpec") -> list[str]:
    """One line per problem (``field: what is wrong; what would be accepted``); [] when none is found."""
    problems = sanity_problems(spec) + entrypoint_problems(spec.executor)
    if spec.executor.entrypoint == DEFAULT_ENTRYPOINT:
        candidates = candidate_configs(spec)
        problems += _run_config_problems(candidates)
        problems += _metric_problems(spec, [config for _, config in candidates])
        problems += _engine_problems(spec, [config for _, config in candidates])
    problems += _folder_problems(spec)
    problems += _pruner_problems(spec)
    problems += _when_problems(spec)
    problems += _grid_problems(spec)
    if not problems:
        problems += dry_sampling_problems(spec)
    return problems


# --------------------------------------------------------------------------- the entry point


def entrypoint_problems(executor: Any) -> list[str]:
    """The entry point's module (or file) and function exist, found without importing user code. A module
    is looked up only where the trial's interpreter is the driver's (no ``python`` or ``setup`` lines)."""
    target, _, function = executor.entrypoint.rpartition(":")
    field = "executor.entrypoint"
    if target.endswith(".py"):
        path = Path(target)
        try:
            if not path.is_file():
                return [f"{field}: {executor.entrypoint!r}: no file {path} (a relative path is relative to the study file)"]
        except (OSError, ValueError) as error:
            return [f"{field}: {executor.entrypoint!r}: {path} cannot be read ({error})"]
        return _function_problems(field, executor.entrypoint, path, function)
    if getattr(executor, "python", None) or getattr(executor, "setup", None):
        return []  # another interpreter or environment runs the trial: its modules are not ours to see
    origin, problem = find_module(target, _search_path(executor.env))
    if problem:
        return [f"{field}: {executor.entrypoint!r}: {problem}"]
    return _function_problems(field, executor.entrypoint, Path(origin), function) if origin and origin.endswith(".py") else []


def _search_path(env: dict[str, str]) -> list[str]:
    """Where the trial process looks for modules: the project (on its PYTHONPATH), executor.env's
    PYTHONPATH, the working folder and this interpreter's path."""
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [str(PROJECT_ROOT), *extra, os.getcwd(), *[p for p in sys.path if p]]


def find_module(name: str, search_path: list[str]) -> tuple[str | None, str | None]:
    """``(origin file, None)`` of module ``name`` or ``(None, problem)``, with the import system's finders
    only: no package ``__init__`` runs (``importlib.util.find_spec`` would import the parents)."""
    parts = name.split(".")
    if not all(part.isidentifier() for part in parts):
        return None, f"{name!r} is not a module name (dotted identifiers, e.g. trainers.grpo)"
    if name in sys.modules:
        return getattr(sys.modules[name], "__file__", None), None
    if parts[0] in sys.builtin_module_names:
        return None, None
    locations: list[str] | None = search_path
    spec = None
    for depth in range(len(parts)):
        fullname = ".".join(parts[:depth + 1])
        try:
            spec = importlib.machinery.PathFinder.find_spec(fullname, locations)
        except (ImportError, OSError, ValueError) as error:
            return None, f"module {fullname} cannot be looked up: {error}"
        if spec is None:
            where = "on the trial's path (the project, executor.env PYTHONPATH, the working folder, sys.path)" if depth == 0 \
                else f"in package {'.'.join(parts[:depth])}"
            return None, f"no module {fullname} {where}"
        if depth < len(parts) - 1:
            locations = list(spec.submodule_search_locations or [])
            if not locations:
                return None, f"{fullname} is a module, not a package: it has no submodule {parts[depth + 1]}"
    return (spec.origin if spec is not None and spec.has_location else None), None


def _function_problems(field: str, entrypoint: str, path: Path, function: str) -> list[str]:
    """The function is bound at the top level of the source (def, class, assignment or import, also under
    a top-level if/try/with); a module with ``__getattr__`` or a star import may define it otherwise."""
    try:
        if path.stat().st_size > MAX_SOURCE_BYTES:
            return []
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as error:
        return [f"{field}: {entrypoint!r}: {path} does not parse (line {error.lineno}: {error.msg})"]
    except (OSError, ValueError) as error:
        return [f"{field}: {entrypoint!r}: {path} cannot be read ({error})"]
    names = _bound_names(tree.body)
    if names is None or function in names or "__getattr__" in names:
        return []
    return _missing(field, entrypoint, path, function, names)


def _bound_names(statements: list[ast.stmt]) -> set[str] | None:
    """Names bound by module-level statements; None after a star import (anything may be bound)."""
    names: set[str] = set()
    for node in statements:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in node.names):
                return None
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            blocks = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            blocks += [handler.body for handler in getattr(node, "handlers", [])]
            for block in blocks:
                inner = _bound_names(block)
                if inner is None:
                    return None
                names |= inner
    return names


def _missing(field: str, entrypoint: str, path: Path, function: str, names: set[str]) -> list[str]:
    functions = sorted(n for n in names if not n.startswith("_"))
    close = difflib.get_close_matches(function, functions, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else (f"; it defines: {', '.join(functions[:12])}" if functions else "")
    return [f"{field}: {entrypoint!r}: {path} defines no {function!r} at its top level{hint}"]


# --------------------------------------------------------------------------- folders the driver writes


def _folder_problems(spec: "StudySpec") -> list[str]:
    """The study folder, and the folders of a SQLite or journal storage and of a SQLite MLflow store, can be
    created (or are folders already) and written."""
    targets = [("study.dir", Path(spec.study.dir))]
    storage = spec.study.storage
    if storage.startswith(JOURNAL_PREFIX):
        targets.append(("study.storage", Path(storage[len(JOURNAL_PREFIX):]).parent))
    elif sqlite_file(storage) is not None:
        targets.append(("study.storage", sqlite_file(storage).parent))
    if spec.tracking.enabled and sqlite_file(spec.tracking.uri or "") is not None:
        targets.append(("tracking.uri", sqlite_file(spec.tracking.uri).parent))
    problems = []
    for field, folder in targets:
        problem = _unwritable(folder)
        if problem:
            problems.append(f"{field}: {problem}")
    return problems


def _unwritable(folder: Path) -> str | None:
    """None when ``folder`` is (or can be made) a writable folder; else why not."""
    try:
        existing = folder
        while not existing.exists():
            if existing.parent == existing:
                break
            existing = existing.parent
        if not existing.is_dir():
            return f"{folder} cannot be a folder: {existing} is a file"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"{folder} cannot be {'written' if existing == folder else 'created'}: {existing} is not writable by this user"
    except (OSError, ValueError) as error:
        return f"{folder} is not a usable folder ({error})"
    return None


# --------------------------------------------------------------------------- the run configs a trial can get


def candidate_configs(spec: "StudySpec") -> list[tuple[str, RunConfig]]:
    """``(where, config)``: the base config, and the base with each value one parameter can set (a
    categorical's choices, a fixed value, a range's bounds). Configs the run config refuses are left out:
    the spec's own validation reports those values."""
    out = [("base", RunConfig.model_validate(spec.base))]
    for name, param in spec.space.params.items():
        path = param_path(name, param)
        if isinstance(param, CategoricalParam):
            values = [(f"choices[{i}]", v) for i, v in enumerate(param.choices)]
        elif isinstance(param, FixedParam):
            values = [("value", param.value)]
        else:
            values = [("low", param.low), ("high", param.high)]
        for which, value in values:
            data = copy.deepcopy(spec.base)
            set_path(data, path, value)
            try:
                out.append((f"space.params[{name}].{which}", RunConfig.model_validate(data)))
            except ValidationError:
                continue
    return out


def _run_config_problems(candidates: list[tuple[str, RunConfig]]) -> list[str]:
    problems, seen = [], set()
    for where, config in candidates:
        for field, problem in run_config_problems(config):
            if (field, problem) in seen:
                continue
            seen.add((field, problem))
            problems.append(f"base.{field}: {problem}" if where == "base" else f"{where} (sets {field}): {problem}")
    return problems


def _engine_problems(spec: "StudySpec", configs: list[RunConfig]) -> list[str]:
    """``engine: trl`` runs a trial on one process: an executor that gives a trial several is refused here."""
    processes = getattr(spec.executor, "nodes", 1) * getattr(spec.executor, "tasks_per_node", 1)
    if processes > 1 and any(config.engine == "trl" for config in configs):
        return [f"executor: {processes} processes per trial (nodes x tasks_per_node), but engine: trl runs a trial on one "
                "process: set nodes: 1 and tasks_per_node: 1, or engine: native (data-parallel trials)"]
    return []


def _metric_problems(spec: "StudySpec", configs: list[RunConfig]) -> list[str]:
    declared = [logged_metrics(config) for config in configs]
    possible = frozenset().union(*(d.possible for d in declared))
    validation = frozenset().union(*(d.validation | d.validation_sometimes for d in declared))
    problems = []
    for i, objective in enumerate(spec.objective):
        if objective.metric not in validation:
            where = "objective.metric" if len(spec.objective) == 1 else f"objective[{i}].metric"
            problems.append(f"{where}: {objective.metric!r} is never reported at validation by the trainer"
                            f"{_suggest(objective.metric, validation)}")
    health = spec.pruner.health
    for rule_name in ("collapse", "explosion"):
        rule = getattr(health, rule_name)
        for i, metric in enumerate(rule.metrics if rule is not None else []):
            if metric not in possible:
                problems.append(f"pruner.health.{rule_name}.metrics[{i}]: {metric!r} is never reported by the trainer "
                                f"for this space, so the rule would never fire{_suggest(metric, possible)}")
    return problems


def _suggest(name: str, names: frozenset[str]) -> str:
    close = difflib.get_close_matches(name, sorted(names), n=3, cutoff=0.6)
    related = sorted(n for n in names if n.split("/")[-1] in name or name.split("/")[-1] in n.split("/")[-1])[:8]
    shown = close or related or sorted(n for n in names if n.startswith(name.split("/")[0] + "/"))[:12]
    return f"; did you mean {' or '.join(map(repr, shown))}?" if close else (f"; it reports e.g. {', '.join(shown)}" if shown else "")


# --------------------------------------------------------------------------- pruner, conditions, grid


def _max_trial_steps(spec: "StudySpec") -> int:
    if spec.budget.steps:
        return spec.budget.steps
    steps = [spec.trial_steps()]
    for name, param in spec.space.params.items():
        if param_path(name, param) == "train.steps":
            values = param.choices if isinstance(param, CategoricalParam) else [param.value] if isinstance(param, FixedParam) else [param.high]
            steps += [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    return max(steps)


def _pruner_problems(spec: "StudySpec") -> list[str]:
    return spec.pruner.problems_for(_max_trial_steps(spec))


def _when_problems(spec: "StudySpec") -> list[str]:
    """A ``when`` on a path: a value some parameter sets (checked by the space's schema for parameters),
    or, on a path no parameter sets, the base config's value; else it never holds."""
    params = spec.space.params
    setters: dict[str, list[Any]] = {}
    for name, param in params.items():
        setters.setdefault(param_path(name, param), []).append(param)
    takes: dict[str, list[Any]] = {}
    for path, setting in setters.items():
        values: list[Any] = []
        for param in setting:
            if isinstance(param, CategoricalParam):
                values += param.choices
            elif isinstance(param, FixedParam):
                values.append(param.value)
            else:
                values = None  # a range: any value in it
                break
        if values is not None:
            takes[path] = values + ([] if all(p.when is None for p in setting) else [get_path(spec.base, path)])
    conditions = [(f"space.params[{n}].when", p.when) for n, p in params.items()]
    conditions += [(f"space.constraints[{i}].when", c.when) for i, c in enumerate(spec.space.constraints)]
    problems = []
    for where, when in conditions:
        for path, wanted in (when or {}).items():
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if path in setters:
                possible = takes.get(path)
                if possible is not None and not any(value in possible for value in allowed):
                    problems.append(f"{where}.{path}: {_values(allowed)} never holds: {path} takes {_values(_unique(possible))}")
            elif get_path(spec.base, path) not in allowed:
                problems.append(f"{where}.{path}: {_values(allowed)} never holds: no parameter sets {path} and the base "
                                f"config has {get_path(spec.base, path)!r}; sweep {path} or set it in base")
    return problems


def _unique(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def _values(values: list[Any]) -> str:
    return " or ".join(repr(v) for v in values) if values else "(nothing)"


def _grid_problems(spec: "StudySpec") -> list[str]:
    if not spec.sampler.needs_grid:
        return []
    size = 1.0
    for param in spec.space.params.values():
        if isinstance(param, CategoricalParam):
            size *= len(param.choices)
        elif isinstance(param, IntParam):
            size *= (param.high - param.low) // param.step + 1
        elif isinstance(param, FloatParam) and param.step:
            size *= math.floor((param.high - param.low) / param.step + 1e-9) + 1
    if size > MAX_GRID_POINTS:
        return [f"sampler: the grid has {size:.3g} points (the product of every parameter's values); Optuna's grid "
                f"sampler holds them all: use at most {MAX_GRID_POINTS}, larger steps or fewer values, or sampler: random"]
    return []


# --------------------------------------------------------------------------- dry sampling


class _RandomTrial:
    """The three ``suggest_*`` calls :func:`sweeper.study.space.sample` makes, answered from a seeded RNG."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False, step: float | None = None) -> float:
        if step:
            return low + step * self.rng.randint(0, int(math.floor((high - low) / step + 1e-9)))
        if log:
            return math.exp(self.rng.uniform(math.log(low), math.log(high)))
        return self.rng.uniform(low, high)

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False, step: int = 1) -> int:
        if log:
            return min(high, max(low, round(math.exp(self.rng.uniform(math.log(low), math.log(high))))))
        return low + step * self.rng.randint(0, (high - low) // step)

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self.rng.choice(list(choices))


def dry_sampling_problems(spec: "StudySpec", n: int = DRY_SAMPLES, seed: int = 0) -> list[str]:
    """Sample ``n`` configs at random (as TPE's first trials do) and report a constraint false wherever it
    applied (at least :data:`MIN_EVIDENCE` times), or a space whose every config is refused."""
    rng = random.Random(seed)
    constraints = spec.space.constraints
    applied, held = Counter(), Counter()
    refusals: Counter[str] = Counter()
    accepted = 0
    for _ in range(n):
        sampled = sample(spec, _RandomTrial(rng))
        config = sampled.config  # a fresh copy of the base, as resolve() will see it (with the budget's steps)
        if spec.budget.steps:
            set_path(config, "train.steps", spec.budget.steps)
        for index, constraint in enumerate(constraints):
            if held[index] or applied[index] >= MIN_EVIDENCE:
                continue  # settled: it held once, or it never did in enough configs
            if condition_holds(constraint.when, config):
                applied[index] += 1
                try:
                    held[index] += bool(evaluate_constraint(constraint.expr, config))
                except Rejected:
                    pass  # cannot be evaluated for this config: the driver rejects that config, never the study
        if accepted:
            continue  # one config the trainer accepts is enough: the rest only count the constraints
        try:
            resolve(spec, sampled)
            accepted += 1
        except Rejected as rejection:
            refusals[str(rejection)] += 1
    problems = []
    for index, constraint in enumerate(constraints):
        if applied[index] >= MIN_EVIDENCE and held[index] == 0:
            problems.append(f"space.constraints[{index}]: {constraint.expr!r} was false for each of {applied[index]} configs "
                            f"drawn at random where it applies; loosen it or widen the ranges it reads")
    if accepted == 0 and not problems:
        reason, count = refusals.most_common(1)[0]
        problems.append(f"space: every one of {n} configs sampled at random is refused (the driver would give up after "
                        f"as many in a row); most often ({count} times): {reason}")
    return problems
