"""MLflow names and helpers shared by the trial side (:mod:`.trial`) and the study side (:mod:`.study`):
tags, artifact names, metric-name mapping, URIs, experiments and run lookup, and the reachability
state of a store (:class:`Connection`)."""

from __future__ import annotations

import json
import logging
import re
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweeper.paths import leaves
from sweeper.redaction import redact_url
from sweeper.urls import sqlite_file

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
PER_PROMPT_ARTIFACT = "{folder}/step_{step:06d}.json"  # one validation's per-prompt results (folder per_prompt)

ENTROPY_METRIC = "train/entropy"

METRICS_PER_REQUEST = 1000  # MLflow's limit of metrics in one log_batch request
MAX_PARAM_VALUE = 6000  # characters
MAX_TAG_VALUE = 8000
MAX_KEY = 250

# a trial's state (sweeper.contract.trial_state) -> its MLflow run's status; LOST: the driver stopped and the
# trial's job was gone (its config is re-queued), KILLED as MLflow calls a run ended from outside
STATE_TO_RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED", "LOST": "KILLED"}
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


def default_artifact_root(uri: str) -> Path | None:
    """``<dir of mlflow.db>/mlartifacts`` for a SQLite store; None for a server (it decides)."""
    db = sqlite_file(uri)
    return db.resolve().parent / "mlartifacts" if db is not None else None


def default_artifact_location(uri: str, experiment: str) -> str | None:
    root = default_artifact_root(uri)
    if root is None:
        return None
    slug = re.sub(r"[^\w.-]+", "_", experiment).strip("._") or "experiment"
    return (root / slug).as_uri()


def redact_uri(uri: str) -> str:
    """The URI without its password, for messages (:func:`sweeper.redaction.redact_url`)."""
    return redact_url(uri)


def experiment_runs_url(base_url: str, experiment_id: str) -> str:
    """The runs table of an experiment in the MLflow 3 UI (the bare experiment URL opens a GenAI overview)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


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


def flatten_config(config: Mapping[str, Any]) -> dict[str, str]:
    """Nested config -> {dotted.path: text} (MLflow params); lists stay one value (JSON text)."""
    return {path: _param_text(value) for path, value in leaves(config).items()}


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


def _ensure_sqlite_dir(uri: str) -> None:
    """Create the folder of a SQLite store (a failure is left to the first connection, which reports it)."""
    db = sqlite_file(uri)
    if db is not None:
        try:
            db.resolve().parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass


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
    text = redact_url(str(error)).strip().splitlines()  # MLflow's errors repeat the URI, query string included
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


class Connection:
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


