"""One process per output folder: an advisory lock on `<folder>/.lock`.

The lock is an `fcntl.flock` on an open file, so the kernel drops it when the process ends in any way (crash,
SIGKILL, power loss of the process): a crashed run never leaves a folder locked. The file itself stays and
holds the last owner's pid and what it was doing ("12345 training"), for the message. Where `fcntl` does not
exist (Windows) the lock is a no-op.

A folder the lock created is removed again (with the parents it created) when the block leaves nothing in it
but the lock file, e.g. a run that fails before writing anything: a failed command leaves no half-made folder.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from shapecount.errors import UserError

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


@contextmanager
def locked(folder: Path, what: str = "run"):
    """Hold the folder's lock for the duration of the block; a second holder gets a one-line UserError."""
    folder = Path(folder)
    if fcntl is None:  # pragma: no cover
        created = _make_folders(folder)
        try:
            yield
        finally:
            _remove_if_empty(created)
        return
    fd, created = _take(folder)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
        yield
    finally:
        try:
            # Only the holder removes, and only a folder it made that holds nothing else: a run that failed before
            # writing leaves nothing behind. The lock is still held here, so no other process is in the folder.
            if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
                (folder / LOCK_NAME).unlink()
        except OSError:  # the folder changed under us: leave it as it is
            pass
        finally:
            os.close(fd)  # releases the lock
        _remove_if_empty(created)


def _take(folder: Path) -> tuple[int, list[Path]]:
    """(locked file descriptor of folder/.lock, the folders made for it). A holder that ends removes the lock
    file of a folder it made, so a lock taken on a file that is no longer the folder's is let go and taken
    again on the one that is."""
    path = folder / LOCK_NAME
    while True:
        created = _make_folders(folder)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid, _, doing = os.pread(fd, 64, 0).decode("ascii", "replace").strip().partition(" ")
            os.close(fd)
            raise UserError(folder, f"is in use by another shapecount {doing or 'process'} (pid {pid or 'unknown'})",
                            "wait for it to finish, or choose another --out") from None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            return fd, created
        os.close(fd)  # the previous holder removed this file after we opened it: try again


def _make_folders(folder: Path) -> list[Path]:
    """Make `folder` and its missing parents; return those this process made, deepest first (a folder another
    process made at the same moment is not ours)."""
    missing = []
    for p in (folder, *folder.parents):
        if p.exists():
            break
        missing.append(p)
    made = []
    for p in reversed(missing):
        try:
            p.mkdir()
            made.append(p)
        except FileExistsError:
            pass
    folder.mkdir(parents=True, exist_ok=True)  # a file in the way is an error here, as it always was
    return made[::-1]


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders (deepest first) while each is empty; a folder something was written to stays."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:  # not empty (or gone): it and its parents stay
            return
