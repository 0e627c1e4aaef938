"""A local trial's process, started warm: submitit's local controller runs this script in place of
``python``, and it asks the study's warm server (:mod:`sweeper.run.executors.warm`) to fork the trial from a
process that has already imported torch, transformers, MLflow and Optuna.

    <python> warm_client.py <server folder> -u -m submitit.core._submit <job folder>

It hands the server its stdin, stdout and stderr (the job's log files), its environment, working folder
and process group (the trial joins it, as a cold trial process would be in it), forwards every signal the
controller sends (SIGINT, SIGTERM, SIGUSR1, SIGUSR2, SIGHUP: cancel, timeout and requeue) to the forked
trial (one that comes before the trial's pid is known is passed on once it is), and ends as the trial
ends: its exit code, or the signal that killed it. If it is killed itself, the server kills the trial. With no server to ask (not started, stopped,
or still importing after ``WAIT_READY_S``) it becomes the cold process it replaces (``exec``).

Standard library only, and nothing from the script's folder on ``sys.path``: this runs before every warm
trial, so it must start in milliseconds.
"""

import json
import os
import signal
import socket
import struct
import sys
import time

WAIT_READY_S = 120.0
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)
SOCKET_NAME, STARTING_NAME = "server.sock", "server.pid"


def _server_alive(folder):
    try:
        pid = int(open(os.path.join(folder, STARTING_NAME)).read().strip())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


def connect(folder):
    """A connection to the server, waiting while it imports; None when there is none to ask."""
    path = os.path.join(folder, SOCKET_NAME)
    deadline = time.monotonic() + WAIT_READY_S
    while True:
        if os.path.exists(path):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return sock
            except OSError:
                sock.close()
                if not os.path.exists(path):
                    return None
        if not _server_alive(folder) or time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def receive_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def cold(argv, why):
    print(f"[sweeper] warm start unavailable ({why}); starting the trial cold", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, *argv])


def main():
    folder, argv = sys.argv[1], sys.argv[2:]
    sock = connect(folder)
    if sock is None:
        cold(argv, f"no warm server in {folder}")
    request = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "pgid": os.getpgrp()}).encode()
    child, pending = None, []

    def forward(signum, frame):
        if child is None:
            pending.append(signum)
            return
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED:
        signal.signal(signum, forward)
    try:
        socket.send_fds(sock, [struct.pack("!Q", len(request))], [0, 1, 2])
        sock.sendall(request)
        reply = receive_exact(sock, 9)
    except OSError as error:
        reply, why = None, f"{type(error).__name__}: {error}"
    else:
        why = "the server closed the connection"
    if reply is None or reply[:1] != b"P":
        if pending:  # cancelled before any trial started: end as the cold process would have
            signal.signal(pending[0], signal.SIG_DFL)
            os.kill(os.getpid(), pending[0])
        for signum in FORWARDED:
            signal.signal(signum, signal.SIG_DFL)
        cold(argv, why)
    child = struct.unpack("!q", reply[1:])[0]
    for signum in pending:
        forward(signum, None)
    ending = receive_exact(sock, 9)
    if ending is None or ending[:1] != b"X":  # the server died: wait for the trial, its status is unknown
        while True:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        print("[sweeper] the warm server went away; the trial's exit status is unknown", file=sys.stderr, flush=True)
        sys.exit(1)
    status = struct.unpack("!q", ending[1:])[0]
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


if __name__ == "__main__":
    sys.path.pop(0)  # this script's folder (sweeper/executors): nothing there is for the trial to import
    main()
