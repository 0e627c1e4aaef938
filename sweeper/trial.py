"""The trial process: one Optuna trial = one training run in its own process.

The driver writes two files in the trial's folder (``<study dir>/trials/NNNNN/``) and submits
:func:`run_trial` with that folder as its only argument:

* ``config.yaml``: the trial's complete RunConfig (``sweeper train config.yaml`` reruns it by hand);
* ``trial.json``: a :class:`TrialTicket`: storage URL, study name, trial number and id, objective(s),
  pruner spec (the pruner is *not* stored in Optuna's storage: a process that re-opened the study
  with the default pruner would silently never prune), health rules, tracking, trainer entry point.

:func:`run_trial` re-opens the study from storage with the same pruner, wraps a
:class:`TrialReporter` (plus the MLflow ``TrialTracker`` when tracking is on) around the trainer,
and calls the entry point ``train(config, reporters)``. At each validation the reporter reports
the objective metric as an Optuna intermediate value at that step and asks ``should_prune()``;
at every report it runs the health rules. A verdict makes ``stop_reason()`` return
``"pruned:<reason>"`` and the trainer stops cleanly after the current step.

The worker never ``tell``s Optuna: it writes ``outcome.json`` (state COMPLETE / PRUNED / FAIL,
objective value(s), prune reason, message) and returns the same dict. The *driver* tells Optuna
the final state, because only the driver sees every ending -- including a process killed by the OS
or the scheduler, which writes nothing. One writer of final states keeps them consistent.

This is the one module of ``sweeper/`` that imports the trainer (``trainers.config`` and the entry
point), and only inside functions: importing it costs no torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import sys
import time
import traceback
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .pruning import Verdict, build_pruner, first_verdict, health_rules

TICKET_FILE = "trial.json"
CONFIG_FILE = "config.yaml"
OUTCOME_FILE = "outcome.json"
STOP_PREFIX = "pruned:"


@dataclass
class TrialTicket:
    """Everything a trial process needs besides its config (``trial.json``)."""

    storage: str
    study_name: str
    trial_number: int
    trial_id: int
    study_dir: str
    entrypoint: str
    objectives: list[dict[str, Any]]                     # ObjectiveSpec dumps
    pruner: dict[str, Any]                                # PrunerSpec dump (includes health)
    trial_steps: int
    sampled: dict[str, Any] = field(default_factory=dict)   # Optuna name -> value
    sampled_paths: dict[str, Any] = field(default_factory=dict)  # config path -> value, sampled ones only
    tracking: dict[str, Any] = field(default_factory=dict)  # enabled, uri, experiment, parent_run_id

    def write(self, trial_dir: Path) -> None:
        _atomic_write(trial_dir / TICKET_FILE, json.dumps(asdict(self), indent=2, default=str))

    @classmethod
    def read(cls, trial_dir: Path) -> "TrialTicket":
        return cls(**json.loads((trial_dir / TICKET_FILE).read_text()))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_outcome(trial_dir: Path) -> dict[str, Any] | None:
    path = Path(trial_dir) / OUTCOME_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def aggregate(values: Sequence[float], objective: Mapping[str, Any]) -> float | None:
    """The objective of a trial from its validation values: last, best, or mean of the last n."""
    if not values:
        return None
    how = objective.get("aggregation", "last")
    if how == "last":
        return float(values[-1])
    if how == "best":
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return float(values[-1])
        return max(finite) if objective.get("direction", "maximize") == "maximize" else min(finite)
    tail = values[-int(objective.get("last_n", 3)):]
    return float(sum(tail) / len(tail))


class TrialReporter:
    """Feeds Optuna from the trainer's reports and decides when to stop (duck-typed Reporter).

    Keeps every metric's history (pure input of the health rules), reports the first objective's
    value at each validation as an intermediate value, and asks the pruner."""

    def __init__(
        self,
        trial: Any,
        objectives: Sequence[Mapping[str, Any]],
        rules: Sequence[Any],
        *,
        use_pruner: bool,
        report_intermediate: bool,
        pruner_name: str = "",
    ):
        self.trial = trial
        self.objectives = list(objectives)
        self.rules = list(rules)
        self.use_pruner = use_pruner
        self.report_intermediate = report_intermediate
        self.pruner_name = pruner_name
        self.history: dict[str, list[float]] = defaultdict(list)
        self.objective_values: list[list[float]] = [[] for _ in self.objectives]
        self.objective_steps: list[int] = []
        self.verdict: Verdict | None = None
        self.verdict_step: int | None = None
        self.last_step = 0
        self.summary: Mapping[str, Any] | None = None
        self._storage_warned = False

    # ---- Reporter hooks
    def on_start(self, run_info: Mapping[str, Any]) -> None:
        self.last_step = int(run_info.get("resumed_from_step") or 0)

    def on_train_step(self, step: int, metrics: Mapping[str, float]) -> None:
        self.last_step = step
        self._record(metrics)
        self._judge(step)

    def on_validation(self, step: int, metrics: Mapping[str, float]) -> None:
        self.last_step = step
        self._record(metrics)
        self.objective_steps.append(step)
        for i, objective in enumerate(self.objectives):
            value = metrics.get(objective["metric"])
            self.objective_values[i].append(float(value) if value is not None else math.nan)
        self._judge(step)
        if self.verdict is not None or not self.report_intermediate:
            return
        value = self.objective_values[0][-1]
        if not math.isfinite(value):
            return
        try:
            self.trial.report(value, step)
            if self.use_pruner and self.trial.should_prune():
                metric = self.objectives[0]["metric"]
                self._stop(Verdict("pass@k", f"the {self.pruner_name} pruner stopped it at step {step} ({metric} = {value:.4g})"), step)
        except Exception as error:  # noqa: BLE001 - a storage hiccup must not kill the training
            if not self._storage_warned:
                warnings.warn(f"could not report to the Optuna storage ({type(error).__name__}: {error}); training goes on without pruning")
                self._storage_warned = True

    def stop_reason(self) -> str | None:
        return f"{STOP_PREFIX}{self.verdict.reason}" if self.verdict else None

    def on_end(self, summary: Mapping[str, Any]) -> None:
        self.summary = dict(summary)

    # ---- internals
    def _record(self, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            try:
                self.history[name].append(float(value))
            except (TypeError, ValueError):
                continue

    def _judge(self, step: int) -> None:
        if self.verdict is None:
            verdict = first_verdict(self.rules, self.history)
            if verdict is not None:
                self._stop(verdict, step)

    def _stop(self, verdict: Verdict, step: int) -> None:
        self.verdict = verdict
        self.verdict_step = step
        print(f"[sweeper] trial {getattr(self.trial, 'number', '?')} pruned at step {step}: {verdict.reason}: {verdict.message}", flush=True)

    def outcome(self, summary: Mapping[str, Any] | None) -> dict[str, Any]:
        """COMPLETE with the aggregated objective(s), PRUNED with the reason, or FAIL."""
        base = {
            "step": (summary or {}).get("step", self.last_step),
            "objective_history": {o["metric"]: list(zip(self.objective_steps, v)) for o, v in zip(self.objectives, self.objective_values)},
            "summary": _jsonable(summary or {}),
        }
        if self.verdict is not None:
            partial = [aggregate(v, o) for o, v in zip(self.objectives, self.objective_values)]
            return {**base, "state": "PRUNED", "prune_reason": self.verdict.reason, "message": self.verdict.message,
                    "values": None, "partial_values": partial, "pruned_at_step": self.verdict_step}
        status = (summary or {}).get("status", "completed")
        if status != "completed":
            reason = (summary or {}).get("stop_reason")
            return {**base, "state": "FAIL", "fail_reason": f"the trainer ended with status {status!r} (stop_reason {reason!r})"}
        values = []
        for objective, series in zip(self.objectives, self.objective_values):
            value = aggregate(series, objective)
            if value is None:
                seen = sorted(k for k in self.history if k.startswith("val/"))
                return {**base, "state": "FAIL", "fail_reason": f"objective metric {objective['metric']!r} was never reported; validation metrics seen: {seen or 'none (no validation ran)'}"}
            if not math.isfinite(value):
                return {**base, "state": "FAIL", "fail_reason": f"objective {objective['metric']} is {value}"}
            values.append(value)
        return {**base, "state": "COMPLETE", "values": values}


def _jsonable(data: Any) -> Any:
    try:
        return json.loads(json.dumps(data, default=str))
    except (TypeError, ValueError):
        return str(data)


def load_entrypoint(entrypoint: str):
    """'package.module:function' or '/path/to/file.py:function' -> the function."""
    target, _, name = entrypoint.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        module_name = f"_sweeper_entrypoint_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or not path.exists():
            raise FileNotFoundError(f"executor.entrypoint: {path} does not exist")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"executor.entrypoint: {target} has no function {name!r}") from None


def _job_environment() -> tuple[str | None, dict[str, str]]:
    try:
        import submitit

        env = submitit.JobEnvironment()
        return str(env.job_id), {"stdout": str(env.paths.stdout), "stderr": str(env.paths.stderr)}
    except Exception:  # noqa: BLE001 - not inside a submitit job (debug executor, by hand)
        return None, {}


def run_trial(trial_dir: str | Path) -> dict[str, Any]:
    """Run one trial from its folder; write and return its outcome. Exceptions are recorded in
    ``outcome.json`` (state FAIL with the traceback) and re-raised."""
    trial_dir = Path(trial_dir)
    started = time.time()
    try:
        outcome = _run(trial_dir)
    except BaseException as error:
        outcome = {
            "state": "FAIL",
            "fail_reason": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc()[-8000:],
            "seconds": time.time() - started,
        }
        _atomic_write(trial_dir / OUTCOME_FILE, json.dumps(outcome, indent=2, default=str))
        raise
    outcome["seconds"] = time.time() - started
    _atomic_write(trial_dir / OUTCOME_FILE, json.dumps(outcome, indent=2, default=str))
    return outcome


def _run(trial_dir: Path) -> dict[str, Any]:
    import optuna
    from pydantic import TypeAdapter

    from trainers.config import load_config
    from trainers.reporting import ConsoleReporter

    from .spec import PrunerSpec

    ticket = TrialTicket.read(trial_dir)
    config = load_config(trial_dir / CONFIG_FILE)
    train = load_entrypoint(ticket.entrypoint)
    pruner_spec = TypeAdapter(PrunerSpec).validate_python(ticket.pruner)

    from .storage import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=ticket.study_name,
        storage=make_storage(ticket.storage, worker=True),
        pruner=build_pruner(pruner_spec, ticket.trial_steps),
    )
    trial = optuna.trial.Trial(study, ticket.trial_id)
    frozen = study._storage.get_trial(ticket.trial_id)
    if frozen.state != optuna.trial.TrialState.RUNNING:
        raise RuntimeError(f"trial {ticket.trial_number} is {frozen.state.name} in storage, not RUNNING: nothing to run")

    multi = len(ticket.objectives) > 1
    reporter = TrialReporter(
        trial,
        ticket.objectives,
        health_rules(pruner_spec.health),
        use_pruner=pruner_spec.type != "none" and not multi,
        report_intermediate=not multi,
        pruner_name=pruner_spec.type,
    )
    job_id, log_paths = _job_environment()
    log_paths["trial_dir"] = str(trial_dir)
    log_paths["output_dir"] = config.train.output_dir
    reporters: list[Any] = [reporter]
    if ticket.tracking.get("enabled"):
        tracker = _trial_tracker(ticket, trial, config, job_id, log_paths, frozen.user_attrs.get("mlflow_run_id"))
        if tracker is not None:
            reporters.insert(0, tracker)
    reporters.append(ConsoleReporter(every=max(1, config.train.steps // 20)))

    print(f"[sweeper] trial {ticket.trial_number} of study {ticket.study_name}: {json.dumps(ticket.sampled, default=str)}", flush=True)
    summary = train(config, reporters)
    outcome = reporter.outcome(summary)
    print(f"[sweeper] trial {ticket.trial_number} {outcome['state']} at step {outcome.get('step')}", flush=True)
    return outcome


def _trial_tracker(ticket: TrialTicket, trial: Any, config: Any, job_id: str | None, log_paths: dict[str, str], run_id: str | None):
    """The MLflow reporter of this trial (None if tracking cannot be set up: the trial trains anyway)."""
    try:
        from .tracking import TrialTracker

        tracking = ticket.tracking
        tracker = TrialTracker(
            tracking["uri"],
            tracking["experiment"],
            tracking.get("parent_run_id"),
            ticket.trial_number,
            config.model_dump(mode="json"),
            ticket.sampled_paths,
            job_id=job_id,
            log_paths=log_paths,
            run_id=run_id,
        )
        if getattr(tracker, "run_id", None):
            trial.set_user_attr("mlflow_run_id", tracker.run_id)
        return tracker
    except Exception as error:  # noqa: BLE001 - tracking never loses a trial
        warnings.warn(f"MLflow tracking is off for this trial: {type(error).__name__}: {error}")
        return None

