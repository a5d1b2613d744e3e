"""The Markdown tables of the report and of OUT/comparison/: results, per-pair accuracy, CSV files shown as
tables; and `fmt`, how every number in the report is written."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from shapecount import labels
from shapecount.mdtable import md_table
from shapecount.report.analysis import per_pair_row
from shapecount.report.runs import Run

RESULT_FIELDS = ("run", "label", "experiment", "kind", "cls_weight", "lambda_cnt", "loss", "top1", "top1_source",
                 "macro_f1", "pair_accuracy", "rmse", "mae", "count_decoded_accuracy", "epochs", "best_epoch",
                 "runtime_s", "n_val", "class_head_trained", "count_head_trained")
NOT_TRAINED_CNT = "n/a†"
NOT_TRAINED_CLS = "n/a‡"


def fmt(v: Any, digits: int = 3) -> str:
    """How the report writes a value: n/a for a missing or non-finite one, yes/no, ints as they are, floats
    with `digits` decimals."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def results_csv(rows: list[dict[str, Any]]) -> str:
    """comparison/results.csv: RESULT_FIELDS, floats written in full (repr), None as an empty cell."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(RESULT_FIELDS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r[k] is None else (repr(r[k]) if isinstance(r[k], float) else r[k])
                    for k in RESULT_FIELDS})
    return buf.getvalue()


def results_table_md(rows: list[dict[str, Any]]) -> str:
    """The results table (one row per run, from analysis.result_row) and the notes on its symbols."""
    header = ["experiment", "lambda_cnt", "loss", "top-1", "top-1 source", "macro F1", "pair acc.", "RMSE", "MAE",
              "count-decoded acc.", "epochs", "best epoch", "runtime s"]
    body = []
    for r in rows:
        def cnt(k: str, r: dict[str, Any] = r) -> str:
            return fmt(r[k]) if r["count_head_trained"] else NOT_TRAINED_CNT

        def cls(k: str, r: dict[str, Any] = r) -> str:
            return fmt(r[k]) if r["class_head_trained"] or r[k] is not None else NOT_TRAINED_CLS

        top1 = fmt(r["top1"]) + ("" if r["class_head_trained"] else " ‡")
        body.append([r["label"], fmt(r["lambda_cnt"], 2) if r["lambda_cnt"] is not None else "n/a", fmt(r["loss"]),
                     top1, r["top1_source"], cls("macro_f1"), cls("pair_accuracy"), cnt("rmse"), cnt("mae"),
                     cnt("count_decoded_accuracy"), fmt(r["epochs"]), fmt(r["best_epoch"]), fmt(r["runtime_s"], 1)])
    notes = [("- loss: the validation loss each run optimised (cls_weight x NLL + lambda_cnt x SmoothL1), so rows with "
             "different weights are not comparable on it.")]
    if any(not r["count_head_trained"] for r in rows):
        notes.append(f"- {NOT_TRAINED_CNT}: count head not trained (lambda_cnt = 0); its outputs are those of an "
                     "untrained head, so RMSE, MAE and count-decoded accuracy are not reported.")
    if any(not r["class_head_trained"] for r in rows):
        notes.append("- ‡: class head not trained (cls_weight = 0); top-1 is the count-decoded accuracy (the valid "
                     "label nearest to the predicted counts), and macro F1 / pair accuracy are computed from those "
                     f"decoded classes in predictions.csv ({NOT_TRAINED_CLS} when that file is missing).")
    return md_table(header, body) + "\n\n" + "\n".join(notes) + "\n"


def per_pair_md(runs: list[Run]) -> str:
    counts = next((np.bincount(r.preds["true_class"] // labels.SPLITS, minlength=labels.NUM_PAIRS)
                   for r in runs if r.preds is not None), None)
    vals = [per_pair_row(r) for r in runs]
    header = ["type pair", *([] if counts is None else ["val images"]), *[r.label for r in runs]]
    rows = []
    for p in range(labels.NUM_PAIRS):
        row: list[Any] = [labels.pair_name(p)]
        if counts is not None:
            row.append(int(counts[p]))
        row += [fmt(v[p]) for v in vals]
        rows.append(row)
    note = ("Exact (135-class) accuracy on the validation images of each true type pair; a run without a trained "
            "class head is scored on the class decoded from its counts.")
    return md_table(header, rows) + "\n\n" + note + "\n"


def csv_to_md(path: Path, max_rows: int = 60) -> str:
    """A CSV file as a table (its first `max_rows` rows; a note says how many more there are)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return "> (empty)\n"
    body = rows[1:max_rows + 1]
    extra = f"\n\n({len(rows) - 1 - max_rows} more rows in `{path.name}`)" if len(rows) - 1 > max_rows else ""
    return md_table(rows[0], body) + extra + "\n"
