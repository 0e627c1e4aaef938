"""MLflow tracking: one experiment per study, one parent run per study, one child run per trial.

What lands where:

* Experiment ``<experiment>`` (from the spec). With a SQLite store (the default,
  ``sqlite:///<study_dir>/mlflow.db``) it is created with an explicit artifact location
  ``<study_dir>/mlartifacts/<experiment>`` (otherwise MLflow would put artifacts in ``./mlruns`` of
  whatever directory the first process happened to run in). Any tracking server URL works the same.
* Parent run ``study-<name>`` (tags ``sweeper.role=study``, ``sweeper.study=<name>``), created by
  :class:`StudyTracker` in the driver. Re-running the study finds it by those tags and resumes it.
  :meth:`StudyTracker.refresh` logs on it: metrics ``study/best_value``, ``study/n_trials`` and
  ``study/n_<state>`` for every state of :func:`sweeper.contract.trial_state` (``n_complete``,
  ``n_pruned``, ``n_fail``, ``n_rejected``, ``n_lost``, ``n_running``, ``n_waiting``: the counts
  ``sweeper status`` shows; step = number of trials so far); tags ``sweeper.best_trial``, ``sweeper.best_value``, ``sweeper.best.<path>`` (one per
  best param); artifacts ``plots/*.png`` (see :mod:`sweeper.tracking.report`), ``summary.md``, ``best_params.json``.
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

import os
import warnings

for _name, _value in (
    ("MLFLOW_DISABLE_TELEMETRY", "true"),
    ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
    ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
    ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"),
):
    os.environ.setdefault(_name, _value)

# MLflow's SQL store uses a loader option that SQLAlchemy 2.1 deprecates; the warning reached users' terminals
# (`sweeper export`) while saying nothing about their study
warnings.filterwarnings("ignore", message=r"The ``noload`` loader strategy is deprecated")

from sweeper.tracking.names import (CONFIG_ARTIFACT, PER_PROMPT_ARTIFACT, SAMPLED_PARAM_PREFIX, STDERR_ARTIFACT,  # noqa: E402
                    TAG_BEST_PREFIX, TAG_JOB_ID, TAG_LOG_PREFIX, TAG_PARENT, TAG_PRUNE_REASON, TAG_ROLE, TAG_SAMPLED,
                    TAG_STATE, TAG_STUDY, TAG_TRIAL_NUMBER, MAX_PARAM_VALUE, TrackingUnavailableWarning,
                    default_artifact_root, display_key, experiment_runs_url, find_study_run, find_trial_run_id,
                    find_trial_runs, flatten_config, mlflow_key, redact_uri)
from sweeper.tracking.study import StudyTracker, read_histories, write_study_report  # noqa: E402
from sweeper.tracking.trial import TrialTracker, mark_trial  # noqa: E402

__all__ = [
    "CONFIG_ARTIFACT", "PER_PROMPT_ARTIFACT", "SAMPLED_PARAM_PREFIX", "STDERR_ARTIFACT", "TAG_BEST_PREFIX", "TAG_JOB_ID",
    "TAG_LOG_PREFIX", "TAG_PARENT", "TAG_PRUNE_REASON", "TAG_ROLE", "TAG_SAMPLED", "TAG_STATE", "TAG_STUDY",
    "TAG_TRIAL_NUMBER", "MAX_PARAM_VALUE", "TrackingUnavailableWarning", "default_artifact_root", "display_key",
    "experiment_runs_url", "find_study_run", "find_trial_run_id", "find_trial_runs", "flatten_config", "mlflow_key",
    "redact_uri", "StudyTracker", "read_histories", "write_study_report", "TrialTracker", "mark_trial",
]
