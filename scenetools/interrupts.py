"""Graceful stops: SIGINT and SIGTERM set a flag that a long loop checks at a safe point.

A KeyboardInterrupt raised wherever the main thread happens to be can land inside a
destructor or a library callback, where Python prints "Exception ignored" and carries on,
so a Ctrl-C could be lost. A flag is never lost: the loop finishes its step, saves what
it must, and stops.
"""
from __future__ import annotations

import contextlib
import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """While it is active, SIGINT/SIGTERM set ``requested`` instead of interrupting."""

    def __init__(self):
        self.requested = False
        self.previous = {}
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread
                self.previous[sig] = signal.signal(sig, self._request)

    def _request(self, signum, frame):
        self.requested = True

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()


def ignore_stop_signals(*_) -> None:
    """Worker processes leave SIGINT/SIGTERM to the main process, which stops them once it has
    saved: Ctrl-C and Slurm's scancel signal every process of the job, not just the main one.
    (Takes and ignores a DataLoader ``worker_id``.)"""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
