"""runfolder.py: the run folder's writers and readers agree, and reading needs no matplotlib."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shapecount import fileio, labels, runfolder

try:
    from test_plots import HISTORY_COLS, make_run_folder
except ImportError:  # tests collected as a package
    from tests.test_plots import HISTORY_COLS, make_run_folder


def test_loaders_types(tmp_path: Path) -> None:
    run = tmp_path / "r"
    make_run_folder(run, epochs=4)
    hist = runfolder.load_history(run)
    assert set(HISTORY_COLS) <= set(hist)
    assert hist["epoch"].tolist() == [1, 2, 3, 4]
    preds = runfolder.load_predictions(run)
    assert preds["true_class"].dtype == np.int64 and preds["pred_up"].dtype == float
    assert preds["name"][0] == "00000.png"
    for k, c in zip(preds["true_class"], np.stack([preds[t] for t in labels.TYPES], 1)):
        assert labels.counts_to_class(c) == k


def test_atomic_write_leaves_no_temp(tmp_path: Path) -> None:
    p = fileio.write_text(tmp_path / "sub" / "a.txt", "hello")
    assert p.read_text() == "hello"
    assert [x.name for x in p.parent.iterdir()] == ["a.txt"]


def test_history_and_metrics_round_trip(tmp_path: Path) -> None:
    rows = [{c: float(e) for c in runfolder.HISTORY_COLUMNS} | {"epoch": e, "improved": True} for e in (1, 2)]
    runfolder.write_history(tmp_path, rows)
    hist = runfolder.load_history(tmp_path)
    assert list(hist) == runfolder.HISTORY_COLUMNS and hist["epoch"].tolist() == [1, 2]
    runfolder.write_history(tmp_path, rows, held_out=True)  # measured on held-out images: named so
    header = (tmp_path / "history.csv").read_text().splitlines()[0].split(",")
    assert "holdout_top1" in header and not any(c.startswith("val_") for c in header)
    assert runfolder.load_history(tmp_path)["val_top1"].tolist() == [1.0, 2.0]
    runfolder.write_metrics(tmp_path, {"rmse": math.nan, "per_type": [1.0, math.inf], "threads": 2})
    assert runfolder.load_json(tmp_path / "metrics.json") == {"rmse": None, "per_type": [1.0, None], "threads": 2}
    assert runfolder.load_json(tmp_path / "missing.json") is None


@pytest.mark.parametrize("raw, says", [(b'{"top1_accuracy": 0.8', "cannot be read as JSON"),
                                       (b"[1, 2]", "holds a JSON list, not an object"),
                                       (b'{"top1_accuracy": 0.8\xff}', "cannot be read as JSON")])
def test_a_damaged_json_file_is_a_one_line_error_naming_it(tmp_path: Path, raw: bytes, says: str) -> None:
    (tmp_path / "metrics.json").write_bytes(raw)
    with pytest.raises(runfolder.RunFileError) as e:
        runfolder.load_json(tmp_path / "metrics.json")
    assert str(e.value).startswith(f"{tmp_path / 'metrics.json'}: {says}") and "\n" not in str(e.value)


def test_class_of_a_run_without_class_head_is_decoded_from_counts(tmp_path: Path) -> None:
    run = tmp_path / "reg"
    make_run_folder(run, "regression", n=40)
    preds = runfolder.load_predictions(run)
    assert runfolder.head_flags(json.loads((run / "config.json").read_text())) == (False, True)
    decoded = labels.decode_counts(torch.from_numpy(runfolder.pred_counts(preds))).numpy()
    assert np.array_equal(runfolder.effective_pred_class(preds, class_head=False), preds["pred_class_from_counts"])
    without = {k: v for k, v in preds.items() if k != "pred_class_from_counts"}
    assert np.array_equal(runfolder.effective_pred_class(without, class_head=False), decoded)
    assert np.array_equal(runfolder.effective_pred_class(preds, class_head=True), preds["pred_class"])


def test_reading_a_run_folder_does_not_import_matplotlib(tmp_path: Path) -> None:
    make_run_folder(tmp_path / "r")
    code = ("import sys; from shapecount import ablation, runfolder; "
            f"runfolder.load_predictions({str(tmp_path / 'r')!r}); "
            f"ablation.error_structure(__import__('pathlib').Path({str(tmp_path / 'r')!r})); "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
