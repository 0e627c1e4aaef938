"""Warm start of local trials: a server process per study that imports what a trial imports once, and
forks each trial from there (``executor.warm_start`` of ``type: local``: on by default for CPU trials).

A trial process spends its first seconds importing (torch ~1 s, MLflow ~1.1 s, transformers' lazy modules
behind the tokenizer and the model ~2.6 s on 2 loaded cores); the work of the trial itself starts after.
The server pays that once: it imports :data:`PRELOAD` and the executor's entry point module (for the
default trainer, also torch, transformers, accelerate, MLflow and Optuna: :data:`PRELOAD_FOR_ENTRYPOINT`), listens
on a Unix socket in a private folder (mode 0700, peers checked to be this user), and for each trial
forks a child that takes the client's stdin/stdout/stderr, environment and working folder and runs
``python -m submitit.core._submit <job folder>`` as the cold process would. After each child ends, the
server also imports the modules that child had imported (listed by the child at its exit): transformers
loads most of itself lazily, on the first ``from_pretrained``, so the second trial onwards start with
those done too.

Process tree and signals (:mod:`.warm_client` is the task submitit's controller starts)::

    driver -> submitit controller -> warm_client ...forwards signals...> trial (forked by the server)
           -> warm server (outlives the driver while its trials run)

* The client forwards SIGINT, SIGTERM, SIGUSR1/2 and SIGHUP (cancel, timeout, requeue) to the trial and
  exits with its exit code or signal; when the client is killed (SIGKILL), the server kills the trial. The
  trial joins the client's process group (the driver's), where a cold trial process is: a signal to that
  group (a terminal's Ctrl-C, killpg, SIGSTOP of a hung machine) reaches it alike; the server ignores
  SIGINT and SIGHUP. A job still looks like submitit's to the driver: re-attach by the controller's pid works.
* GPUs: ``warm_start: auto`` (the default) starts only CPU trials warm (``gpus_per_trial: 0``: submitit hides
  every GPU from them, ``CUDA_VISIBLE_DEVICES=""``, and the server runs with the same). GPU trials need
  ``warm_start: true``: a child must initialise CUDA itself, which fails if the server initialised it
  (guarded below) and can miscount devices if an import cached a count; not yet run on a CUDA machine.
* Fork safety: the server runs one Python thread (it checks before each fork, and refuses, so the trial
  starts cold, if an import started one; the idle native pools torch and others start at import are what
  every forking DataLoader also inherits), never runs a torch op, and sets
  ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` so ``torch.cuda.is_available()`` does not initialise CUDA; it
  refuses to fork once ``torch.cuda.is_initialized()``. Each child reseeds ``random``, sets torch's
  thread count from its own ``OMP_NUM_THREADS`` and restores default signal handling.
* Modules that read the environment when imported (huggingface_hub's ``HF_HOME``, ``HF_HUB_OFFLINE``) see
  the trials' own: the server starts with the trial environment (``executor.env`` included).
* The server stops (new trials start cold) on SIGTERM from :meth:`WarmServer.close` at the driver's end,
  or when the driver's process is gone; it exits once its last trial ends.
* Anything wrong (no server, still importing after two minutes, a refused fork): the client execs the
  cold ``python`` it replaces, with a line in the trial's stderr.
"""

from __future__ import annotations

import atexit
import importlib
import io
import json
import os
import random
import runpy
import selectors
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from sweeper.run.lock import process_alive
from sweeper.run.executors.warm_client import SOCKET_NAME, STARTING_NAME, receive_exact

CLIENT_SCRIPT = Path(__file__).with_name("warm_client.py")
PRELOAD = ("submitit", "submitit.core.submission", "sweeper.run.trial")
PRELOAD_FOR_ENTRYPOINT = {  # what the default trainer's trial imports before its first step
    "trainers.grpo": ("torch", "transformers", "transformers.modeling_utils", "transformers.models.auto.modeling_auto",
                      "transformers.models.auto.tokenization_auto", "accelerate", "mlflow", "optuna",
                      "sweeper.tracking.trial", "trainers.grpo"),
}
MODULES_FILE = "modules-{pid}.txt"
FOLDER_PREFIX = "sweeper-warm-"
POLL_S = 0.2


class WarmServer:
    """The driver's handle on one server: started on first use, stopped by :meth:`close`."""

    def __init__(self, python: str, setup: list[str], env: dict[str, str], entrypoint: str):
        self.python = python
        remove_stale_folders()
        self.folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
        server = [*shlex.split(python), "-c", "from sweeper.run.executors.warm import main; main()",
                  str(self.folder), str(os.getpid()), entrypoint]
        command: list[str] | str = server
        if setup:
            command = " && ".join([*setup, "exec " + shlex.join(server)])
        server_env = {**os.environ, **env, "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
        with open(self.folder / "server.log", "ab") as log:
            self.process = subprocess.Popen(command, shell=bool(setup), env=server_env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)
        (self.folder / STARTING_NAME).write_text(str(self.process.pid))

    def python_command(self) -> str:
        """What submitit's LocalExecutor takes as ``python``: the client script run by the server's python."""
        return " ".join([self.python, shlex.quote(str(CLIENT_SCRIPT)), shlex.quote(str(self.folder))])

    def close(self) -> None:
        """No new trials through this server; it exits after its running trials (which outlive the driver)."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        else:
            shutil.rmtree(self.folder, ignore_errors=True)


def remove_stale_folders() -> None:
    """The folders of this user's servers that died without cleaning up (SIGKILL with their driver's group)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        try:
            if folder.stat().st_uid != os.getuid():
                continue
            pid = int((folder / STARTING_NAME).read_text().strip())
        except (OSError, ValueError):
            continue
        if not process_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- server


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [warm server {os.getpid()}] {message}", flush=True)


def _import_all(names: list[str]) -> int:
    imported = 0
    for name in names:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
            imported += 1
        except BaseException as error:  # noqa: BLE001 - a module that does not import here is skipped
            if isinstance(error, KeyboardInterrupt):
                raise
    return imported


def _fork_unsafe() -> str | None:
    """Why forking now would hand the child a broken runtime (None: safe)."""
    if threading.active_count() > 1:  # Python threads can hold the import or logging locks at the fork
        return f"the server runs {threading.active_count()} Python threads after its imports"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA was initialised in the server"
    return None


def _run_child(request: dict, fds: list[int], server_fds: list[int], folder: Path) -> int:
    """In the forked child: become the cold trial process and run it; its exit code."""
    for fd in server_fds:
        os.close(fd)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    random.seed()
    torch = sys.modules.get("torch")
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if torch is not None and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    sys.stdin = open(0, closefd=False)
    sys.stdout, sys.stderr = (io.TextIOWrapper(open(fd, "wb", buffering=0, closefd=False), write_through=True)  # python -u
                              for fd in (1, 2))
    argv = request["argv"]
    module = argv[argv.index("-m") + 1]
    sys.argv = [module, *argv[argv.index("-m") + 2:]]
    print(f"[sweeper] warm start: trial process {os.getpid()} forked from the warm server (pid {os.getppid()})", file=sys.stderr)
    code, interrupted = 0, False
    sys.modules.pop(module, None)  # run as __main__, as `python -m` does (a trial may have imported it)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if not isinstance(exit_.code, (int, type(None))):
            print(exit_.code, file=sys.stderr)
    except BaseException as error:  # noqa: BLE001 - what python would print, and exit 1
        traceback.print_exc()
        code, interrupted = 1, isinstance(error, KeyboardInterrupt)
    try:
        atexit._run_exitfuncs()
        names = sorted(name for name in sys.modules if not name.startswith("__"))
        (folder / MODULES_FILE.format(pid=os.getpid())).write_text("\n".join(names))
    except BaseException:  # noqa: BLE001 - the trial's own ending already happened
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if interrupted:  # python ends an uncaught KeyboardInterrupt by dying of SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


def _join_group(pid: int, pgid: int | None) -> None:
    """Put trial ``pid`` (0: this process) in its client's process group, where a cold trial process is: a
    signal to the driver's group (SIGSTOP of a hung machine, a terminal's Ctrl-C, killpg) reaches it alike.
    Called in the child and in the server, whichever runs first."""
    if isinstance(pgid, int) and pgid > 0:
        try:
            os.setpgid(pid, pgid)
        except OSError:  # the group is gone (the client died), or the child already joined it
            pass


def _receive(connection: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(connection, 8, 3)
    body = receive_exact(connection, struct.unpack("!Q", header)[0])
    if body is None:
        raise ConnectionError("the client closed the connection mid-request")
    return json.loads(body), fds


def serve(folder: Path, driver_pid: int, entrypoint: str) -> None:
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)  # before the imports: a driver that ends meanwhile still gets a clean exit
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C and hang-up are for the driver and the trials
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    started = time.monotonic()
    module = entrypoint.split(":")[0]
    names = [*PRELOAD, *PRELOAD_FOR_ENTRYPOINT.get(module, ())]
    if not module.endswith(".py"):
        names.append(module)
    count = _import_all(names)
    _log(f"imported {count} modules in {time.monotonic() - started:.1f} s")
    if stopping:
        shutil.rmtree(folder, ignore_errors=True)
        return
    path = folder / SOCKET_NAME
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}  # pid -> its client's connection
    _log(f"ready on {path}")
    while True:
        if not stopping and not process_alive(driver_pid):
            stopping = True
        if stopping and listener is not None:
            selector.unregister(listener)
            listener.close()
            listener = None
            path.unlink(missing_ok=True)
            _log("stopping: new trials start cold; exiting after the running ones")
        if stopping and not children:
            break
        for key, _ in selector.select(POLL_S):
            if key.fileobj is listener:
                _accept(listener, selector, children, folder)
            else:  # a client's connection is readable only when it closed: its client is gone
                pid = key.data
                if pid in children:
                    _log(f"the client of trial process {pid} is gone: killing the trial")
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    selector.unregister(key.fileobj)
        _reap(children, selector, folder)
    shutil.rmtree(folder, ignore_errors=True)


def _accept(listener: socket.socket, selector: selectors.BaseSelector, children: dict, folder: Path) -> None:
    connection, _ = listener.accept()
    creds = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    if struct.unpack("3i", creds)[1] != os.getuid():
        connection.close()
        return
    connection.settimeout(10.0)  # a client sends its request at once; one that stalls must not stall the server
    try:
        request, fds = _receive(connection)
        connection.settimeout(None)
    except (OSError, ValueError, ConnectionError) as error:
        _log(f"bad request: {error}")
        connection.close()
        return
    refusal = _fork_unsafe()
    if refusal is not None or len(fds) != 3:
        _log(f"not forking: {refusal or 'the client sent no stdio'}")
        for fd in fds:
            os.close(fd)
        connection.close()  # the client starts cold
        return
    server_fds = [listener.fileno(), connection.fileno(), *(c.fileno() for c in children.values())]
    pid = os.fork()
    if pid == 0:
        _join_group(0, request.get("pgid"))
        code = 1
        try:
            code = _run_child(request, fds, server_fds, folder)
        except BaseException:  # noqa: BLE001 - before the trial ran: into its stderr (or the server's log)
            traceback.print_exc()
        finally:
            os._exit(code if 0 <= code < 256 else 1)
    _join_group(pid, request.get("pgid"))
    for fd in fds:
        os.close(fd)
    children[pid] = connection
    try:
        connection.sendall(b"P" + struct.pack("!q", pid))
    except OSError:  # the client died meanwhile: nobody waits for this trial
        _log(f"the client of trial process {pid} is gone before it started: killing the trial")
        os.kill(pid, signal.SIGKILL)
    selector.register(connection, selectors.EVENT_READ, data=pid)


def _reap(children: dict, selector: selectors.BaseSelector, folder: Path) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = children.pop(pid, None)
        if connection is None:
            continue
        try:
            connection.sendall(b"X" + struct.pack("!q", status))
        except OSError:
            pass
        try:
            selector.unregister(connection)
        except (KeyError, ValueError):
            pass
        connection.close()
        learned = folder / MODULES_FILE.format(pid=pid)
        if learned.exists():
            names = learned.read_text().split()
            learned.unlink()
            began = time.monotonic()
            count = _import_all(names)
            if count:
                _log(f"imported {count} more modules a trial used, in {time.monotonic() - began:.1f} s")


def main() -> None:
    """``python -c 'from sweeper.run.executors.warm import main; main()' <folder> <driver pid> <entry point>``."""
    folder, driver_pid, entrypoint = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    try:
        serve(folder, driver_pid, entrypoint)
    except BaseException:  # noqa: BLE001 - clients find no socket and start cold
        traceback.print_exc()
        (folder / SOCKET_NAME).unlink(missing_ok=True)
        raise

