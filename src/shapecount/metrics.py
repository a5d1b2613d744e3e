"""Validation metrics, computed per sample over the whole validation set (never averaged per batch).

The torch functions score model outputs; `confusion` and `error_split` work on the class ids of a
predictions.csv (numpy) as well. torchmetrics is imported only by `macro_f1`, so that reading run files
(ablation, report) does not pay for its import.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from shapecount import labels


def macro_f1(pred: torch.Tensor, true: torch.Tensor) -> tuple[float, int]:
    """Macro F1 over the classes present in `true` (a class absent from validation has no defined recall;
    counting it as 0 would punish the model for the data). Returns (f1, number of classes averaged)."""
    from torchmetrics.functional.classification import multiclass_f1_score

    per_class = multiclass_f1_score(pred, true, num_classes=labels.NUM_CLASSES, average="none",
                                    zero_division=0)
    present = torch.bincount(true, minlength=labels.NUM_CLASSES) > 0
    return float(per_class[present].mean()), int(present.sum())


def count_errors(pred_counts: torch.Tensor, counts: torch.Tensor) -> dict[str, object]:
    err = pred_counts.float() - counts.float()
    rmse_t = err.pow(2).mean(dim=0).sqrt()
    mae_t = err.abs().mean(dim=0)
    return {
        "rmse": float(err.pow(2).mean().sqrt()),
        "mae": float(err.abs().mean()),
        "rmse_per_type": {t: float(v) for t, v in zip(labels.TYPES, rmse_t)},
        "mae_per_type": {t: float(v) for t, v in zip(labels.TYPES, mae_t)},
    }


def per_pair_accuracy(pred: torch.Tensor, true: torch.Tensor) -> list[float]:
    """Exact (135-class) accuracy on the images of each true type pair; NaN for a pair without images."""
    true_pair = labels.class_to_pair_batch(true)
    out = []
    for p in range(labels.NUM_PAIRS):
        m = true_pair == p
        out.append(float((pred[m] == true[m]).float().mean()) if m.any() else math.nan)
    return out


def classification_metrics(pred: torch.Tensor, true: torch.Tensor) -> dict[str, object]:
    pred_pair, true_pair = labels.class_to_pair_batch(pred), labels.class_to_pair_batch(true)
    f1, n_classes = macro_f1(pred, true)
    return {
        "top1_accuracy": float((pred == true).float().mean()),
        "macro_f1": f1,
        "macro_f1_classes": n_classes,
        "pair_accuracy": float((pred_pair == true_pair).float().mean()),
        "per_pair_accuracy": {labels.pair_name(p): v for p, v in enumerate(per_pair_accuracy(pred, true))},
    }


def compute_metrics(log_probs: torch.Tensor, pred_counts: torch.Tensor, classes: torch.Tensor,
                    counts: torch.Tensor) -> dict[str, object]:
    """All task metrics from whole-set outputs. Top-1 comes from the class head; `count_decoded_accuracy`
    scores the count head as a classifier (nearest valid label), which is what a regression-only run is
    compared on."""
    pred = log_probs.argmax(dim=1)
    out = classification_metrics(pred, classes)
    out.update(count_errors(pred_counts, counts))
    out["count_decoded_accuracy"] = float((labels.decode_counts(pred_counts) == classes).float().mean())
    return out


def confusion(true: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """(n, n) int64 counts, rows true, columns predicted; ids outside 0..n-1 are left out."""
    m = np.zeros((n, n), dtype=np.int64)
    ok = (true >= 0) & (true < n) & (pred >= 0) & (pred < n)
    np.add.at(m, (true[ok], pred[ok]), 1)
    return m


def error_split(true: np.ndarray, pred: np.ndarray) -> dict[str, object]:
    """Where the misclassified images are. `n` images, `errors` misclassified, of which `same_pair` have the
    right type pair (a wrong split) and `wrong_pair` do not; `split_off`: images of `same_pair` whose first
    type's count is off by 1, by 2 and by more."""
    true, pred = np.asarray(true), np.asarray(pred)
    wrong = pred != true
    same_pair = wrong & (true // labels.SPLITS == pred // labels.SPLITS)
    off = np.abs(true - pred)[same_pair]  # within a pair, class ids differ by the split difference
    return {"n": len(true), "errors": int(wrong.sum()), "same_pair": int(same_pair.sum()),
            "wrong_pair": int((wrong & ~same_pair).sum()),
            "split_off": [int(np.sum(off == 1)), int(np.sum(off == 2)), int(np.sum(off > 2))]}


def binomial_std(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n images: the noise floor for comparing runs."""
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))
