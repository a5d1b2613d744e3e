"""The numbers of the report, from the files of each run: result rows, per-pair accuracy, error analysis and the
statistics that compare two runs. Nothing here formats text."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from shapecount import labels, metrics, runfolder
from shapecount.report.runs import Run, num


def macro_f1(true: np.ndarray, pred: np.ndarray) -> float:
    """Macro F1 over the classes present in `true` (the convention of shapecount.metrics)."""
    if len(true) == 0:
        return math.nan
    return metrics.macro_f1(torch.as_tensor(pred, dtype=torch.long), torch.as_tensor(true, dtype=torch.long))[0]


def result_row(run: Run) -> dict[str, Any]:
    """One row of the results table. A head that was not trained gives no metrics (None): the class of a
    regression-only run is decoded from its counts, a classification-only run has no count results."""
    m = run.metrics
    row: dict[str, Any] = {
        "run": run.name, "label": run.label, "experiment": run.cfg("experiment", m.get("experiment")),
        "kind": run.kind, "cls_weight": num(run.cfg("cls_weight")), "lambda_cnt": run.lambda_cnt,
        "loss": num(m.get("loss")), "epochs": m.get("epochs"), "best_epoch": m.get("best_epoch"),
        "runtime_s": num(m.get("runtime_s")), "n_val": run.n_val,
        "class_head_trained": run.class_head, "count_head_trained": run.count_head,
    }
    if run.class_head:
        row.update(top1=num(m.get("top1_accuracy")), top1_source="class head", macro_f1=num(m.get("macro_f1")),
                   pair_accuracy=num(m.get("pair_accuracy")))
    else:
        row.update(top1=num(m.get("count_decoded_accuracy")), top1_source="count head (decoded)",
                   macro_f1=None, pair_accuracy=None)
        pred = run.pred_class()
        if pred is not None:
            true = run.preds["true_class"]
            row["macro_f1"] = macro_f1(true, pred)
            row["pair_accuracy"] = float(np.mean(true // labels.SPLITS == pred // labels.SPLITS))
    if run.count_head:
        row.update(rmse=num(m.get("rmse")), mae=num(m.get("mae")),
                   count_decoded_accuracy=num(m.get("count_decoded_accuracy")))
    else:
        row.update(rmse=None, mae=None, count_decoded_accuracy=None)
    return row


def per_pair_row(run: Run) -> list[float | None]:
    """Exact (135-class) accuracy on the images of each true type pair: metrics.json's for a run with a trained
    class head, else computed from the classes in predictions.csv."""
    if run.class_head and isinstance(run.metrics.get("per_pair_accuracy"), dict):
        d = run.metrics["per_pair_accuracy"]
        return [num(d.get(labels.pair_name(p))) for p in range(labels.NUM_PAIRS)]
    pred = run.pred_class()
    if pred is None:
        return [None] * labels.NUM_PAIRS
    return [num(v) for v in metrics.per_pair_accuracy(torch.as_tensor(pred), torch.as_tensor(run.preds["true_class"]))]


def error_analysis(run: Run, top: int = 8) -> dict[str, Any] | None:
    """Numbers of section 8 for one run, from predictions.csv (None without it): metrics.error_split, the most
    confused classes and pairs, and the count errors of the count head and of the predicted class."""
    if run.preds is None:
        return None
    p = run.preds
    true, pred = p["true_class"], run.pred_class()
    n = len(true)
    cm = metrics.confusion(true, pred, labels.NUM_CLASSES)
    np.fill_diagonal(cm, 0)
    order = np.argsort(-cm, axis=None, kind="stable")[:top]
    classes = [(int(i // labels.NUM_CLASSES), int(i % labels.NUM_CLASSES), int(cm.flat[i])) for i in order
               if cm.flat[i] > 0]
    pcm = metrics.confusion(true // labels.SPLITS, pred // labels.SPLITS, labels.NUM_PAIRS)
    np.fill_diagonal(pcm, 0)
    porder = np.argsort(-pcm, axis=None, kind="stable")[:5]
    pairs = [(int(i // labels.NUM_PAIRS), int(i % labels.NUM_PAIRS), int(pcm.flat[i])) for i in porder
             if pcm.flat[i] > 0]
    tc = runfolder.true_counts(p)
    sources = {}
    if run.count_head and all(c in p for c in runfolder.PRED_TYPE_COLS):
        sources["count head"] = runfolder.pred_counts(p)
    if run.class_head:
        sources["implied by the predicted class"] = np.array([labels.class_to_counts(int(k)) for k in p["pred_class"]],
                                                            dtype=float).reshape(-1, labels.NUM_TYPES)
    count_err = {}
    for name, pc in sources.items():
        abs_err = np.abs(pc - tc)
        rounded = np.abs(np.clip(np.rint(pc), 0, labels.TOTAL) - tc)
        count_err[name] = {
            "mae_per_type": abs_err.mean(axis=0).tolist() if n else [math.nan] * labels.NUM_TYPES,
            "hist": [float(np.mean(rounded == 0)), float(np.mean(rounded == 1)), float(np.mean(rounded == 2)),
                     float(np.mean(rounded > 2))] if n else [math.nan] * 4,
            "all_exact": float(np.mean(np.all(rounded == 0, axis=1))) if n else math.nan,
        }
    return {**metrics.error_split(true, pred), "top_classes": classes, "top_pairs": pairs,
            "count_errors": count_err}


def binomial_std(p: float | None, n: int | None) -> float | None:
    """metrics.binomial_std, or None when the accuracy or the number of images is unknown."""
    if p is None or not n:
        return None
    return metrics.binomial_std(p, n)


def mcnemar(a: Run, b: Run) -> tuple[int, int] | None:
    """(images a gets right and b wrong, b right and a wrong) on the validation images both predicted."""
    if a.preds is None or b.preds is None or "name" not in a.preds or "name" not in b.preds:
        return None
    ia = {str(n): i for i, n in enumerate(a.preds["name"])}
    common = [(ia[str(n)], j) for j, n in enumerate(b.preds["name"]) if str(n) in ia]
    if not common:
        return None
    i, j = np.array(common).T
    ra = a.pred_class()[i] == a.preds["true_class"][i]
    rb = b.pred_class()[j] == b.preds["true_class"][j]
    return int(np.sum(ra & ~rb)), int(np.sum(rb & ~ra))


# Top-1 levels the time-to-accuracy table reports: the best public solution's, and two further milestones.
ACCURACY_LEVELS = (0.521, 0.80, 0.90)


def time_to_accuracy(run: Run, levels: tuple[float, ...] = ACCURACY_LEVELS) -> dict[str, Any] | None:
    """Training wall time (cumulative `seconds` of history.csv, evaluation included) to the first epoch whose
    per-epoch top-1 (single view, on the images the run selects its epoch on) reaches each level; None for a
    level never reached. A run without a class head is timed by the class its counts decode to
    (`val_count_top1`); None overall when the history lacks the column it needs."""
    h = run.history
    column = "val_top1" if run.class_head else "val_count_top1"
    if h is None or "seconds" not in h or column not in h:
        return None
    elapsed = np.cumsum(np.nan_to_num(h["seconds"]))
    top1 = np.nan_to_num(h[column], nan=-1.0)
    out: dict[str, Any] = {"minutes": elapsed / 60, "top1": top1, "from_counts": not run.class_head}
    for level in levels:
        hit = np.nonzero(top1 >= level)[0]
        out[level] = float(elapsed[hit[0]]) if len(hit) else None
    return out
