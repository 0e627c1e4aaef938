"""Trials on this machine: ``type: local`` (submitit's LocalExecutor, one process per trial, the
default) and ``type: debug`` (in the driver's process, one at a time, for pdb and quick checks).

The submitit folder is ``<trial dir>/submitit`` (one per trial, so job ids, which are pids here, never
collide). Logs: ``<trial dir>/submitit/<job id>_0_log.{out,err}``. The trial gets ``OMP_NUM_THREADS`` =
``resources.cpus_per_trial`` and ``executor.env``. A local job survives its driver (the controller is
not killed with it), so a re-run re-attaches to it by pid: alive -> still in flight, gone -> its
outcome.json (or its absence) says how it ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import traceback
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from sweeper.contract import SUBMITIT_DIR
from sweeper.run.executors.base import (
    STDERR_TAIL_CHARS,
    ExecutorSpecBase,
    TrialJob,
    patched_environ,
    tail,
    trial_environment,
)


class LocalExecutorSpec(ExecutorSpecBase):
    """submitit's LocalExecutor: one subprocess per trial on this machine (the default)."""

    type: Literal["local"]
    python: str | None = Field(None, description="Python that runs the trial; default: the driver's.")
    setup: list[str] = Field(
        default_factory=list, description="Shell lines run before the trial (e.g. 'source venv/bin/activate')."
    )

    @model_validator(mode="before")
    @classmethod
    def _warm_start_was_removed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "warm_start" in data:
            raise ValueError(
                f"warm_start: {data['warm_start']!r}: warm start was removed (trials always start cold: it saved "
                f"~6 s of a ~130 s trial and none on the quickstart; docs/sweeper.md); delete executor.warm_start"
            )
        return data

    def build(self) -> "LocalExecutor":
        return LocalExecutor(self)


class DebugExecutorSpec(ExecutorSpecBase):
    """In-process, one trial at a time: for pdb and quick checks."""

    one_at_a_time = True
    type: Literal["debug"]

    def build(self) -> "DebugExecutor":
        return DebugExecutor(self)


class SubmititJob:
    """A local job submitted in this driver's lifetime."""

    outlives_driver = False

    def __init__(self, job: Any):
        self.job = job
        self.job_id = str(job.job_id)

    def done(self) -> bool:
        return bool(self.job.done())

    def cancel(self) -> str | None:
        try:
            self.job.cancel(check=False)
        except Exception as error:  # noqa: BLE001 - reported: the job may keep running
            return f"cancelling job {self.job_id} failed: {type(error).__name__}: {error}"
        return None

    def log_paths(self) -> dict[str, str]:
        return {"stdout": str(self.job.paths.stdout), "stderr": str(self.job.paths.stderr)}

    def failure_text(self) -> str:
        text = tail(self.job.paths.stderr)
        state = ""
        with contextlib.suppress(Exception):
            state = self.job.state
        return f"[job {self.job_id} state {state}]\n{text}" if state else text

    def end_reason(self) -> str | None:
        return None


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

    outlives_driver = False

    def __init__(self, job_id: str, folder: Path):
        self.job_id = job_id
        self.folder = folder

    def done(self) -> bool:
        return not _pid_alive(int(self.job_id), str(self.folder))

    def cancel(self) -> str | None:
        try:
            if _pid_alive(int(self.job_id), str(self.folder)):
                os.kill(int(self.job_id), signal.SIGINT)
        except ProcessLookupError:
            pass  # it ended meanwhile
        except (PermissionError, ValueError) as error:
            return f"cancelling job {self.job_id} failed: {type(error).__name__}: {error}"
        return None

    def log_paths(self) -> dict[str, str]:
        return {
            "stdout": str(self.folder / f"{self.job_id}_0_log.out"),
            "stderr": str(self.folder / f"{self.job_id}_0_log.err"),
        }

    def failure_text(self) -> str:
        return f"[job {self.job_id} (re-attached)]\n{tail(self.log_paths()['stderr'])}"

    def end_reason(self) -> str | None:
        return None


class LocalExecutor:
    """submitit LocalExecutor: one subprocess per trial."""

    name = "local"

    def __init__(self, spec: LocalExecutorSpec):
        self.spec = spec

    def close(self) -> None:
        """The driver is done submitting (the trials it started run on)."""

    def _submitit_executor(self, folder: Path):
        import submitit

        executor = submitit.LocalExecutor(folder=folder, python=self.spec.python)
        params: dict[str, Any] = {
            "timeout_min": self.spec.resources.timeout_min,
            "gpus_per_node": self.spec.resources.gpus_per_trial,
        }
        if self.spec.setup:
            params["setup"] = list(self.spec.setup)
        executor.update_parameters(**params)
        return executor

    def submit(self, trial_dir: Path, job_name: str) -> SubmititJob:
        from sweeper.run.trial.process import run_trial

        executor = self._submitit_executor(Path(trial_dir) / SUBMITIT_DIR)
        with patched_environ(trial_environment(self.spec)):
            job = executor.submit(run_trial, str(trial_dir))
        return SubmititJob(job)

    def reattach(self, job_id: str, trial_dir: Path) -> TrialJob | None:
        if not str(job_id).isdigit():
            return None
        return ReattachedLocalJob(str(job_id), Path(trial_dir) / SUBMITIT_DIR)


class FinishedJob:
    """A trial that already ran in-process."""

    outlives_driver = False

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

    def end_reason(self) -> str | None:
        return None


class DebugExecutor:
    """Runs each trial inside the driver process, synchronously (max_parallel is 1)."""

    name = "debug"

    def __init__(self, spec: DebugExecutorSpec):
        self.spec = spec

    def submit(self, trial_dir: Path, job_name: str) -> FinishedJob:
        from sweeper.run.trial.process import run_trial

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

    def close(self) -> None:
        pass
