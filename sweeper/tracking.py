"""MLflow tracking: one experiment per study, one parent run per study, one child run per trial.

What lands where:

* Experiment ``<experiment>`` (from the spec). With a SQLite store (the default,
  ``sqlite:///<study_dir>/mlflow.db``) it is created with an explicit artifact location
  ``<study_dir>/mlartifacts/<experiment>`` (otherwise MLflow would put artifacts in ``./mlruns`` of
  whatever directory the first process happened to run in). Any tracking server URL works the same.
* Parent run ``study-<name>`` (tags ``sweeper.role=study``, ``sweeper.study=<name>``), created by
  :class:`StudyTracker` in the driver. Re-running the study finds it by those tags and resumes it.
  :meth:`StudyTracker.refresh` logs on it: metrics ``study/best_value``, ``study/n_trials``,
  ``study/n_complete``, ``study/n_pruned``, ``study/n_fail``, ``study/n_running`` (step = number of
  trials so far); tags ``sweeper.best_trial``, ``sweeper.best_value``, ``sweeper.best.<path>`` (one per
  best param); artifacts ``plots/*.png`` (see :mod:`sweeper.report`), ``summary.md``, ``best_params.json``.
  :meth:`StudyTracker.log_export` adds ``exports/<file>``.
* Child run ``trial-NNNN`` per trial, created by :class:`TrialTracker` in the trial's own process and
  nested under the parent with the ``mlflow.parentRunId`` tag (works across processes). It holds
  every field of the resolved training config as a param with its dotted path (``clip.eps_high``),
  the sampled ones again as ``sampled/<path>`` plus the tag ``sweeper.sampled_params`` (JSON list of
  paths); every train and validation metric with its step; tags ``sweeper.role=trial``,
  ``sweeper.trial_number``, ``sweeper.state`` (RUNNING / COMPLETE / PRUNED / FAIL),
  ``sweeper.prune_reason``, ``sweeper.job_id``, ``sweeper.log.<name>`` (log paths); artifacts
  ``config/trial_config.yaml`` and, for a failed trial, ``stderr_tail.txt``.

Metric names: MLflow accepts only alphanumerics, ``_ - . / :`` and spaces in metric and param names,
so ``@`` is rejected. :func:`mlflow_key` maps ``@`` to ``_at_`` (``val/pass@8`` -> ``val/pass_at_8``,
``val/maj@8`` -> ``val/maj_at_8``) and any other rejected character to ``_``; :func:`display_key`
maps ``_at_<k>`` back for plot labels. Names that need no change are logged as they are.

Run status when a trial ends (:func:`mark_trial`): COMPLETE -> FINISHED, PRUNED -> FINISHED,
FAIL -> FAILED. Pruning is the normal way most trials of a study end; the MLflow UI draws KILLED and
FAILED with the same red cross, so pruned trials would bury the failures that need attention. The
``sweeper.state`` tag (filter ``tags.`sweeper.state` = 'PRUNED'``), ``sweeper.prune_reason`` and the
run description (``mlflow.note.content``, e.g. "PRUNED: entropy_collapse") tell them apart.

Tracking never loses a trial: every call that talks to MLflow is guarded. If the store is
unreachable, a :class:`TrackingUnavailableWarning` is emitted once per tracker, metrics are buffered
in memory (up to ``max_buffered`` values, oldest dropped first) and the connection is retried at most
every ``retry_interval`` seconds (doubling up to 5 minutes); nothing raises into the trainer or the
driver. Importing this module sets, when they are not already set, ``MLFLOW_DISABLE_TELEMETRY=true``
and short HTTP retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=2``, ``..._BACKOFF_FACTOR=1``,
``..._TIMEOUT=10``) so an unreachable server costs seconds per attempt (at most about 35 s if
it swallows packets), not MLflow's default minutes.

This module imports neither torch nor the trainers: it runs on a login node.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

for _name, _value in (
    ("MLFLOW_DISABLE_TELEMETRY", "true"),
    ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
    ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
    ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"),
):
    os.environ.setdefault(_name, _value)

import yaml  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from sweeper import report  # noqa: E402

logger = logging.getLogger("sweeper.tracking")

# --------------------------------------------------------------------------- names and limits

TAG_ROLE = "sweeper.role"
TAG_STUDY = "sweeper.study"
TAG_TRIAL_NUMBER = "sweeper.trial_number"
TAG_STATE = "sweeper.state"
TAG_PRUNE_REASON = "sweeper.prune_reason"
TAG_JOB_ID = "sweeper.job_id"
TAG_SAMPLED = "sweeper.sampled_params"
TAG_LOG_PREFIX = "sweeper.log."
TAG_BEST_PREFIX = "sweeper.best."
TAG_PARENT = "mlflow.parentRunId"
SAMPLED_PARAM_PREFIX = "sampled/"
CONFIG_ARTIFACT = "config/trial_config.yaml"
STDERR_ARTIFACT = "stderr_tail.txt"
PER_PROMPT_ARTIFACT = "per_prompt/step_{step:06d}.json"  # one validation's per-prompt results

ENTROPY_METRIC = "train/entropy"

MAX_PARAMS_PER_BATCH = 100  # MLflow's limit for params (and tags) in one log_batch
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for metrics in one log_batch
MAX_PARAM_VALUE = 6000  # characters
MAX_TAG_VALUE = 8000
MAX_KEY = 250

STATE_TO_RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
_RUN_STATUS_ALIASES = {
    "FINISHED": "FINISHED", "COMPLETED": "FINISHED", "COMPLETE": "FINISHED",
    "FAILED": "FAILED", "FAIL": "FAILED",
    "KILLED": "KILLED", "INTERRUPTED": "KILLED", "STOPPED": "KILLED",
}
_SUMMARY_STATUS_TO_STATE = {"completed": "COMPLETE", "stopped": "PRUNED", "failed": "FAIL"}


class TrackingUnavailableWarning(UserWarning):
    """The MLflow tracking store could not be reached; training goes on, tracking catches up later."""


_BAD_NAME_CHARS = re.compile(r"[^/\w.\- :]")


def mlflow_key(name: str) -> str:
    """The MLflow metric/param name for ``name``: ``@`` -> ``_at_``, other rejected characters -> ``_``."""
    key = _BAD_NAME_CHARS.sub("_", str(name).replace("@", "_at_"))
    key = re.sub(r"/{2,}", "/", key).strip("/")  # MLflow also rejects names that normalize as paths
    key = "/".join(part if part not in (".", "..") else "_" for part in key.split("/")) or "_"
    if len(key) > MAX_KEY:
        key = key[: MAX_KEY - 9] + "_" + format(abs(hash(name)) % 16**8, "08x")
    return key


def display_key(key: str) -> str:
    """Inverse of :func:`mlflow_key` for the ``@`` mapping, for labels: ``val/pass_at_8`` -> ``val/pass@8``."""
    return re.sub(r"_at_(\d+)$", r"@\1", key)


def trial_run_name(trial_number: int) -> str:
    return f"trial-{int(trial_number):04d}"


def study_run_name(study_name: str) -> str:
    return f"study-{study_name}"


def default_tracking_uri(study_dir: str | Path) -> str:
    """``sqlite:///<abs study_dir>/mlflow.db``: the default store, beside the study's Optuna storage."""
    return f"sqlite:///{Path(study_dir).resolve() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative paths are relative to the CWD), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


def default_artifact_root(uri: str) -> Path | None:
    """``<dir of mlflow.db>/mlartifacts`` for a SQLite store; None for a server (it decides)."""
    db = sqlite_path(uri)
    return db.resolve().parent / "mlartifacts" if db is not None else None


def default_artifact_location(uri: str, experiment: str) -> str | None:
    root = default_artifact_root(uri)
    if root is None:
        return None
    slug = re.sub(r"[^\w.-]+", "_", experiment).strip("._") or "experiment"
    return (root / slug).as_uri()


def redact_uri(uri: str) -> str:
    """The URI without user:password, for messages."""
    parts = urlsplit(uri)
    if parts.password or parts.username:
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def experiment_runs_url(base_url: str, experiment_id: str) -> str:
    """The runs table of an experiment in the MLflow 3 UI (the bare experiment URL opens a GenAI overview)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def run_url(base_url: str, experiment_id: str, run_id: str, tab: str = "") -> str:
    """A run's page in the MLflow 3 UI (``tab``: "" for the overview, "artifacts", "model-metrics")."""
    suffix = f"/{tab}" if tab else ""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{suffix}?workflowType=machine_learning"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15] + "...[truncated]"


def _param_text(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)  # true / false / null, as in the YAML the trainer reads
    return str(value)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {dotted.path: text}; lists stay one value (JSON text)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, f"{path}."))
        else:
            flat[path] = _param_text(value)
    return flat


def _metric_entities(metrics: Mapping[str, Any], step: int, timestamp: int) -> list[Metric]:
    entities = []
    for name, value in metrics.items():
        if isinstance(value, bool):
            value = float(value)
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue  # a non-numeric entry (a string note) is not a metric
        entities.append(Metric(mlflow_key(name), value, timestamp, int(step)))
    return entities


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _ensure_sqlite_dir(uri: str) -> None:
    db = sqlite_path(uri)
    if db is not None:
        db.resolve().parent.mkdir(parents=True, exist_ok=True)


def get_or_create_experiment(client: MlflowClient, uri: str, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created (with the default artifact location) when missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    location = artifact_location or default_artifact_location(uri, name)
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)  # another process created it first
        if experiment is None:
            raise
        return experiment.experiment_id


def search_all_runs(client: MlflowClient, experiment_id: str, filter_string: str, order_by=None) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, order_by=order_by, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def find_study_run(client: MlflowClient, experiment_id: str, study_name: str | None = None):
    """The parent run of a study (the oldest if there are several), or None."""
    query = f"tags.`{TAG_ROLE}` = 'study'"
    if study_name is not None:
        query += f" and tags.`{TAG_STUDY}` = {_quote(study_name)}"
    runs = search_all_runs(client, experiment_id, query, order_by=["attributes.start_time ASC"])
    return runs[0] if runs else None


def find_trial_runs(client: MlflowClient, parent_run_id: str, experiment_id: str | None = None) -> dict[int, Any]:
    """{trial number: child run} under a parent run (the newest run wins if a number repeats)."""
    if experiment_id is None:
        experiment_id = client.get_run(parent_run_id).info.experiment_id
    runs = search_all_runs(client, experiment_id, f"tags.`{TAG_PARENT}` = {_quote(parent_run_id)}",
                           order_by=["attributes.start_time ASC"])
    by_number = {}
    for run in runs:
        number = run.data.tags.get(TAG_TRIAL_NUMBER)
        if number is not None and number.lstrip("-").isdigit():
            by_number[int(number)] = run
    return by_number


def find_trial_run_id(uri: str, parent_run_id: str, trial_number: int) -> str | None:
    """The child run id of a trial, for a driver that did not get it from the trial (None if absent or unreachable)."""
    try:
        run = find_trial_runs(MlflowClient(tracking_uri=uri), parent_run_id).get(int(trial_number))
        return run.info.run_id if run is not None else None
    except Exception as error:  # noqa: BLE001 - tracking must never break the driver
        logger.warning("could not look up the MLflow run of trial %s: %s", trial_number, _short(error))
        return None


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


class _Connection:
    """Remembers whether the store is reachable: warn once, then retry no more often than the backoff."""

    def __init__(self, uri: str, what: str, retry_interval: float):
        self.uri = uri
        self.what = what
        self.base_interval = float(retry_interval)
        self.interval = float(retry_interval)
        self.next_attempt = 0.0
        self.warned = False
        self.down = False

    def may_try(self) -> bool:
        return time.monotonic() >= self.next_attempt

    def failed(self, error: BaseException) -> None:
        if not self.warned:
            self.warned = True
            warnings.warn(
                f"MLflow tracking at {redact_uri(self.uri)} is unavailable ({_short(error)}); "
                f"{self.what} goes on without it, tracking data is kept in memory and retried "
                f"every {self.interval:.0f}s or more",
                TrackingUnavailableWarning,
                stacklevel=4,
            )
        else:
            logger.debug("MLflow still unavailable: %s", _short(error))
        self.down = True
        self.next_attempt = time.monotonic() + self.interval
        self.interval = min(self.interval * 2, 300.0)

    def succeeded(self) -> None:
        if self.down:
            logger.warning("MLflow tracking at %s is reachable again; %s catches up", redact_uri(self.uri), self.what)
        self.down = False
        self.interval = self.base_interval


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

    Never raises: tracking failures warn once (:class:`TrackingUnavailableWarning`) and are retried.
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
        self._connection = _Connection(uri, f"trial {self.trial_number}", retry_interval)
        self._client = None
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

    def on_validation(self, step: int, metrics: Mapping[str, float], per_prompt: Mapping[str, Any] | None = None) -> None:
        self._queue_metrics(step, metrics)
        if per_prompt is not None:
            self._pending_artifacts[PER_PROMPT_ARTIFACT.format(step=int(step))] = json.dumps(dict(per_prompt))
        self._sync()

    def stop_reason(self) -> str | None:
        return None

    def on_end(self, summary: Mapping[str, Any]) -> None:
        status = str(summary.get("status") or "")
        state = _SUMMARY_STATUS_TO_STATE.get(status)
        tags = {"sweeper.end_step": summary.get("step")}
        if state is not None:
            tags[TAG_STATE] = state
        if summary.get("stop_reason"):  # the sweeper's reporter stops with "pruned:<reason>"
            tags[TAG_PRUNE_REASON] = str(summary["stop_reason"]).removeprefix("pruned:")
        self._queue_tags({k: v for k, v in tags.items() if v is not None})
        self._terminal_status = STATE_TO_RUN_STATUS.get(state or "", None)
        self._sync(force=True)
        lost = self.unsent_metrics
        if lost or not self._setup_done:
            logger.warning(
                "trial %d ended with MLflow unreachable: %d metric values not logged%s",
                self.trial_number, lost, "" if self._setup_done else " (its run was never created)",
            )

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
        for chunk in _chunks(new_params, MAX_PARAMS_PER_BATCH):
            client.log_batch(self.run_id, params=chunk)

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
        tag_entities = [RunTag(k, _truncate(v, MAX_TAG_VALUE)) for k, v in tags.items()]
        for chunk in _chunks(tag_entities, MAX_PARAMS_PER_BATCH):
            client.log_batch(self.run_id, tags=chunk)
        client.log_text(self.run_id, yaml.safe_dump(self.config, sort_keys=False), CONFIG_ARTIFACT)

    def _flush(self) -> None:
        client = self._client
        if self._pending_tags:
            tags = [RunTag(k, _truncate(v, MAX_TAG_VALUE)) for k, v in self._pending_tags.items()]
            for chunk in _chunks(tags, MAX_PARAMS_PER_BATCH):
                client.log_batch(self.run_id, tags=chunk)
            self._pending_tags.clear()
        for path in list(self._pending_artifacts):
            client.log_text(self.run_id, self._pending_artifacts[path], path)
            del self._pending_artifacts[path]
        while self._pending:
            chunk = self._pending[:MAX_METRICS_PER_BATCH]
            client.log_batch(self.run_id, metrics=chunk)
            del self._pending[: len(chunk)]
        if self._terminal_status is not None:
            client.set_terminated(self.run_id, self._terminal_status)
            self._terminal_status = None


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
    PRUNED -> FINISHED (the tags tell it from COMPLETE), FAIL -> FAILED. Other states (RUNNING,
    WAITING) only set the tags. Never raises.
    """
    if not run_id:
        return False
    state = str(state).upper()
    try:
        client = MlflowClient(tracking_uri=uri)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        reason = prune_reason
        if not reason and state == "FAIL" and stderr_tail:  # the error line, e.g. "RuntimeError: CUDA error ..."
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
        self._connection = _Connection(uri, f"study {study_name}", retry_interval)
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

    def refresh(self, study) -> None:
        """Log the study's state on the parent run: best value/params, counts by state, plots, summary."""
        if self._connection.down and not self._connection.may_try():
            return
        if not self._ready():
            return
        try:
            self._refresh(study)
            self._connection.succeeded()
        except Exception as error:  # noqa: BLE001
            self._connection.failed(error)

    def _refresh(self, study) -> None:
        client, run_id = self.client, self.parent_run_id
        trials = study.get_trials(deepcopy=False)
        counts = report.count_states(trials)
        step = len(trials)
        now = _now_ms()
        metrics = [Metric("study/n_trials", float(step), now, step)]
        metrics += [Metric(f"study/n_{state.lower()}", float(counts.get(state, 0)), now, step) for state in report.STATES]
        tags = {"sweeper.directions": ",".join(d.name.lower() for d in study.directions)}
        best = report.best_trial(study)
        tags["mlflow.note.content"] = (
            f"Study {self.study_name}: {step} trials ("
            + ", ".join(f"{state} {counts[state]}" for state in report.STATES if counts.get(state)) + ")"
            + (f". Best: trial {best.number} ({trial_run_name(best.number)}), value {best.value:.6g}." if best is not None else ".")
            + " Plots and summary.md under Artifacts; trials are the child runs."
        )
        if best is not None:
            metrics.append(Metric("study/best_value", float(best.value), now, step))
            tags.update({"sweeper.best_trial": str(best.number), "sweeper.best_value": repr(best.value)})
            tags.update({f"{TAG_BEST_PREFIX}{mlflow_key(k)}": _truncate(_param_text(v), MAX_TAG_VALUE) for k, v in best.params.items()})
        client.log_batch(run_id, metrics=metrics)
        for chunk in _chunks([RunTag(k, v) for k, v in tags.items()], MAX_PARAMS_PER_BATCH):
            client.log_batch(run_id, tags=chunk)
        stale = [k for k in client.get_run(run_id).data.tags if k.startswith(TAG_BEST_PREFIX) and k not in tags]
        for key in stale:  # a new best from another method has other params
            client.delete_tag(run_id, key)

        children = find_trial_runs(client, run_id, self.experiment_id)
        self._reconcile(study, children)
        histories = read_histories(client, children, self.objective_metric)
        with tempfile.TemporaryDirectory(prefix="sweeper-report-") as tmp:
            report.write_report(study, tmp, histories=histories, objective_metric=self.objective_metric,
                                run_names={n: r.info.run_name for n, r in children.items()})
            client.log_artifacts(run_id, tmp)

    def _reconcile(self, study, children: Mapping[int, Any]) -> None:
        """Bring child runs in line with Optuna (a trial whose process died never ended its run)."""
        for trial in study.get_trials(deepcopy=False):
            run = children.get(trial.number)
            state = trial.state.name
            status = STATE_TO_RUN_STATUS.get(state)
            if run is None or status is None:
                continue
            if run.data.tags.get(TAG_STATE) != state or run.info.status != status:
                reason = trial.user_attrs.get("prune_reason") if state == "PRUNED" else None
                value = trial.value if state == "COMPLETE" and len(study.directions) == 1 else None
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
    db = sqlite_path(uri) if uri else None
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
