"""``sweeper ui``: serve a study's MLflow tracking store on 127.0.0.1 and print where to look.

:class:`MlflowServer` runs ``mlflow server --no-serve-artifacts --default-artifact-root ...
--host 127.0.0.1 --port P --workers 1`` (the store's URI in its environment, never its argv) in its own process group (the server starts about ten
processes) and stops the whole group. :func:`cmd_ui` is the command: it starts the server for a
SQLite (or file) store, waits for ``/health``, prints the URL of the study's runs table
(``/#/experiments/<id>/runs?workflowType=machine_learning``: in MLflow 3 the bare experiment URL
opens a GenAI overview without runs) and stops the server on Ctrl-C or SIGTERM. For a store that
already is a tracking server (``http(s)://``), it only prints that server's URL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sweeper.urls import sqlite_file
from sweeper.tracking.names import default_artifact_root, experiment_runs_url, redact_uri


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class MlflowServer:
    """An ``mlflow server`` child process group; use as a context manager or start()/stop().

    Args:
        backend_store_uri: the tracking store (``sqlite:///.../mlflow.db``).
        artifact_root: ``--default-artifact-root`` (experiments created by sweeper carry their own
            artifact location; this only matters for experiments created through the UI).
        host, port: where to listen (port None = a free one).
        log_path: the server's stdout/stderr go here (None = discarded).
        app_name: ``--app-name`` (``basic-auth``: MLflow's users and passwords, for a shared node; see
            docs/threats.md).
    """

    def __init__(self, backend_store_uri: str, artifact_root: str | Path | None = None, host: str = "127.0.0.1",
                 port: int | None = None, workers: int = 1, log_path: str | Path | None = None,
                 app_name: str | None = None):
        self.backend_store_uri = backend_store_uri
        self.app_name = app_name
        self.artifact_root = artifact_root
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.workers = workers
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The server's argv. It holds no store URI (a password there would be in every user's ``ps``: the
        URI goes through the environment, ``MLFLOW_BACKEND_STORE_URI``) and serves no artifact store
        (``--no-serve-artifacts``: otherwise any local user could PUT files, written as this user into
        ``./mlartifacts``); the UI still shows the runs' artifacts, read from their own locations."""
        command = [sys.executable, "-m", "mlflow", "server", "--no-serve-artifacts",
                   "--host", self.host, "--port", str(self.port), "--workers", str(self.workers)]
        if self.artifact_root is not None:
            command += ["--default-artifact-root", str(self.artifact_root)]
        if self.app_name is not None:
            command += ["--app-name", self.app_name]
        return command

    def environment(self) -> dict[str, str]:
        return dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_BACKEND_STORE_URI=self.backend_store_uri)

    def start(self) -> "MlflowServer":
        env = self.environment()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            output = self.log_path.open("ab")
        else:
            output = subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=output,
                                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
        finally:
            if output is not subprocess.DEVNULL:
                output.close()
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Block until ``/health`` answers; RuntimeError (with the log's tail) if the server died or timed out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with code {self.process.returncode if self.process else None}"
                                   f"{self._log_tail()}")
            if self.healthy():
                return
            time.sleep(0.5)
        raise RuntimeError(f"mlflow server on {self.url} did not answer /health within {timeout:.0f}s{self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "; log tail:\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the whole process group, SIGKILL whatever is left after ``timeout`` seconds."""
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the group id is the leader's pid
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(pgid):
                self.process.poll()
                time.sleep(0.2)
            if not _group_alive(pgid):
                break
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.process = None

    def __enter__(self) -> "MlflowServer":
        self.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # the leader may be a zombie until reaped; a group of only zombies counts as gone
    try:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
        return False
    except OSError:
        return True


def experiment_id_of(uri: str, experiment: str) -> str | None:
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    return found.experiment_id if found is not None else None


def cmd_ui(tracking_uri: str, experiment: str, port: int = 5000, host: str = "127.0.0.1",
           log_path: str | Path | None = None, out=None, app_name: str | None = None) -> int:
    """Serve the tracking store and print the study's runs page; blocks until Ctrl-C. Returns an exit code."""
    out = out or sys.stdout
    if tracking_uri.startswith(("http://", "https://")):
        experiment_id = experiment_id_of(tracking_uri, experiment)
        base = redact_uri(tracking_uri)
        if experiment_id is None:
            print(f"{base} has no experiment {experiment!r} yet (run the study first); the UI is at {base}", file=out)
        else:
            print(experiment_runs_url(base, experiment_id), file=out)
        return 0
    db = sqlite_file(tracking_uri)
    if db is not None and not db.exists():
        print(f"error: no MLflow store at {db} yet: run the study first (sweeper run)", file=sys.stderr)
        return 1
    if port_in_use(host, port):
        print(f"error: port {port} on {host} is already in use: pass another one with --port", file=sys.stderr)
        return 2
    experiment_id = experiment_id_of(tracking_uri, experiment)
    artifact_root = default_artifact_root(tracking_uri)
    server = MlflowServer(tracking_uri, artifact_root, host=host, port=port, log_path=log_path, app_name=app_name)

    def on_stop_signal(signum, frame):
        raise KeyboardInterrupt

    # SIGINT too: a shell that starts a command in the background makes it ignore SIGINT
    previous = {sig: signal.signal(sig, on_stop_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        server.start()
        print(f"starting MLflow UI for {redact_uri(tracking_uri)} on {server.url} ...", file=out, flush=True)
        server.wait_healthy()
        if experiment_id is None:
            print(f"no experiment {experiment!r} in this store yet (run the study first); MLflow UI: {server.url}", file=out)
        else:
            print(f"MLflow UI for study experiment {experiment!r}:\n  {experiment_runs_url(server.url, experiment_id)}",
                  file=out)
        print("Ctrl-C stops the server.", file=out, flush=True)
        code = server.process.wait()
        print(f"mlflow server exited with code {code}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
