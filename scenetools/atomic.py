"""Write outputs under a temporary name and rename them only when complete."""
from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
from pathlib import Path

from .errors import BadInput, is_out_of_space, write_failure


def partial_path(path) -> Path:
    """The temporary sibling a command writes ``path`` to: ``dir/.name.partial.ext``.

    It keeps the extension, so libraries that pick a format by suffix still work, and the
    leading dot and ``.partial`` mark it as unfinished.
    """
    path = Path(path)
    return path.with_name(f".{path.stem}.partial{path.suffix}")


@contextlib.contextmanager
def parent_folders(path):
    """Create the missing folders above ``path`` for the block; if the block fails, remove
    those of them that are still empty (a resumable partial file keeps its folder)."""
    created, folder = [], Path(path).absolute().parent
    while not folder.exists():
        created.append(folder)
        folder = folder.parent
    for folder in reversed(created):
        folder.mkdir(exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in created:  # deepest first; rmdir refuses a folder that is not empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


@contextlib.contextmanager
def atomic_output(path, keep_partial_on_error: bool = False):
    """Yield a temporary path; rename it to ``path`` if the block succeeds.

    Missing folders above ``path`` are created. On an exception the temporary file (or
    folder) is removed, and so are the folders created for it, unless ``keep_partial_on_error``, which resumable writers use when they are interrupted. A full
    disk or quota becomes a WriteError naming ``path``.
    """
    path = Path(path)
    tmp = partial_path(path)
    with parent_folders(path):
        try:
            yield tmp
        except BaseException as error:
            if not keep_partial_on_error:
                remove(tmp)
            if is_out_of_space(error):
                raise write_failure(error, path) from error
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


class GuardedFile(io.FileIO):
    """A file for h5py's ``fileobj`` driver that a failed write cannot leave half-written.

    HDF5 does not survive a failed write (a full disk): it crashes the process, at the latest
    at exit, trying again to write its metadata, and the file it leaves cannot be read. So no
    write ever fails towards the library here: the first error is kept in :attr:`error` and
    later writes are dropped. The caller marks safe points with :meth:`commit` (after the
    library flushed a consistent file) and, when :attr:`error` is set, calls :meth:`rollback`,
    which returns the file to the last safe point without needing new space: bytes appended
    since are cut off, and bytes overwritten are put back from copies kept in memory.

    Like HDF5 with the files it writes, it holds an exclusive lock on the file while open.
    """

    def __init__(self, path, mode: str = "r+"):
        super().__init__(path, mode)
        try:
            fcntl.flock(self.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise BadInput("another process is writing this file", path) from None
        self.error, self._stopped = None, False
        self.commit()

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        if self.error is None and not self._stopped:
            try:
                self._keep(self.tell(), len(data))
                rest = data
                while len(rest):
                    rest = rest[super().write(rest):]
            except OSError as error:
                self.error = error
        return len(data)

    def truncate(self, size=None) -> int:
        size = self.tell() if size is None else size
        if self.error is None and not self._stopped:
            self._keep(size, self._committed - size)
            super().truncate(size)
        return size

    def commit(self) -> None:
        """Mark a safe point: :meth:`rollback` returns the file to what it is now."""
        self._undo, self._committed = [], os.fstat(self.fileno()).st_size

    def rollback(self) -> None:
        """Undo every write since the last safe point and drop all later ones."""
        if self.closed or self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(OSError):  # best effort: a resume checks the file anyway
            for position, old in reversed(self._undo):
                os.pwrite(self.fileno(), old, position)
            os.ftruncate(self.fileno(), self._committed)
        self._undo = []

    def _keep(self, position: int, length: int) -> None:
        """Copy the bytes of the last safe point that a write of ``length`` at ``position``
        is about to change."""
        end = min(position + length, self._committed)
        if position < end:
            self._undo.append((position, os.pread(self.fileno(), end - position, position)))


def safe_name(name: str) -> str:
    """A file or folder name made from data (a scene name): path separators, leading dots
    and control characters replaced, so it stays inside the folder it is written to."""
    cleaned = "".join("_" if c in "/\\" or not c.isprintable() else c for c in str(name)).lstrip(".")
    return cleaned or "_"


def check_new_output(path, overwrite: bool, option: str = "--overwrite") -> None:
    """Refuse to replace an existing file or non-empty folder unless asked to."""
    path = Path(path)
    if path.exists() and not overwrite and not (path.is_dir() and not any(path.iterdir())):
        raise BadInput(f"already exists; pass {option} to replace it", path)


def free_name(path) -> Path:
    """``path`` if nothing is there, else the first free ``stem-N.suffix`` beside it: what a
    default output name becomes rather than replacing an earlier output."""
    path = Path(path)
    n = 1
    while path.exists() or partial_path(path).exists():
        path = path.with_name(f"{path.stem.rsplit('-', 1)[0] if n > 1 else path.stem}-{n}{path.suffix}")
        n += 1
    return path
