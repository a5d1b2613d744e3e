"""Shared fixtures: tiny synthetic GSN datasets (directory and zip), the real data when available, and a
per-test cache dir so no test touches ~/.cache."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shapecount import labels as L

# Under pytest-xdist (`make test` runs one worker per core) the workers share the cores: one torch thread each,
# and one for the commands they start, because threads that wait on each other stall on a shared core.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
# A chosen thread count: training commands then never pick fewer threads because something else is running
# (cli._threads_beside_others), so runs compared with each other use the same count whatever the load.
os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))

HEADER = "name,squares,circles,up,right,down,left"


def _glyphs() -> list[np.ndarray]:
    """5x5 masks in labels.TYPES order; the triangles point the way their name says."""
    square = np.zeros((5, 5), bool)
    square[1:4, 1:4] = True
    yy, xx = np.mgrid[-2:3, -2:3]
    circle = yy**2 + xx**2 <= 4
    up = np.zeros((5, 5), bool)
    for r in range(3):
        up[r + 1, 2 - r:3 + r] = True
    return [square, circle, up, up.T[:, ::-1], up[::-1], up.T]  # right, down, left


def synthetic_counts(n: int) -> np.ndarray:
    """(n, 6) valid labels cycling over the 15 pairs with first counts 2..8 (like the real data)."""
    out = np.zeros((n, L.NUM_TYPES), dtype=np.int64)
    for i in range(n):
        a, b = L.PAIRS[i % L.NUM_PAIRS]
        k = 2 + (i // L.NUM_PAIRS) % 7
        out[i, a], out[i, b] = k, L.TOTAL - k
    return out


def draw(counts: np.ndarray) -> np.ndarray:
    """A 28x28 uint8 image (white shapes on black) with `counts` glyphs on a 5x5 grid of cells."""
    img = np.zeros((28, 28), np.uint8)
    glyphs = _glyphs()
    cell = 0
    for t, c in enumerate(counts):
        for _ in range(int(c)):
            r, col = divmod(cell, 5)
            img[r * 5 + 1:r * 5 + 6, col * 5 + 1:col * 5 + 6][glyphs[t]] = 255
            cell += 1
    return img


def rgba(gray: np.ndarray) -> Image.Image:
    """Like the real files: RGBA, R=G=B, alpha 255."""
    return Image.fromarray(np.dstack([gray, gray, gray, np.full_like(gray, 255)]), "RGBA")


def write_gsn_dir(folder: Path, n: int = 40) -> Path:
    """labels.csv + img_00000.png.. in `folder`; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = synthetic_counts(n)
    rows = [HEADER]
    for i, c in enumerate(counts):
        name = f"img_{i:05d}.png"
        rgba(draw(c)).save(folder / name)
        rows.append(",".join([name, *map(str, c.tolist())]))
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def zip_dir(folder: Path, zip_path: Path, prefix: str = "data/") -> Path:
    """Zip every file of `folder` under `prefix` (the official layout by default)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, prefix + p.name)
    return zip_path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own SHAPECOUNT_CACHE."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("SHAPECOUNT_CACHE", str(path))
    return path


@pytest.fixture
def gsn_dir(tmp_path: Path) -> Path:
    return write_gsn_dir(tmp_path / "gsn")


@pytest.fixture
def gsn_zip(gsn_dir: Path, tmp_path: Path) -> Path:
    return zip_dir(gsn_dir, tmp_path / "gsn.zip")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real GSN zip or directory from $SHAPECOUNT_DATA; skips when unset or missing."""
    value = os.environ.get("SHAPECOUNT_DATA", "")
    if not value or not Path(value).exists():
        pytest.skip("set SHAPECOUNT_DATA to the GSN zip (data_gsn.zip) to run the real-data tests")
    return Path(value)


@pytest.fixture(scope="session")
def real_gsn(real_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """The real data loaded once per session (with its own cache dir)."""
    from shapecount.data import load_gsn

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHAPECOUNT_CACHE", str(tmp_path_factory.mktemp("real_cache")))
        return load_gsn(str(real_data), progress=False)
