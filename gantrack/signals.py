"""Termination signals as exceptions, so every exit path runs the same clean-up.

Ctrl-C raises ``KeyboardInterrupt`` and the ``finally`` blocks of the library stop what they
started (servers, worker processes) and mark runs KILLED. ``kill``, ``timeout``, process managers
and closing a terminal send SIGTERM or SIGHUP instead, whose default action ends the process at
once and leaves its children running. ``terminate_as_interrupt`` makes those two signals take the
Ctrl-C path while it is active, and restores the previous handlers afterwards.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP received: handled like Ctrl-C (a ``KeyboardInterrupt``)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum, frame):
    raise Terminated(signum)


@contextmanager
def terminate_as_interrupt():
    """While active, SIGTERM and SIGHUP raise ``Terminated`` in the main thread.

    A no-op outside the main thread (Python delivers signals to the main thread only). This
    changes process-wide signal handlers for its duration; they are restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
