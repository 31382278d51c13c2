"""Progress for long work: a tqdm bar on a terminal, plain log lines otherwise.

Commands call :func:`configure` once (``--quiet`` turns progress off); library code just
wraps its loops in :func:`progress`. Everything goes to stderr so stdout stays free for
data (scene-render streams frames on it).
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

_settings = {"quiet": False, "log_every": 10.0}


def configure(quiet: bool = False, log_every: float = 10.0) -> None:
    _settings.update(quiet=quiet, log_every=log_every)


def progress(iterable=None, total=None, desc: str = "", unit: str = "it", initial: int = 0):
    """A progress tracker over ``iterable`` (or updated by hand with ``.update(n)``), starting
    at ``initial`` (work done before a resume, not counted in the rate).

    It supports iteration, ``update``, ``set_postfix``, ``close`` and ``with``.
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if _settings["quiet"]:
        return tqdm(iterable, total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                    initial=initial)
    return LogLines(iterable, total, desc, unit, _settings["log_every"], initial)


class LogLines:
    """Progress as a log line every ``every`` seconds and one at the end, for pipes and CI logs."""

    def __init__(self, iterable, total, desc, unit, every, initial=0):
        self.iterable, self.total, self.desc, self.unit, self.every = iterable, total, desc, unit, every
        self.n = self.initial = initial
        self.postfix = {}
        self.start = self.last = time.monotonic()
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        self.closed = True  # a failure is reported by the error line alone

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._write()

    def set_postfix(self, values=None, refresh: bool = True, **kwargs) -> None:
        self.postfix = {**(values or {}), **kwargs}

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(final=True)

    def _write(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self.start
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{self.desc}: {done} {self.unit}", f"{rate:.3g} {self.unit}/s", f"{_clock(elapsed)} elapsed"]
        if self.total and rate > 0 and not final:
            parts.append(f"eta {_clock((self.total - self.n) / rate)}")
        parts += [f"{k}={_fmt(v)}" for k, v in self.postfix.items()]
        print(", ".join(parts), file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def note(message: str) -> None:
    """A one-line remark on stderr (what is being resumed, where output went), unless quiet."""
    if not _settings["quiet"]:
        print(message, file=sys.stderr, flush=True)
