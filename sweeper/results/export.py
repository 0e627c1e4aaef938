"""Export a trial's complete training config, with provenance, for ``sweeper train`` or other trainers.

    export_best("study.yaml", "best.yaml", steps=2000)          # or: sweeper export study.yaml -o best.yaml

The config is the one the trial actually ran (user attr ``config``, written by the driver before
launch), with ``train.output_dir`` moved out of the study folder (a fresh run must not resume from
the trial's checkpoint) and ``train.steps`` overridden by ``steps`` if given. It is validated
through ``trainers.config.parse_config``. Provenance goes in the YAML header comments (the run
config rejects unknown keys): study, storage, spec file, trial number and state, objective value,
sampled params, package version, git commit.

Which trial: single objective -> the best COMPLETE trial; multi-objective -> a member of the Pareto
front, chosen with ``pareto_index`` (index in the front sorted by the first objective) or
``prefer`` (the front member best on that objective metric); any trial with ``trial``.

``fmt="trl"`` / ``"verl"`` write the same knobs as TRL ``GRPOConfig`` arguments / a verl Hydra config
where an equivalent exists (:mod:`sweeper.results.formats`), and in comments: the target library version (``target_version``,
else the installed library, else the tested one; a version outside the supported range warns), every semantic
difference with the value the trial ran with, and the knobs that have no equivalent. ``"trl"`` also writes the run
config and an ``accelerate launch`` script beside the file (:mod:`sweeper.results.launchers`), which run TRL with the trial's
method; a method the target engine cannot run is refused (``SpecError`` naming what differs), never exported as a
plain GRPO.
"""

from __future__ import annotations

import copy
import datetime as _dt
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainers.config import RunConfig, parse_config

from sweeper.results.compare import Gain, baseline_trial, paired_gain, study_pool
from sweeper.contract import ATTR_CONFIG, ATTR_SAME_CONFIG, objective_estimate
from sweeper.results.formats import EngineRefused, model_path, target_version as describe_target, to_trl, to_verl
from sweeper.study.space import get_path, leaves, set_path
from sweeper.redaction import redact_url
from sweeper.results.launchers import TRL_ENTRY_POINT, write_trl_launcher
from sweeper.study.spec import SpecError, StudySpec, load_spec

FORMATS = ("native", "trl", "verl")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("entropy-sweeper")
    except Exception:  # noqa: BLE001 - not installed: read pyproject
        try:
            import tomllib

            return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"] + " (source tree)"
        except Exception:  # noqa: BLE001
            return "unknown"


def git_commit() -> str | None:
    try:
        commit = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return commit.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------- choosing the trial


def choose_trial(study: Any, spec: StudySpec, *, trial: int | None = None, pareto_index: int | None = None, prefer: str | None = None):
    import optuna

    if trial is not None:
        matches = [t for t in study.get_trials(deepcopy=False) if t.number == trial]
        if not matches:
            raise SpecError(f"--trial: study {spec.study.name!r} has no trial {trial}")
        return matches[0]
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise SpecError(f"study {spec.study.name!r} has no COMPLETE trial yet: nothing to export (see `sweeper status`)")
    if not spec.is_multi_objective:
        if pareto_index is not None or prefer is not None:
            raise SpecError("--pareto-index / --prefer choose from a multi-objective study's Pareto front; this study has one objective")
        return study.best_trial
    front = sorted(study.best_trials, key=lambda t: t.values[0], reverse=spec.directions[0] == "maximize")
    metrics = [o.metric for o in spec.objective]
    listing = "; ".join(
        f"[{i}] trial {t.number}: " + ", ".join(f"{m}={v:.4g}" for m, v in zip(metrics, t.values)) for i, t in enumerate(front)
    )
    if pareto_index is not None:
        if not 0 <= pareto_index < len(front):
            raise SpecError(f"--pareto-index {pareto_index} is outside the Pareto front (0..{len(front) - 1}): {listing}")
        return front[pareto_index]
    if prefer is not None:
        if prefer not in metrics:
            raise SpecError(f"--prefer {prefer!r} is not an objective of this study; objectives: {', '.join(metrics)}")
        i = metrics.index(prefer)
        pick = max if spec.directions[i] == "maximize" else min
        return pick(front, key=lambda t: t.values[i])
    raise SpecError(
        f"study {spec.study.name!r} has {len(metrics)} objectives: choose a trial of the Pareto front with "
        f"--pareto-index I or --prefer METRIC. Front (sorted by {metrics[0]}): {listing}"
    )


def trial_config(spec: StudySpec, frozen: Any) -> dict[str, Any]:
    """The config a trial ran: its ``config`` user attr, else re-derived from base + params."""
    config = frozen.user_attrs.get(ATTR_CONFIG)
    if isinstance(config, dict):
        return copy.deepcopy(config)
    import optuna

    from sweeper.study.spec import resolve, sample

    return resolve(spec, sample(spec, optuna.trial.FixedTrial(frozen.params)))


# --------------------------------------------------------------------------- export


@dataclass(frozen=True)
class Exported:
    """What :func:`export_trial` wrote: the file, the trial, and its paired gain over the study's baseline."""

    path: Path
    trial: int
    gain: Gain | None
    baseline: int | None
    contenders: list[str] = field(default_factory=list)   # lines: the configs not ruled out within delta of the best


def export_best(spec: StudySpec | str | Path, output: str | Path, **options: Any) -> Path:
    """Write the chosen trial's config to ``output`` (see the module docstring and :func:`export_trial`
    for the options). Returns the path."""
    return export_trial(spec, output, **options).path


def export_trial(
    spec: StudySpec | str | Path,
    output: str | Path,
    *,
    steps: int | None = None,
    fmt: str = "native",
    trial: int | None = None,
    pareto_index: int | None = None,
    prefer: str | None = None,
    output_dir: str | None = None,
    target_version: str | None = None,
    delta: float | None = None,
) -> Exported:
    """Write the chosen trial's config to ``output`` with its provenance, its paired gain over the study's
    baseline (common seeds, pooled run-to-run sd: :mod:`sweeper.results.compare`; a warning when that gain is
    not significant, and a note when the trial was chosen as the best on these same seeds and prompts), and
    the configs not ruled out within ``delta`` of the best (``delta``: the pruner's, else this argument)."""
    if fmt not in FORMATS:
        raise SpecError(f"--format {fmt!r} is not known; accepted: {', '.join(FORMATS)}")
    if not isinstance(spec, StudySpec):
        spec = load_spec(spec)
    if spec.source_file and Path(output).resolve() == Path(spec.source_file):
        raise SpecError(f"-o {output} would overwrite the study file {spec.source_file}: write the config elsewhere")
    from sweeper.run.storage import open_study

    study, _ = open_study(spec, create=False)
    frozen = choose_trial(study, spec, trial=trial, pareto_index=pareto_index, prefer=prefer)
    config = trial_config(spec, frozen)
    trial_steps = get_path(config, "train.steps")
    if steps is not None:
        if steps <= 0:
            raise SpecError(f"--steps must be > 0, got {steps}")
        set_path(config, "train.steps", steps)
    set_path(config, "train.output_dir", output_dir or f"runs/{spec.study.name}-trial{frozen.number}")
    validated = parse_config(config, f"exported trial {frozen.number}").model_dump(mode="json")

    header = provenance_lines(spec, frozen, trial_steps, steps)
    baseline = baseline_trial(study)
    gain = None
    if baseline is not None and not spec.is_multi_objective and frozen.state.name == "COMPLETE":
        header.append(f"baseline: trial {baseline.number} ({_params_text(baseline.params)}), "
                      f"{spec.objective[0].metric} = {objective_estimate(baseline).text()}")
        if baseline.number != frozen.number:
            selected = _selected(study, spec, frozen, baseline)
            pool = study_pool(study.get_trials(deepcopy=False), spec.directions[0], baseline)
            gain = paired_gain(frozen, baseline, spec.directions[0], pool, selected=selected)
            header.append(f"gain over the baseline: {gain.text()}" if gain else
                          "gain over the baseline: not measured (no common training seed, or no per-prompt results to pair)")
            if gain is not None and gain.unit == "prompts":
                header.append("  (one seed each: the interval does not include training randomness; "
                              "`sweeper verify` reruns both with fresh seeds)")
    elif not spec.is_multi_objective:
        header.append("baseline: none complete (objective.baseline or a first enqueue entry names it)")
    race = contender_lines(spec, study, delta) if not spec.is_multi_objective and frozen.state.name == "COMPLETE" else []
    header += race
    try:
        text = export_text(validated, fmt, header, target_version)
    except EngineRefused as refused:
        raise SpecError(f"trial {frozen.number}: {refused}") from None
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    if fmt == "trl":
        write_trl_launcher(output, validated, header)
    _log_export(spec, output)
    if gain is not None and not gain.difference.significant and not gain.selected:
        warnings.warn(f"trial {frozen.number}'s gain over the baseline (trial {baseline.number}) is not significant: "
                      f"{gain.text()}", stacklevel=2)
    return Exported(output, frozen.number, gain, baseline.number if baseline is not None else None, race)


def _selected(study: Any, spec: StudySpec, frozen: Any, baseline: Any) -> bool:
    """True when ``frozen`` is the study's best of two or more configs besides the baseline that ran (complete, or
    stopped by a pruner after it reported: a config that left a race was in the selection): chosen on the same
    seeds and prompts its gain is measured on (the winner's curse)."""
    others = [t for t in study.get_trials(deepcopy=False) if t.number != baseline.number
              and (t.state.name == "COMPLETE" or (t.state.name == "PRUNED" and t.intermediate_values))
              and t.user_attrs.get(ATTR_SAME_CONFIG) is None]
    try:
        best = study.best_trial.number
    except ValueError:
        return False
    return frozen.number == best and len(others) >= 2


def contender_lines(spec: StudySpec, study: Any, delta: float | None) -> list[str]:
    """Header lines: the complete configs not ruled out within delta of the best (sweeper.results.standing)."""
    from sweeper.results.standing import contenders, race_settings, study_standings

    delta, alpha = race_settings(spec, delta)
    if delta is None:
        return ["configs within delta of the best: not computed (give --delta, the smallest gain worth finding)"]
    standings, best, _, pool = study_standings(spec, study, delta=delta, alpha=alpha)
    keep = contenders(standings)
    basis = (pool.basis if pool.df else
             "one seed each: over prompts only, training randomness not included")
    lines = [f"configs not ruled out within delta {delta:g} of the best (trial {best.number}; ruled out: the "
             f"{100 * (1 - alpha):.0f}% upper bound of the paired gain over the best < -{delta:g}; {basis}): "
             + ", ".join(f"#{n}" for n in keep)]
    for number in keep:
        gain = standings[number].over_best
        if gain is not None:
            lines.append(f"  #{number}: gain over the best {gain.difference.mean:+.4g} (SE {gain.difference.se:.2g})")
    return lines


def export_text(validated: dict[str, Any], fmt: str, header: list[str], target_version: str | None = None) -> str:
    """The exported file: ``header`` lines as comments, then the run config (``native``) or its TRL / verl form
    with the lines of :func:`format_lines` added to the header."""
    if fmt == "native":
        body = yaml.safe_dump(validated, sort_keys=False)
    else:
        header = [line for line in header if not line.startswith("run it: sweeper train")]
        header = header + format_lines(fmt, validated, target_version)
        body = yaml.safe_dump((to_trl if fmt == "trl" else to_verl)(validated)[0], sort_keys=False)
    return "".join(f"# {line}\n" for line in header) + body


def format_lines(fmt: str, validated: dict[str, Any], version: str | None = None) -> list[str]:
    """Header comments of a TRL / verl export: target version, how to run it, notes and semantic differences
    (``differs:``, with the value the trial ran), and the knobs without an equivalent."""
    _, unmapped, notes = (to_trl if fmt == "trl" else to_verl)(validated)
    target, warning = describe_target(fmt, version)
    lines = [f"format: {fmt} ({'TRL GRPOConfig arguments' if fmt == 'trl' else 'a verl Hydra config over ppo_trainer'})",
             target]
    if warning:
        warnings.warn(warning, stacklevel=3)
        lines.append(f"WARNING: {warning}")
    if fmt == "trl":
        lines.append(f"run it: bash <this file without .yaml>.launch.sh (accelerate launch -m {TRL_ENTRY_POINT} with the run "
                     f"config <this file without .yaml>.run.yaml: TRL's GRPOTrainer with the trial's method, model "
                     f"{model_path(validated)!r})")
    else:
        lines.append("run it: python -m verl.trainer.main_ppo --config-path <this folder> --config-name <this file without "
                     ".yaml> data.train_files=... data.val_files=...")
    lines += [f"note: {n}" for n in notes if not n.startswith("differs:")]
    lines += [n for n in notes if n.startswith("differs:")]
    defaults = leaves(RunConfig().model_dump(mode="json"))
    differ = [(p, v) for p, v in unmapped if p not in defaults or defaults[p] != v or p.startswith("entropy.")]
    if differ:
        lines.append(f"no {fmt} equivalent (set by hand or drop):")
        lines += [f"  {path} = {value!r}" for path, value in differ]
    if len(unmapped) > len(differ):
        lines.append(f"and {len(unmapped) - len(differ)} more knobs without a {fmt} equivalent, at their defaults: "
                     + ", ".join(p for p, v in unmapped if (p, v) not in differ))
    return lines


def provenance_lines(spec: StudySpec, frozen: Any, trial_steps: Any, steps: int | None) -> list[str]:
    if frozen.values:
        value = ", ".join(f"{o.metric} ({o.direction}, {o.aggregation}) = {objective_estimate(frozen, i).text(6)}"
                          for i, o in enumerate(spec.objective))
    else:
        value = "none"
    sampled = _params_text(frozen.params)
    lines = [
        f"exported by entropy-sweeper {package_version()} on {_dt.datetime.now().isoformat(timespec='seconds')}",
        f"git commit: {git_commit() or 'unknown'}",
        f"study: {spec.study.name}   storage: {redact_url(spec.study.storage)}",
        f"spec: {spec.source_file or '(mapping)'}" + (f"   base: {spec.base_source}" if spec.base_source else ""),
        f"trial: {frozen.number} ({frozen.state.name})   objective: {value}",
        f"sampled: {sampled}",
    ]
    if steps is not None:
        lines.append(f"train.steps: {steps} (the trial ran {trial_steps}; overridden by --steps)")
    lines.append("run it: sweeper train <this file>")
    return lines


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()) or "(none)"


def _log_export(spec: StudySpec, output: Path) -> None:
    if not spec.tracking.enabled:
        return
    try:
        from sweeper.tracking.study import StudyTracker

        tracker = StudyTracker(spec.tracking.uri, spec.tracking.experiment, spec.study.name)
        tracker.log_export(output)
    except Exception as error:  # noqa: BLE001 - tracking never blocks an export
        warnings.warn(f"could not log the export to MLflow: {type(error).__name__}: {error}", stacklevel=2)
