"""Download of a URL source: once into the cache dir, with retries, checked against a sha256 sidecar."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from shapecount.data.sources import ENV_CACHE, ENV_DATA, cache_dir, is_zip
from shapecount.data.validation import one_line
from shapecount.errors import DataError
from shapecount.fileio import DiskFullError, atomic_write, readable_like_others

_FIX_URL = (f"check the URL and the network, or download the zip elsewhere and point {ENV_DATA} "
            "or --data at the local .zip or directory")


# Seconds one attempt may take in all: the socket timeout only bounds each read, so a server that trickles a
# few bytes at a time would otherwise hold the download forever. The official zip takes seconds.
DOWNLOAD_DEADLINE = 600.0


class _IncompleteDownload(Exception):
    pass


def download_path(url: str) -> Path:
    """Where `url` is kept in the cache dir; its sha256 sidecar is the same name + `.sha256`."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1])[:80] or "download"
    return cache_dir() / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{base}"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached_download_ok(path: Path) -> bool:
    side = _sidecar(path)
    if not (path.is_file() and side.is_file()):
        return False
    recorded = side.read_text(errors="replace").split()[:1]  # a damaged sidecar is a mismatch
    return bool(recorded) and recorded[0] == _sha256_file(path)


def _unlink(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _fetch(url: str, folder: Path, timeout: float, progress: bool, deadline: float = DOWNLOAD_DEADLINE) -> Path:
    """One attempt: stream `url` to a temp file in `folder` (deleted on any failure), within `deadline` s."""
    from shapecount import __version__

    req = urllib.request.Request(url, headers={"User-Agent": f"shapecount/{__version__}"})
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".part")
    except OSError as e:  # not a network error: no retry
        raise _cache_error(folder, e) from None
    tmp = Path(tmp_name)
    end = time.monotonic() + deadline
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            got = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=False,
                      desc=f"downloading {url.rsplit('/', 1)[-1]}", disable=not progress) as bar:
                while chunk := resp.read1(1 << 16):  # what has arrived: the deadline is checked often
                    try:
                        out.write(chunk)
                    except OSError as e:  # e.g. disk full: not a network error, no retry
                        raise _cache_error(folder, e) from None
                    got += len(chunk)
                    bar.update(len(chunk))
                    if time.monotonic() > end:
                        raise _IncompleteDownload(f"too slow: {got} bytes in {deadline:g} s, the deadline of one "
                                                  "attempt")
            # urllib returns a short body silently when the server hangs up early; Content-Length tells.
            if total is not None and got != total:
                raise _IncompleteDownload(f"connection closed after {got} of {total} bytes")
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _cache_error(folder: Path, err: OSError) -> DataError:
    return DataError(str(folder), f"cannot hold the download: {one_line(err.strerror or err)}",
                     f"set {ENV_CACHE} to a writable folder")


def _retryable(err: BaseException) -> bool:
    if isinstance(err, urllib.error.HTTPError):
        return err.code in (408, 429) or err.code >= 500
    return isinstance(err, (urllib.error.URLError, OSError, http.client.HTTPException, _IncompleteDownload))


def _describe(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return one_line(err.reason)
    return one_line(f"{type(err).__name__}: {err}")


def download(url: str, *, timeout: float = 30.0, retries: int = 3, backoff: float = 1.0,
             progress: bool = True, deadline: float = DOWNLOAD_DEADLINE) -> Path:
    """Download a zip once into the cache dir; later calls reuse it (checked against its sha256 sidecar).

    Up to `retries` retries after network errors, waiting backoff * 1, 2, 4 ... seconds. The file appears
    under its final name only when complete and a valid zip; anything else is deleted."""
    dest = download_path(url)
    try:
        if _cached_download_ok(dest):
            return dest
        _unlink(dest, _sidecar(dest))
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # e.g. SHAPECOUNT_CACHE is a file, or not writable
        raise _cache_error(dest.parent, e) from None
    tmp: Path | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            tmp = _fetch(url, dest.parent, timeout, progress, deadline)
            break
        except ValueError as e:  # urllib: malformed URL
            raise DataError(url, f"is not a valid URL: {one_line(e)}", _FIX_URL) from None
        except (OSError, http.client.HTTPException, _IncompleteDownload) as e:  # URLError is an OSError
            if not _retryable(e) or attempt == retries:
                tries = f" after {attempt + 1} attempts" if attempt else ""
                raise DataError(url, f"could not be downloaded{tries}: {_describe(e)}", _FIX_URL) from None
    assert tmp is not None
    try:
        if not is_zip(tmp):
            head = tmp.read_bytes()[:16]
            raise DataError(url, f"did not return a zip file; the download starts with {head!r}",
                            f"use the URL of the raw .zip; {_FIX_URL}")
        digest = _sha256_file(tmp)
        # The sidecar first, then the zip: a zip without a matching sidecar is never trusted.
        atomic_write(_sidecar(dest), lambda p: p.write_text(f"{digest}  {dest.name}\n"))
        readable_like_others(tmp)
        os.replace(tmp, dest)
    except DiskFullError as e:  # the sidecar's atomic write: the cache folder is the thing to change
        raise _cache_error(dest.parent, e.os_error) from None
    except OSError as e:
        raise _cache_error(dest.parent, e) from None
    finally:
        _unlink(tmp)
    return dest
