"""Warm start of local trials (sweeper/run/executors/warm.py): a per-study server that has done the imports
forks each trial. Real processes throughout: the server, its client script as submitit's controller runs
it, real signals, and real studies of the shipped model through the driver.

- A warm trial computes exactly what a cold one does (same config, same seed: the same metrics).
- The client passes its exit code, the signal that killed the trial, its stdio, working folder,
  environment and process group; it forwards the controller's signals; killed itself, it takes the trial with it.
- With no server (stopped, or never started) a trial starts cold and says so; the server exits after the
  driver's end once its trials have ended.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import tiny_run_config
from sweeper.run.driver import run_study
from sweeper.run.executors.local import LocalExecutor, LocalExecutorSpec
from sweeper.run.executors.warm import CLIENT_SCRIPT, FOLDER_PREFIX, WarmServer, remove_stale_folders
from sweeper.run.lock import process_alive
from sweeper.study.spec import SpecError, load_spec
from sweeper.run.storage import make_storage

REPO = Path(__file__).resolve().parents[1]
PROBE = textwrap.dedent("""
    import json, os, signal, sys, time
    mode = sys.argv[1]
    if mode == "report":
        print(json.dumps({"cwd": os.getcwd(), "probe": os.environ.get("WARM_PROBE"), "argv": sys.argv[1:],
                          "pid": os.getpid(), "pgid": os.getpgrp()}))
        print("to stderr", file=sys.stderr)
        sys.exit(3)
    if mode == "interrupt":
        raise KeyboardInterrupt
    if mode == "sigterm-self":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    if mode == "wait-usr2":
        got = []
        signal.signal(signal.SIGUSR2, lambda *a: got.append(1))
        open(sys.argv[2], "w").write(str(os.getpid()))
        deadline = time.time() + 30
        while not got and time.time() < deadline:
            time.sleep(0.05)
        sys.exit(7 if got else 1)
    if mode == "sleep":
        open(sys.argv[2], "w").write(str(os.getpid()))
        time.sleep(60)
""")


def wait_for(condition, what: str, timeout: float = 30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the client tests: the stand-in's entry point, so it imports little."""
    probe_dir = tmp_path_factory.mktemp("probe")
    (probe_dir / "warm_probe.py").write_text(PROBE)
    env = {"PYTHONPATH": os.pathsep.join([str(probe_dir), str(REPO)])}
    warm = WarmServer(sys.executable, [], env, "tests/standin_trainer.py:train")
    wait_for(lambda: (warm.folder / "server.sock").exists(), "the server to listen")
    yield warm
    warm.close()
    wait_for(lambda: warm.process.poll() is not None, "the server to exit")


def client(server: WarmServer, tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """The client as submitit's controller starts it, here in a process group of its own."""
    command = [sys.executable, str(CLIENT_SCRIPT), str(server.folder), "-u", "-m", "warm_probe", *args]
    out, err = open(tmp_path / "out", "w"), open(tmp_path / "err", "w")
    return subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=err, env={**os.environ, **(env or {})},
                            process_group=0)


def test_the_client_passes_exit_code_stdio_cwd_env_argv_and_process_group(server, tmp_path):
    process = client(server, tmp_path, "report", "extra", env={"WARM_PROBE": "seen"})
    assert process.wait(timeout=30) == 3
    report = json.loads((tmp_path / "out").read_text())
    assert report["cwd"] == str(tmp_path) and report["probe"] == "seen" and report["argv"] == ["report", "extra"]
    err = (tmp_path / "err").read_text()
    assert "to stderr" in err and f"trial process {report['pid']} forked from the warm server" in err
    assert report["pid"] != process.pid
    assert report["pgid"] == process.pid  # the client's group, where a cold trial process would be


def test_a_trial_killed_by_a_signal_kills_its_client_with_it(server, tmp_path):
    process = client(server, tmp_path, "sigterm-self")
    assert process.wait(timeout=30) == -signal.SIGTERM
    cold = subprocess.run([sys.executable, "-c", "raise KeyboardInterrupt"], capture_output=True)
    interrupted = client(server, tmp_path, "interrupt")     # python dies of SIGINT on an uncaught KeyboardInterrupt
    assert interrupted.wait(timeout=30) == cold.returncode == -signal.SIGINT
    assert "KeyboardInterrupt" in (tmp_path / "err").read_text()


def test_the_controllers_signals_reach_the_trial(server, tmp_path):
    """submitit's timeout signal (SIGUSR2) sent to the client reaches the forked trial."""
    marker = tmp_path / "pid"
    process = client(server, tmp_path, "wait-usr2", str(marker))
    wait_for(marker.exists, "the trial to start")
    process.send_signal(signal.SIGUSR2)
    assert process.wait(timeout=30) == 7


def test_a_killed_client_takes_its_trial_with_it(server, tmp_path):
    marker = tmp_path / "pid"
    process = client(server, tmp_path, "sleep", str(marker))
    trial_pid = int(wait_for(lambda: marker.exists() and marker.read_text(), "the trial to start"))
    assert process_alive(trial_pid)
    process.kill()
    process.wait(timeout=10)
    wait_for(lambda: not process_alive(trial_pid), "the server to kill the orphaned trial", timeout=10)


def test_with_no_server_a_trial_starts_cold_and_says_so(tmp_path):
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    (probe_dir / "warm_probe.py").write_text(PROBE)
    command = [sys.executable, str(CLIENT_SCRIPT), str(tmp_path / "no-server"), "-u", "-m", "warm_probe", "report"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(probe_dir)})
    assert done.returncode == 3 and json.loads(done.stdout)["argv"] == ["report"]
    assert "warm start unavailable" in done.stderr and "forked" not in done.stderr


def study(tmp_path: Path, name: str, warm: bool) -> Path:
    base = tiny_run_config(tmp_path / "unused", train={"steps": 2, "eval_every": 2})
    base["train"].pop("output_dir")
    spec = {"study": {"name": name}, "objective": {"metric": "val/pass@4"}, "base": base,
            "space": {"params": {"clip.eps_high": {"type": "float", "low": 0.2, "high": 0.3}}},
            "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"},
            "budget": {"n_trials": 3, "max_parallel": 1},
            "executor": {"type": "local", "warm_start": warm, "resources": {"timeout_min": 10}},
            "tracking": {"enabled": True}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def trials(path: Path):
    spec = load_spec(path)
    return optuna.load_study(study_name=spec.study.name, storage=make_storage(spec.study.storage)).trials


def warm_servers_of_this_process() -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"from sweeper.run.executors.warm import main; main()" in argv and str(os.getpid()).encode() in argv and process_alive(int(proc.name)):
                found.append(int(proc.name))
    return found


def test_warm_trials_compute_what_cold_ones_do_and_the_server_leaves_with_the_study(tmp_path):
    """The same 3 configs (same sampler seed) warm and cold: identical metrics at every step; the warm
    trials were forked; no server is left once the study is over."""
    warm_path, cold_path = study(tmp_path, "warm", True), study(tmp_path, "cold", False)
    servers_before = set(warm_servers_of_this_process())  # the client tests' server may still run
    run_study(warm_path, progress=False, log=lambda message: None)
    run_study(cold_path, progress=False, log=lambda message: None)
    warm_trials, cold_trials = trials(warm_path), trials(cold_path)
    assert [t.state.name for t in warm_trials] == ["COMPLETE"] * 3 == [t.state.name for t in cold_trials]
    for warm_trial, cold_trial in zip(warm_trials, cold_trials):
        assert warm_trial.params == cold_trial.params
        warm_log = Path(warm_trial.user_attrs["log_paths"]["stderr"]).read_text()
        cold_log = Path(cold_trial.user_attrs["log_paths"]["stderr"]).read_text()
        assert "forked from the warm server" in warm_log and "forked" not in cold_log
        metrics = [[{k: v for k, v in json.loads(line).items() if not k.startswith("time")}
                    for line in (Path(t.user_attrs["trial_dir"]) / "run" / "metrics.jsonl").read_text().splitlines()]
                   for t in (warm_trial, cold_trial)]
        assert metrics[0] == metrics[1]
        assert warm_trial.value == cold_trial.value
    wait_for(lambda: not set(warm_servers_of_this_process()) - servers_before, "the study's warm server to exit")


def test_warm_start_is_auto_true_or_false_and_auto_leaves_gpu_trials_cold(tmp_path):
    path = study(tmp_path, "bad", True)
    spec = yaml.safe_load(path.read_text())
    spec["executor"]["warm_start"] = "maybe"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match=r"executor\.warm_start: must be auto, true or false \(got 'maybe'\)"):
        load_spec(path)
    gpu = LocalExecutor(LocalExecutorSpec(type="local", resources={"gpus_per_trial": 1}))
    assert gpu._python() is None and gpu.warm is None          # submitit's default: the driver's interpreter, cold
    cpu = LocalExecutor(LocalExecutorSpec(type="local"))
    try:
        assert str(CLIENT_SCRIPT) in cpu._python()
        assert cpu.warm is not None
    finally:
        cpu.close()
    wait_for(lambda: cpu.warm.process.poll() is not None, "the server to exit")


def test_a_new_server_removes_the_folders_of_dead_servers(tmp_path):
    """A server SIGKILLed with its driver's process group leaves its folder in /tmp; the next one removes it
    (and leaves a live server's alone)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    (stale / "server.pid").write_text(str(gone.pid))
    live = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    (live / "server.pid").write_text(str(os.getpid()))
    try:
        remove_stale_folders()
        assert not stale.exists() and live.exists()
    finally:
        shutil.rmtree(live, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
