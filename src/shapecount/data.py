"""The GSN dataset: find it (directory, zip or URL), validate it, decode it once and cache the result.

Sources, in the order `resolve_source` tries them: an explicit argument, the environment variable
SHAPECOUNT_DATA, the official download URL. A source is
- a directory holding `labels.csv` and the PNGs next to it (or one subfolder that does, e.g. `data/`);
- a `.zip` laid out like the official one (`data/labels.csv`, `data/img_*.png`), or with labels.csv at its
  root or in any single top folder; read in memory, never extracted;
- an http(s) URL of such a zip, downloaded once into the cache dir.

Every problem with the data is a `DataError` whose one-line message names the file (or `labels.csv row N`) and
how to fix it. The decoded images are cached as an `.npz` keyed by a hash of the source's content, so only the
first load decodes PNGs.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import os
import re
import stat
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from shapecount import labels as L
from shapecount.errors import DataError
from shapecount.fileio import atomic_write

try:
    from lzma import LZMAError as _LZMAError
except ImportError:  # a Python without lzma: zipfile then refuses LZMA members with a RuntimeError
    _LZMAError = RuntimeError

DEFAULT_URL = "https://github.com/marcin119a/data/raw/refs/heads/main/data_gsn.zip"
ENV_DATA = "SHAPECOUNT_DATA"
ENV_CACHE = "SHAPECOUNT_CACHE"
LABELS_NAME = "labels.csv"
HEADER: tuple[str, ...] = ("name", *L.TYPES)
SIDE = 28
MAX_SIDE = 1024  # decompression-bomb guard: larger PNGs are refused from their header, never decoded
MAX_IMAGE_BYTES = 8 << 20  # a 28x28 PNG is a few hundred bytes; anything this big is not one
MAX_LABELS_BYTES = 64 << 20
ACCEPTED_MODES = ("L", "LA", "RGB", "RGBA", "1", "P")
CACHE_VERSION = 1
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_FIX_SOURCE = "pass a directory with labels.csv, a .zip or an http(s) URL via --data or SHAPECOUNT_DATA"
_FIX_URL = (f"check the URL and the network, or download the zip elsewhere and point {ENV_DATA} "
            "or --data at the local .zip or directory")
_FIX_ROW = "each row is name,squares,circles,up,right,down,left with two non-zero counts summing to 10"
_FIX_IMAGE = "replace it with the original 28x28 PNG from the GSN dataset, or remove its row from labels.csv"


# ---------------------------------------------------------------------------------------------------------
# Where the data and the cache are
# ---------------------------------------------------------------------------------------------------------

def resolve_source(data: str | os.PathLike[str] | None) -> str:
    """The explicit argument, else $SHAPECOUNT_DATA, else the official URL."""
    if data is not None and str(data) != "":
        return str(data)
    return os.environ.get(ENV_DATA) or DEFAULT_URL


def cache_dir() -> Path:
    """$SHAPECOUNT_CACHE, else ~/.cache/shapecount (not created here)."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "shapecount"


def _is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _printable(text: str) -> str:
    """`text` with control characters (newlines included) escaped, so an error naming it stays one line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


# ---------------------------------------------------------------------------------------------------------
# The loaded data
# ---------------------------------------------------------------------------------------------------------

@dataclass
class GSNData:
    """All images and labels of a GSN source, in labels.csv order.

    images: uint8 (N, 28, 28), the PNG's gray values (0/255); counts: int64 (N, 6) in labels.TYPES order;
    classes: int64 (N,) from labels.counts_to_class; sha256: the zip's sha256 (zip and URL sources) or, for a
    directory, a hash of labels.csv plus each image's name, size and mtime (the cache key);
    labels_sha256: sha256 of labels.csv.
    """

    images: torch.Tensor
    counts: torch.Tensor
    classes: torch.Tensor
    names: list[str]
    source: str = ""
    sha256: str = ""
    warnings: list[str] = field(default_factory=list)
    labels_sha256: str = ""

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx: Sequence[int] | torch.Tensor | np.ndarray | slice | range) -> GSNData:
        """The rows `idx` (indices, a bool mask or a slice), in that order."""
        index = _as_index(idx, len(self))
        return GSNData(images=self.images[index], counts=self.counts[index], classes=self.classes[index],
                       names=[self.names[i] for i in index.tolist()], source=self.source, sha256=self.sha256,
                       warnings=list(self.warnings), labels_sha256=self.labels_sha256)


def _as_index(idx: Any, n: int) -> torch.Tensor:
    if isinstance(idx, slice):
        return torch.arange(n)[idx]
    if isinstance(idx, range):
        return torch.as_tensor(list(idx), dtype=torch.long)
    t = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx)
    if t.dtype == torch.bool:
        return t.nonzero().flatten()
    return t.long().flatten()


def official_split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The assignment's split: the first n - n//10 images train, the last n//10 validate (file order)."""
    n_val = n // 10
    return torch.arange(0, n - n_val), torch.arange(n - n_val, n)


def split(data: GSNData) -> tuple[GSNData, GSNData]:
    train, val = official_split(len(data))
    return data.subset(train), data.subset(val)


# ---------------------------------------------------------------------------------------------------------
# labels.csv
# ---------------------------------------------------------------------------------------------------------

def parse_labels(raw: bytes, where: str) -> tuple[list[str], np.ndarray]:
    """Validate labels.csv bytes -> (names, int64 counts (N, 6)). `where` names the file in errors.

    Errors name `<where> row R (line L)`: R counts data rows from 1, L is the line in the file (header = 1).
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(where, f"is not UTF-8 text (byte {e.start})", "save it as UTF-8 CSV") from None
    reader = csv.reader(io.StringIO(text, newline=""))  # newline="": a lone CR ends a line, as csv expects
    lines = _csv_rows(reader, where)
    header = next(lines, None)
    while header is not None and not any(f.strip() for f in header):
        header = next(lines, None)  # tolerate leading blank lines
    if header is None:
        raise DataError(where, "is empty", f"the first line must be the header {','.join(HEADER)}")
    if tuple(f.strip().lower() for f in header) != HEADER:
        raise DataError(where, f"has header {_one_line(','.join(header))!r}, expected {','.join(HEADER)!r}",
                        "fix the first line of labels.csv")
    names: list[str] = []
    rows: list[list[int]] = []
    first_row: dict[str, str] = {}
    for fields_ in lines:
        if not any(f.strip() for f in fields_):
            continue  # blank lines (e.g. a trailing newline) carry nothing
        row_where = f"{where} row {len(rows) + 1} (line {reader.line_num})"
        name, counts = _parse_row(fields_, row_where)
        if name in first_row:
            raise DataError(row_where, f"duplicate name {name!r} (first in {first_row[name]})",
                            "each image may be listed once; remove one of the rows")
        first_row[name] = f"row {len(rows) + 1}"
        names.append(name)
        rows.append(counts)
    if not rows:
        raise DataError(where, "has a header but no rows", _FIX_ROW)
    return names, np.asarray(rows, dtype=np.int64).reshape(-1, L.NUM_TYPES)


def _csv_rows(reader: Any, where: str) -> Iterator[list[str]]:
    """The reader's rows; a CSV syntax error (e.g. a field over csv's size limit) is a DataError."""
    try:
        yield from reader
    except csv.Error as e:
        raise DataError(f"{where} line {reader.line_num}", f"is not valid CSV: {_one_line(e)}",
                        "save it as plain CSV, one row per line") from None


_UNSAFE_NAME = re.compile(r"[/\\]|" + _CONTROL.pattern)


def _parse_row(fields_: list[str], where: str) -> tuple[str, list[int]]:
    if len(fields_) != len(HEADER):
        raise DataError(where, f"has {len(fields_)} fields, expected {len(HEADER)}", _FIX_ROW)
    name = fields_[0].strip()
    # Names are file names next to labels.csv: a path here could read files outside the dataset.
    if not name or name in (".", "..") or _UNSAFE_NAME.search(name):
        raise DataError(where, f"image name {name!r} is not a plain file name", _FIX_ROW)
    counts = []
    for type_name, value in zip(L.TYPES, fields_[1:]):
        v = value.strip()
        if not re.fullmatch(r"[+-]?[0-9]+", v):
            raise DataError(where, f"{type_name} count {_one_line(v)!r} is not an integer", _FIX_ROW)
        # int() refuses over 4300 digits; a count that long is out of range anyway
        c = int(v) if len(v.lstrip("+-").lstrip("0")) <= 9 else None
        if c is None or not 0 <= c <= L.TOTAL:
            shown = c if c is not None else f"{v[:12]}... ({len(v)} digits)"
            raise DataError(where, f"{type_name} count {shown} is outside 0..{L.TOTAL}", _FIX_ROW)
        counts.append(c)
    present = [t for t, c in zip(L.TYPES, counts) if c]
    if len(present) != 2:
        plural = "" if len(present) == 1 else "s"
        raise DataError(where, f"has {len(present)} shape type{plural} with non-zero counts "
                               f"({', '.join(present) or 'none'}), expected exactly 2", _FIX_ROW)
    if sum(counts) != L.TOTAL:
        raise DataError(where, f"counts sum to {sum(counts)}, expected {L.TOTAL}", _FIX_ROW)
    return name, counts


# ---------------------------------------------------------------------------------------------------------
# PNG decoding
# ---------------------------------------------------------------------------------------------------------

def png_size(raw: bytes, where: str) -> tuple[int, int]:
    """(width, height) from the PNG header, without decoding; DataError if it is not a PNG."""
    if not raw:
        raise DataError(where, "is an empty file, not a PNG", _FIX_IMAGE)
    if not raw.startswith(PNG_SIGNATURE):
        raise DataError(where, f"is not a PNG file, it starts with {raw[:8]!r}", _FIX_IMAGE)
    if len(raw) < 33 or raw[12:16] != b"IHDR":
        raise DataError(where, "is a truncated or corrupt PNG, no IHDR header", _FIX_IMAGE)
    width, height = struct.unpack(">II", raw[16:24])
    return width, height


# What PIL raises on damaged PNG data (DecompressionBombError derives from none of the others).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error,
                  Image.DecompressionBombError)


def decode_png(raw: bytes, where: str) -> np.ndarray:
    """PNG bytes -> uint8 (28, 28) gray. Modes 1, L, LA, P, RGB, RGBA are converted with PIL's `convert("L")`
    (alpha is dropped: GSN images are opaque). Size is checked from the header before anything is decoded."""
    width, height = png_size(raw, where)
    if width > MAX_SIDE or height > MAX_SIDE:
        raise DataError(where, f"is {width}x{height} pixels, over the {MAX_SIDE}x{MAX_SIDE} limit; "
                               "not decoded", _FIX_IMAGE)
    if (width, height) != (SIDE, SIDE):
        raise DataError(where, f"is {width}x{height} pixels, expected {SIDE}x{SIDE}", _FIX_IMAGE)
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as im:
            if im.mode not in ACCEPTED_MODES:
                raise DataError(where, f"has unsupported image mode {im.mode!r} "
                                       f"(accepted: {', '.join(ACCEPTED_MODES)})", "save it as an 8-bit PNG")
            im.load()
            # P via RGBA: PIL warns when a palette with transparency goes straight to L.
            gray = (im.convert("RGBA") if im.mode == "P" else im).convert("L")
            arr = np.array(gray, dtype=np.uint8)  # a writable copy
    except DataError:
        raise
    except _DECODE_ERRORS as e:
        raise DataError(where, f"is a corrupt or truncated PNG: {_one_line(e) or type(e).__name__}",
                        _FIX_IMAGE) from None
    if arr.shape != (SIDE, SIDE):  # header and data disagree: not a PNG we can trust
        raise DataError(where, f"decodes to {arr.shape}, expected ({SIDE}, {SIDE})", _FIX_IMAGE)
    return arr


def _read_bytes(path: Path) -> bytes:
    """A file's bytes; an unreadable file (permissions, I/O error) is a DataError naming it."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(str(path), f"cannot be read: {_one_line(e.strerror or e)}",
                        "check that the file exists and is readable") from None


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """One PNG file -> uint8 (28, 28) gray, with the same checks as the dataset's images."""
    p = Path(path)
    if not p.exists():
        raise DataError(str(p), "does not exist", "give the path of a 28x28 PNG")
    if not p.is_file():
        raise DataError(str(p), "is not a file", "give the path of a 28x28 PNG")
    size = p.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise DataError(str(p), f"is {size} bytes, too big for a 28x28 PNG", "give the path of a 28x28 PNG")
    return decode_png(_read_bytes(p), str(p))


# ---------------------------------------------------------------------------------------------------------
# Sources: a directory or a zip, read through one small interface
# ---------------------------------------------------------------------------------------------------------

@dataclass
class _Source:
    display: str  # what GSNData.source says
    labels_raw: bytes
    names: list[str]  # validated labels.csv
    counts: np.ndarray
    read: Callable[[str, str], bytes]  # (image name, row description) -> bytes
    where: Callable[[str], str]  # image name -> how errors name it


def _find_labels_dir(root: Path) -> Path:
    if (root / LABELS_NAME).is_file():
        return root
    subs = sorted(d for d in root.iterdir() if d.is_dir() and (d / LABELS_NAME).is_file())
    if len(subs) == 1:  # e.g. the official zip unpacked: <root>/data/labels.csv
        return subs[0]
    if subs:
        folders = ", ".join(s.name for s in subs)
        raise DataError(str(root), f"has several folders with {LABELS_NAME} ({folders})",
                        "point at the one folder you mean")
    raise DataError(str(root / LABELS_NAME), "is missing", f"{_FIX_SOURCE}; the images go next to labels.csv")


def _dir_source(root: Path) -> _Source:
    folder = _find_labels_dir(root)
    labels_path = folder / LABELS_NAME
    raw = _read_bytes(labels_path)

    def read(name: str, row: str) -> bytes:
        p = folder / name
        try:
            info = p.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise DataError(str(p), f"is missing but listed in {LABELS_NAME} {row}", _FIX_IMAGE) from None
        # a FIFO or a device (e.g. a link to /dev/zero) would block or never end: regular files only
        if not stat.S_ISREG(info.st_mode):
            raise DataError(str(p), "cannot be read: not a regular file", _FIX_IMAGE)
        size = info.st_size
        if size > MAX_IMAGE_BYTES:
            raise DataError(str(p), f"is {size} bytes, too big for a 28x28 PNG", _FIX_IMAGE)
        return _read_bytes(p)

    names, counts = parse_labels(raw, str(labels_path))
    return _Source(display=str(folder), labels_raw=raw, names=names, counts=counts, read=read,
                   where=lambda name: str(folder / name))


def _dir_key(src: _Source) -> str:
    """A directory's content hash without reading 10,000 files: labels.csv + each image's name, size and
    mtime."""
    h = hashlib.sha256(src.labels_raw)
    for i, name in enumerate(src.names):
        p = Path(src.where(name))
        try:
            st = p.stat()
        except OSError:
            raise DataError(str(p), f"is missing but listed in {LABELS_NAME} row {i + 1}",
                            _FIX_IMAGE) from None
        h.update(f"\0{name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _check_member(info: zipfile.ZipInfo, where: str) -> None:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    entry = f"{where}:{_printable(name)}"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise DataError(entry, "is an unsafe zip entry: an absolute path", "rebuild the zip")
    if ".." in parts:
        raise DataError(entry, "is an unsafe zip entry: '..' in its path", "rebuild the zip")
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        raise DataError(entry, "is an unsafe zip entry: a symbolic link", "rebuild the zip")


def _find_labels_member(zf: zipfile.ZipFile, where: str) -> str:
    names = zf.namelist()
    if LABELS_NAME in names:
        return ""
    in_top = [n for n in names if n.count("/") == 1 and n.endswith("/" + LABELS_NAME)]
    tops = sorted({n.split("/")[0] + "/" for n in in_top})
    tops = [t for t in tops if not t.startswith("__MACOSX")]
    if len(tops) == 1:
        return tops[0]
    if tops:
        raise DataError(where, f"has {LABELS_NAME} in several folders ({', '.join(map(_printable, tops))})",
                        "keep only one")
    raise DataError(where, f"has no {LABELS_NAME} at its root or in a top folder",
                    f"use the official GSN zip (data/{LABELS_NAME} + data/img_*.png) or {_FIX_SOURCE}")


def _zip_source(raw_zip: bytes, where: str, display: str) -> _Source:
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw_zip))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as e:
        raise DataError(where, f"is not a valid zip file: {_one_line(e)}", _FIX_SOURCE) from None
    for info in zf.infolist():
        _check_member(info, where)
    prefix = _find_labels_member(zf, where)
    shown = f"{where}:{_printable(prefix)}"  # how errors name a member: <zip>:<folder/><name>

    def member(name: str, row: str) -> bytes:
        entry = prefix + name
        try:
            info = zf.getinfo(entry)
        except KeyError:
            raise DataError(shown + name, f"is missing but listed in {LABELS_NAME} {row}",
                            _FIX_IMAGE) from None
        limit = MAX_LABELS_BYTES if name == LABELS_NAME else MAX_IMAGE_BYTES
        if info.file_size > limit:
            raise DataError(shown + name, f"is {info.file_size} bytes uncompressed, over the limit",
                            _FIX_IMAGE)
        try:
            return zf.read(info)
        # RuntimeError: encrypted entry; NotImplementedError: a compression method zipfile lacks;
        # OSError also covers corrupt bzip2 data, _LZMAError corrupt LZMA data, ValueError a negative offset.
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, NotImplementedError,
                _LZMAError, ValueError) as e:
            raise DataError(shown + name, f"cannot be read from the zip: {_one_line(e)}",
                            "use an unencrypted zip (deflate or stored), e.g. re-download it") from None

    labels_raw = member(LABELS_NAME, "")
    names, counts = parse_labels(labels_raw, shown + LABELS_NAME)
    return _Source(display=display, labels_raw=labels_raw, names=names, counts=counts, read=member,
                   where=lambda name: shown + name)


def _is_zip(path: Path) -> bool:
    """zipfile.is_zipfile, but a damaged end record it raises on (e.g. a multi-disk zip64 locator) is "no"."""
    try:
        return zipfile.is_zipfile(path)
    except (zipfile.BadZipFile, ValueError, struct.error):
        return False


def _locate(source: str, download_options: dict[str, Any]) -> tuple[str, Path]:
    """("dir" | "zip", local path) of a source; a URL is downloaded first."""
    if _is_url(source):
        return "zip", download(source, **download_options)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(source, "does not exist", _FIX_SOURCE)
    if path.is_dir():
        return "dir", path
    if path.name == LABELS_NAME:
        return "dir", path.parent
    if not _is_zip(path):
        raise DataError(source, "is not a zip file or a directory", _FIX_SOURCE)
    return "zip", path


# ---------------------------------------------------------------------------------------------------------
# Download (URL sources)
# ---------------------------------------------------------------------------------------------------------

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


def _fetch(url: str, folder: Path, timeout: float, progress: bool) -> Path:
    """One attempt: stream `url` to a temp file in `folder` (deleted on any failure)."""
    from shapecount import __version__

    req = urllib.request.Request(url, headers={"User-Agent": f"shapecount/{__version__}"})
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".part")
    except OSError as e:  # not a network error: no retry
        raise _cache_error(folder, e) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            got = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=False,
                      desc=f"downloading {url.rsplit('/', 1)[-1]}", disable=not progress) as bar:
                while chunk := resp.read(1 << 16):
                    try:
                        out.write(chunk)
                    except OSError as e:  # e.g. disk full: not a network error, no retry
                        raise _cache_error(folder, e) from None
                    got += len(chunk)
                    bar.update(len(chunk))
            # urllib returns a short body silently when the server hangs up early; Content-Length tells.
            if total is not None and got != total:
                raise _IncompleteDownload(f"connection closed after {got} of {total} bytes")
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _cache_error(folder: Path, err: OSError) -> DataError:
    return DataError(str(folder), f"cannot hold the download: {_one_line(err.strerror or err)}",
                     f"set {ENV_CACHE} to a writable folder")


def _retryable(err: BaseException) -> bool:
    if isinstance(err, urllib.error.HTTPError):
        return err.code in (408, 429) or err.code >= 500
    return isinstance(err, (urllib.error.URLError, OSError, http.client.HTTPException, _IncompleteDownload))


def _describe(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return _one_line(err.reason)
    return _one_line(f"{type(err).__name__}: {err}")


def download(url: str, *, timeout: float = 30.0, retries: int = 3, backoff: float = 1.0,
             progress: bool = True) -> Path:
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
            tmp = _fetch(url, dest.parent, timeout, progress)
            break
        except ValueError as e:  # urllib: malformed URL
            raise DataError(url, f"is not a valid URL: {_one_line(e)}", _FIX_URL) from None
        except (OSError, http.client.HTTPException, _IncompleteDownload) as e:  # URLError is an OSError
            if not _retryable(e) or attempt == retries:
                tries = f" after {attempt + 1} attempts" if attempt else ""
                raise DataError(url, f"could not be downloaded{tries}: {_describe(e)}", _FIX_URL) from None
    assert tmp is not None
    try:
        if not _is_zip(tmp):
            head = tmp.read_bytes()[:16]
            raise DataError(url, f"did not return a zip file; the download starts with {head!r}",
                            f"use the URL of the raw .zip; {_FIX_URL}")
        digest = _sha256_file(tmp)
        # The sidecar first, then the zip: a zip without a matching sidecar is never trusted.
        atomic_write(_sidecar(dest), lambda p: p.write_text(f"{digest}  {dest.name}\n"))
        os.replace(tmp, dest)
    except OSError as e:
        raise _cache_error(dest.parent, e) from None
    finally:
        _unlink(tmp)
    return dest


# ---------------------------------------------------------------------------------------------------------
# Decoding and the array cache
# ---------------------------------------------------------------------------------------------------------

def _decode_all(src: _Source, progress: bool) -> tuple[np.ndarray, list[str]]:
    names = src.names
    images = np.empty((len(names), SIDE, SIDE), dtype=np.uint8)
    non_binary: list[str] = []
    bar = tqdm(names, desc="decoding GSN images", unit="img", file=sys.stderr, leave=False,
               disable=not progress)
    for i, name in enumerate(bar):
        arr = decode_png(src.read(name, f"row {i + 1}"), src.where(name))
        images[i] = arr
        # A quick test first: almost every image is binary, and np.isin is slower.
        if ((arr != 0) & (arr != 255)).any():
            non_binary.append(name)
    warnings = []
    if non_binary:
        warnings.append(f"{len(non_binary)} of {len(names)} images have gray values other than 0 and 255 "
                        f"(first: {src.where(non_binary[0])}); kept as they are")
    return images, warnings


def _cache_file(key: str) -> Path:
    return cache_dir() / f"gsn-v{CACHE_VERSION}-{key[:40]}.npz"


def _save_cache(path: Path, data: GSNData, key: str) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.savez would append ".npz" to a bare temp name
            # Plain arrays only (strings as fixed-width unicode), so np.load needs no pickle.
            np.savez(f, version=np.int64(CACHE_VERSION), key=np.array(key), n=np.int64(len(data)),
                     images=data.images.numpy(), counts=data.counts.numpy(),
                     names=np.array(data.names, dtype=str), warnings=np.array(data.warnings, dtype=str),
                     labels_sha256=np.array(data.labels_sha256))

    atomic_write(path, write)


_CACHE_KEYS = {"version", "key", "n", "images", "counts", "names", "warnings", "labels_sha256"}


def _load_cache(path: Path, key: str) -> dict[str, Any] | None:
    """The cached arrays, or None (and the file deleted) if it is missing, old, incomplete or corrupt."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if set(z.files) != _CACHE_KEYS or int(z["version"]) != CACHE_VERSION or str(z["key"]) != key:
                raise ValueError("wrong cache format")
            n = int(z["n"])
            out = {name: z[name] for name in ("images", "counts", "names", "warnings", "labels_sha256")}
        ok = (out["images"].shape == (n, SIDE, SIDE) and out["images"].dtype == np.uint8
              and out["counts"].shape == (n, L.NUM_TYPES) and out["counts"].dtype == np.int64
              and out["names"].shape == (n,) and n > 0 and _counts_valid(out["counts"]))
        if not ok:
            raise ValueError("wrong cache shapes")
        return out
    except Exception:  # noqa: BLE001 - any damage (truncation, bad CRC, odd arrays): rebuild, never trust
        _unlink(path)
        return None


def _counts_valid(counts: np.ndarray) -> bool:
    return bool(((counts >= 0) & (counts <= L.TOTAL)).all() and (counts.sum(1) == L.TOTAL).all()
                and ((counts > 0).sum(1) == 2).all())


def _make(images: np.ndarray, counts: np.ndarray, names: list[str], **meta: Any) -> GSNData:
    counts_t = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.int64))
    return GSNData(images=torch.from_numpy(np.ascontiguousarray(images)), counts=counts_t,
                   classes=L.counts_to_class_batch(counts_t), names=names, **meta)


def load_gsn(source: str | os.PathLike[str] | None = None, *, cache: bool = True, progress: bool = True,
             timeout: float = 30.0, retries: int = 3, backoff: float = 1.0) -> GSNData:
    """Load (and validate) a GSN source; see the module docstring. `cache=False` neither reads nor writes the
    decoded-array cache (a URL is still downloaded into the cache dir). timeout/retries/backoff: downloads."""
    name = resolve_source(source)
    options = {"timeout": timeout, "retries": retries, "backoff": backoff, "progress": progress}
    kind, path = _locate(name, options)
    src: _Source | None = None
    if kind == "zip":
        raw_zip = _read_bytes(path)
        # The key is known before the zip is parsed, so a cache hit skips parsing 10,000 entries.
        key, display = hashlib.sha256(raw_zip).hexdigest(), name if _is_url(name) else str(path)
    else:
        src = _dir_source(path)
        key, display = _dir_key(src), src.display
    cache_path = _cache_file(key)
    hit = _load_cache(cache_path, key) if cache else None
    if hit is not None:
        return _make(hit["images"], hit["counts"], [str(s) for s in hit["names"].tolist()], source=display,
                     sha256=key, warnings=[str(w) for w in hit["warnings"].tolist()],
                     labels_sha256=str(hit["labels_sha256"]))
    if src is None:
        src = _zip_source(raw_zip, str(path), display)
    images, warnings = _decode_all(src, progress)
    data = _make(images, src.counts, src.names, source=display, sha256=key, warnings=warnings,
                 labels_sha256=hashlib.sha256(src.labels_raw).hexdigest())
    if cache:
        try:
            _save_cache(cache_path, data, key)
        except OSError as e:  # a read-only cache dir must not stop the run
            data.warnings.append(f"could not write the cache {cache_path} ({_one_line(e)})")
    return data


# ---------------------------------------------------------------------------------------------------------
# torch Dataset
# ---------------------------------------------------------------------------------------------------------

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class GSNDataset(Dataset):
    """Items `(image float32 (1, 28, 28) in [0, 1], class id, counts float32 (6,))`.

    From a GSNData: indexes the decoded tensors (no PIL). From a directory (or its labels.csv): reads
    labels.csv once and opens each PNG with PIL on every access (the typical pipeline, kept as a baseline).
    `transform(image, counts) -> (image, counts)` runs per item; the class is recomputed from its counts.
    """

    def __init__(self, source: GSNData | str | os.PathLike[str], transform: Transform | None = None) -> None:
        self.transform = transform
        self.data: GSNData | None = None
        if isinstance(source, GSNData):
            self.data = source
            self.names = source.names
            self._counts = source.counts.float()
            self._classes = source.classes.tolist()
        else:
            root = Path(source)
            folder = _find_labels_dir(root.parent if root.name == LABELS_NAME else root)
            self.folder = folder
            self.names, counts = parse_labels(_read_bytes(folder / LABELS_NAME), str(folder / LABELS_NAME))
            self._counts = torch.from_numpy(counts).float()
            self._classes = [L.counts_to_class(c) for c in counts.tolist()]

    def __len__(self) -> int:
        return len(self.names)

    def _image(self, i: int) -> torch.Tensor:
        if self.data is not None:
            return self.data.images[i].float().div_(255.0).unsqueeze(0)
        arr = read_image(self.folder / self.names[i])
        return torch.from_numpy(arr).float().div_(255.0).unsqueeze(0)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        image, counts = self._image(i), self._counts[i].clone()
        if self.transform is None:
            return image, self._classes[i], counts
        image, counts = self.transform(image, counts)
        return image, L.counts_to_class(counts.round().long().tolist()), counts


# ---------------------------------------------------------------------------------------------------------
# Summary for `shapecount data check`
# ---------------------------------------------------------------------------------------------------------

def _pair_counts(classes: torch.Tensor) -> list[int]:
    return torch.bincount(L.class_to_pair_batch(classes), minlength=L.NUM_PAIRS).tolist()


def summary(data: GSNData) -> dict[str, Any]:
    """The facts `shapecount data check` prints (plain types, JSON-ready)."""
    train, val = official_split(len(data))
    present = torch.unique(data.classes)
    nz = data.counts[data.counts > 0]
    train_pairs, val_pairs = _pair_counts(data.classes[train]), _pair_counts(data.classes[val])
    return {
        "source": data.source,
        "sha256": data.sha256,
        "labels_sha256": data.labels_sha256,
        "images": len(data),
        "train": len(train),
        "val": len(val),
        "classes_present": int(present.numel()),
        "classes_total": L.NUM_CLASSES,
        "count_min": int(nz.min()) if nz.numel() else 0,
        "count_max": int(nz.max()) if nz.numel() else 0,
        "pair_balance": [{"pair": L.pair_name(p), "train": train_pairs[p], "val": val_pairs[p]}
                         for p in range(L.NUM_PAIRS)],
        "warnings": list(data.warnings),
    }


def format_summary(s: dict[str, Any]) -> str:
    """A readable multi-line text of `summary(data)`."""
    lines = [
        f"source:   {s['source']}",
        f"sha256:   {s['sha256']}",
        f"labels:   sha256 {s['labels_sha256']}",
        f"images:   {s['images']} (train {s['train']}, validation {s['val']}: the official split)",
        f"classes:  {s['classes_present']} of {s['classes_total']} present",
        f"counts:   non-zero counts range {s['count_min']}..{s['count_max']}",
        "pairs:    images per type pair (train / validation)",
    ]
    width = max(len(r["pair"]) for r in s["pair_balance"])
    lines += [f"  {r['pair']:<{width}}  {r['train']:>6} / {r['val']:>5}" for r in s["pair_balance"]]
    lines.append(f"warnings: {len(s['warnings'])}" if not s["warnings"] else "warnings:")
    lines += [f"  warning: {w}" for w in s["warnings"]]
    return "\n".join(lines)

