"""The study side of MLflow tracking: :class:`StudyTracker` (the study's parent run, kept up to date by
the driver) and the report read back from MLflow (:func:`write_study_report`)."""

from __future__ import annotations

import math
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from sweeper.tracking import report
from sweeper.contract import ATTR_TRIAL_DIR, STATES, TRACKING_SPILL_FILE, count_states, objective_estimate, trial_state
from sweeper.urls import sqlite_file
from sweeper.tracking.names import (ENTROPY_METRIC, MAX_TAG_VALUE, STATE_TO_RUN_STATUS, TAG_BEST_PREFIX, TAG_STATE, TAG_STUDY,
                    Connection, TrackingUnavailableWarning, _RUN_STATUS_ALIASES, _ensure_sqlite_dir, _now_ms,
                    _param_text, _short, _truncate, display_key, find_study_run, find_trial_run_id, find_trial_runs,
                    get_or_create_experiment, mlflow_key, redact_uri, study_run_name, trial_run_name, TAG_ROLE)
from sweeper.tracking.trial import mark_trial, send_spilled

# --------------------------------------------------------------------------- the study side


class StudyTracker:
    """The study's parent run, kept up to date by the driver.

    ::

        tracker = StudyTracker(uri, spec.study.name, spec.study.name)
        parent_run_id = tracker.start()          # give it to every trial process
        ...                                      # after each finished trial:
        tracker.refresh(study)
        tracker.end("FINISHED")

    Args:
        uri: MLflow tracking URI. experiment: experiment name. study_name: the Optuna study name.
        objective_metric: the study's objective (e.g. ``val/pass@8``); picks the pass@k of the
            overlay plot. None = the largest k any trial logged.
        artifact_location: for a new experiment; None = ``<db dir>/mlartifacts/<experiment>`` for a
            SQLite store, the server's default otherwise.
        retry_interval: seconds before retrying an unreachable store.

    Every method is guarded: when MLflow is unreachable it warns once and the study goes on
    (``start()`` then returns None and is retried by ``refresh()``).
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        study_name: str,
        *,
        objective_metric: str | None = None,
        artifact_location: str | None = None,
        retry_interval: float = 15.0,
    ):
        self.uri = uri
        self.experiment = experiment
        self.study_name = study_name
        self.objective_metric = objective_metric
        self.artifact_location = artifact_location
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._connection = Connection(uri, f"study {study_name}", retry_interval)
        self._client = None
        _ensure_sqlite_dir(uri)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def start(self) -> str | None:
        """Create or resume the parent run ``study-<name>``; returns its id (None if MLflow is unreachable)."""
        try:
            self._start()
            self._connection.succeeded()
        except Exception as error:  # noqa: BLE001
            self._connection.failed(error)
        return self.parent_run_id

    def _start(self) -> None:
        client = self.client
        self.experiment_id = get_or_create_experiment(client, self.uri, self.experiment, self.artifact_location)
        client.set_experiment_tag(self.experiment_id, TAG_STUDY, self.study_name)
        run = find_study_run(client, self.experiment_id, self.study_name)
        if run is None:
            run = client.create_run(
                self.experiment_id,
                run_name=study_run_name(self.study_name),
                tags={TAG_ROLE: "study", TAG_STUDY: self.study_name},
            )
        elif run.info.status != "RUNNING":
            client.update_run(run.info.run_id, status="RUNNING")
        self.parent_run_id = run.info.run_id

    def _ready(self, force: bool = False) -> bool:
        if self.parent_run_id is not None:
            return True
        if force or self._connection.may_try():
            self.start()
        return self.parent_run_id is not None

    def trial_run_id(self, trial_number: int) -> str | None:
        """The run of a trial that could not record its run id in the storage (found by its number under
        the parent run); None when there is none or MLflow is unreachable."""
        if self.parent_run_id is None:
            return None
        return find_trial_run_id(self.uri, self.parent_run_id, trial_number)

    def refresh(self, study, note: str | None = None) -> None:
        """Log the study's state on the parent run: best value/params, counts by state, plots, summary; ``note``
        (the driver's live view: running trials, recent stops) is added to the run's description."""
        if self._connection.down and not self._connection.may_try():
            return
        if not self._ready():
            return
        try:
            self._refresh(study, note)
            self._connection.succeeded()
        except Exception as error:  # noqa: BLE001
            self._connection.failed(error)

    def _refresh(self, study, note: str | None = None) -> None:
        client, run_id = self.client, self.parent_run_id
        trials = study.get_trials(deepcopy=False)
        counts = count_states(trials)
        step = len(trials)
        now = _now_ms()
        metrics = [Metric("study/n_trials", float(step), now, step)]
        metrics += [Metric(f"study/n_{state.lower()}", float(counts[state]), now, step) for state in STATES]
        tags = {"sweeper.directions": ",".join(d.name.lower() for d in study.directions)}
        best = report.best_trial(study)
        tags["mlflow.note.content"] = (
            f"Study {self.study_name}: {step} trials ("
            + ", ".join(f"{state} {counts[state]}" for state in STATES if counts[state]) + ")"
            + (f". Best: trial {best.number} ({trial_run_name(best.number)}), value {_best_text(best)}." if best is not None else ".")
            + " Plots and summary.md under Artifacts; trials are the child runs."
            + (f"\n\n{note}" if note else "")
        )
        if best is not None:
            metrics.append(Metric("study/best_value", float(best.value), now, step))
            tags.update({"sweeper.best_trial": str(best.number), "sweeper.best_value": repr(best.value)})
            estimate = objective_estimate(best)
            if math.isfinite(estimate.se):
                metrics.append(Metric("study/best_value_se", float(estimate.se), now, step))
                tags.update({"sweeper.best_value_se": repr(estimate.se), "sweeper.best_value_basis": estimate.basis})
            tags.update({f"{TAG_BEST_PREFIX}{mlflow_key(k)}": _truncate(_param_text(v), MAX_TAG_VALUE) for k, v in best.params.items()})
        client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        stale = [k for k in client.get_run(run_id).data.tags if k.startswith(TAG_BEST_PREFIX) and k not in tags]
        for key in stale:  # a new best from another method has other params
            client.delete_tag(run_id, key)

        self._send_spilled(study)
        children = find_trial_runs(client, run_id, self.experiment_id)
        self._reconcile(study, children)
        histories = read_histories(client, children, self.objective_metric)
        with tempfile.TemporaryDirectory(prefix="sweeper-report-") as tmp:
            report.write_report(study, tmp, histories=histories, objective_metric=self.objective_metric,
                                run_names={n: r.info.run_name for n, r in children.items()})
            client.log_artifacts(run_id, tmp)

    def _send_spilled(self, study) -> None:
        """Send what trials spilled when they ended with MLflow unreachable (before reconciling their runs)."""
        for trial in study.get_trials(deepcopy=False):
            trial_dir = trial.user_attrs.get(ATTR_TRIAL_DIR)
            if trial_dir and trial.state.is_finished() and (Path(trial_dir) / TRACKING_SPILL_FILE).exists():
                send_spilled(Path(trial_dir) / TRACKING_SPILL_FILE, self.uri)

    def _reconcile(self, study, children: Mapping[int, Any]) -> None:
        """Bring child runs in line with Optuna (a trial whose process died never ended its run)."""
        for trial in study.get_trials(deepcopy=False):
            run = children.get(trial.number)
            state = trial_state(trial)  # the one classification (LOST, not the FAIL Optuna holds)
            status = STATE_TO_RUN_STATUS.get(state)
            if run is None or status is None:
                continue
            value = trial.value if state == "COMPLETE" and len(study.directions) == 1 else None
            unmarked = value is not None and "objective" not in run.data.metrics  # the driver could not mark it
            if run.data.tags.get(TAG_STATE) != state or run.info.status != status or unmarked:
                reason = trial.user_attrs.get("prune_reason") if state == "PRUNED" else None
                mark_trial(self.uri, run.info.run_id, state, reason, value=value)

    def log_export(self, path: str | Path) -> None:
        """Log an exported config file (``sweeper export``) to the parent run under ``exports/``.

        Works from a separate process after the study ended: the parent run is found by its tags
        and keeps its status (it is created, and ended, only if the store has none).
        """
        try:
            client = self.client
            run_id = self.parent_run_id
            if run_id is None:
                experiment_id = get_or_create_experiment(client, self.uri, self.experiment, self.artifact_location)
                run = find_study_run(client, experiment_id, self.study_name)
                run_id = run.info.run_id if run is not None else None
            created = run_id is None
            if created:
                run_id = self.start()
            client.log_artifact(run_id, str(path), artifact_path="exports")
            client.set_tag(run_id, "sweeper.last_export", Path(path).name)
            if created:
                self.end("FINISHED")
        except Exception as error:  # noqa: BLE001
            self._connection.failed(error)

    def end(self, status: str = "FINISHED") -> None:
        """Terminate the parent run: FINISHED, FAILED or KILLED (aliases: completed, failed, interrupted).

        RUNNING leaves it open (a driver detached from trials still in flight; the re-run resumes it).
        """
        run_status = _RUN_STATUS_ALIASES.get(str(status).upper())
        if run_status is None and str(status).upper() != "RUNNING":
            raise ValueError(f"StudyTracker.end: status {status!r} is not one of FINISHED, FAILED, KILLED, RUNNING")
        if self.parent_run_id is None or run_status is None:
            return
        try:
            self.client.set_terminated(self.parent_run_id, run_status)
        except Exception as error:  # noqa: BLE001
            self._connection.failed(error)


def _best_text(best: Any) -> str:
    """``0.72`` or ``0.72 ± 0.031 (64 prompts)``: the best value with its SE when known."""
    estimate = objective_estimate(best)
    return f"{best.value:.6g}" + (f" ± {estimate.se:.2g} ({estimate.basis})" if math.isfinite(estimate.se) else "")


def read_histories(client: MlflowClient, children: Mapping[int, Any], objective_metric: str | None = None) -> dict:
    """{trial number: {display metric name: [(step, value), ...]}} for the entropy and pass@k overlays.

    Reads ``train/entropy`` and one ``val/pass@k`` (the objective if it is a pass@k, else the largest
    k logged by any trial) back from each child run with ``get_metric_history``.
    """
    keys = [ENTROPY_METRIC]
    pass_key = None
    if objective_metric and objective_metric.startswith("val/pass@"):
        pass_key = mlflow_key(objective_metric)
    else:
        ks = [int(m.group(1)) for run in children.values() for name in run.data.metrics
              if (m := re.fullmatch(r"val/pass_at_(\d+)", name))]
        pass_key = f"val/pass_at_{max(ks)}" if ks else None
    if pass_key:
        keys.append(pass_key)
    histories: dict[int, dict[str, list[tuple[int, float]]]] = {}
    for number, run in children.items():
        series = {}
        for key in keys:
            if key not in run.data.metrics:
                continue
            points = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            series[display_key(key)] = [(s, v) for s, v in points if math.isfinite(v)]
        histories[number] = series
    return histories


def write_study_report(study, out_dir: str | Path, uri: str | None = None, experiment: str | None = None,
                       objective_metric: str | None = None) -> Path:
    """``sweeper report``: the parent run's plots and summary, written to ``out_dir`` (returns summary.md).

    With ``uri`` and ``experiment`` the entropy / pass@k overlays are read from the trials' runs;
    without them (or if MLflow is unreachable) the report has the Optuna plots only.
    """
    histories, run_names = None, None
    db = sqlite_file(uri) if uri else None
    if db is not None and not db.exists():
        uri = None  # no tracking store yet; do not create one just to read it
    if uri and experiment:
        try:
            client = MlflowClient(tracking_uri=uri)
            exp = client.get_experiment_by_name(experiment)
            parent = find_study_run(client, exp.experiment_id, study.study_name) if exp else None
            if parent is not None:
                children = find_trial_runs(client, parent.info.run_id, exp.experiment_id)
                histories = read_histories(client, children, objective_metric)
                run_names = {n: r.info.run_name for n, r in children.items()}
        except Exception as error:  # noqa: BLE001
            warnings.warn(f"MLflow at {redact_uri(uri)} unavailable ({_short(error)}): the report has no metric overlays",
                          TrackingUnavailableWarning, stacklevel=2)
    return report.write_report(study, out_dir, histories=histories, objective_metric=objective_metric, run_names=run_names)
