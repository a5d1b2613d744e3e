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
    created = _missing_folders(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid, _, doing = os.pread(fd, 64, 0).decode("ascii", "replace").strip().partition(" ")
            raise UserError(folder, f"is in use by another shapecount {doing or 'process'} (pid {pid or 'unknown'})",
                            "wait for it to finish, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
        yield
    finally:
        if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            (folder / LOCK_NAME).unlink()  # still held: nobody else can have taken the folder meanwhile
        os.close(fd)  # releases the lock
        _remove_if_empty(created)


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for p in (folder, *folder.parents):
        if p.exists():
            break
        missing.append(p)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders (deepest first) while each is empty; a folder something was written to stays."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:  # not empty (or gone): it and its parents stay
            return
