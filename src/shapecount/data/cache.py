"""`load_gsn`: locate a source, read and decode it once, and keep the decoded arrays in a cache.

The decoded images are cached as an `.npz` in the cache dir, keyed by a hash of the source's content, so only the
first load decodes PNGs.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from shapecount import labels as L
from shapecount.data import sources as S
from shapecount.data import validation as V
from shapecount.data.dataset import GSNData
from shapecount.data.downloader import DOWNLOAD_DEADLINE, download
from shapecount.errors import DataError
from shapecount.fileio import DiskFullError, atomic_write

CACHE_VERSION = 1


def locate(source: str, download_options: dict[str, Any]) -> tuple[str, Path]:
    """("dir" | "zip", local path) of a source; a URL is downloaded first."""
    if S.is_url(source):
        return "zip", download(source, **download_options)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(source, "does not exist", S.FIX_SOURCE)
    if path.is_dir():
        return "dir", path
    if path.name == V.LABELS_NAME:
        return "dir", path.parent
    if not S.is_zip(path):
        raise DataError(source, "is not a zip file or a directory", S.FIX_SOURCE)
    return "zip", path


def _decode_all(src: S.Source, progress: bool) -> tuple[np.ndarray, list[str]]:
    names = src.names
    images = np.empty((len(names), V.SIDE, V.SIDE), dtype=np.uint8)
    non_binary: list[str] = []
    bar = tqdm(names, desc="decoding GSN images", unit="img", file=sys.stderr, leave=False,
               disable=not progress)
    for i, name in enumerate(bar):
        arr = V.decode_png(src.read(name, f"row {i + 1}"), src.where(name))
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
    return S.cache_dir() / f"gsn-v{CACHE_VERSION}-{key[:40]}.npz"


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
        ok = (out["images"].shape == (n, V.SIDE, V.SIDE) and out["images"].dtype == np.uint8
              and out["counts"].shape == (n, L.NUM_TYPES) and out["counts"].dtype == np.int64
              and out["names"].shape == (n,) and n > 0 and _counts_valid(out["counts"]))
        if not ok:
            raise ValueError("wrong cache shapes")
        return out
    except Exception:  # noqa: BLE001 - any damage (truncation, bad CRC, odd arrays): rebuild, never trust
        path.unlink(missing_ok=True)
        return None


def _counts_valid(counts: np.ndarray) -> bool:
    return bool(((counts >= 0) & (counts <= L.TOTAL)).all() and (counts.sum(1) == L.TOTAL).all()
                and ((counts > 0).sum(1) == 2).all())


def _make(images: np.ndarray, counts: np.ndarray, names: list[str], **meta: Any) -> GSNData:
    counts_t = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.int64))
    return GSNData(images=torch.from_numpy(np.ascontiguousarray(images)), counts=counts_t,
                   classes=L.counts_to_class_batch(counts_t), names=names, **meta)


def load_gsn(source: str | os.PathLike[str] | None = None, *, cache: bool = True, progress: bool = True,
             timeout: float = 30.0, retries: int = 3, backoff: float = 1.0,
             deadline: float = DOWNLOAD_DEADLINE) -> GSNData:
    """Load (and validate) a GSN source (see `shapecount.data` for what a source is). `cache=False` neither
    reads nor writes the decoded-array cache (a URL is still downloaded into the cache dir).
    timeout/retries/backoff/deadline: downloads (see `downloader.download`)."""
    name = S.resolve_source(source)
    options = {"timeout": timeout, "retries": retries, "backoff": backoff, "deadline": deadline,
               "progress": progress}
    kind, path = locate(name, options)
    src: S.Source | None = None
    if kind == "zip":
        raw_zip = V.read_bytes(path)
        # The key is known before the zip is parsed, so a cache hit skips parsing 10,000 entries.
        key, display = hashlib.sha256(raw_zip).hexdigest(), name if S.is_url(name) else str(path)
    else:
        src = S.dir_source(path)
        key, display = S.dir_key(src), src.display
    cache_path = _cache_file(key)
    hit = _load_cache(cache_path, key) if cache else None
    if hit is not None:
        return _make(hit["images"], hit["counts"], [str(s) for s in hit["names"].tolist()], source=display,
                     sha256=key, warnings=[str(w) for w in hit["warnings"].tolist()],
                     labels_sha256=str(hit["labels_sha256"]))
    if src is None:
        src = S.zip_source(raw_zip, str(path), display)
    images, warnings = _decode_all(src, progress)
    data = _make(images, src.counts, src.names, source=display, sha256=key, warnings=warnings,
                 labels_sha256=hashlib.sha256(src.labels_raw).hexdigest())
    if cache:
        try:
            _save_cache(cache_path, data, key)
        except (OSError, DiskFullError) as e:  # a read-only or full cache dir must not stop the run
            data.warnings.append(f"could not write the cache {cache_path} ({V.one_line(e)})")
    return data
