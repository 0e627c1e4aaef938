"""What every executor shares: the job interface the driver polls, the spec fields every kind has,
and the trial process's environment."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal, Protocol

from pydantic import Field, field_validator

from sweeper.contract import SUBMITIT_DIR
from sweeper.study.schema import SpecModel

PROJECT_ROOT = Path(__file__).resolve().parents[3]
STDERR_TAIL_CHARS = 4000
DEFAULT_ENTRYPOINT = "trainers.grpo:train"


class TrialJob(Protocol):
    """A submitted trial, as the driver sees it. Every job class has every member."""

    job_id: str | None
    outlives_driver: bool  # True: a re-run re-attaches to it whatever its state (Slurm knows its fate)

    def done(self) -> bool: ...

    def cancel(self) -> str | None:
        """Ask the job to stop; why that failed (the job may keep running), or None."""

    def failure_text(self) -> str:
        """The tail of the job's stderr (and its state), for a trial that failed."""

    def end_reason(self) -> str | None:
        """Why the job ended without writing an outcome, when the scheduler knows (None: it does not)."""

    def log_paths(self) -> dict[str, str]: ...


class Executor(Protocol):
    name: str

    def submit(self, trial_dir: Path, job_name: str) -> TrialJob: ...

    def reattach(self, job_id: str, trial_dir: Path) -> TrialJob | None: ...

    def close(self) -> None:
        """The driver submits nothing more (its jobs may still run)."""


class ResourcesSpec(SpecModel):
    cpus_per_trial: int = Field(1, gt=0, description="Sets OMP_NUM_THREADS / MKL_NUM_THREADS of the trial process.")
    gpus_per_trial: int = Field(0, ge=0)
    mem_gb: float | None = Field(None, gt=0)
    timeout_min: float = Field(240, gt=0, description="A trial still running after this is killed (and FAILs).")


class ExecutorSpecBase(SpecModel):
    """What every ``executor`` section has. A kind adds ``type: Literal[name]``, its fields, and
    :meth:`build`; it is listed in :data:`sweeper.registry.EXECUTORS`."""

    # True: trials write the study's storage from other machines (the default storage is then Optuna's
    # journal file, and a SQLite file on a network filesystem is refused)
    trials_on_other_nodes: ClassVar[bool] = False
    one_at_a_time: ClassVar[bool] = False  # True: trials run one by one whatever budget.max_parallel says

    entrypoint: str = Field(
        DEFAULT_ENTRYPOINT,
        description="The trainer: 'module:function' or 'file.py:function' taking (RunConfig, reporters) "
        "-> summary dict.",
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables of the trial process.")
    on_interrupt: Literal["cancel", "detach"] = Field(
        "cancel",
        description="Ctrl-C, SIGTERM or SIGHUP on the driver: cancel the trials in flight (re-queued by the next run), "
        "or detach (they keep running and the next run re-attaches to them); `sweeper run --detach` forces detach.",
    )

    @classmethod
    def prepare_section(cls, section: dict[str, Any], folder: Path) -> dict[str, Any]:
        """The raw section before validation (``folder``: the study file's); e.g. a Slurm profile merged in."""
        return section

    def describe(self) -> str:
        """One line for ``sweeper validate``."""
        r = self.resources
        return (
            f"{getattr(self, 'type', '?')}: {self.entrypoint}, {r.cpus_per_trial} cpu / {r.gpus_per_trial} gpu per "
            f"trial, time limit {r.timeout_min:g} min"
        )

    def build(self) -> Executor:
        """The executor this section describes."""
        raise NotImplementedError(f"executor type {getattr(self, 'type', '?')!r} defines no build()")

    @field_validator("entrypoint")
    @classmethod
    def _module_colon_function(cls, value: str) -> str:
        if not re.fullmatch(r"[^:]+:[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(
                f"{value!r} must be 'module:function' (e.g. trainers.grpo:train) or 'path/to/file.py:function'"
            )
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_strings(cls, value: Any) -> Any:
        """Strings, and numbers written as they read (``OMP_NUM_THREADS: 4``); a boolean, null, list or
        mapping has no one string form (True? true? 1?), so it is refused rather than guessed."""
        if not isinstance(value, dict):
            return value
        problems, env = [], {}
        for key, item in value.items():
            if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                problems.append(
                    f"{key}: not an environment variable name (use letters, digits and '_', not starting with a digit)"
                )
            elif isinstance(item, bool) or not isinstance(item, (str, int, float)):
                shown = "null" if item is None else str(item).lower() if isinstance(item, bool) else type(item).__name__
                problems.append(
                    f'{key}: a value must be a string (or a number), got {shown}; quote it, e.g. {key}: "1"'
                )
            else:
                env[key] = str(item)
        if problems:
            raise ValueError("\n".join(problems))
        return env


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


def thread_environment(threads: int) -> dict[str, str]:
    """One thread count for every math library of the trial process (and no tokenizer threads)."""
    count = str(threads)
    return {
        "OMP_NUM_THREADS": count,
        "MKL_NUM_THREADS": count,
        "OPENBLAS_NUM_THREADS": count,
        "TOKENIZERS_PARALLELISM": "false",
    }


def trial_environment(spec: Any) -> dict[str, str]:
    """Environment variables of a trial process: thread counts from resources, the project on
    PYTHONPATH (so the job can unpickle sweeper.run.trial without an install), then executor.env."""
    env = thread_environment(spec.resources.cpus_per_trial)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")] if p)
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


def find_local_job_id(trial_dir: Path) -> str | None:
    """A submitit folder's job id when the driver died before recording it (newest submission)."""
    folder = trial_dir / SUBMITIT_DIR
    pickles = sorted(folder.glob("*_submitted.pkl"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return pickles[-1].name.split("_", 1)[0] if pickles else None
