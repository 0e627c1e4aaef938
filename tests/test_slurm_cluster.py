"""The local Slurm test cluster (slurm/cluster.sh) works with submitit, for the things the sweeper needs.

Against the real cluster (munge, slurmctld, slurmd, slurmdbd + MariaDB) through submitit's real
AutoExecutor: a job returns its result; a job killed with `scancel` ends in a failure state that
submitit reports (it learns it from sacct, so this needs accounting); a checkpointable job preempted
with submitit's own signal sequence (SIGTERM then USR2, as Slurm sends on preemption) saves its state,
is requeued, and resumes from that state; a 2-task job sees 2 ranks through
TorchDistributedEnvironment and all-reduces over gloo. Also: the shipped profiles hold only the
documented fields, and the local-test profile is what these tests submit with.

Waits have deadlines only so that a broken cluster fails the test instead of hanging it; nothing
asserts how long anything took.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from slurm_fixtures import REPO_ROOT, slurm_cluster, submitit_folder  # noqa: F401  (pytest fixtures)

submitit = pytest.importorskip("submitit")

pytestmark = pytest.mark.slurm

PROFILE_DIR = REPO_ROOT / "slurm" / "profiles"
PROFILE_FIELDS = {
    "partition": str, "account": str, "qos": str, "time_limit_min": int, "nodes": int,
    "tasks_per_node": int, "gpus_per_node": int, "cpus_per_task": int, "mem_gb": (int, float),
    "constraint": str, "job_name": str, "additional_parameters": dict, "setup": list, "python": str,
}
JOB_DEADLINE_S = 240  # a guard against a hung cluster, not a speed check


# ------------------------------------------------------------------ helpers (run in the test process)

def load_profile(name: str) -> dict:
    with open(PROFILE_DIR / f"{name}.yaml") as profile_file:
        return yaml.safe_load(profile_file)


def executor_from_profile(folder: Path, profile: dict, cluster, **overrides):
    """A submitit AutoExecutor on the Slurm cluster configured from a profile dict.

    Test-only mapping: the sweeper's Slurm executor owns the real one.
    """
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    # the job unpickles functions defined in this module: make tests/ importable there
    setup = list(profile.get("setup", [])) + [f"export PYTHONPATH={cluster.job_python_path()}"]
    params = {
        "slurm_partition": profile["partition"],
        "timeout_min": profile["time_limit_min"],
        "nodes": profile.get("nodes", 1),
        "tasks_per_node": profile.get("tasks_per_node", 1),
        "cpus_per_task": profile.get("cpus_per_task", 1),
        "mem_gb": profile["mem_gb"],
        "name": profile.get("job_name", "submitit"),
        "slurm_setup": setup,
    }
    params.update(overrides)
    executor.update_parameters(**params)
    return executor


def job_logs_tail(job, lines: int = 30) -> str:
    parts = []
    for name, path in (("stdout", job.paths.stdout), ("stderr", job.paths.stderr)):
        try:
            text = Path(str(path).replace("%t", "0")).read_text()
        except OSError:
            text = "<missing>"
        parts.append(f"--- {name} of job {job.job_id} ---\n" + "\n".join(text.splitlines()[-lines:]))
    return "\n".join(parts)


def wait_until_done(job, deadline_s: float = JOB_DEADLINE_S) -> None:
    """Poll the job until submitit says it is done; on the deadline, cancel it and fail with its logs."""
    deadline = time.monotonic() + deadline_s
    polls = 0
    # every 4th poll forces a sacct query: a job killed by Slurm leaves no result file to notice
    while not job.done(force_check=polls % 4 == 3):
        polls += 1
        if time.monotonic() > deadline:
            state = job.state
            subprocess.run(["scancel", str(job.job_id)], check=False)
            pytest.fail(f"job {job.job_id} not done after {deadline_s} s (state {state})\n{job_logs_tail(job)}")
        time.sleep(0.5)


def wait_for_file(path: Path, job, predicate=lambda text: True, deadline_s: float = JOB_DEADLINE_S) -> str:
    """Wait until a file the job writes exists and its text satisfies ``predicate``."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            text = path.read_text()
            if predicate(text):
                return text
        except OSError:
            pass
        if time.monotonic() > deadline:
            subprocess.run(["scancel", str(job.job_id)], check=False)
            pytest.fail(f"{path} not as expected after {deadline_s} s (job state {job.state})\n"
                        f"{job_logs_tail(job)}")
        time.sleep(0.2)


def accounting_states(job_id, deadline_s: float = 60) -> list[str]:
    """The job's states in sacct, one per run (requeued runs included), once the last one is final.

    slurmctld reports to slurmdbd asynchronously, so sacct may lag the job's end by a moment.
    """
    deadline = time.monotonic() + deadline_s
    while True:
        states = subprocess.run(["sacct", "-n", "-X", "-P", "-D", "-o", "State", "-j", str(job_id)],
                                capture_output=True, text=True, check=True, timeout=30).stdout.split("\n")
        states = [state.strip() for state in states if state.strip()]
        if states and states[-1].split()[0] not in {"PENDING", "RUNNING", "REQUEUED", "COMPLETING"}:
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"sacct shows no final state for job {job_id} after {deadline_s} s: {states}")
        time.sleep(0.5)


# ------------------------------------------------------------------ job functions (run in Slurm jobs)

def add_numbers(left: int, right: int) -> dict:
    return {"sum": left + right, "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "partition": os.environ.get("SLURM_JOB_PARTITION")}


def sleep_after_marking_start(started_marker: str, seconds: float) -> str:
    Path(started_marker).write_text("started")
    time.sleep(seconds)
    return "slept"  # never reached in the test: the job is cancelled first


class CountingTrainer(submitit.helpers.Checkpointable):
    """Counts steps like a trainer; on preemption submitit pickles it (with its step) and requeues it.

    ``run_starts`` records, per run of the job, the step it started from and SLURM_RESTART_COUNT, so
    the result shows whether the second run continued from the saved step.
    """

    def __init__(self) -> None:
        self.step = 0
        self.run_starts: list[dict] = []

    def __call__(self, progress_file: str, total_steps: int, seconds_per_step: float) -> dict:
        self.run_starts.append({"step": self.step, "restart_count": os.environ.get("SLURM_RESTART_COUNT")})
        while self.step < total_steps:
            time.sleep(seconds_per_step)
            self.step += 1
            Path(progress_file).write_text(str(self.step))
        return {"final_step": self.step, "run_starts": self.run_starts}


def distributed_ranks_all_reduce() -> dict:
    import datetime

    import torch
    import torch.distributed as dist

    dist_env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    dist.init_process_group(backend="gloo", init_method="env://", timeout=datetime.timedelta(seconds=60))
    try:
        contribution = torch.tensor([float(dist_env.rank + 1)])
        dist.all_reduce(contribution)  # sum over ranks
        reduced = contribution.item()
    finally:
        dist.destroy_process_group()
    return {
        "rank": dist_env.rank,
        "world_size": dist_env.world_size,
        "local_rank": dist_env.local_rank,
        "env": {key: os.environ.get(key) for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")},
        "all_reduce_sum": reduced,
    }


# ------------------------------------------------------------------ tests

def test_profiles_hold_only_documented_fields():
    profiles = sorted(PROFILE_DIR.glob("*.yaml"))
    assert {path.stem for path in profiles} >= {"local-test", "gpu-a100", "multi-node"}
    for path in profiles:
        profile = yaml.safe_load(path.read_text())
        assert isinstance(profile, dict), path
        unknown = set(profile) - set(PROFILE_FIELDS)
        assert not unknown, f"{path.name}: unknown fields {sorted(unknown)}"
        for field, value in profile.items():
            assert isinstance(value, PROFILE_FIELDS[field]), f"{path.name}: {field}={value!r}"
        assert "partition" in profile and "time_limit_min" in profile, path.name
        assert all(isinstance(line, str) for line in profile.get("setup", [])), path.name


def test_job_returns_its_result(slurm_cluster, submitit_folder):
    profile = load_profile("local-test")
    executor = executor_from_profile(submitit_folder, profile, slurm_cluster)
    job = executor.submit(add_numbers, 2, 3)
    wait_until_done(job)
    result = job.result()
    assert result["sum"] == 5
    assert result["slurm_job_id"] == str(job.job_id)
    assert result["partition"] == profile["partition"]
    assert accounting_states(job.job_id) == ["COMPLETED"]


def test_cancelled_job_ends_failed_and_submitit_reports_it(slurm_cluster, submitit_folder):
    executor = executor_from_profile(submitit_folder, load_profile("local-test"), slurm_cluster)
    started_marker = submitit_folder / "started"
    job = executor.submit(sleep_after_marking_start, str(started_marker), 600)
    wait_for_file(started_marker, job)

    subprocess.run(["scancel", str(job.job_id)], check=True, timeout=30)
    wait_until_done(job)

    error = job.exception()
    assert isinstance(error, submitit.core.utils.UncompletedJobError), repr(error)
    assert "CANCELLED" in str(error)
    assert job.get_info(mode="force")["State"].startswith("CANCELLED")
    assert accounting_states(job.job_id)[-1].startswith("CANCELLED")


def test_preempted_checkpointable_job_is_requeued_and_resumes(slurm_cluster, submitit_folder):
    executor = executor_from_profile(submitit_folder, load_profile("local-test"), slurm_cluster)
    progress_file = submitit_folder / "progress"
    total_steps = 40
    job = executor.submit(CountingTrainer(), str(progress_file), total_steps, 0.25)
    steps_before_preemption = 3
    wait_for_file(progress_file, job, lambda text: text.strip().isdigit() and int(text) >= steps_before_preemption)

    # preempt it the way Slurm does (SIGTERM, then the USR2 submitit asks for): deterministic,
    # unlike waiting for the time-limit warning, which may come up to a minute early on a 30 s tick
    job._interrupt()
    wait_until_done(job)

    result = job.result()
    assert result["final_step"] == total_steps, job_logs_tail(job)
    assert len(result["run_starts"]) == 2, result
    first_run, second_run = result["run_starts"]
    assert first_run["step"] == 0
    assert first_run["restart_count"] in (None, "0")
    # the second run started where the checkpoint left off, not from 0
    assert steps_before_preemption <= second_run["step"] < total_steps, result
    assert second_run["restart_count"] == "1"
    states_per_run = accounting_states(job.job_id)
    assert states_per_run[-1] == "COMPLETED"
    assert any(state.startswith("REQUEUED") for state in states_per_run), states_per_run


def test_two_task_job_sees_two_ranks_and_all_reduces(slurm_cluster, submitit_folder):
    pytest.importorskip("torch")
    profile = load_profile("local-test")
    executor = executor_from_profile(submitit_folder, profile, slurm_cluster, tasks_per_node=2, cpus_per_task=1)
    job = executor.submit(distributed_ranks_all_reduce)
    wait_until_done(job)
    results = job.results()

    assert len(results) == 2
    assert sorted(result["rank"] for result in results) == [0, 1]
    for result in results:
        assert result["world_size"] == 2
        assert result["env"]["RANK"] == str(result["rank"])
        assert result["env"]["WORLD_SIZE"] == "2"
        assert result["all_reduce_sum"] == 3.0  # (0 + 1) + (1 + 1)
    assert len({(result["env"]["MASTER_ADDR"], result["env"]["MASTER_PORT"]) for result in results}) == 1
    assert all(result["env"]["MASTER_ADDR"] and result["env"]["MASTER_PORT"] for result in results)
