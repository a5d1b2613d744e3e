"""shapecount.eda: every file is written, the numbers are computed from the data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_counts
from shapecount import data as D
from shapecount import eda
from shapecount import labels as L


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_run_eda_writes_every_file(gsn_dir: Path, tmp_path: Path) -> None:
    data = D.load_gsn(str(gsn_dir), progress=False)
    out = tmp_path / "nested" / "eda"
    res = eda.run_eda(data, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(eda.FILES), "all files, no temp files"
    assert set(res["files"]) == set(eda.FILES)
    for name in eda.FILES:
        assert (out / name).stat().st_size > 0
        if name.endswith(".png"):
            with Image.open(out / name) as im:
                assert im.size[0] > 400 and im.size[1] > 300

    counts = synthetic_counts(40)
    classes = {L.counts_to_class(c) for c in counts.tolist()}
    assert res["images"] == 40 and (res["train"], res["val"]) == (36, 4)
    assert res["classes_present"] == len(classes) and res["classes_absent"] == 135 - len(classes)
    assert (res["count_min"], res["count_max"]) == (2, 8)

    rows = read_csv(out / "count_table.csv")
    assert [int(r["count"]) for r in rows] == list(range(10))
    for t, name in enumerate(L.TYPES):
        for k in range(10):
            assert int(rows[k][name]) == int((counts[:, t] == k).sum())

    per_class = read_csv(out / "class_counts.csv")
    assert len(per_class) == 135 and sum(int(r["images"]) for r in per_class) == 40
    assert {int(r["class_id"]) for r in per_class if int(r["images"])} == classes
    balance = read_csv(out / "pair_balance.csv")
    assert len(balance) == 15 and sum(int(r["train"]) for r in balance) == 36
    summary = (out / "summary.md").read_text()
    assert f"{len(classes)} of 135 classes occur" in summary and "range 2..8" in summary
    assert "| count | squares |" in (out / "count_table.md").read_text()


def test_summary_lists_warnings(gsn_dir: Path, tmp_path: Path) -> None:
    data = D.load_gsn(str(gsn_dir), progress=False)
    data.warnings.append("3 of 40 images have gray values other than 0 and 255")
    res = eda.run_eda(data, tmp_path / "eda")
    assert res["warnings"] == 1 and "3 of 40 images" in (tmp_path / "eda" / "summary.md").read_text()


def test_example_indices_cover_pairs(gsn_dir: Path) -> None:
    data = D.load_gsn(str(gsn_dir), progress=False)
    idx = eda.example_indices(data, 24)
    assert len(idx) == 24 == len(set(idx))
    assert {int(data.classes[i]) // L.SPLITS for i in idx[:15]} == set(range(15))


@pytest.mark.realdata
def test_real_count_table(real_gsn, tmp_path: Path) -> None:
    res = eda.run_eda(real_gsn, tmp_path / "eda")
    table = np.array([[int(r[t]) for t in L.TYPES] for r in read_csv(tmp_path / "eda" / "count_table.csv")])
    assert table[2, L.TYPES.index("squares")] == 415
    assert table[6, L.TYPES.index("circles")] == 508
    assert table[1].sum() == 0 and table[9].sum() == 0
    assert (table.sum(axis=0) == 10_000).all()
    assert (res["classes_present"], res["count_min"], res["count_max"]) == (105, 2, 8)
    assert "105 of 135 classes occur" in (tmp_path / "eda" / "summary.md").read_text()
