"""The kinds of failure every command distinguishes (see README, "Command conventions")."""
from __future__ import annotations

import errno


class Failure(Exception):
    """A failure a command reports as one line on stderr, ``PROG: error: FILE: PROBLEM``
    (naming the file when there is one), with exit status :attr:`exit_status`."""

    exit_status = 1

    def __init__(self, problem: str, path=None):
        self.problem, self.path = problem, path
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class BadInput(Failure):
    """The user gave something unusable: a missing, malformed or corrupt file, a bad option
    value. Exit status 2."""

    exit_status = 2


class WriteError(Failure):
    """An output could not be written for a reason outside the input (a full disk, a quota,
    an I/O error): a runtime failure, exit status 1."""


def write_failure(error: OSError, path, hint: str = "") -> WriteError:
    """The WriteError for ``error``, met while writing ``path``: "no space left on device",
    "disk quota exceeded", ... followed by ``hint``."""
    return WriteError(f"{(error.strerror or str(error)).lower()}{hint}", path)


def is_out_of_space(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
