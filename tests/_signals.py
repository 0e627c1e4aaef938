"""Start driver subprocesses the way a terminal would.

A process started in the background of a non-interactive shell (``cmd &``, as some CI runners and
nohup'ed scripts do) inherits SIGINT as *ignored*; Python then installs no KeyboardInterrupt handler
and a test's Ctrl-C (SIGINT) never reaches the driver. Passing ``preexec_fn=default_sigint`` gives
the child SIGINT's default disposition, as under a user's terminal.
"""

import signal


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def default_stop_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP at their default disposition (a nohup'ed test runner ignores SIGHUP)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
