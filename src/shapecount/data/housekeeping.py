"""`shapecount cache list|clean`: what the cache folder holds, and removing what can be rebuilt.

The cache ($SHAPECOUNT_CACHE, else ~/.cache/shapecount) holds decoded-image arrays (`gsn-v*.npz`), exact-decoding
audits (`audit-*.json`) and, under `downloads/`, downloaded zips with their sha256 sidecars. Arrays and audits
are rebuilt on demand from the data; a download costs network time, so `clean` keeps downloads unless `--all`.
"""

from __future__ import annotations

from pathlib import Path

from shapecount.data.sources import cache_dir

DOWNLOADS = "downloads"


def cache_files() -> list[Path]:
    root = cache_dir()
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def _is_download(p: Path) -> bool:
    return p.relative_to(cache_dir()).parts[0] == DOWNLOADS


def list_cache() -> str:
    files = cache_files()
    lines = [f"{cache_dir()}: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB"]
    for p in files:
        kind = "download" if _is_download(p) else "rebuildable"
        lines.append(f"  {p.stat().st_size / 1e6:9.2f} MB  {kind:<11}  {p.relative_to(cache_dir())}")
    return "\n".join(lines)


def clean_cache(everything: bool = False) -> tuple[int, int]:
    """Remove rebuildable files (and downloads too with everything=True); returns (files, bytes) removed."""
    n = size = 0
    for p in cache_files():
        if everything or not _is_download(p):
            size += p.stat().st_size
            p.unlink(missing_ok=True)
            n += 1
    return n, size
