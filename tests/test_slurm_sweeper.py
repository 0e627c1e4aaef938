"""`executor: slurm` end to end on the real local Slurm test cluster (slurm/cluster.sh).

Real parts throughout: the sweeper driver, submitit's Slurm executor, sbatch/sacct/scancel, Optuna's
journal storage, MLflow on SQLite, and trial jobs that run either the real trainer on the shipped tiny
model (a few steps) or, where a trial must run long or be steered, the stand-in trainer
(tests/standin_trainer.py). Each test has its own study folder, so each trial its own submitit folder.

Covered: a 4-trial study completes with its results in storage and MLflow; a trial whose job is
scancel'ed ends FAIL with the Slurm state as reason and the study goes on; a preempted trial (submitit's
own signal sequence) checkpoints, is requeued and resumes from the checkpoint in the same Optuna trial
and MLflow run (a 2-task trial: both ranks stop, checkpoint and resume together); a 2-task trial trains
data-parallel; a driver killed with SIGKILL mid-study re-attaches on re-run and loses nothing; Ctrl-C
cancels the study's jobs, or leaves them running with on_interrupt: detach; the storage preflight
refuses SQLite on a network filesystem (fed a /proc/mounts-format line, which tests our parser);
profiles and spec fields.

Waits have deadlines only so that a broken cluster fails a test instead of hanging it; nothing asserts
how long anything took.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_run_config
from _signals import default_sigint
from slurm_fixtures import REPO_ROOT, slurm_cluster, submitit_folder  # noqa: F401  (pytest fixtures)
from sweeper.run.driver import preflight, run_study
from sweeper.run.executors.slurm import slurm_parameters
from sweeper.study.spec import SpecError, load_spec
from sweeper.run.storage import filesystem_type
from _studies import trials_of

submitit = pytest.importorskip("submitit")

STANDIN = f"{REPO_ROOT / 'tests' / 'standin_trainer.py'}:train"
DEADLINE_S = 300  # a guard against a hung cluster, not a speed check


# ------------------------------------------------------------------ helpers


def study_file(tmp_path: Path, name: str, *, real_trainer: bool, executor: dict | None = None, **sections) -> Path:
    """A study on the test cluster: profile local-test, sacct polled every second."""
    if real_trainer:
        base = tiny_run_config(tmp_path / "unused")
        base["train"].pop("output_dir")
        objective = {"metric": "val/pass@4"}
    else:
        base = {"train": {"steps": 6, "eval_every": 2}}
        objective = {"metric": "val/pass@8"}
    spec = {
        "study": {"name": name},
        "objective": objective,
        "base": base,
        "space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.4}}},
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "budget": {"n_trials": 1, "max_parallel": 1},
        "executor": executor if (executor or {}).get("type") == "local" else
                    {"type": "slurm", "profile": "local-test", "state_poll_s": 1,
                     **({} if real_trainer else {"entrypoint": STANDIN}), **(executor or {})},
        "tracking": {"enabled": False},
    }
    spec.update(sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def wait_for(predicate, what: str, deadline_s: float = DEADLINE_S, interval: float = 0.3):
    deadline = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not seen after {deadline_s} s: {what}")
        time.sleep(interval)


@pytest.fixture
def background(tmp_path):
    """Start drivers as subprocesses (``background(path)``); at the end kill those still running and
    cancel every job of this test still in the queue (a failed test leaves nothing behind)."""
    started: list[subprocess.Popen] = []

    def start(path: Path) -> subprocess.Popen:
        code = ("import sys; from sweeper.run.driver import run_study; "
                "run_study(sys.argv[1], progress=False, log=lambda m: print(m, flush=True))")
        process = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO_ROOT, env=dict(os.environ),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   preexec_fn=default_sigint)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    job_ids = sorted({p.name.split("_", 1)[0] for p in tmp_path.rglob("*_submitted.pkl")})
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60)


def finish(driver: subprocess.Popen) -> str:
    """Wait for a background driver to end by itself; its output (the test fails if it failed)."""
    try:
        output, _ = driver.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the driver did not finish in {DEADLINE_S} s")
    assert driver.returncode == 0, output[-4000:]
    return output


def job_of(path: Path, number: int) -> tuple[str, Path] | None:
    """(Slurm job id, submitit folder) of a trial once the driver recorded it."""
    try:
        trials = trials_of(path)
    except KeyError:  # the driver has not created the study yet
        return None
    for trial in trials:
        if trial.number == number and trial.user_attrs.get("job_id"):
            return trial.user_attrs["job_id"], Path(trial.user_attrs["trial_dir"]) / "submitit"
    return None


def sacct_states(job_id: str) -> list[str]:
    """The job's state per run (requeued runs included)."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-D", "-o", "State", "-j", str(job_id)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def final_sacct_states(job_id: str) -> list[str]:
    """sacct lags the job's end by a moment (slurmctld reports to slurmdbd asynchronously)."""
    return wait_for(lambda: (s := sacct_states(job_id)) and s[-1].split()[0] not in
                    {"PENDING", "RUNNING", "REQUEUED", "COMPLETING"} and s, f"a final sacct state of job {job_id}", 60)


def metrics_records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def mlflow_trial_runs(path: Path):
    from mlflow.tracking import MlflowClient

    spec = load_spec(path)
    client = MlflowClient(tracking_uri=spec.tracking.uri)
    experiment = client.get_experiment_by_name(spec.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id], "tags.`sweeper.role` = 'trial'")
    return client, {int(run.data.tags["sweeper.trial_number"]): run for run in runs}


# ------------------------------------------------------------------ spec and preflight (no cluster needed)


def test_profile_fields_and_spec_overrides(tmp_path):
    path = study_file(tmp_path, "prof", real_trainer=False,
                      executor={"cpus_per_task": 2, "tasks_per_node": 2, "additional_parameters": {"exclude": "n1"},
                                "setup": ["source /opt/venv/bin/activate"], "env": {"HF_HOME": "/scratch/hf"}})
    spec = load_spec(path)
    e = spec.executor
    profile = yaml.safe_load((REPO_ROOT / "slurm" / "profiles" / "local-test.yaml").read_text())
    assert (e.partition, e.time_limit_min, e.mem_gb, e.job_name) == (profile["partition"], profile["time_limit_min"],
                                                                     profile["mem_gb"], profile["job_name"])
    assert (e.cpus_per_task, e.tasks_per_node) == (2, 2)                  # the spec wins over the profile
    assert e.setup == ["source /opt/venv/bin/activate"]                    # a list is replaced, not appended
    assert spec.study.storage == f"journal://{spec.study_dir / 'optuna.journal'}"   # the default for slurm

    params = slurm_parameters(e, "prof-0")
    assert params["slurm_partition"] == "debug" and params["timeout_min"] == profile["time_limit_min"]
    assert params["cpus_per_task"] == 2 and params["tasks_per_node"] == 2 and params["mem_gb"] == profile["mem_gb"]
    assert params["slurm_additional_parameters"] == {"exclude": "n1"}
    assert params["slurm_srun_args"] == ["--kill-on-bad-exit=1"]           # one rank failing ends the job
    setup = params["slurm_setup"]
    assert "export OMP_NUM_THREADS=2" in setup and "export HF_HOME=/scratch/hf" in setup
    assert setup[-1] == "source /opt/venv/bin/activate"                    # the user's lines come last
    assert any(line.startswith(f"export PYTHONPATH={REPO_ROOT}") for line in setup)

    with pytest.raises(SpecError, match=r"executor.profile: 'a100x'.*shipped profiles: .*local-test"):
        load_spec(study_file(tmp_path, "bad1", real_trainer=False, executor={"profile": "a100x"}))
    with pytest.raises(SpecError, match=r"resources is not used by type slurm: set cpus_per_task"):
        load_spec(study_file(tmp_path, "bad2", real_trainer=False, executor={"resources": {"cpus_per_trial": 2}}))
    custom = tmp_path / "mine.yaml"
    custom.write_text("partition: gpu\ntime_limit_min: 30\ngpu_per_node: 1\n")
    with pytest.raises(SpecError, match=r"has unknown key\(s\) \['gpu_per_node'\]; accepted: partition"):
        load_spec(study_file(tmp_path, "bad3", real_trainer=False, executor={"profile": "mine.yaml"}))


def test_preflight_refuses_sqlite_on_a_network_filesystem(tmp_path):
    shared = tmp_path / "shared"
    # a real /proc/mounts line of an NFS v4 home, mounted over tmp_path/shared
    mounts = Path("/proc/mounts").read_text() + (
        f"fileserver:/export/home {shared} nfs4 rw,relatime,vers=4.2,rsize=1048576,wsize=1048576,namlen=255,"
        f"hard,proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=10.0.0.5,local_lock=none,addr=10.0.0.2 0 0\n")
    assert filesystem_type(shared / "study" / "optuna.db", mounts) == "nfs4"
    assert filesystem_type(tmp_path / "sharedx" / "optuna.db", mounts) == filesystem_type(tmp_path)  # not under it

    on_nfs = load_spec(study_file(tmp_path, "nfs", real_trainer=False, study={"name": "nfs", "dir": str(shared / "nfs"),
                                                                              "storage": f"sqlite:///{shared}/nfs/optuna.db"}))
    with pytest.raises(SpecError) as refused:
        preflight(on_nfs, mounts)
    message = str(refused.value)
    assert message.startswith("study.storage:") and "network filesystem (nfs4)" in message
    assert f"journal://{shared}/nfs/optuna.journal" in message and "postgresql://" in message

    journal = load_spec(study_file(tmp_path, "nfsj", real_trainer=False, study={"name": "nfsj", "dir": str(shared / "j")}))
    preflight(journal, mounts)                              # the slurm default (journal file) is accepted there
    local = load_spec(study_file(tmp_path, "loc", real_trainer=False, study={"name": "loc", "storage": f"sqlite:///{tmp_path}/loc.db"}))
    preflight(local, mounts)                                # SQLite on a local filesystem is fine
    local_runs = load_spec(study_file(tmp_path, "lr", real_trainer=False, study={"name": "lr", "dir": str(shared / "lr"),
                                                                                "storage": f"sqlite:///{shared}/lr.db"},
                                      executor={"type": "local", "entrypoint": STANDIN}))
    preflight(local_runs, mounts)                           # local trials share the driver's machine: not refused


# ------------------------------------------------------------------ against the cluster


@pytest.mark.slurm
def test_four_trial_study_completes_with_results_in_storage_and_mlflow(slurm_cluster, tmp_path):
    path = study_file(tmp_path, "four", real_trainer=True, budget={"n_trials": 4, "max_parallel": 2},
                      tracking={"enabled": True})
    report = run_study(path, progress=False, log=lambda message: None)

    trials = trials_of(path)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4, [t.user_attrs.get("stderr_tail") for t in trials]
    assert report.counts == {"COMPLETE": 4}
    assert load_spec(path).study.storage.startswith("journal://")
    job_ids = [t.user_attrs["job_id"] for t in trials]
    assert len(set(job_ids)) == 4 and all(j.isdigit() for j in job_ids)
    for trial in trials:
        assert 0.0 <= trial.value <= 1.0
        assert sorted(trial.intermediate_values) == [2, 4]                 # step 0 (the base model) is not reported
        assert trial.value == trial.intermediate_values[4]                 # aggregation: last
        assert final_sacct_states(trial.user_attrs["job_id"]) == ["COMPLETED"]
        assert Path(trial.user_attrs["log_paths"]["stdout"]).name == f"{trial.user_attrs['job_id']}_0_log.out"

    client, runs = mlflow_trial_runs(path)
    assert sorted(runs) == [0, 1, 2, 3]
    for trial in trials:
        run = runs[trial.number]
        assert run.info.status == "FINISHED" and run.data.tags["sweeper.state"] == "COMPLETE"
        assert run.data.tags["sweeper.job_id"] == trial.user_attrs["job_id"]
        history = client.get_metric_history(run.info.run_id, "val/pass_at_4")
        assert sorted(m.step for m in history) == [0, 2, 4]
        assert run.data.metrics["objective"] == pytest.approx(trial.value)


@pytest.mark.slurm
def test_cancelled_job_fails_with_the_slurm_state_and_the_study_goes_on(slurm_cluster, tmp_path, background):
    path = study_file(tmp_path, "cancel", real_trainer=False,
                      space={"params": {"clip.eps_high": 0.28, "train.steps": [4, 3000]}},
                      enqueue=[{"train.steps": 3000}, {"train.steps": 4}],
                      budget={"n_trials": 2, "max_parallel": 1},
                      executor={"env": {"STANDIN_STEP_SECONDS": "0.1"}})
    driver = background(path)
    job_id, folder = wait_for(lambda: job_of(path, 0), "trial 0's job id in storage")
    wait_for(lambda: "step" in (folder / f"{job_id}_0_log.out").read_text() if (folder / f"{job_id}_0_log.out").exists() else False,
             "trial 0 training")
    subprocess.run(["scancel", job_id], check=True, timeout=60)
    output = finish(driver)

    cancelled, second = trials_of(path)
    assert cancelled.state.name == "FAIL" and second.state.name == "COMPLETE"
    reason = cancelled.user_attrs["fail_reason"]
    assert reason.startswith(f"Slurm job {job_id} CANCELLED") and "without writing an outcome" in reason, reason
    assert f"[slurm job {job_id} state CANCELLED" in cancelled.user_attrs["stderr_tail"]
    assert "CANCELLED AT" in cancelled.user_attrs["stderr_tail"]          # slurmstepd's line in the job's stderr
    assert not cancelled.user_attrs.get("lost")                           # a real failure, not re-queued
    assert f"trial 0 FAIL: Slurm job {job_id} CANCELLED" in output and "trial 1 COMPLETE" in output
    assert final_sacct_states(job_id)[-1].startswith("CANCELLED")


@pytest.mark.slurm
def test_preempted_trial_checkpoints_requeues_and_resumes_the_same_trial_and_run(slurm_cluster, tmp_path, background):
    steps = 8
    # a 2-task (data-parallel) trial: both ranks must stop together, checkpoint, and resume
    path = study_file(tmp_path, "preempt", real_trainer=True, tracking={"enabled": True},
                      executor={"tasks_per_node": 2, "cpus_per_task": 1},
                      base={**tiny_run_config(tmp_path / "unused"),
                            "train": {"steps": steps, "eval_every": 2, "mini_batches": 2, "ppo_epochs": 2, "checkpoint_every": 0}})
    driver = background(path)
    job_id, folder = wait_for(lambda: job_of(path, 0), "trial 0's job id in storage")
    run_dir = folder.parent / "run"
    wait_for(lambda: any(r["kind"] == "train" and r["step"] >= 2 for r in metrics_records(run_dir)), "two training steps")
    # preempt it as Slurm does (SIGTERM, then the USR2 submitit asks for): a plain `scontrol requeue` sends no signal
    submitit.SlurmJob(folder, job_id)._interrupt()
    finish(driver)

    (trial,) = trials_of(path)                                            # the same Optuna trial, not a new one
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("stderr_tail")
    assert trial.user_attrs["job_id"] == job_id
    states = final_sacct_states(job_id)
    assert states[-1] == "COMPLETED" and any(s.startswith("REQUEUED") for s in states), states

    stdout = (folder / f"{job_id}_0_log.out").read_text()
    assert stdout.count("Starting with JobEnvironment") == 2              # two runs of the one job
    preempted_at = int(stdout.split("preempted at step ")[1].split(":")[0])
    assert 2 <= preempted_at < steps
    outcome = json.loads((folder.parent / "outcome.json").read_text())
    assert outcome["resumed_from_step"] == preempted_at                    # resumed from the checkpoint, not step 0
    assert outcome["num_processes"] == 2
    assert (folder / f"{job_id}_1_log.out").read_text().count("Starting with JobEnvironment") == 2
    rank1 = submitit.SlurmJob(folder, job_id, tasks=(1,)).result()        # rank 1 resumed and finished with rank 0
    assert rank1 == {"rank": 1, "world_size": 2, "state": "DONE", "step": steps}

    records = metrics_records(run_dir)
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == list(range(1, steps + 1))                        # the step counter continued, none repeated
    assert [r["step"] for r in records if r["kind"] == "val"] == list(range(0, steps + 1, 2))
    assert sorted(trial.intermediate_values) == list(range(2, steps + 1, 2))

    client, runs = mlflow_trial_runs(path)
    assert list(runs) == [0]                                               # the same MLflow run, re-opened
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["sweeper.state"] == "COMPLETE"
    assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
    assert run.data.tags["sweeper.resumed_from_step"] == str(preempted_at)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, steps + 1))


@pytest.mark.slurm
def test_two_task_trial_trains_data_parallel(slurm_cluster, tmp_path):
    path = study_file(tmp_path, "ddp", real_trainer=True, executor={"tasks_per_node": 2, "cpus_per_task": 1})
    run_study(path, progress=False, log=lambda message: None)

    (trial,) = trials_of(path)
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("stderr_tail")
    job_id, folder = trial.user_attrs["job_id"], Path(trial.user_attrs["trial_dir"]) / "submitit"
    outcome = json.loads((folder.parent / "outcome.json").read_text())
    assert outcome["num_processes"] == 2                                  # accelerate formed a group of 2
    rank1 = submitit.SlurmJob(folder, job_id, tasks=(1,)).result()        # rank 1 ran the trainer alongside
    assert rank1 == {"rank": 1, "world_size": 2, "state": "DONE", "step": 4}
    assert sorted(trial.intermediate_values) == [2, 4]
    assert final_sacct_states(job_id) == ["COMPLETED"]


def _running_jobs(path: Path, count: int) -> list[tuple[str, Path]] | None:
    """The first ``count`` trials' jobs once each has started training (its stdout shows a step)."""
    jobs = [job_of(path, n) for n in range(count)]
    if not all(jobs):
        return None
    for job_id, folder in jobs:
        log = folder / f"{job_id}_0_log.out"
        if not log.exists() or "step" not in log.read_text():
            return None
    return jobs


@pytest.mark.extended  # test_postgres's Slurm study resumed by another driver and test_sweeper_driver's reattach cover it
@pytest.mark.slurm
def test_driver_killed_mid_study_reattaches_on_rerun_and_loses_nothing(slurm_cluster, tmp_path, background):
    path = study_file(tmp_path, "kill", real_trainer=False, base={"train": {"steps": 24, "eval_every": 8}},
                      budget={"n_trials": 3, "max_parallel": 2}, executor={"env": {"STANDIN_STEP_SECONDS": "1.0"}},
                      tracking={"enabled": True})
    # 24 s per trial: the first job must still run when the second starts training and the driver is killed
    # (at 0.25 s per step, on an idle machine, the first had finished by then)
    driver = background(path)
    jobs = wait_for(lambda: _running_jobs(path, 2) if driver.poll() is None else pytest.fail(driver.stdout.read()),
                    "two trials training")
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    assert [t.state.name for t in trials_of(path)] == ["RUNNING", "RUNNING"]
    # the jobs outlive their driver (sacct lags slurmctld: a job that runs may still read PENDING for a moment)
    wait_for(lambda: all((sacct_states(job_id) or [""])[-1] == "RUNNING" for job_id, _ in jobs), "the jobs RUNNING in sacct", 20)

    log: list[str] = []
    report = run_study(path, progress=False, log=log.append)
    assert report.reattached == 2 and report.requeued == 0, log
    trials = trials_of(path)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3, [t.user_attrs.get("fail_reason") for t in trials]
    assert [t.user_attrs["job_id"] for t in trials[:2]] == [job_id for job_id, _ in jobs]   # the same jobs
    assert not any(t.user_attrs.get("lost") for t in trials)
    assert all(t.user_attrs["last_step"] == 24 for t in trials)
    _, runs = mlflow_trial_runs(path)
    assert sorted(runs) == [0, 1, 2] and all(r.info.status == "FINISHED" for r in runs.values())


@pytest.mark.slurm
@pytest.mark.parametrize("on_interrupt", ["cancel", "detach"])
def test_ctrl_c_cancels_the_studys_slurm_jobs_or_leaves_them_running(slurm_cluster, tmp_path, background, on_interrupt):
    path = study_file(tmp_path, "sigint", real_trainer=False, base={"train": {"steps": 3000, "eval_every": 10}},
                      budget={"n_trials": 2, "max_parallel": 2},
                      executor={"env": {"STANDIN_STEP_SECONDS": "0.1"}, "on_interrupt": on_interrupt})
    driver = background(path)
    jobs = wait_for(lambda: _running_jobs(path, 2) if driver.poll() is None else pytest.fail(driver.stdout.read()),
                    "two trials training")
    driver.send_signal(signal.SIGINT)
    output, _ = driver.communicate(timeout=120)
    trials = trials_of(path)
    if on_interrupt == "cancel":
        assert "interrupted: cancelling 2 trial(s)" in output
        for job_id, _ in jobs:
            assert final_sacct_states(job_id)[-1].startswith("CANCELLED")
        assert [t.state.name for t in trials[:2]] == ["FAIL", "FAIL"]
        assert all(t.user_attrs.get("lost") for t in trials[:2])           # re-queued for the next run
        assert [t.state.name for t in trials[2:]] == ["WAITING", "WAITING"]
    else:
        assert "interrupted: 2 trial(s) keep running" in output
        assert all(sacct_states(job_id)[-1] == "RUNNING" for job_id, _ in jobs)   # a re-run re-attaches to them
        assert [t.state.name for t in trials] == ["RUNNING", "RUNNING"]
