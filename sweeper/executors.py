"""Executors: where a trial process runs. Small classes behind one interface.

    executor = make_executor(spec.executor)
    job = executor.submit(trial_dir, job_name)      # starts sweeper.trial.run_trial(trial_dir)
    job.done() -> bool                              # cheap, polled by the driver
    job.failure_text() -> str                       # stderr tail / exception, when no outcome.json
    job.cancel()
    executor.reattach(job_id, trial_dir) -> job | None   # a job started by a previous driver

* :class:`LocalExecutor` (``type: local``, the default): submitit's LocalExecutor, one process per
  trial on this machine. The submitit folder is ``<trial dir>/submitit`` (one per trial, so job ids,
  which are pids here, never collide). Logs: ``<trial dir>/submitit/<job id>_0_log.{out,err}``.
  The trial gets ``OMP_NUM_THREADS`` = ``resources.cpus_per_trial`` and ``executor.env``.
  A job survives its driver (the controller is not killed with it), so a re-run re-attaches to it by
  pid: alive -> still in flight, gone -> its outcome.json (or its absence) says how it ended.
* :class:`DebugExecutor` (``type: debug``): runs the trial in the driver's process, one at a time.
* :class:`SlurmExecutor` (``type: slurm``): placeholder for issue 6 (submitit's SlurmExecutor,
  requeue, re-attach by Slurm job id).

A job's *outcome* is never read from submitit: the trial writes ``outcome.json`` itself (see
:mod:`sweeper.trial`); a job that ends without one was killed, and the driver records it as FAIL
with :meth:`failure_text`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import traceback
from pathlib import Path
from typing import Any, Iterator, Protocol

from .spec import DebugExecutorSpec, LocalExecutorSpec, SlurmExecutorSpec

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


# --------------------------------------------------------------------------- slurm (issue 6)


class SlurmExecutor:
    """Placeholder: issue 6 implements submission with submitit's SlurmExecutor (partition, account,
    gpus, setup lines...), requeue on preemption, and ``reattach`` by Slurm job id (the trial's
    ``job_id`` user attr)."""

    name = "slurm"

    def __init__(self, spec: SlurmExecutorSpec):
        self.spec = spec
        raise NotImplementedError("executor.type 'slurm' is not implemented yet (issue 6); use type: local or debug")

    def submit(self, trial_dir: Path, job_name: str) -> TrialJob:
        raise NotImplementedError

    def reattach(self, job_id: str, trial_dir: Path) -> TrialJob | None:
        raise NotImplementedError


def make_executor(spec: Any) -> Executor:
    kind = spec.type
    if kind == "local":
        return LocalExecutor(spec)
    if kind == "debug":
        return DebugExecutor(spec)
    if kind == "slurm":
        return SlurmExecutor(spec)
    raise ValueError(f"executor.type {kind!r} is not known")
