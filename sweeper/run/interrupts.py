"""Stopping the driver by a signal: SIGTERM and SIGHUP are handled like Ctrl-C (SIGINT).

SIGTERM is what ``kill``, systemd, ``docker stop`` and Slurm (``scancel``, a time limit) send; SIGHUP is
what a closed terminal or a lost SSH session sends. Without a handler either one ends Python at once:
no ``finally`` runs, the study lock stays, the trials in flight are neither cancelled nor recorded. Inside
:func:`stop_signals_interrupt` each of them raises :class:`Interrupted` (a ``KeyboardInterrupt``), so the
driver does what it does on Ctrl-C: cancel the trials in flight and record them as lost (re-queued by the
next run), or leave them running with ``on_interrupt: detach`` (the next run re-attaches).

* A second SIGTERM or SIGHUP while the driver is already stopping is ignored (it would cut the cleanup short);
  SIGKILL cannot be caught, and a re-run recovers from it (see :mod:`sweeper.run.driver`).
* A signal that is ignored when the driver starts stays ignored: ``nohup sweeper run ...`` keeps running
  when its terminal closes.
* Handlers are installed only in the main thread (Python delivers signals there) and restored on exit.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """The driver was stopped by ``signum`` (the CLI exits with 128 + signum, as a shell reports a signal)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_signals_interrupt(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, each of ``signals`` raises :class:`Interrupted` once (see the module docstring)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            print(f"{signal.Signals(signum).name}: already stopping (cancelling or detaching the trials in flight)",
                  file=sys.stderr, flush=True)
            return
        stopping = True
        raise Interrupted(signum)

    previous = {}
    for signum in signals:
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN:
            continue
        previous[signum] = current
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, current in previous.items():
            signal.signal(signum, current if current is not None else signal.SIG_DFL)
