"""Validation metrics, computed per sample over the whole validation set (never averaged per batch)."""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.classification import multiclass_f1_score

from shapecount import labels


def macro_f1(pred: torch.Tensor, true: torch.Tensor) -> tuple[float, int]:
    """Macro F1 over the classes present in `true` (a class absent from validation has no defined recall;
    counting it as 0 would punish the model for the data). Returns (f1, number of classes averaged)."""
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


def classification_metrics(pred: torch.Tensor, true: torch.Tensor) -> dict[str, object]:
    pred_pair, true_pair = labels.class_to_pair_batch(pred), labels.class_to_pair_batch(true)
    f1, n_classes = macro_f1(pred, true)
    per_pair = {}
    for p in range(labels.NUM_PAIRS):
        m = true_pair == p
        per_pair[labels.pair_name(p)] = float((pred[m] == true[m]).float().mean()) if m.any() else math.nan
    return {
        "top1_accuracy": float((pred == true).float().mean()),
        "macro_f1": f1,
        "macro_f1_classes": n_classes,
        "pair_accuracy": float((pred_pair == true_pair).float().mean()),
        "per_pair_accuracy": per_pair,
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


def binomial_std(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n images: the noise floor for comparing runs."""
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))
