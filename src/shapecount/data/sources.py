"""Where the data and the cache are, and the two local kinds of source: a directory or a zip, each read through
one small interface (`Source`). A URL is downloaded into the cache dir first (downloader.py), then read as a zip.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shapecount.data import validation as V
from shapecount.errors import DataError

try:
    from lzma import LZMAError as _LZMAError
except ImportError:  # a Python without lzma: zipfile then refuses LZMA members with a RuntimeError
    _LZMAError = RuntimeError

DEFAULT_URL = "https://github.com/marcin119a/data/raw/refs/heads/main/data_gsn.zip"
ENV_DATA = "SHAPECOUNT_DATA"
ENV_CACHE = "SHAPECOUNT_CACHE"
FIX_SOURCE = "pass a directory with labels.csv, a .zip or an http(s) URL via --data or SHAPECOUNT_DATA"


def resolve_source(data: str | os.PathLike[str] | None) -> str:
    """The explicit argument, else $SHAPECOUNT_DATA, else the official URL."""
    if data is not None and str(data) != "":
        return str(data)
    return os.environ.get(ENV_DATA) or DEFAULT_URL


def cache_dir() -> Path:
    """$SHAPECOUNT_CACHE, else ~/.cache/shapecount (not created here)."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "shapecount"


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


@dataclass
class Source:
    display: str  # what GSNData.source says
    labels_raw: bytes
    names: list[str]  # validated labels.csv
    counts: np.ndarray
    read: Callable[[str, str], bytes]  # (image name, row description) -> bytes
    where: Callable[[str], str]  # image name -> how errors name it


def find_labels_dir(root: Path) -> Path:
    if (root / V.LABELS_NAME).is_file():
        return root
    subs = sorted(d for d in root.iterdir() if d.is_dir() and (d / V.LABELS_NAME).is_file())
    if len(subs) == 1:  # e.g. the official zip unpacked: <root>/data/labels.csv
        return subs[0]
    if subs:
        folders = ", ".join(s.name for s in subs)
        raise DataError(str(root), f"has several folders with {V.LABELS_NAME} ({folders})",
                        "point at the one folder you mean")
    raise DataError(str(root / V.LABELS_NAME), "is missing", f"{FIX_SOURCE}; the images go next to labels.csv")


def dir_source(root: Path) -> Source:
    folder = find_labels_dir(root)
    labels_path = folder / V.LABELS_NAME
    raw = V.read_bytes(labels_path)

    def read(name: str, row: str) -> bytes:
        p = folder / name
        try:
            info = p.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise DataError(str(p), f"is missing but listed in {V.LABELS_NAME} {row}", V.FIX_IMAGE) from None
        # a FIFO or a device (e.g. a link to /dev/zero) would block or never end: regular files only
        if not stat.S_ISREG(info.st_mode):
            raise DataError(str(p), "cannot be read: not a regular file", V.FIX_IMAGE)
        size = info.st_size
        if size > V.MAX_IMAGE_BYTES:
            raise DataError(str(p), f"is {size} bytes, too big for a 28x28 PNG", V.FIX_IMAGE)
        return V.read_bytes(p)

    names, counts = V.parse_labels(raw, str(labels_path))
    return Source(display=str(folder), labels_raw=raw, names=names, counts=counts, read=read,
                  where=lambda name: str(folder / name))


def dir_key(src: Source) -> str:
    """A directory's content hash without reading 10,000 files: labels.csv + each image's name, size and
    mtime."""
    h = hashlib.sha256(src.labels_raw)
    for i, name in enumerate(src.names):
        p = Path(src.where(name))
        try:
            st = p.stat()
        except OSError:
            raise DataError(str(p), f"is missing but listed in {V.LABELS_NAME} row {i + 1}",
                            V.FIX_IMAGE) from None
        h.update(f"\0{name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _check_member(info: zipfile.ZipInfo, where: str) -> None:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    entry = f"{where}:{V.printable(name)}"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise DataError(entry, "is an unsafe zip entry: an absolute path", "rebuild the zip")
    if ".." in parts:
        raise DataError(entry, "is an unsafe zip entry: '..' in its path", "rebuild the zip")
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        raise DataError(entry, "is an unsafe zip entry: a symbolic link", "rebuild the zip")


def _find_labels_member(zf: zipfile.ZipFile, where: str) -> str:
    names = zf.namelist()
    if V.LABELS_NAME in names:
        return ""
    in_top = [n for n in names if n.count("/") == 1 and n.endswith("/" + V.LABELS_NAME)]
    tops = sorted({n.split("/")[0] + "/" for n in in_top})
    tops = [t for t in tops if not t.startswith("__MACOSX")]
    if len(tops) == 1:
        return tops[0]
    if tops:
        raise DataError(where, f"has {V.LABELS_NAME} in several folders ({', '.join(map(V.printable, tops))})",
                        "keep only one")
    raise DataError(where, f"has no {V.LABELS_NAME} at its root or in a top folder",
                    f"use the official GSN zip (data/{V.LABELS_NAME} + data/img_*.png) or {FIX_SOURCE}")


def zip_source(raw_zip: bytes, where: str, display: str) -> Source:
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw_zip))
    # NotImplementedError: a member needs a newer zip version than zipfile reads.
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, NotImplementedError) as e:
        raise DataError(where, f"is not a valid zip file: {V.one_line(e)}", FIX_SOURCE) from None
    for info in zf.infolist():
        _check_member(info, where)
    prefix = _find_labels_member(zf, where)
    shown = f"{where}:{V.printable(prefix)}"  # how errors name a member: <zip>:<folder/><name>

    def member(name: str, row: str) -> bytes:
        entry = prefix + name
        try:
            info = zf.getinfo(entry)
        except KeyError:
            raise DataError(shown + name, f"is missing but listed in {V.LABELS_NAME} {row}",
                            V.FIX_IMAGE) from None
        limit = V.MAX_LABELS_BYTES if name == V.LABELS_NAME else V.MAX_IMAGE_BYTES
        if info.file_size > limit:
            raise DataError(shown + name, f"is {info.file_size} bytes uncompressed, over the limit",
                            V.FIX_IMAGE)
        try:
            return zf.read(info)
        # RuntimeError: encrypted entry; NotImplementedError: a compression method zipfile lacks;
        # OSError also covers corrupt bzip2 data, _LZMAError corrupt LZMA data, ValueError a negative offset.
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, NotImplementedError,
                _LZMAError, ValueError) as e:
            raise DataError(shown + name, f"cannot be read from the zip: {V.one_line(e)}",
                            "use an unencrypted zip (deflate or stored), e.g. re-download it") from None

    labels_raw = member(V.LABELS_NAME, "")
    names, counts = V.parse_labels(labels_raw, shown + V.LABELS_NAME)
    return Source(display=display, labels_raw=labels_raw, names=names, counts=counts, read=member,
                  where=lambda name: shown + name)


def is_zip(path: Path) -> bool:
    """zipfile.is_zipfile, but a damaged end record it raises on (e.g. a multi-disk zip64 locator) is "no"."""
    try:
        return zipfile.is_zipfile(path)
    except (zipfile.BadZipFile, ValueError, struct.error):
        return False
