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

Each section's schema lives beside the code that uses it (``space`` in :mod:`sweeper.study.space`, ``sampler``
in :mod:`sweeper.study.samplers`, ``pruner`` in :mod:`sweeper.study.pruning`, ``executor`` in
:mod:`sweeper.run.executors`); this module holds the study-level sections and puts them together.

This module imports neither torch nor optuna (the spec is checked on a login node in milliseconds);
from the trainer it imports ``trainers.config`` only, the one contract shared with the sweeper.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from trainers.config import RunConfig, format_validation_error, render_location

from sweeper import registry
from sweeper.registry import EXECUTORS, PRUNERS, SAMPLERS, STORAGES
from sweeper.statistics import ObjectiveRule
from sweeper.study.budget import MAX_SEEDS, BudgetSpec, parse_duration  # noqa: F401 (re-exported)
from sweeper.study.schema import SpecError, SpecModel, read_yaml
from sweeper.study.space import (CategoricalParam, FixedParam, FloatParam, IntParam, Rejected, SampledConfig, SpaceSpec,
                                 describe_params, get_path, grid_search_space, param_path, resolve_config,
                                 sample_params, set_path)
from sweeper.study.drivers import check_database_driver
from sweeper.study.includes import expand_space
from sweeper.urls import JOURNAL_PREFIX, SQLITE_PREFIX, default_storage_url, default_tracking_uri, is_database_server, url_scheme
from sweeper.redaction import redact_url

__all__ = ["StudySpec", "SpecError", "Rejected", "load_spec", "parse_duration", "sample", "resolve", "describe_space",
           "build_sampler_of", "build_pruner_of"]


# --------------------------------------------------------------------------- study / objective


class StudySection(SpecModel):
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
        if url_scheme(value) not in STORAGES:
            raise ValueError(
                f"{redact_url(value)!r} is not a storage URL; accepted: sqlite:///path.db, journal:///path.log "
                f"(Optuna journal file, for shared filesystems), or a SQLAlchemy URL such as postgresql://user@host/db "
                f"(schemes: {', '.join(STORAGES)})"
            )
        return value


class ObjectiveSpec(SpecModel):
    metric: str = Field(..., description="A validation metric the trainer reports, e.g. val/pass@8.")
    direction: Literal["maximize", "minimize"] = "maximize"
    aggregation: Literal["last", "best", "mean_last_n"] = "last"
    last_n: int = Field(3, gt=0, description="Validations averaged by mean_last_n.")
    baseline: dict[str, Any] | None = Field(
        None, description="The config results are measured against, by parameter name like an enqueue entry "
        "(default: the first enqueue entry). It runs first and is not pruned on its score.")

    def rule(self) -> ObjectiveRule:
        """The objective as trials are scored (:class:`sweeper.statistics.ObjectiveRule`)."""
        return ObjectiveRule(self.metric, self.direction, self.aggregation, self.last_n)

    @field_validator("metric")
    @classmethod
    def _validation_metric(cls, value: str) -> str:
        if not value.startswith("val/"):
            raise ValueError(
                f"{value!r}: the objective is read from validation results, so it must be a val/ metric "
                f"(val/pass@K, val/maj@K, val/mean@K, val/entropy)"
            )
        return value


# --------------------------------------------------------------------------- tracking (the budget: sweeper.study.budget)


BASE_INVALID = "base_invalid"  # validation context: the base config was refused (the defaults stand in for it)


class TrackingSpec(SpecModel):
    enabled: bool = True
    uri: str | None = Field(None, description="None = sqlite:///<study dir>/mlflow.db.")
    experiment: str | None = Field(None, description="None = the study name.")
    artifact_location: str | None = Field(
        None, description="Where a new experiment keeps its artifacts: a path (relative to the study file) or a URI. "
                          "None = <dir of mlflow.db>/mlartifacts/<experiment> for SQLite, <study dir>/mlartifacts/"
                          "<experiment> for a database server (postgresql://...), the server's choice for http(s)://.")


# --------------------------------------------------------------------------- the study spec


class StudySpec(SpecModel):
    study: StudySection
    objective: list[ObjectiveSpec] = Field(..., min_length=1, description="One objective, or a list (multi-objective).")
    base: dict[str, Any] = Field(default_factory=dict, description="The resolved base RunConfig (as a plain dict).")
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    enqueue: list[dict[str, Any]] = Field(default_factory=list, description="Parameter values tried first, by parameter name.")
    # sampler, pruner, executor: the union of the kinds in sweeper.registry, resolved by _rebuild_sections()
    sampler: SamplerSection = Field(default_factory=lambda: SAMPLERS.get("tpe")(type="tpe"), discriminator="type")  # noqa: F821
    pruner: PrunerSection = Field(default_factory=lambda: PRUNERS.get("median")(type="median"), discriminator="type")  # noqa: F821
    budget: BudgetSpec
    executor: ExecutorSection = Field(default_factory=lambda: EXECUTORS.get("local")(type="local"), discriminator="type")  # noqa: F821
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
    def _consistent(self, info: ValidationInfo) -> "StudySpec":
        problems: list[str] = []
        if len(self.objective) > 1:
            metrics = [o.metric for o in self.objective]
            if len(set(metrics)) != len(metrics):
                problems.append(f"objective: the same metric appears twice ({metrics})")
            if self.pruner.prunes:
                problems.append(
                    f"pruner.type: {self.pruner.type!r} cannot prune a multi-objective study (Optuna prunes only "
                    f"single-objective studies); use type: none (the health rules still apply)"
                )
            if self.sampler.single_objective_only:
                problems.append(f"sampler.type: {self.sampler.type!r} is single-objective; use nsga2, tpe, random or gp")
        if self.budget.seeds_min is not None and self.budget.seeds_min < self.budget.seeds and self.pruner.type != "futility":
            problems.append(f"budget.seeds: a range ({self.budget.seeds_min}-{self.budget.seeds}) races configs over seeds, "
                            f"which needs pruner.type: futility (got {self.pruner.type!r}); give a number of seeds, or "
                            f"pruner: {{type: futility, delta: ...}}")
        racing = self.budget.seeds_min is not None and self.budget.seeds_min < self.budget.seeds
        if self.pruner.type == "futility" and not racing and getattr(self.pruner, "warmup_step", None) is None:
            problems.append("pruner.type: futility looks after each seed of a race or at validations: give budget.seeds a "
                            "range (e.g. \"1-3\") or pruner.warmup_step (a step from which validations are judged)")
        if self.budget.seeds > 1 and "seed" in {param_path(n, p) for n, p in self.space.params.items()}:
            problems.append("budget.seeds: the space already sweeps `seed`; replicate seeds come from budget.seeds "
                            "(seed, seed + 1, ...): remove one of the two")
        problems += self._check_param_values()
        problems += self._check_baseline()
        if not (info.context or {}).get(BASE_INVALID):  # the defaults stand in for it: no second, misleading error
            problems += self._check_objective_metrics()
        problems += self._check_enqueue()
        if self.sampler.needs_grid:
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
                        if render_location(item["loc"]) == path:
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

    def _check_baseline(self) -> list[str]:
        problems = [f"objective[{i}].baseline: give the baseline on the first objective only"
                    for i, objective in enumerate(self.objective[1:], start=1) if objective.baseline is not None]
        if self.objective[0].baseline is not None:
            where = "objective.baseline" if len(self.objective) == 1 else "objective[0].baseline"
            problems += self._check_params(self.objective[0].baseline, where)
        return problems

    def _check_enqueue(self) -> list[str]:
        problems = []
        for i, entry in enumerate(self.enqueue):
            problems += self._check_params(entry, f"enqueue[{i}]")
        return problems

    def _check_params(self, entry: dict[str, Any], at: str) -> list[str]:
        """Parameter values by name (an enqueue entry, the baseline): each a sampled parameter, in its range."""
        problems = []
        params = self.space.params
        for name, value in entry.items():
            param = params.get(name)
            where = f"{at}.{name}"
            if param is None or isinstance(param, FixedParam):
                sampled = ", ".join(self.space.sampled()) or "(none)"
                problems.append(f"{where}: not a sampled parameter of the space; sampled: {sampled}")
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
    def baseline_params(self) -> dict[str, Any] | None:
        """The baseline's parameter values: ``objective.baseline``, else the first enqueue entry, else None."""
        explicit = self.objective[0].baseline
        return dict(explicit) if explicit is not None else (dict(self.enqueue[0]) if self.enqueue else None)

    @property
    def param_origins(self) -> dict[str, str]:
        """{parameter name: the file that defined it} (the study file or an included space file)."""
        return self._param_origins

    def trial_steps(self) -> int:
        return self.budget.steps or (self.base.get("train") or {}).get("steps") or RunConfig().train.steps


# --------------------------------------------------------------------------- the study's components, from their sections


def sample(spec: StudySpec, trial: Any) -> SampledConfig:
    """The space's parameters suggested on ``trial`` over the study's base config (unvalidated: :func:`resolve`)."""
    return sample_params(spec.space, spec.base, trial)


def resolve(spec: StudySpec, sampled: SampledConfig, *, output_dir: str | None = None,
            step0_cache: str | None = None) -> dict[str, Any]:
    """A sampled config checked and validated as a trial config (``budget.steps`` applied); raises ``Rejected``."""
    return resolve_config(spec.space, sampled, steps=spec.budget.steps, output_dir=output_dir, step0_cache=step0_cache)


def describe_space(spec: StudySpec) -> list[str]:
    """One line per parameter and constraint, with the file that defined a parameter (``sweeper validate``)."""
    return describe_params(spec.space, spec.param_origins, spec.source_file)


def build_sampler_of(spec: StudySpec, max_parallel: int | None = None, seed_offset: int = 0) -> Any:
    """The Optuna sampler of ``spec.sampler``, given the facts it needs (in-flight trials, the space's grid)."""
    grid = grid_search_space(spec.space) if spec.sampler.needs_grid else None
    return spec.sampler.build(max_parallel=max_parallel or spec.budget.max_parallel, seed_offset=seed_offset, grid=grid)


def build_pruner_of(spec: StudySpec) -> Any:
    """The Optuna pruner of ``spec.pruner`` for trials of ``spec.trial_steps()`` steps (as the driver builds it)."""
    return spec.pruner.build(spec.trial_steps(), None)


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
    context = {}
    try:
        base, base_source = _load_base(raw.get("base"), folder)
    except SpecError as error:
        problems += [line if line.startswith("  ") else f"  {line}" for line in str(error).splitlines()]
        base, base_source = RunConfig().model_dump(mode="json"), None
        context[BASE_INVALID] = True
    raw["base"] = base
    if "executor" in raw:
        try:
            raw["executor"] = _prepare_executor(raw["executor"], folder)
        except SpecError as error:
            problems.append(f"  {error}")
    raw = _resolve_paths(raw, folder)

    _rebuild_sections()
    try:
        spec = StudySpec.model_validate(raw, context=context)
    except ValidationError as error:
        problems += format_spec_error(error, raw, origins, source_file).splitlines()
    if problems:
        raise SpecError(f"invalid study spec {where}:\n" + "\n".join(problems))

    study_dir = Path(spec.study.dir) if spec.study.dir else folder / "studies" / spec.study.name
    study_dir = study_dir.resolve()
    storage = spec.study.storage or default_storage_url(study_dir, spec.executor.trials_on_other_nodes)
    tracking = spec.tracking.model_copy(
        update={
            "uri": spec.tracking.uri or default_tracking_uri(study_dir),
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
    if is_database_server(tracking.uri):
        slug = re.sub(r"[^\w.-]+", "_", tracking.experiment or "").strip("._") or "experiment"
        return (study_dir / "mlartifacts" / slug).as_uri()
    return None


def _check_database_drivers(storage: str, tracking: TrackingSpec) -> None:
    """The database driver of the Optuna storage and of the MLflow store must be importable
    (``SpecError`` naming the package, e.g. ``entropy-sweeper[postgres]``)."""
    check_url = getattr(STORAGES.get(url_scheme(storage)), "check_url", None)  # the storage kind's own preflight
    if check_url is not None:
        check_url(storage, "study.storage")
    if tracking.enabled:
        check_database_driver(tracking.uri, "tracking.uri")


def _prepare_executor(section: Any, folder: Path) -> Any:
    """The raw ``executor`` section as its kind prepares it (a Slurm profile merged in); anything else as it is."""
    if not isinstance(section, dict) or section.get("type", "local") not in EXECUTORS:
        return section
    return EXECUTORS.get(section.get("type", "local")).prepare_section(section, folder)


_BUILT_AT = [-1]  # the registry revision the spec's section unions were built from


def _rebuild_sections() -> None:
    """Resolve the ``sampler``, ``pruner`` and ``executor`` fields to the unions of the kinds registered now."""
    if _BUILT_AT[0] == registry.revision():
        return
    unions = {field: Union[tuple(kinds.kinds())] for field, kinds in (("sampler", SAMPLERS), ("pruner", PRUNERS), ("executor", EXECUTORS))}
    if StudySpec.__pydantic_fields_complete__:  # a kind was registered since: pydantic keeps resolved fields, so set them
        for field, union in unions.items():
            StudySpec.__pydantic_fields__[field].annotation = union
        StudySpec.model_rebuild(force=True)
    else:
        StudySpec.model_rebuild(force=True, _types_namespace={
            "SamplerSection": unions["sampler"], "PrunerSection": unions["pruner"], "ExecutorSection": unions["executor"]})
    _BUILT_AT[0] = registry.revision()


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
        lines = format_validation_error(error, prefix="base.", root=RunConfig, data=data)
        if source:
            lines = "\n".join(f"{line}  [in {source}]" for line in lines.splitlines())
        raise SpecError(lines) from None
    # the full config with defaults: `when` conditions and constraints read values the user left out
    return config.model_dump(mode="json"), source


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
        tracking["uri"] = resolve_storage_url(tracking["uri"], folder) if tracking["uri"].startswith(SQLITE_PREFIX) else tracking["uri"]
    return raw


def resolve_storage_url(url: str, folder: Path) -> str:
    """journal://rel and sqlite:///rel are made absolute against the study file's folder."""
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX):])
        return f"{JOURNAL_PREFIX}{(path if path.is_absolute() else folder / path).resolve()}"
    if url.startswith(SQLITE_PREFIX):
        rest = url[len(SQLITE_PREFIX):]
        if rest.startswith("/") or rest in ("", ":memory:"):
            return url
        return f"{SQLITE_PREFIX}{(folder / rest).resolve()}"
    return url


# --------------------------------------------------------------------------- error messages


def format_spec_error(error: ValidationError, raw: Any, origins: dict[str, str] | None = None, source_file: str | None = None) -> str:
    """One line per error (``trainers.config.format_validation_error`` on the study spec), with the file
    that defined a space parameter when it came from an included space file."""
    lines = format_validation_error(error, data=raw, root=StudySpec).splitlines()
    if origins:
        for i, line in enumerate(lines):
            match = re.search(r"space\.params\[([^\]]+)\]", line)
            origin = origins.get(match.group(1)) if match else None
            if origin and origin != source_file:
                lines[i] = f"{line}  [defined in {origin}]"
    return "\n".join(lines)


_rebuild_sections()
