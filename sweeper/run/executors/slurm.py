"""Trials on a Slurm cluster: ``type: slurm``. Each trial is one Slurm job, submitted with submitit
(docs/sweeper.md, slurm/README.md).

The job runs :class:`sweeper.run.trial.CheckpointableTrial` (rank 0 runs ``run_trial``; on submitit's
checkpoint signal the trainer saves a checkpoint and the job is requeued, and the requeued job resumes
the same Optuna trial and MLflow run). A job survives its driver; a re-run re-attaches to it by Slurm job
id, whatever its state (sacct knows how it ended). A job that ends without an outcome FAILs with its
Slurm state (CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL) as the reason
(:meth:`SlurmTrialJob.end_reason`).

``executor.profile`` names a preset of the spec's fields (``slurm/profiles/<name>.yaml``, or a YAML path
relative to the study file): :func:`apply_profile` merges it under the spec's own fields before
validation. The fields a profile may set are the ones marked ``profile`` below.
"""

from __future__ import annotations

import contextlib
import math
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from sweeper.contract import OUTCOME_FILE, SUBMITIT_DIR
from sweeper.study.schema import SpecError, read_yaml
from sweeper.run.executors.base import PROJECT_ROOT, STDERR_TAIL_CHARS, ExecutorSpecBase, TrialJob, tail, thread_environment

PROFILES_DIR = Path(__file__).resolve().parents[3] / "slurm" / "profiles"
_PROFILE = {"profile": True}  # json_schema_extra of the fields a profile may set


class SlurmExecutorSpec(ExecutorSpecBase):
    """Each trial is one Slurm job, submitted with submitit (docs/sweeper.md, slurm/README.md).

    ``profile`` names a preset of these fields (``slurm/profiles/<name>.yaml``, or a YAML path relative
    to the study file); fields given in the spec replace the profile's (``additional_parameters`` is
    merged key by key). ``resources`` is not used: the Slurm fields say it per task and per node."""

    trials_on_other_nodes = True
    type: Literal["slurm"]
    profile: str | None = Field(None, description="A preset of the fields below: local-test, gpu-a100, multi-node (slurm/profiles/) or a YAML path.")
    partition: str | None = Field(None, description="Slurm partition (None: the cluster's default partition).", json_schema_extra=_PROFILE)
    account: str | None = Field(None, description="Account to charge (--account).", json_schema_extra=_PROFILE)
    qos: str | None = Field(None, description="Quality of service (--qos).", json_schema_extra=_PROFILE)
    time_limit_min: int = Field(240, gt=0, description="Wall-clock limit of each job, minutes; every job gets one, and a requeued trial gets it again.", json_schema_extra=_PROFILE)
    nodes: int = Field(1, gt=0, description="Nodes per trial.", json_schema_extra=_PROFILE)
    tasks_per_node: int = Field(1, gt=0, description="Processes per node; more than one task in all = a data-parallel trial (one rank per task).", json_schema_extra=_PROFILE)
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node (--gpus-per-node).", json_schema_extra=_PROFILE)
    cpus_per_task: int = Field(1, gt=0, description="CPUs per task; also the trial's OMP_NUM_THREADS.", json_schema_extra=_PROFILE)
    mem_gb: float | None = Field(None, gt=0, description="Memory per node, GB (None: the partition's default).", json_schema_extra=_PROFILE)
    constraint: str | None = Field(None, description="Node features (--constraint).", json_schema_extra=_PROFILE)
    job_name: str | None = Field(None, description="Slurm job name of every trial (None: <study name>-<trial number>).", json_schema_extra=_PROFILE)
    additional_parameters: dict[str, Any] = Field(default_factory=dict, description="Extra sbatch options: #SBATCH --key=value (true: --key).", json_schema_extra=_PROFILE)
    setup: list[str] = Field(default_factory=list, description="Shell lines of the batch script before the trial (module load, source venv/bin/activate, exports).", json_schema_extra=_PROFILE)
    python: str | None = Field(None, description="Interpreter on the nodes (shell variables expand there); None: the driver's sys.executable.", json_schema_extra=_PROFILE)
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

    @classmethod
    def prepare_section(cls, section: dict[str, Any], folder: Path) -> dict[str, Any]:
        return apply_profile(section, folder)

    def describe(self) -> str:
        where = ", ".join(f"{k} {getattr(self, k)}" for k in ("partition", "account", "qos", "constraint") if getattr(self, k))
        return (f"slurm{f' (profile {self.profile})' if self.profile else ''}: {self.entrypoint}, {where or 'default partition'}, "
                f"{self.nodes} node(s) x {self.tasks_per_node} task(s) x {self.cpus_per_task} cpu, {self.gpus_per_node} gpu/node, "
                f"{f'{self.mem_gb:g} GB/node, ' if self.mem_gb else ''}time limit {self.time_limit_min} min")

    def build(self) -> "SlurmExecutor":
        return SlurmExecutor(self)


PROFILE_FIELDS = tuple(name for name, f in SlurmExecutorSpec.model_fields.items() if f.json_schema_extra == _PROFILE)


def resolve_profile(profile: str, folder: Path) -> Path:
    """A profile name (``slurm/profiles/<name>.yaml``) or a YAML path relative to ``folder``."""
    path = Path(profile).expanduser()
    if path.suffix in (".yaml", ".yml") or "/" in profile:
        return path if path.is_absolute() else (folder / path).resolve()
    return PROFILES_DIR / f"{profile}.yaml"


def apply_profile(executor: Any, folder: Path) -> Any:
    """A raw ``executor`` mapping with ``type: slurm`` and a ``profile``: the profile's fields under the
    spec's own (``additional_parameters`` merged by key). Anything else is returned as it is."""
    if not isinstance(executor, dict) or executor.get("type") != "slurm" or not isinstance(executor.get("profile"), str):
        return executor
    path = resolve_profile(executor["profile"], folder)
    if not path.exists():
        shipped = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
        raise SpecError(f"executor.profile: {executor['profile']!r}: no file {path}; shipped profiles: {shipped}, or give a YAML path")
    profile = read_yaml(path, "executor.profile:")
    if not isinstance(profile, dict):
        raise SpecError(f"executor.profile: {path} must be a mapping of {', '.join(PROFILE_FIELDS)}")
    unknown = sorted(set(profile) - set(PROFILE_FIELDS))
    if unknown:
        raise SpecError(f"executor.profile: {path} has unknown key(s) {unknown}; accepted: {', '.join(PROFILE_FIELDS)}")
    merged = {**profile, **executor}
    if isinstance(profile.get("additional_parameters"), dict) and isinstance(executor.get("additional_parameters"), dict):
        merged["additional_parameters"] = {**profile["additional_parameters"], **executor["additional_parameters"]}
    return merged


SLURM_FINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "REVOKED",
})
OUTCOME_GRACE_S = 10.0        # a job that ended by itself without a visible outcome.json: wait this long (NFS caches)
PREEMPTED_FINAL_AFTER_S = 120.0  # PREEMPTED that is not followed by a requeue (PreemptMode=CANCEL) is final
CANCEL_POLL_S = 0.5           # sacct interval while waiting for jobs the driver cancelled
SLURM_STATE_HINTS = {
    "CANCELLED": "cancelled (scancel, by the driver, or by an administrator)",
    "TIMEOUT": "killed at its time limit (executor.time_limit_min)",
    "OUT_OF_MEMORY": "killed out of memory (raise executor.mem_gb)",
    "NODE_FAIL": "killed by a node failure",
    "BOOT_FAIL": "never started: its node failed to boot",
    "DEADLINE": "killed at its deadline",
    "PREEMPTED": "preempted and not requeued",
    "FAILED": "ended with a non-zero exit code",
    "COMPLETED": "ended",
}


def slurm_job_exports(spec: SlurmExecutorSpec) -> list[str]:
    """Shell lines at the top of a trial's batch script: thread counts from cpus_per_task, the project
    on PYTHONPATH (the job unpickles sweeper.run.trial without an install), then executor.env."""
    lines = [f"export {key}={shlex.quote(value)}" for key, value in thread_environment(spec.cpus_per_task).items()]
    lines.append(f'export PYTHONPATH={shlex.quote(str(PROJECT_ROOT))}"${{PYTHONPATH:+:$PYTHONPATH}}"')
    lines += [f"export {key}={shlex.quote(value)}" for key, value in spec.env.items()]
    return lines


def slurm_parameters(spec: SlurmExecutorSpec, job_name: str) -> dict[str, Any]:
    """submitit AutoExecutor parameters of a trial's job (the mapping in slurm/README.md)."""
    params: dict[str, Any] = {
        "timeout_min": spec.time_limit_min,
        "nodes": spec.nodes,
        "tasks_per_node": spec.tasks_per_node,
        "cpus_per_task": spec.cpus_per_task,
        "name": spec.job_name or job_name,
        "slurm_setup": slurm_job_exports(spec) + list(spec.setup),
        "slurm_signal_delay_s": spec.signal_delay_s,
    }
    if spec.gpus_per_node:
        params["gpus_per_node"] = spec.gpus_per_node
    if spec.mem_gb is not None:
        params["mem_gb"] = spec.mem_gb
    for field, key in (("partition", "slurm_partition"), ("account", "slurm_account"), ("qos", "slurm_qos"),
                       ("constraint", "slurm_constraint")):
        if getattr(spec, field) is not None:
            params[key] = getattr(spec, field)
    if spec.additional_parameters:
        params["slurm_additional_parameters"] = dict(spec.additional_parameters)
    if spec.nodes * spec.tasks_per_node > 1:
        # one rank failing (exit != 0) ends the job instead of leaving the others waiting for it
        params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
    return params


class SlurmTrialJob:
    """One trial's Slurm job, submitted by this driver or re-attached by job id.

    ``done()`` is cheap: task 0's result file (written right after outcome.json) ends a normal job;
    a job killed by Slurm is noticed from ``sacct`` (one query for all jobs, at most every
    ``executor.state_poll_s``). A requeued job (preemption, time limit) is PENDING/RUNNING again,
    not done."""

    outlives_driver = True  # a re-run re-attaches to it whatever its state: Slurm knows its fate

    def __init__(self, executor: "SlurmExecutor", folder: Path, job_id: str, trial_dir: Path):
        import submitit

        self.executor = executor
        self.job_id = str(job_id)
        self.trial_dir = Path(trial_dir)
        self.job = submitit.SlurmJob(folder=folder, job_id=self.job_id)  # task 0 (rank 0 writes the outcome)
        self._done = False
        self._cancelled = False
        self._final_since: float | None = None
        self._preempted_since: float | None = None

    def state(self) -> str:
        """The job's Slurm state as sacct last reported it ('UNKNOWN' before it shows up)."""
        self.executor.refresh_states(force=self._cancelled)
        return self.job.watcher.get_state(self.job_id, mode="cache")

    def done(self) -> bool:
        if self._done:
            return True
        if self.job.paths.result_pickle.exists():
            self._done = True
            return True
        word = (self.state().split() or ["UNKNOWN"])[0].upper()
        now = time.monotonic()
        if word == "PREEMPTED":
            self._preempted_since = self._preempted_since or now
            if now - self._preempted_since < PREEMPTED_FINAL_AFTER_S:
                return False
        elif word not in SLURM_FINAL_STATES:
            self._preempted_since = None
            return False
        if word in ("COMPLETED", "FAILED") and not (self.trial_dir / OUTCOME_FILE).exists():
            self._final_since = self._final_since or now
            if now - self._final_since < OUTCOME_GRACE_S:
                return False
        self._done = True
        return True

    def cancel(self) -> None:
        self._cancelled = True
        with contextlib.suppress(Exception):
            subprocess.run(["scancel", self.job_id], capture_output=True, timeout=60, check=False)

    def log_paths(self) -> dict[str, str]:
        return {"stdout": str(self.job.paths.stdout), "stderr": str(self.job.paths.stderr)}

    def accounting(self) -> dict[str, str]:
        """sacct's State, ExitCode, Elapsed, Timelimit, NodeList of the job's latest run ({} if unknown)."""
        fields = ["State", "ExitCode", "Elapsed", "Timelimit", "NodeList"]
        try:
            out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", self.job_id, "-o", ",".join(fields)],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
        lines = [line for line in out.splitlines() if line.strip()]
        return dict(zip(fields, lines[-1].split("|"))) if lines else {}

    def end_reason(self) -> str:
        """Why the job ended without an outcome, from sacct: state, exit code, time used, node."""
        info = self.accounting()
        state = info.get("State") or self.job.watcher.get_state(self.job_id, mode="cache")
        word = (state.split() or ["UNKNOWN"])[0].upper()
        hint = SLURM_STATE_HINTS.get(word, "ended")
        details = [f"exit code {info['ExitCode']}"] if info.get("ExitCode") else []
        if info.get("Elapsed"):
            details.append(f"ran {info['Elapsed']}" + (f" of {info['Timelimit']}" if info.get("Timelimit") else ""))
        if info.get("NodeList") and info["NodeList"] != "None assigned":
            details.append(f"on {info['NodeList']}")
        details = ", ".join(details)
        return f"Slurm job {self.job_id} {state}: {hint}, without writing an outcome" + (f" ({details})" if details else "")

    def failure_text(self) -> str:
        """The tail of the job's stderr (task 0 first, then the other tasks' if any), under its Slurm state."""
        folder = self.job.paths.folder
        logs = sorted(folder.glob(f"{self.job_id}_*_log.err"), key=lambda p: (p.name != f"{self.job_id}_0_log.err", p.name))
        parts = []
        budget = STDERR_TAIL_CHARS
        for path in logs:
            text = tail(path, budget)
            if text.strip():
                parts.append(f"--- {path.name} ---\n{text}")
                budget = max(500, budget - len(text))
        state = self.job.watcher.get_state(self.job_id, mode="cache")
        return f"[slurm job {self.job_id} state {state}]\n" + "\n".join(parts)


class SlurmExecutor:
    """Each trial is one Slurm job through submitit's AutoExecutor (cluster "slurm").

    The job runs :class:`sweeper.run.trial.CheckpointableTrial` on the trial folder: rank 0 runs
    :func:`sweeper.run.trial.run_trial` (the same trial function as the local executor), other ranks of a
    multi-task job train alongside it. Its submitit folder is ``<trial dir>/submitit`` (shared
    filesystem), logs ``<job id>_<task>_log.{out,err}``. The batch script exports
    ``OMP_NUM_THREADS`` = ``cpus_per_task``, puts the project on ``PYTHONPATH``, then runs ``setup``.
    """

    name = "slurm"

    def __init__(self, spec: SlurmExecutorSpec):
        self.spec = spec
        missing = [tool for tool in ("sbatch", "srun", "sacct", "scancel") if shutil.which(tool) is None]
        if missing:
            raise SpecError(
                f"executor.type slurm: {', '.join(missing)} not found on PATH; run the driver where Slurm's client "
                f"commands work (a login node; for the test cluster: eval \"$(slurm/cluster.sh env)\")"
            )
        self.python = spec.python or shlex.quote(sys.executable)
        self._last_refresh = -math.inf
        self.checkpoint_wait_s = max(10.0, spec.signal_delay_s - 15.0)

    def refresh_states(self, force: bool = False) -> None:
        """One sacct call for every registered unfinished job, at most every ``state_poll_s``
        (every ``CANCEL_POLL_S`` while waiting for cancelled jobs)."""
        import submitit

        interval = CANCEL_POLL_S if force else self.spec.state_poll_s
        now = time.monotonic()
        if now - self._last_refresh >= interval:
            self._last_refresh = now
            submitit.SlurmJob.watcher.update()

    def submit(self, trial_dir: Path, job_name: str) -> SlurmTrialJob:
        import submitit

        from sweeper.run.trial.slurm import CheckpointableTrial

        folder = Path(trial_dir) / SUBMITIT_DIR
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=self.spec.max_requeues,
                                         slurm_python=self.python)
        executor.update_parameters(**slurm_parameters(self.spec, job_name))
        try:
            job = executor.submit(CheckpointableTrial(checkpoint_wait_s=self.checkpoint_wait_s), str(trial_dir))
        except submitit.core.utils.FailedJobError as error:
            raise SpecError(
                f"executor: sbatch refused the job of {job_name}: {str(error).strip()} (check partition, account, qos, "
                f"time_limit_min, gpus_per_node, mem_gb against `sinfo -s` and `sacctmgr show assoc user=$USER`)"
            ) from None
        self._last_refresh = -math.inf  # look at the new job at the next poll
        return SlurmTrialJob(self, folder, str(job.job_id), Path(trial_dir))

    def reattach(self, job_id: str, trial_dir: Path) -> TrialJob | None:
        if not str(job_id).isdigit():
            return None
        self._last_refresh = -math.inf
        return SlurmTrialJob(self, Path(trial_dir) / SUBMITIT_DIR, str(job_id), Path(trial_dir))

    def close(self) -> None:
        pass  # each Slurm job starts its own interpreter on its node: nothing to stop


