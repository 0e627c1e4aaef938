"""Executors: where a trial process runs. Small classes behind one interface.

    executor = make_executor(spec.executor)
    job = executor.submit(trial_dir, job_name)      # starts sweeper.trial.run_trial(trial_dir)
    job.done() -> bool                              # cheap, polled by the driver
    job.failure_text() -> str                       # stderr tail / exception, when no outcome.json
    job.end_reason() -> str                         # optional: why it ended without an outcome (Slurm state)
    job.outlives_driver                             # optional: re-attach whatever its state (Slurm)
    job.cancel()
    executor.reattach(job_id, trial_dir) -> job | None   # a job started by a previous driver

* :class:`LocalExecutor` (``type: local``, the default): submitit's LocalExecutor, one process per
  trial on this machine. The submitit folder is ``<trial dir>/submitit`` (one per trial, so job ids,
  which are pids here, never collide). Logs: ``<trial dir>/submitit/<job id>_0_log.{out,err}``.
  The trial gets ``OMP_NUM_THREADS`` = ``resources.cpus_per_trial`` and ``executor.env``.
  A job survives its driver (the controller is not killed with it), so a re-run re-attaches to it by
  pid: alive -> still in flight, gone -> its outcome.json (or its absence) says how it ended.
* :class:`DebugExecutor` (``type: debug``): runs the trial in the driver's process, one at a time.
* :class:`SlurmExecutor` (``type: slurm``): one Slurm job per trial through submitit's
  AutoExecutor; the job runs :class:`sweeper.trial.CheckpointableTrial` (rank 0 runs ``run_trial``;
  on submitit's checkpoint signal the trainer saves a checkpoint and the job is requeued, and the
  requeued job resumes the same Optuna trial and MLflow run). A job survives its driver; a re-run
  re-attaches to it by Slurm job id, whatever its state (sacct knows how it ended). A job that ends
  without an outcome FAILs with its Slurm state (CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL) as the
  reason (:meth:`SlurmTrialJob.end_reason`).

A job's *outcome* is never read from submitit: the trial writes ``outcome.json`` itself (see
:mod:`sweeper.trial`); a job that ends without one was killed, and the driver records it as FAIL
with :meth:`failure_text`.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterator, Protocol

from .spec import DebugExecutorSpec, LocalExecutorSpec, SlurmExecutorSpec
from .trial import OUTCOME_FILE

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STDERR_TAIL_CHARS = 4000


class TrialJob(Protocol):
    job_id: str | None

    def done(self) -> bool: ...

    def cancel(self) -> None: ...

    def failure_text(self) -> str: ...

    def log_paths(self) -> dict[str, str]: ...


class Executor(Protocol):
    name: str

    def submit(self, trial_dir: Path, job_name: str) -> TrialJob: ...

    def reattach(self, job_id: str, trial_dir: Path) -> TrialJob | None: ...


def tail(path: Path | str | None, chars: int = STDERR_TAIL_CHARS) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def trial_environment(spec: Any) -> dict[str, str]:
    """Environment variables of a trial process: thread counts from resources, the project on
    PYTHONPATH (so the job can unpickle sweeper.trial without an install), then executor.env."""
    threads = str(spec.resources.cpus_per_trial)
    env = {
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(p for p in [str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")] if p),
    }
    env.update(spec.env)
    return env


@contextlib.contextmanager
def patched_environ(env: dict[str, str]) -> Iterator[None]:
    """submitit's local controller copies os.environ at submit time: set the trial's variables
    around the submit call only."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --------------------------------------------------------------------------- local (submitit)


class SubmititJob:
    """A job submitted in this driver's lifetime."""

    def __init__(self, job: Any):
        self.job = job
        self.job_id = str(job.job_id)

    def done(self) -> bool:
        return bool(self.job.done())

    def cancel(self) -> None:
        with contextlib.suppress(Exception):
            self.job.cancel(check=False)

    def log_paths(self) -> dict[str, str]:
        return {"stdout": str(self.job.paths.stdout), "stderr": str(self.job.paths.stderr)}

    def failure_text(self) -> str:
        text = tail(self.job.paths.stderr)
        state = ""
        with contextlib.suppress(Exception):
            state = self.job.state
        return f"[job {self.job_id} state {state}]\n{text}" if state else text


def _pid_alive(pid: int, must_contain: str) -> bool:
    """True if ``pid`` runs and its command line contains ``must_contain`` (guards pid reuse).
    Zombies count as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                return False
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            return must_contain in cmdline
        except OSError:
            return False
    return True


class ReattachedLocalJob:
    """A local job started by an earlier driver: watched by pid (it is not our child)."""

    def __init__(self, job_id: str, folder: Path):
        self.job_id = job_id
        self.folder = folder

    def done(self) -> bool:
        return not _pid_alive(int(self.job_id), str(self.folder))

    def cancel(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
            if _pid_alive(int(self.job_id), str(self.folder)):
                os.kill(int(self.job_id), signal.SIGINT)

    def log_paths(self) -> dict[str, str]:
        return {"stdout": str(self.folder / f"{self.job_id}_0_log.out"), "stderr": str(self.folder / f"{self.job_id}_0_log.err")}

    def failure_text(self) -> str:
        return f"[job {self.job_id} (re-attached)]\n{tail(self.log_paths()['stderr'])}"


class LocalExecutor:
    """submitit LocalExecutor: one subprocess per trial."""

    name = "local"

    def __init__(self, spec: LocalExecutorSpec):
        self.spec = spec

    def _submitit_executor(self, folder: Path):
        import submitit

        executor = submitit.LocalExecutor(folder=folder, python=self.spec.python)
        params: dict[str, Any] = {"timeout_min": self.spec.resources.timeout_min, "gpus_per_node": self.spec.resources.gpus_per_trial}
        if self.spec.setup:
            params["setup"] = list(self.spec.setup)
        executor.update_parameters(**params)
        return executor

    def submit(self, trial_dir: Path, job_name: str) -> SubmititJob:
        from .trial import run_trial

        folder = Path(trial_dir) / "submitit"
        executor = self._submitit_executor(folder)
        with patched_environ(trial_environment(self.spec)):
            job = executor.submit(run_trial, str(trial_dir))
        return SubmititJob(job)

    def reattach(self, job_id: str, trial_dir: Path) -> TrialJob | None:
        folder = Path(trial_dir) / "submitit"
        try:
            int(job_id)
        except (TypeError, ValueError):
            return None
        job = ReattachedLocalJob(str(job_id), folder)
        return job


# --------------------------------------------------------------------------- debug (in-process)


class FinishedJob:
    """A trial that already ran in-process."""

    def __init__(self, job_id: str, error_text: str = ""):
        self.job_id = job_id
        self.error_text = error_text

    def done(self) -> bool:
        return True

    def cancel(self) -> None:
        pass

    def log_paths(self) -> dict[str, str]:
        return {}

    def failure_text(self) -> str:
        return self.error_text


class DebugExecutor:
    """Runs each trial inside the driver process, synchronously (max_parallel is 1)."""

    name = "debug"

    def __init__(self, spec: DebugExecutorSpec):
        self.spec = spec

    def submit(self, trial_dir: Path, job_name: str) -> FinishedJob:
        from .trial import run_trial

        env = trial_environment(self.spec)
        env.pop("PYTHONPATH", None)
        with patched_environ(env):
            try:
                run_trial(trial_dir)
                return FinishedJob(f"debug-{os.getpid()}")
            except BaseException as error:  # noqa: BLE001 - the outcome file records it
                if isinstance(error, KeyboardInterrupt):
                    raise
                return FinishedJob(f"debug-{os.getpid()}", traceback.format_exc()[-STDERR_TAIL_CHARS:])

    def reattach(self, job_id: str, trial_dir: Path) -> TrialJob | None:
        return None  # an in-process trial dies with its driver


# --------------------------------------------------------------------------- slurm

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
    on PYTHONPATH (the job unpickles sweeper.trial without an install), then executor.env."""
    threads = str(spec.cpus_per_task)
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
           "TOKENIZERS_PARALLELISM": "false"}
    lines = [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
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

    The job runs :class:`sweeper.trial.CheckpointableTrial` on the trial folder: rank 0 runs
    :func:`sweeper.trial.run_trial` (the same trial function as the local executor), other ranks of a
    multi-task job train alongside it. Its submitit folder is ``<trial dir>/submitit`` (shared
    filesystem), logs ``<job id>_<task>_log.{out,err}``. The batch script exports
    ``OMP_NUM_THREADS`` = ``cpus_per_task``, puts the project on ``PYTHONPATH``, then runs ``setup``.
    """

    name = "slurm"

    def __init__(self, spec: SlurmExecutorSpec):
        self.spec = spec
        missing = [tool for tool in ("sbatch", "srun", "sacct", "scancel") if shutil.which(tool) is None]
        if missing:
            from .spec import SpecError

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

        from .trial import CheckpointableTrial

        folder = Path(trial_dir) / "submitit"
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=self.spec.max_requeues,
                                         slurm_python=self.python)
        executor.update_parameters(**slurm_parameters(self.spec, job_name))
        try:
            job = executor.submit(CheckpointableTrial(checkpoint_wait_s=self.checkpoint_wait_s), str(trial_dir))
        except submitit.core.utils.FailedJobError as error:
            from .spec import SpecError

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
        return SlurmTrialJob(self, Path(trial_dir) / "submitit", str(job_id), Path(trial_dir))


def make_executor(spec: Any) -> Executor:
    kind = spec.type
    if kind == "local":
        return LocalExecutor(spec)
    if kind == "debug":
        return DebugExecutor(spec)
    if kind == "slurm":
        return SlurmExecutor(spec)
    raise ValueError(f"executor.type {kind!r} is not known")
