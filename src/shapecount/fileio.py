"""Atomic writes: a file appears complete under its name or not at all (temp file + os.replace).

A write that fails for lack of space (a full disk, a quota, a file-size limit) becomes a `DiskFullError`: one
line naming the file; the temp file is removed and the previous complete file under that name is kept.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from shapecount.errors import UserError

# errno values that mean "no room to write": disk full, quota exceeded, file-size limit (ulimit -f).
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class DiskFullError(UserError):
    """A file could not be written for lack of space; the previous complete file is kept."""

    def __init__(self, path: Path | str, err: OSError) -> None:
        self.os_error = err
        super().__init__(path, f"could not be written: {os.strerror(err.errno) if err.errno else err}",
                         "free some space and run the same command again (with --resume for training); "
                         "the previous complete file is kept")


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def readable_like_others(path: Path | str) -> None:
    """Give a temp file (mkstemp makes 0600) the permissions a plainly created file gets under the umask."""
    os.chmod(path, 0o666 & ~_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) on a temp file in the target's folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    readable_like_others(tmp)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if is_no_space(e):
            raise DiskFullError(path, e) from None  # type: ignore[arg-type]
        raise
    return path


def save_torch(path: Path, payload: Any) -> Path:
    """torch.save, atomically. Serialised in memory first: torch's own file writer reports a full disk as a
    generic RuntimeError, Python's file write reports it with its errno (see DiskFullError)."""
    import torch

    buf = io.BytesIO()
    torch.save(payload, buf)
    return write_bytes(path, buf.getbuffer())


def write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def json_safe(obj: Any) -> Any:
    """`obj` with non-finite floats replaced by None (JSON has no NaN), in nested dicts and lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = None) -> str:
    """Strict JSON that any reader parses: a NaN or infinity is written as null."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def write_json(path: Path, obj: Any) -> Path:
    """`obj` as strict JSON (dumps) in a file, written atomically."""
    return write_text(path, dumps(obj, indent=2) + "\n")


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable[Any]]) -> Path:
    def write(p: Path) -> None:
        with open(p, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)

    return atomic_write(path, write)
