"""`shapecount cache list|clean`: what the cache folder holds, and removing what can be rebuilt.

The cache ($SHAPECOUNT_CACHE, else ~/.cache/shapecount) holds decoded-image arrays (`gsn-v*.npz`), exact-decoding
audits (`audit-*.json`) and, under `downloads/`, downloaded zips with their sha256 sidecars. Arrays and audits
are rebuilt on demand from the data; a download costs network time, so `clean` keeps downloads unless `--all`.
The cache folder may be one the user shares with other programs, so only files named as shapecount names them
are ever removed; anything else is listed as not ours and kept.
"""

from __future__ import annotations

import re
from pathlib import Path

from shapecount.data.sources import cache_dir

DOWNLOADS = "downloads"

# What shapecount writes, by folder; ".NAME.XXXX.tmp" and ".download-XXXX.part" are the temp files of an
# interrupted write (fileio.atomic_write, downloader._fetch).
_REBUILDABLE = re.compile(r"\.?(gsn-v\d+-[0-9a-f]+\.npz|audit-[0-9a-f]+\.json)(\.[^/]+\.tmp)?")
_DOWNLOAD = re.compile(r"\.?[0-9a-f]{16}-[^/]+|\.download-[^/]+\.part")


def cache_files() -> list[Path]:
    root = cache_dir()
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def kind(p: Path) -> str:
    """'rebuildable', 'download' or 'not ours' for a file under the cache folder."""
    parts = p.relative_to(cache_dir()).parts
    if len(parts) == 1 and _REBUILDABLE.fullmatch(parts[0]):
        return "rebuildable"
    if len(parts) == 2 and parts[0] == DOWNLOADS and _DOWNLOAD.fullmatch(parts[1]):
        return "download"
    return "not ours"


def list_cache() -> str:
    files = cache_files()
    lines = [f"{cache_dir()}: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB"]
    for p in files:
        lines.append(f"  {p.stat().st_size / 1e6:9.2f} MB  {kind(p):<11}  {p.relative_to(cache_dir())}")
    return "\n".join(lines)


def clean_cache(everything: bool = False) -> tuple[int, int, int]:
    """Remove rebuildable files (and downloads too with everything=True); files that shapecount did not write
    are kept. Returns (files removed, bytes removed, files kept as not ours)."""
    n = size = foreign = 0
    for p in cache_files():
        k = kind(p)
        if k == "not ours":
            foreign += 1
        elif k == "rebuildable" or everything:
            size += p.stat().st_size
            p.unlink(missing_ok=True)
            n += 1
    return n, size, foreign
