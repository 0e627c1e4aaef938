"""The trial side of MLflow tracking: :class:`TrialTracker` (a reporter in the trial process) and
:func:`mark_trial` (the driver records a trial's final state on its run)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Mapping

import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from sweeper.contract import atomic_write
from sweeper.redaction import TRACKING_ENV, strip_secret, with_secret
from sweeper.tracking.names import (CONFIG_ARTIFACT, MAX_PARAM_VALUE, MAX_TAG_VALUE, METRICS_PER_REQUEST, PER_PROMPT_ARTIFACT,
                    SAMPLED_PARAM_PREFIX, STATE_TO_RUN_STATUS, STDERR_ARTIFACT, TAG_JOB_ID, TAG_LOG_PREFIX, TAG_PARENT,
                    TAG_PRUNE_REASON, TAG_ROLE, TAG_SAMPLED, TAG_STATE, TAG_TRIAL_NUMBER, Connection,
                    TrackingUnavailableWarning, _SUMMARY_STATUS_TO_STATE, _ensure_sqlite_dir, _metric_entities, _now_ms,
                    _param_text, _short, _truncate, find_study_run, find_trial_runs, flatten_config,
                    get_or_create_experiment, logger, mlflow_key, redact_uri, trial_run_name)

# --------------------------------------------------------------------------- the trial side


class TrialTracker:
    """A trainer Reporter (duck-typed to ``trainers.reporting.Reporter``) that logs one trial to MLflow.

    Created inside the trial process::

        tracker = TrialTracker(uri, experiment, parent_run_id, trial.number, config, sampled,
                               job_id=os.environ.get("SLURM_JOB_ID"), log_paths={"stderr": ...})
        trial.set_user_attr("mlflow_run_id", tracker.run_id)   # so the driver can mark_trial() it
        train(run_config, reporters=[tracker, ...])

    Args:
        uri: MLflow tracking URI (``sqlite:///...`` or ``http://host:port``).
        experiment: experiment name (created if missing, e.g. when the driver could not reach MLflow).
        parent_run_id: the study's parent run; None = look it up by its ``sweeper.role=study`` tag.
        trial_number: the Optuna trial number; names the run ``trial-NNNN``.
        config: the resolved training config (nested dict); every leaf is logged as a param.
        sampled: {dotted path: value} chosen by the sampler; marked as such.
        job_id: executor job id (submitit / Slurm), or None.
        log_paths: {name: path} of the trial's logs (stdout, stderr, output_dir...), logged as tags.
        run_id: re-open this run (a resumed or requeued trial). Without it, an existing child run of
            the same parent and trial number is re-opened, else a new one is created.
        retry_interval: seconds before retrying an unreachable store (doubles up to 5 minutes).
        max_buffered: metric values kept while the store is unreachable (oldest dropped beyond).
        spill_path: where :meth:`on_end` writes what it could not send (``mlflow_unsent.json`` in the
            trial folder); the driver sends it when MLflow is back (:func:`send_spilled`).

    Never raises: tracking failures warn once (:class:`TrackingUnavailableWarning`) and are retried. What
    is still unsent when the trial ends is not lost with its process: it is spilled to ``spill_path``.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        parent_run_id: str | None,
        trial_number: int,
        config: Mapping[str, Any],
        sampled: Mapping[str, Any],
        job_id: str | None = None,
        log_paths: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        retry_interval: float = 15.0,
        max_buffered: int = 200_000,
        spill_path: str | Path | None = None,
    ):
        self.uri = uri
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.trial_number = int(trial_number)
        self.config = dict(config)
        self.sampled = dict(sampled)
        self.job_id = job_id
        self.log_paths = {str(k): str(v) for k, v in (log_paths or {}).items()}
        self.run_id = run_id
        self.max_buffered = int(max_buffered)
        self.dropped_metrics = 0
        self._pending: list[Metric] = []
        self._pending_tags: dict[str, str] = {}
        self._pending_artifacts: dict[str, str] = {}  # artifact path -> text
        self._renamed: dict[str, str] = {}
        self._setup_done = False
        self._terminal_status: str | None = None
        self._connection = Connection(uri, f"trial {self.trial_number}", retry_interval)
        self._client = None
        self.spill_path = Path(spill_path) if spill_path else None
        self._adopted_spill = self._adopt_spill()
        _ensure_sqlite_dir(uri)
        self._sync()

    @property
    def unsent_metrics(self) -> int:
        """Metric values not (yet) in MLflow: buffered while the store is unreachable, plus any dropped."""
        return len(self._pending) + self.dropped_metrics

    # ---- Reporter hooks

    def on_start(self, run_info: Mapping[str, Any]) -> None:
        tags = {"sweeper.output_dir": run_info.get("output_dir"), "sweeper.resumed_from_step": run_info.get("resumed_from_step")}
        self._queue_tags({k: v for k, v in tags.items() if v is not None})
        self._sync()

    def on_train_step(self, step: int, metrics: Mapping[str, float]) -> None:
        self._queue_metrics(step, metrics)
        self._sync()

    def on_validation(self, step: int, metrics: Mapping[str, float], per_prompt: Mapping[str, Any] | None = None,
                      *, artifact_folder: str = "per_prompt") -> None:
        """Log the validation's metrics, and its per-prompt results as ``<artifact_folder>/step_NNNNNN.json``."""
        self._queue_metrics(step, metrics)
        if per_prompt is not None:
            self._pending_artifacts[PER_PROMPT_ARTIFACT.format(folder=artifact_folder, step=int(step))] = json.dumps(dict(per_prompt))
        self._sync()

    def flush(self) -> None:
        """Send what is buffered now (if the store is reachable); the run stays open."""
        self._sync(force=True)

    def stop_reason(self) -> str | None:
        return None

    def on_end(self, summary: Mapping[str, Any], state: str | None = None) -> None:
        """End the run. ``state``: the trial's final state from its outcome (the trial process passes it, so the
        run says what Optuna will record); without it (a bare reporter), the trainer's summary status decides."""
        status = str(summary.get("status") or "")
        state = state or _SUMMARY_STATUS_TO_STATE.get(status)
        tags = {"sweeper.end_step": summary.get("step")}
        if state is not None:
            tags[TAG_STATE] = state
        if summary.get("stop_reason"):  # the sweeper's reporter stops with "pruned:<reason>"
            tags[TAG_PRUNE_REASON] = str(summary["stop_reason"]).removeprefix("pruned:")
        self._queue_tags({k: v for k, v in tags.items() if v is not None})
        self._terminal_status = STATE_TO_RUN_STATUS.get(state or "", None)
        self.keep_unsent("ended")

    def keep_unsent(self, how: str = "stopped") -> bool:
        """Send what is buffered; what MLflow did not take is written to ``spill_path`` (True then). Called
        by :meth:`on_end`, and by the trial process when the trainer raised or was preempted, so that no
        buffered metric dies with the process (a requeued job's tracker takes the file over)."""
        self._sync(force=True)
        lost = self.unsent_metrics
        if lost or self._pending_tags or self._pending_artifacts or not self._setup_done or self._terminal_status is not None:
            spilled = self._spill()
            logger.warning(
                "trial %d %s with MLflow unreachable: %d metric values not logged%s%s",
                self.trial_number, how, lost, "" if self._setup_done else " (its run was never created)",
                f"; kept in {self.spill_path}, sent when MLflow is back" if spilled else "",
            )
            return spilled
        return False

    # ---- what could not be sent survives the trial process

    def _spill(self) -> bool:
        """Write everything unsent (and how to open the run) to ``spill_path``; False if there is none."""
        if self.spill_path is None:
            return False
        state = {
            "uri": strip_secret(self.uri), "experiment": self.experiment, "parent_run_id": self.parent_run_id,
            "trial_number": self.trial_number, "config": self.config, "sampled": self.sampled, "job_id": self.job_id,
            "log_paths": self.log_paths, "run_id": self.run_id,
            "metrics": [[m.key, m.value, m.timestamp, m.step] for m in self._pending],
            "tags": self._pending_tags, "artifacts": self._pending_artifacts, "terminal_status": self._terminal_status,
        }
        try:
            atomic_write(self.spill_path, json.dumps(state, default=str), private=True)  # the owner's only
            return True
        except OSError as error:
            logger.warning("could not keep trial %d's unsent tracking data in %s: %s", self.trial_number, self.spill_path, error)
            return False

    def _adopt_spill(self) -> bool:
        """Take over what an earlier process of this trial kept in ``spill_path`` (a preempted job, or the
        driver sending a finished trial's file): it is sent with this tracker's own data, and the file
        goes once all of it is in MLflow. False when there is none (or it is another trial's)."""
        if self.spill_path is None or not self.spill_path.exists():
            return False
        try:
            state = json.loads(self.spill_path.read_text())
            if int(state["trial_number"]) != self.trial_number:
                return False
            self.run_id = self.run_id or state.get("run_id")
            self._pending = [Metric(key, value, timestamp, step) for key, value, timestamp, step in state["metrics"]]
            self._pending_tags.update(state.get("tags") or {})
            self._pending_artifacts.update(state.get("artifacts") or {})
            self._terminal_status = state.get("terminal_status")
            return True
        except Exception as error:  # noqa: BLE001 - a corrupt file costs its metrics, never the trial
            logger.warning("could not read the unsent tracking data in %s (%s): it is left as it is",
                           self.spill_path, _short(error))
            return False

    # ---- internals

    def _queue_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        for name in metrics:
            key = mlflow_key(name)
            if key != name and name not in self._renamed:
                self._renamed[name] = key
                self._pending_tags["sweeper.metric_names"] = json.dumps(self._renamed)
        self._pending.extend(_metric_entities(metrics, step, _now_ms()))
        overflow = len(self._pending) - self.max_buffered
        if overflow > 0:
            del self._pending[:overflow]
            self.dropped_metrics += overflow

    def _queue_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self._pending_tags[key] = str(value)

    def _sync(self, force: bool = False) -> None:
        if not (force or self._connection.may_try()):
            return
        try:
            if self._client is None:
                self._client = MlflowClient(tracking_uri=self.uri)
            if not self._setup_done:
                self._setup()
                self._setup_done = True
            self._flush()
            self._connection.succeeded()
            if self._adopted_spill and self.spill_path is not None:  # all of an earlier process's data is sent
                self.spill_path.unlink(missing_ok=True)
                self._adopted_spill = False
        except Exception as error:  # noqa: BLE001 - tracking must never raise into the trainer
            self._connection.failed(error)

    def _setup(self) -> None:
        client = self._client
        if self.run_id is None:
            experiment_id = get_or_create_experiment(client, self.uri, self.experiment)
            if self.parent_run_id is None:
                parent = find_study_run(client, experiment_id)
                self.parent_run_id = parent.info.run_id if parent is not None else None
            existing = find_trial_runs(client, self.parent_run_id, experiment_id).get(self.trial_number) if self.parent_run_id else None
            if existing is not None:
                self.run_id = existing.info.run_id
            else:
                tags = {TAG_ROLE: "trial", TAG_TRIAL_NUMBER: str(self.trial_number)}
                if self.parent_run_id:
                    tags[TAG_PARENT] = self.parent_run_id
                self.run_id = client.create_run(experiment_id, run_name=trial_run_name(self.trial_number), tags=tags).info.run_id
        run = client.get_run(self.run_id)
        if run.info.status != "RUNNING":
            client.update_run(self.run_id, status="RUNNING")
        logged = run.data.params

        params = flatten_config(self.config)
        params.update({f"{SAMPLED_PARAM_PREFIX}{path}": _param_text(value) for path, value in self.sampled.items()})
        new_params = [
            Param(mlflow_key(key), _truncate(value, MAX_PARAM_VALUE))
            for key, value in params.items()
            if mlflow_key(key) not in logged
        ]
        client.log_batch(self.run_id, params=new_params)

        tags = {
            TAG_ROLE: "trial",
            TAG_TRIAL_NUMBER: str(self.trial_number),
            TAG_STATE: "RUNNING",
            TAG_SAMPLED: json.dumps(sorted(self.sampled)),
        }
        if self.parent_run_id:
            tags[TAG_PARENT] = self.parent_run_id
        if self.job_id:
            tags[TAG_JOB_ID] = str(self.job_id)
        tags.update({f"{TAG_LOG_PREFIX}{mlflow_key(name)}": path for name, path in self.log_paths.items()})
        client.log_batch(self.run_id, tags=[RunTag(k, _truncate(v, MAX_TAG_VALUE)) for k, v in tags.items()])
        client.log_text(self.run_id, yaml.safe_dump(self.config, sort_keys=False), CONFIG_ARTIFACT)

    def _flush(self) -> None:
        client = self._client
        if self._pending_tags:
            client.log_batch(self.run_id, tags=[RunTag(k, _truncate(v, MAX_TAG_VALUE)) for k, v in self._pending_tags.items()])
            self._pending_tags.clear()
        for path in list(self._pending_artifacts):
            client.log_text(self.run_id, self._pending_artifacts[path], path)
            del self._pending_artifacts[path]
        while self._pending:  # one request per slice: what was sent before a failure is not sent again
            sent = self._pending[:METRICS_PER_REQUEST]
            client.log_batch(self.run_id, metrics=sent)
            del self._pending[:len(sent)]
        if self._terminal_status is not None:
            client.set_terminated(self.run_id, self._terminal_status)
            self._terminal_status = None


def send_spilled(path: str | Path, uri: str | None = None) -> bool:
    """Send what a trial process spilled when it ended with MLflow unreachable (create or re-open its run,
    log its metrics, tags and artifacts, end it), then delete the file. Returns True when all was sent;
    False leaves the file (with what is still unsent) for a later try. Never raises.

    ``uri``: the tracking URI with its password (the file holds it without one,
    :func:`sweeper.redaction.strip_secret`); used when it is the file's URI."""
    path = Path(path)
    try:
        state = json.loads(path.read_text())
        if uri is not None:
            state["uri"] = with_secret(state["uri"], TRACKING_ENV, {TRACKING_ENV: uri})
        else:
            state["uri"] = with_secret(state["uri"], TRACKING_ENV)
        tracker = TrialTracker(state["uri"], state["experiment"], state["parent_run_id"], state["trial_number"],
                               state["config"], state["sampled"], state["job_id"], state["log_paths"],
                               run_id=state["run_id"], retry_interval=0, spill_path=path)
    except Exception as error:  # noqa: BLE001 - tracking must never break the driver
        logger.warning("could not read the unsent tracking data in %s: %s", path, _short(error))
        return False
    if not tracker._adopted_spill and path.exists():
        return False  # unreadable or another trial's: left for a person to look at
    tracker._sync(force=True)
    if tracker._setup_done and not tracker._pending and not tracker._pending_tags and not tracker._pending_artifacts \
            and tracker._terminal_status is None:
        path.unlink(missing_ok=True)
        return True
    tracker._spill()
    return False


def mark_trial(
    uri: str,
    run_id: str | None,
    state: str,
    prune_reason: str | None = None,
    stderr_tail: str | None = None,
    *,
    value: float | None = None,
) -> bool:
    """Record a trial's final Optuna state on its run (called by the driver). Returns False if it could not.

    Sets ``sweeper.state`` (and ``sweeper.prune_reason``), logs ``stderr_tail`` as ``stderr_tail.txt``
    (whenever given; the driver passes it for FAIL), logs ``value`` as the metric ``objective``, and
    sets the run description to the state and reason, and ends the run: COMPLETE -> FINISHED,
    PRUNED -> FINISHED (the tags tell it from COMPLETE), FAIL -> FAILED, LOST -> KILLED (``STATE_TO_RUN_STATUS``,
    the one table; ``state`` is :func:`sweeper.contract.trial_state`'s). Other states (RUNNING,
    WAITING) only set the tags. Never raises.
    """
    if not run_id:
        return False
    state = str(state).upper()
    try:
        client = MlflowClient(tracking_uri=uri)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        reason = prune_reason
        if not reason and state in ("FAIL", "LOST") and stderr_tail:  # the error line, e.g. "RuntimeError: CUDA error ..."
            reason = next((line.strip() for line in reversed(stderr_tail.splitlines()) if line.strip()), None)
        note = state + (f": {_truncate(reason, 500)}" if reason else "") + (f" (objective {value:.6g})" if numeric else "")
        tags = [RunTag(TAG_STATE, state), RunTag("mlflow.note.content", note)]
        if prune_reason:
            tags.append(RunTag(TAG_PRUNE_REASON, _truncate(str(prune_reason), MAX_TAG_VALUE)))
        metrics = []
        if numeric:
            metrics.append(Metric("objective", float(value), _now_ms(), 0))
        client.log_batch(run_id, metrics=metrics, tags=tags)
        if stderr_tail:
            client.log_text(run_id, stderr_tail, STDERR_ARTIFACT)
        status = STATE_TO_RUN_STATUS.get(state)
        if status is not None:
            client.set_terminated(run_id, status)
        return True
    except Exception as error:  # noqa: BLE001 - tracking must never break the driver
        warnings.warn(
            f"could not mark MLflow run {run_id} as {state} at {redact_uri(uri)}: {_short(error)}",
            TrackingUnavailableWarning,
            stacklevel=2,
        )
        return False


