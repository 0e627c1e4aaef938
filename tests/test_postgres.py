"""PostgreSQL for studies that outgrow a file (issue 17): the Optuna storage and the MLflow tracking
store on a real server (scripts/postgres.sh, tests marked ``postgres``).

Real parts throughout: the PostgreSQL server over TCP on 127.0.0.1 with password logins, psycopg 3,
the sweeper driver and CLI, the submitit local executor and the Slurm test cluster (marked
``slurm`` too), trial processes running the stand-in trainer (tests/standin_trainer.py), MLflow's
SQLAlchemy store and ``sweeper ui``'s ``mlflow server``. "Another host" is a driver started in its
own UTS and pid namespaces (``unshare``): its own host name and pids, the same filesystem and
network, as a login node and a compute node share a cluster's.

Without a server (no marker): ``sweeper validate`` names the extra when the driver is missing, and
``sweeper run`` on a server that cannot be reached stops with one clear paragraph before launching.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml

from _signals import default_sigint
from sweeper.run.driver import run_study
from sweeper.study.spec import SpecError, load_spec
from sweeper.run.storage import make_storage
from sweeper.results.ui import free_port
from _studies import quiet, trials_of

REPO = Path(__file__).resolve().parents[1]
STANDIN = f"{REPO / 'tests' / 'standin_trainer.py'}:train"
DEADLINE_S = 300  # a guard against a hung server or cluster, not a speed check
LEASE_TTL_S = "3"


def study_file(tmp_path: Path, *, name: str = "pg", storage: str | None = None, steps: int = 10,
               step_seconds: float = 0.01, executor: dict | None = None, **sections) -> Path:
    spec = {
        "study": {"name": name, **({"storage": storage} if storage else {})},
        "objective": {"metric": "val/pass@8"},
        "base": {"train": {"steps": steps, "eval_every": 2}},
        "space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.4}}},
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "budget": {"n_trials": 2, "max_parallel": 1},
        "executor": executor or {"type": "local", "entrypoint": STANDIN,
                                 "env": {"STANDIN_STEP_SECONDS": str(step_seconds)}},
        "tracking": {"enabled": False},
    }
    spec.update(sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sweeper_cli(*args: str, env: dict | None = None, timeout: float = 120, block: str | None = None):
    """``sweeper ARGS`` in a fresh process; ``block`` makes that module unimportable there (Python's
    documented ``sys.modules[name] = None``), as on a machine where it is not installed."""
    code = "import sys\n"
    if block:
        code += f"sys.modules[{block!r}] = None\n"
    code += "from sweeper.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# ------------------------------------------------------------------ drivers and reachability (no server needed)


def test_validate_names_the_extra_when_the_driver_is_missing(tmp_path):
    url = "postgresql://optuna@127.0.0.1:5432/optuna"
    path = study_file(tmp_path, storage=url)
    result = sweeper_cli("validate", str(path), block="psycopg")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.startswith(f"error: study.storage: {url} needs the database driver psycopg "
                              f"(SQLAlchemy's default driver for postgresql://)"), message
    assert "pip install 'entropy-sweeper[postgres]'" in message
    ok = sweeper_cli("validate", str(path))                            # with the extra installed it validates
    assert ok.returncode == 0 and "storage   postgresql://optuna@127.0.0.1:5432/optuna" in ok.stdout, ok.stderr

    tracked = study_file(tmp_path, name="t", tracking={"uri": "postgresql://mlflow:secret@db.lab:5432/mlflow"})
    result = sweeper_cli("run", str(tracked), block="psycopg")         # run checks the same, before anything
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: tracking.uri: postgresql://mlflow:***@db.lab:5432/mlflow needs the database driver psycopg" in result.stderr
    assert "secret" not in result.stderr
    assert not (tmp_path / "studies" / "t").exists()


def test_explicit_drivers_in_the_url_are_checked(tmp_path, monkeypatch):
    load_spec(study_file(tmp_path, storage="postgresql+psycopg://u@127.0.0.1/db"))  # psycopg 3: the extra's driver
    for module in ("psycopg2", "pg8000"):                              # not installed, whatever this machine has
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(SpecError) as psycopg2:
        load_spec(study_file(tmp_path, storage="postgresql+psycopg2://u@127.0.0.1/db"))
    assert str(psycopg2.value).startswith(
        "study.storage: postgresql+psycopg2://u@127.0.0.1/db needs the database driver psycopg2, which is not installed")
    assert "pip install psycopg2-binary, or use psycopg 3: postgresql+psycopg:// or postgresql:// with pip install " \
           "'entropy-sweeper[postgres]'" in str(psycopg2.value)
    with pytest.raises(SpecError, match=r"study.storage: postgresql\+asyncpg is an asyncio driver; Optuna and MLflow need a synchronous one"):
        load_spec(study_file(tmp_path, storage="postgresql+asyncpg://u@127.0.0.1/db"))
    with pytest.raises(SpecError, match=r"tracking.uri: postgresql\+pg8000://u@h/m needs the database driver pg8000.*pip install pg8000"):
        load_spec(study_file(tmp_path, tracking={"uri": "postgresql+pg8000://u@h/m"}))
    load_spec(study_file(tmp_path, tracking={"uri": "postgresql+pg8000://u@h/m", "enabled": False}))  # off: not needed
    load_spec(study_file(tmp_path, tracking={"uri": "http://mlflow.lab:5000"}))                       # a server: no driver


def test_run_on_a_server_that_cannot_be_reached_stops_before_launching(tmp_path):
    port = free_port()                                                 # nothing listens there
    path = study_file(tmp_path, storage=f"postgresql://sweeper:hunter2@127.0.0.1:{port}/optuna")
    started = time.monotonic()
    result = sweeper_cli("run", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr
    message = result.stderr.strip()
    assert message.startswith(f"error: study.storage: cannot connect to postgresql://sweeper:***@127.0.0.1:{port}/optuna:"), message
    assert "Connection refused" in message or "connection refused" in message.lower()
    assert f"Check that the database server runs and listens on 127.0.0.1:{port}, and that this machine" in message
    assert not (tmp_path / "studies" / "pg" / "trials").exists()       # nothing was launched
    assert time.monotonic() - started < 60


# ------------------------------------------------------------------ against the PostgreSQL test server


def _wait_for_running(path: Path, count: int, driver: subprocess.Popen, deadline_s: float = DEADLINE_S) -> list:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the driver ended before trials were in flight: " + (driver.stdout.read() if driver.stdout else "")
        try:
            running = [t for t in trials_of(path) if t.state.name == "RUNNING" and "job_id" in t.user_attrs]
        except KeyError:  # the driver has not created the study yet
            running = []
        if len(running) >= count and all(t.intermediate_values for t in running):
            return running
        time.sleep(0.3)
    raise AssertionError(f"{count} trials never got in flight")


def _start_driver(path: Path, *, host: str | None = None, **popen) -> subprocess.Popen:
    """``sweeper run`` in the background; ``host``: on "another host" (own UTS and pid namespaces)."""
    command = [sys.executable, "-m", "sweeper", "run", str(path), "--no-progress"]
    if host is not None:
        command = OTHER_HOST + [host] + command
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "SWEEPER_DRIVER_LEASE_TTL": LEASE_TTL_S}, preexec_fn=default_sigint, **popen)


def _each_ran_once(trials) -> None:
    for t in trials:
        submissions = list((Path(t.user_attrs["trial_dir"]) / "submitit").glob("*_submitted.pkl"))
        assert len(submissions) == 1, f"trial {t.number} was submitted {len(submissions)} times"


def _peak_in_flight(trials) -> int:
    """The most trials that were asked and not yet told at any moment (driver handovers included)."""
    events = sorted([(t.datetime_start, 1) for t in trials] + [(t.datetime_complete, -1) for t in trials])
    in_flight = peak = 0
    for _, delta in events:
        in_flight += delta
        peak = max(peak, in_flight)
    return peak


def _every_validation_recorded(trial, steps: int) -> None:
    assert sorted(trial.intermediate_values) == list(range(2, steps + 1, 2)), (trial.number, trial.intermediate_values)


@pytest.mark.postgres
def test_local_study_on_postgres_four_in_parallel_survives_a_killed_driver(postgres_database, tmp_path):
    steps = 20
    path = study_file(tmp_path, storage=postgres_database("optuna"), steps=steps, step_seconds=0.15,
                      budget={"n_trials": 8, "max_parallel": 4})
    driver = _start_driver(path)
    try:
        in_flight = _wait_for_running(path, 4, driver)
    finally:
        driver.send_signal(signal.SIGKILL)                             # the driver only: its trials keep running
        driver.wait()
    assert len(in_flight) == 4
    report = run_study(path, progress=False, log=quiet)
    assert report.reattached == 4 and report.requeued == 0
    trials = trials_of(path)
    assert [t.number for t in trials] == list(range(8))                # every trial recorded once
    assert [t.state.name for t in trials] == ["COMPLETE"] * 8, [t.user_attrs.get("fail_reason") for t in trials]
    assert len({t.params["clip.eps_high"] for t in trials}) == 8       # nothing duplicated
    for trial in trials:                                               # no intermediate value lost, killed driver or not
        _every_validation_recorded(trial, steps)
        assert trial.value == trial.intermediate_values[steps]
    _each_ran_once(trials)
    assert _peak_in_flight(trials) == 4
    assert optuna.get_all_study_names(make_storage(load_spec(path).study.storage)) == ["pg"]   # the lease is gone


def _http_json(url: str, payload: dict | None = None) -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.postgres
def test_mlflow_store_on_postgres_with_artifacts_on_the_shared_filesystem_and_sweeper_ui(postgres_database, tmp_path):
    from mlflow.tracking import MlflowClient

    from sweeper.tracking import find_study_run, find_trial_runs

    tracking_uri = postgres_database("mlflow")
    path = study_file(tmp_path, storage=postgres_database("optuna"), budget={"n_trials": 2, "max_parallel": 2},
                      tracking={"uri": tracking_uri, "artifact_location": "shared/mlartifacts"})
    spec = load_spec(path)
    artifacts = (tmp_path / "shared" / "mlartifacts").resolve()
    assert spec.tracking.artifact_location == artifacts.as_uri()       # relative to the study file
    run_study(path, progress=False, log=quiet)
    trials = trials_of(path)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("pg")
    assert experiment.artifact_location == artifacts.as_uri()
    parent = find_study_run(client, experiment.experiment_id, "pg")
    assert parent.info.status == "FINISHED" and parent.data.metrics["study/n_complete"] == 2
    children = find_trial_runs(client, parent.info.run_id, experiment.experiment_id)
    assert sorted(children) == [0, 1]
    for trial in trials:
        run = children[trial.number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED" and run.data.tags["sweeper.state"] == "COMPLETE"
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/pass_at_8") if m.step > 0}
        assert history == pytest.approx(trial.intermediate_values)     # every validation, as Optuna has it
        assert run.data.params["clip.eps_high"] == str(trial.params["clip.eps_high"])
        assert run.info.artifact_uri == f"{artifacts.as_uri()}/{run.info.run_id}/artifacts"
        on_disk = artifacts / run.info.run_id / "artifacts" / "config" / "trial_config.yaml"
        assert yaml.safe_load(on_disk.read_text())["clip"]["eps_high"] == trial.params["clip.eps_high"]
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.md", "best_params.json", "plots"} <= parent_files
    assert (artifacts / parent.info.run_id / "artifacts" / "summary.md").exists()

    # `sweeper ui` serves the PostgreSQL store: the runs and the artifacts from the shared filesystem
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "sweeper", "ui", str(path), "--port", str(port)], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not any("/#/experiments/" in line for line in lines):
            line = ui.stdout.readline()
            assert line or ui.poll() is None, "".join(lines)
            lines.append(line)
        page = next(line.strip() for line in lines if "/#/experiments/" in line)
        assert page == f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
        assert all(password_of(tracking_uri) not in line for line in lines)
        base = f"http://127.0.0.1:{port}"
        runs = _http_json(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment.experiment_id]})["runs"]
        names = sorted(r["info"]["run_name"] for r in runs)
        assert names == ["study-pg", "trial-0000", "trial-0001"]
        child = children[1].info.run_id
        listed = _http_json(f"{base}/ajax-api/2.0/mlflow/artifacts/list?run_uuid={child}&path=config")
        assert [f["path"] for f in listed["files"]] == ["config/trial_config.yaml"]
        with urllib.request.urlopen(f"{base}/get-artifact?path=config/trial_config.yaml&run_uuid={child}", timeout=30) as response:
            served = response.read().decode()
        assert served == (artifacts / child / "artifacts" / "config" / "trial_config.yaml").read_text()
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        assert ui.wait(60) == 0


def password_of(url: str) -> str:
    return re.match(r"^[^:]+://[^:]+:([^@]+)@", url).group(1)


# ------------------------------------------------------------------ two drivers, two hosts


OTHER_HOST = ["unshare", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", 'hostname "$0" && exec "$@"']


def _can_simulate_another_host() -> bool:
    try:
        return subprocess.run(OTHER_HOST + ["node-x", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _lease_holder(path: Path) -> dict | None:
    from sweeper.run.lock import LEASE_ATTR, is_lease_study

    spec = load_spec(path)
    leases = [s for s in make_storage(spec.study.storage).get_all_studies() if is_lease_study(s.study_name)]
    return leases[-1].system_attrs.get(LEASE_ATTR) if leases else None


@pytest.mark.postgres
def test_two_drivers_on_two_hosts_one_runs_the_other_is_refused_then_takes_over(postgres_database, tmp_path):
    if not _can_simulate_another_host():
        pytest.skip("`unshare --uts --pid` is not permitted here (needs root): cannot simulate another host")
    steps = 24
    path = study_file(tmp_path, storage=postgres_database("optuna"), steps=steps, step_seconds=0.15,
                      budget={"n_trials": 4, "max_parallel": 2})
    # both at once: this host and node-b, each with its own driver process group (so it can be killed with its jobs)
    here = _start_driver(path, start_new_session=True)
    there = _start_driver(path, host="node-b", start_new_session=True)
    refused_output = None
    deadline = time.monotonic() + DEADLINE_S
    while refused_output is None and time.monotonic() < deadline:
        for process in (here, there):
            if process.poll() is not None:
                refused_output = process.stdout.read()
                refused, running = process, (there if process is here else here)
        time.sleep(0.1)
    assert refused_output is not None, "neither driver was refused"
    assert refused.returncode == 2, refused_output
    running_host = "node-b" if running is there else os.uname().nodename
    assert re.search(rf"error: study 'pg' is already being run by another driver: pid \d+ on host {running_host} ", refused_output), refused_output
    assert "Two drivers on one study would launch duplicate trials" in refused_output
    assert "Traceback" not in refused_output
    holder = _lease_holder(path)
    assert holder["host"] == running_host

    # the running driver's machine dies (the driver and its trial processes): the other host takes over
    _wait_for_running(path, 2, running)
    os.killpg(running.pid, signal.SIGKILL)
    running.wait()
    time.sleep(float(LEASE_TTL_S) + 0.5)                               # its heartbeat goes stale
    taker = _start_driver(path, host=None if refused is here else "node-b")
    output, _ = taker.communicate(timeout=DEADLINE_S)
    assert taker.returncode == 0, output
    # taken over only after the heartbeat stood still for a ttl on this host's own clock (issue 26, L1)
    assert re.search(rf"taking over the driver lease of pid \d+ on host {running_host} .*its heartbeat did not move for "
                     rf"3 s on this host's clock \(no heartbeat for \d+ s by the wall clocks \(ttl 3 s\)\)", output), output
    trials = trials_of(path)
    lost = [t for t in trials if t.user_attrs.get("lost")]
    counted = [t for t in trials if not t.user_attrs.get("lost")]
    # the dead host's local trial processes died with it: recorded as lost and re-queued once each
    assert len(lost) == 2 and all(t.state.name == "FAIL" for t in lost)
    assert len(counted) == 4 and all(t.state.name == "COMPLETE" for t in counted)
    assert sorted(t.user_attrs["requeued_from"] for t in counted if "requeued_from" in t.user_attrs) == sorted(t.number for t in lost)
    assert len({t.params["clip.eps_high"] for t in counted}) == 4      # no config twice
    for trial in counted:
        _every_validation_recorded(trial, steps)
    _each_ran_once(counted)
    assert _lease_holder(path) is None                                 # released at the end


@pytest.mark.postgres
def test_a_paused_driver_taken_over_from_another_host_stops_when_it_wakes(postgres_database, tmp_path):
    if not _can_simulate_another_host():
        pytest.skip("`unshare --uts --pid` is not permitted here (needs root): cannot simulate another host")
    path = study_file(tmp_path, storage=postgres_database("optuna"), steps=20, step_seconds=0.15,
                      budget={"n_trials": 2, "max_parallel": 2})
    paused = _start_driver(path, start_new_session=True)
    try:
        _wait_for_running(path, 1, paused)
        os.killpg(paused.pid, signal.SIGSTOP)                          # a hung login node: driver and trial stop
        time.sleep(float(LEASE_TTL_S) + 0.5)
        taker = _start_driver(path, host="node-b")
        seen = []
        while not any(": lost (" in line for line in seen):            # node-b holds the lease and recovers the trials
            line = taker.stdout.readline()
            assert line, "".join(seen)
            seen.append(line)
        assert any("taking over the driver lease" in line for line in seen), "".join(seen)
        os.killpg(paused.pid, signal.SIGCONT)                          # it wakes up while node-b runs the study
        woke_output, _ = paused.communicate(timeout=DEADLINE_S)
        rest, _ = taker.communicate(timeout=DEADLINE_S)
    finally:
        if paused.poll() is None:
            os.killpg(paused.pid, signal.SIGKILL)
        if "taker" in locals() and taker.poll() is None:
            taker.kill()
    assert paused.returncode == 2, woke_output
    assert re.search(r"error: study 'pg': this driver lost its lease in postgresql://sweeper:\*\*\*@127\.0\.0\.1:\d+/\S+: "
                     r"pid \d+ on host node-b .*took the lease over", woke_output), woke_output
    # (submitit's LocalJob.__del__ may complain at interpreter exit about a job left running, as after
    # Ctrl-C with detach: not the driver's output)
    assert "Traceback" not in woke_output.split("Exception ignored in: <function LocalJob.__del__")[0]
    assert taker.returncode == 0, "".join(seen) + rest
    trials = trials_of(path)
    counted = [t for t in trials if not t.user_attrs.get("lost")]
    assert len(counted) == 2 and all(t.state.name == "COMPLETE" for t in counted)
    assert all(t.state.name == "FAIL" for t in trials if t.user_attrs.get("lost"))   # not re-told by the woken driver


# ------------------------------------------------------------------ Slurm + PostgreSQL


@pytest.mark.postgres
@pytest.mark.slurm
def test_slurm_study_on_postgres_four_in_parallel_resumed_by_a_driver_on_another_host(slurm_cluster, postgres_database, tmp_path):
    if not _can_simulate_another_host():
        pytest.skip("`unshare --uts --pid` is not permitted here (needs root): cannot simulate another host")
    steps = 16
    path = study_file(tmp_path, storage=postgres_database("optuna"), steps=steps,
                      budget={"n_trials": 6, "max_parallel": 4},
                      executor={"type": "slurm", "profile": "local-test", "state_poll_s": 1, "entrypoint": STANDIN,
                                "env": {"STANDIN_STEP_SECONDS": "0.25"}})
    first = _start_driver(path)
    try:
        _wait_for_running(path, 1, first)
        deadline = time.monotonic() + DEADLINE_S
        while sum(1 for t in trials_of(path) if "job_id" in t.user_attrs) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)                                            # 4 in flight (the node runs 2 at a time)
    finally:
        first.send_signal(signal.SIGKILL)                              # the login node's driver dies; the jobs do not
        first.wait()
    submitted = {t.number: t.user_attrs["job_id"] for t in trials_of(path) if "job_id" in t.user_attrs}
    left_running = [t.number for t in trials_of(path) if t.state.name == "RUNNING"]
    assert len(submitted) >= 4 and left_running
    time.sleep(float(LEASE_TTL_S) + 0.5)
    second = _start_driver(path, host="node-b")                        # resumed from another node
    try:
        output, _ = second.communicate(timeout=DEADLINE_S)
    finally:
        if second.poll() is None:
            second.kill()
            job_ids = [t.user_attrs["job_id"] for t in trials_of(path) if "job_id" in t.user_attrs]
            subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60)
    assert second.returncode == 0, output
    assert "taking over the driver lease" in output
    assert sorted(int(n) for n in re.findall(r"trial (\d+): re-attached to job", output)) == left_running
    trials = trials_of(path)
    assert [t.number for t in trials] == list(range(6))
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6, [t.user_attrs.get("fail_reason") for t in trials]
    assert not any(t.user_attrs.get("lost") for t in trials)            # Slurm jobs outlive the driver: nothing lost
    assert {t.number: t.user_attrs["job_id"] for t in trials if t.number in submitted} == submitted   # the same jobs
    assert len({t.user_attrs["job_id"] for t in trials}) == 6
    assert _peak_in_flight(trials) == 4
    for trial in trials:
        _every_validation_recorded(trial, steps)


def test_a_server_that_accepts_but_never_answers_times_out_with_the_same_clear_error(monkeypatch):
    import socket

    import sweeper.run.storage_kinds

    monkeypatch.setattr(sweeper.run.storage_kinds, "CONNECT_TIMEOUT_S", 2)      # the default is 10 s
    with socket.socket() as hung:                                      # the kernel accepts; nobody ever answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"postgresql://sweeper@127.0.0.1:{hung.getsockname()[1]}/optuna"
        started = time.monotonic()
        with pytest.raises(SpecError) as refused:
            make_storage(url)
    assert time.monotonic() - started < 30
    message = str(refused.value)
    assert message.startswith(f"study.storage: cannot connect to {url}:") and "timeout expired" in message, message


def test_the_cluster_example_is_a_valid_multi_node_postgres_study():
    spec = load_spec(REPO / "examples" / "cluster_postgres.yaml")
    assert spec.study.storage == "postgresql://optuna@db.lab:5432/optuna"
    assert spec.tracking.uri == "postgresql://mlflow@db.lab:5432/mlflow"
    assert spec.tracking.artifact_location == "file:///shared/mlartifacts/siren-steer-7b"
    assert spec.executor.type == "slurm" and spec.executor.nodes == 2 and spec.executor.tasks_per_node == 4
    assert "export PGPASSFILE=$HOME/.pgpass" in spec.executor.setup
