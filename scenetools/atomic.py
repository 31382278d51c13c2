"""Write outputs under a temporary name and rename them only when complete."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


def partial_path(path) -> Path:
    """The temporary sibling a command writes ``path`` to: ``dir/.name.partial.ext``.

    It keeps the extension, so libraries that pick a format by suffix still work, and the
    leading dot and ``.partial`` mark it as unfinished.
    """
    path = Path(path)
    return path.with_name(f".{path.stem}.partial{path.suffix}")


@contextlib.contextmanager
def atomic_output(path, keep_partial_on_error: bool = False):
    """Yield a temporary path; rename it to ``path`` if the block succeeds.

    On an exception the temporary file (or folder) is removed, unless
    ``keep_partial_on_error``, which resumable writers use when they are interrupted.
    """
    path = Path(path)
    tmp = partial_path(path)
    try:
        yield tmp
    except BaseException:
        if not keep_partial_on_error:
            remove(tmp)
        raise
    if tmp.is_dir() and path.is_dir():  # a folder output replaces the old folder as a whole
        remove(path)
    os.replace(tmp, path)


def remove(path) -> None:
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
