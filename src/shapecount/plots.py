"""Figures of one run folder (docs/run_folder.md), made from its files alone.

Reads config.json, history.csv, metrics.json and predictions.csv (with runfolder's readers); never the model or
the dataset, except `worst_errors.png`, which takes the validation images passed in by the caller. Figures are
drawn with the object-oriented matplotlib API (`matplotlib.figure.Figure`, rendered by Agg), so no pyplot state
or display is involved, and every file is written atomically (fileio: temp name in the same folder, then
os.replace). `new_figure` and `save_figure` serve the EDA and report figures as well.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from shapecount import fileio, labels, runfolder
from shapecount.config import widened_name
from shapecount.metrics import confusion
from shapecount.runfolder import (
    PLOTS_DIR,
    PRED_TYPE_COLS,
    effective_pred_class,
    eval_set_name,
    head_flags,
    load_history,
    load_json,
    load_predictions,
    pred_counts,
    true_counts,
)

PLOT_FILES = ("loss.png", "top1.png", "rmse.png", "confusion_135.png", "confusion_pairs.png",
              "count_confusion.png")
WORST_ERRORS = "worst_errors.png"
MAX_GALLERY = 24
MAX_COUNT = labels.TOTAL  # counts 0..10


# ---------------------------------------------------------------- figures and files

def new_figure(**kw: Any) -> Figure:
    """A Figure on its own Agg canvas: no pyplot, no global backend switch, nothing to close."""
    kw.setdefault("layout", "constrained")
    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path, dpi: int = 110, **savefig: Any) -> Path:
    """Render `fig` as PNG and write it atomically; `savefig` options (e.g. bbox_inches) go to Figure.savefig."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, **savefig)
    return fileio.write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------- per-plot helpers

def _usable(a: np.ndarray | None) -> bool:
    return a is not None and len(a) > 0 and bool(np.any(np.isfinite(a) & (a != 0)))


def _epochs(hist: Mapping[str, np.ndarray]) -> np.ndarray:
    n = len(next(iter(hist.values()))) if hist else 0
    e = hist.get("epoch")
    return e if e is not None and np.all(np.isfinite(e)) else np.arange(1, n + 1, dtype=float)


def _mark_best(ax, epochs: np.ndarray, values: np.ndarray, best_epoch: Any) -> None:
    if best_epoch is None:
        return
    try:
        b = float(best_epoch)
    except (TypeError, ValueError):
        return
    hit = np.nonzero(epochs == b)[0]
    at = f": {values[hit[0]]:.3f}" if len(hit) and np.isfinite(values[hit[0]]) else ""
    ax.axvline(b, color="tab:red", linestyle="--", linewidth=1, label=f"best epoch ({int(b)}){at}")
    if at:
        ax.plot([b], [values[hit[0]]], marker="*", color="tab:red", markersize=12, linestyle="none")


def plot_loss(hist: Mapping[str, np.ndarray], path: Path, title: str, weights: tuple[float, float] | None,
              best_epoch: Any = None, eval_set: str = "validation") -> Path:
    """eval_set names the images the per-epoch `val_*` columns were measured on (see `eval_set_name`)."""
    ep = _epochs(hist)
    panels = [("total (weighted)", "train_loss", "val_loss"),
              ("classification (NLL)", "train_loss_cls", "val_loss_cls"),
              ("count (SmoothL1)", "train_loss_cnt", "val_loss_cnt")]
    panels = [p for p in panels if _usable(hist.get(p[1])) or _usable(hist.get(p[2]))]
    if not panels:
        panels = [("total (weighted)", "train_loss", "val_loss")]
    fig = new_figure(figsize=(4.6 * len(panels), 3.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, tr, va) in zip(axes, panels):
        for col, lab, style in ((tr, "train", "-"), (va, eval_set, "-")):
            y = hist.get(col)
            if y is not None and len(y):
                ax.plot(ep, y, style, marker="." if len(ep) < 30 else None, label=lab)
        sub = name
        if weights is not None:
            w = weights[0] if "classification" in name else weights[1] if "count" in name else None
            if w is not None and w == 0:
                sub += "\n(weight 0: logged, not trained)"
        _mark_best(ax, ep, hist.get(va, np.full(len(ep), np.nan)), best_epoch)
        ax.set_title(sub, fontsize=10)
        ax.set_xlabel("epoch")
        int_epochs(ax)
        ax.set_ylabel("loss per sample")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title}: training and {eval_set} loss", fontsize=12)
    return save_figure(fig, path)


def plot_metric(hist: Mapping[str, np.ndarray], col: str, path: Path, title: str, ylabel: str,
                best_epoch: Any = None, note: str = "") -> Path:
    ep = _epochs(hist)
    y = hist.get(col, np.full(len(ep), np.nan))
    fig = new_figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    lab = ylabel  # names the images measured on (a history's val_* columns are held-out images with a holdout)
    if np.any(np.isfinite(y)):
        best = int(np.nanargmax(y) if "top1" in col else np.nanargmin(y))
        lab += f" ({'max' if 'top1' in col else 'min'} {y[best]:.3f} at epoch {ep[best]:g})"
    ax.plot(ep, y, marker="." if len(ep) < 30 else None, label=lab)
    _mark_best(ax, ep, y, best_epoch)
    ax.set_xlabel("epoch")
    int_epochs(ax)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{title}, per epoch" + (f"\n{note}" if note else ""), fontsize=11)  # the metric: y label
    return save_figure(fig, path)


def int_epochs(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _log_colorbar(fig, im, ax, vmax: int, label: str) -> None:
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000) if t <= vmax]
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, ticks=ticks)
    cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    cb.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    cb.set_label(label)


def _pair_ticks(ax, block: int, short: bool = False) -> None:
    names = [labels.pair_short(p) if short else labels.pair_name(p) for p in range(labels.NUM_PAIRS)]
    centers = [p * block + (block - 1) / 2 for p in range(labels.NUM_PAIRS)]
    ax.set_xticks(centers)
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_yticks(centers)
    ax.set_yticklabels(names, fontsize=7)


def plot_confusion_135(cm: np.ndarray, path: Path, title: str) -> Path:
    fig = new_figure(figsize=(11, 10))
    ax = fig.subplots()
    masked = np.ma.masked_where(cm == 0, cm)
    vmax = max(int(cm.max()), 2)
    im = ax.imshow(masked, cmap="viridis", norm=LogNorm(vmin=1, vmax=vmax), interpolation="nearest")
    for k in range(1, labels.NUM_PAIRS):
        ax.axhline(k * labels.SPLITS - 0.5, color="0.6", linewidth=0.5)
        ax.axvline(k * labels.SPLITS - 0.5, color="0.6", linewidth=0.5)
    _pair_ticks(ax, labels.SPLITS)
    ax.set_xlabel("predicted class (blocks of 9 = one type pair; within a block the first type's count 1..9)")
    ax.set_ylabel("true class")
    _log_colorbar(fig, im, ax, vmax, "images (log scale; empty cells white)")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title}: 135-class confusion (rows true, columns predicted)\n"
                 f"{int(cm.sum())} validation images, top-1 {acc:.3f}", fontsize=12)
    return save_figure(fig, path)


def _annotate(ax, m: np.ndarray, im, shown: np.ndarray, fontsize: float) -> None:
    """Write each non-zero count in its cell, black on light colours and white on dark ones."""
    for i, j in zip(*np.nonzero(m)):
        r, g, b, _ = im.cmap(im.norm(float(shown[i, j])))
        ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=fontsize,
                color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")


def plot_confusion_pairs(cm: np.ndarray, path: Path, title: str, ax=None) -> Path | None:
    """15x15 pair confusion with counts; draws into `ax` (and returns None) when given one."""
    own = ax is None
    if own:
        fig = new_figure(figsize=(8.5, 7.5))
        ax = fig.subplots()
    shown = np.log1p(cm)
    im = ax.imshow(shown, cmap="Blues", interpolation="nearest")
    _annotate(ax, cm, im, shown, fontsize=7)
    _pair_ticks(ax, 1, short=not own)
    ax.set_xlabel("predicted pair")
    ax.set_ylabel("true pair")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title}: type-pair confusion\npair accuracy {acc:.3f} (colour: log counts)",
                 fontsize=11 if own else 10)
    if own:
        return save_figure(fig, path)
    return None


def plot_count_confusion(tc: np.ndarray, pc: np.ndarray, path: Path, title: str, note: str = "") -> Path:
    fig = new_figure(figsize=(14, 9.5))
    axes = fig.subplots(2, 3)
    pr = np.clip(np.rint(np.nan_to_num(pc, nan=0.0)), 0, MAX_COUNT).astype(int)
    tr = np.clip(np.rint(tc), 0, MAX_COUNT).astype(int)
    for t, ax in enumerate(axes.flat):
        m = confusion(tr[:, t], pr[:, t], MAX_COUNT + 1)
        im = ax.imshow(np.ma.masked_where(m == 0, m), cmap="viridis", norm=LogNorm(vmin=1, vmax=max(int(m.max()), 2)),
                       interpolation="nearest")
        _annotate(ax, m, im, m, fontsize=6)
        ax.set_xticks(range(MAX_COUNT + 1))
        ax.set_yticks(range(MAX_COUNT + 1))
        ax.tick_params(labelsize=7)
        ax.set_xlabel("predicted count (rounded, clipped 0..10)", fontsize=8)
        ax.set_ylabel("true count", fontsize=8)
        exact = np.mean(tr[:, t] == pr[:, t]) if len(tr) else math.nan
        ax.set_title(f"{labels.TYPE_PLURAL[t]}: exact {exact:.3f}", fontsize=10)
    fig.suptitle(f"{title}: count head, true vs predicted count per type" + (f"\n{note}" if note else ""),
                 fontsize=12)
    return save_figure(fig, path)


def worst_error_indices(preds: Mapping[str, np.ndarray], class_head: bool, k: int = MAX_GALLERY) -> np.ndarray:
    """Indices of the (up to) k misclassified images the run was most sure of: highest confidence in the wrong
    class; for a run without a trained class head, the largest count error."""
    pred = effective_pred_class(preds, class_head)
    wrong = np.nonzero(pred != preds["true_class"])[0]
    if class_head and "confidence" in preds:
        score = np.nan_to_num(preds["confidence"][wrong], nan=-1.0)
    else:
        score = np.linalg.norm(pred_counts(preds)[wrong] - true_counts(preds)[wrong], axis=1)
    return wrong[np.argsort(-score, kind="stable")][:k]


def plot_worst_errors(preds: Mapping[str, np.ndarray], images: Mapping[str, np.ndarray], path: Path,
                      title: str, class_head: bool) -> Path:
    idx = [i for i in worst_error_indices(preds, class_head, k=len(preds["true_class"]))
           if str(preds["name"][i]) in images][:MAX_GALLERY]
    pred = effective_pred_class(preds, class_head)
    cols = 6
    rows = max(1, math.ceil(len(idx) / cols))
    fig = new_figure(figsize=(cols * 2.7, rows * 3.2 + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    for n, ax in enumerate(axes.flat):
        if n >= len(idx):
            ax.axis("off")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, i in zip(axes.flat, idx):
        # Shown as stored (0 black, 255 white), i.e. as the image file looks.
        img = np.asarray(images[str(preds["name"][i])]).squeeze()
        ax.imshow(img, cmap="gray", vmin=0, vmax=255 if img.max(initial=0) > 1 else 1, interpolation="nearest")
        ax.set_title(f"true: {labels.class_name(int(preds['true_class'][i]))}\n"
                     f"pred: {labels.class_name(int(pred[i]))}", fontsize=7)
        if class_head and "confidence" in preds:
            extra = f"p(pred) = {preds['confidence'][i]:.2f}"
        else:
            extra = "counts: " + " ".join(f"{v:.1f}" for v in pred_counts(preds)[i])
        ax.text(0.5, -0.06, f"{preds['name'][i]}  {extra}", transform=ax.transAxes, ha="center", va="top",
                fontsize=6)
    if not idx:
        axes.flat[0].text(0.5, 0.5, "no misclassified validation images", ha="center", va="center",
                          transform=axes.flat[0].transAxes)
    how = "highest confidence in the wrong class" if class_head else "largest count error (class from counts)"
    fig.suptitle(f"{title}: worst errors ({len(idx)} misclassified validation images, {how})", fontsize=12)
    return save_figure(fig, path, dpi=100)


# ---------------------------------------------------------------- entry point

def run_title(config: Mapping[str, Any] | None, metrics: Mapping[str, Any], fallback: str) -> str:
    """The figures' title: the experiment, its count weight and, for a widened network, its convolutions
    (so that a capacity study's figures do not pass for the assignment's backbone)."""
    title = (config or {}).get("experiment") or metrics.get("experiment") or fallback
    if config and "lambda_cnt" in config:
        title = f"{title} (lambda={float(config['lambda_cnt']):g})"
    widened = widened_name((config or {}).get("conv_widths"))
    if widened:
        title = f"{title}, convolutions {widened} (capacity study)"
    return title


def make_run_plots(run_dir: Path, images: dict[str, np.ndarray] | None = None) -> list[Path]:
    """Write the figures of a run folder into run_dir/plots/ and return their paths.

    A missing history.csv or predictions.csv skips the figures that need it. `images` (validation image name ->
    uint8 28x28) enables worst_errors.png."""
    run_dir = Path(run_dir)
    out = run_dir / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    config = load_json(run_dir / runfolder.CONFIG_FILE)
    metrics = load_json(run_dir / runfolder.METRICS_FILE) or {}
    class_head, count_head = head_flags(config, metrics)
    title = run_title(config, metrics, run_dir.name)
    weights = (float(config["cls_weight"]), float(config["lambda_cnt"])) if config and "cls_weight" in config \
        else None
    best = metrics.get("best_epoch")
    eval_set = eval_set_name(config)
    written: list[Path] = []

    if (run_dir / runfolder.HISTORY_FILE).is_file():
        hist = load_history(run_dir)
        if hist and len(next(iter(hist.values()))):
            written.append(plot_loss(hist, out / "loss.png", title, weights, best, eval_set))
            # Without a class head, the top-1 that means something is that of the class the counts decode to.
            decoded = not class_head and "val_count_top1" in hist
            note = "" if class_head else ("class decoded from the counts (class head not trained)" if decoded
                                          else "class head not trained (cls_weight=0)")
            written.append(plot_metric(hist, "val_count_top1" if decoded else "val_top1", out / "top1.png", title,
                                       f"{eval_set} top-1 accuracy", best, note))
            written.append(plot_metric(hist, "val_rmse", out / "rmse.png", title, f"{eval_set} count RMSE", best,
                                       "" if count_head else "count head not trained (lambda_cnt=0)"))

    if (run_dir / runfolder.PREDICTIONS_FILE).is_file():
        preds = load_predictions(run_dir)
        if len(preds.get("true_class", [])):
            pred = effective_pred_class(preds, class_head)
            src = "" if class_head else " [class decoded from counts]"
            cm = confusion(preds["true_class"], pred, labels.NUM_CLASSES)
            written.append(plot_confusion_135(cm, out / "confusion_135.png", title + src))
            pcm = confusion(preds["true_class"] // labels.SPLITS, pred // labels.SPLITS, labels.NUM_PAIRS)
            written.append(plot_confusion_pairs(pcm, out / "confusion_pairs.png", title + src))
            if all(c in preds for c in PRED_TYPE_COLS):
                note = "" if count_head else "count head not trained (lambda_cnt=0): untrained outputs"
                written.append(plot_count_confusion(true_counts(preds), pred_counts(preds),
                                                    out / "count_confusion.png", title, note))
            if images is not None and "name" in preds:
                written.append(plot_worst_errors(preds, images, out / WORST_ERRORS, title, class_head))
    return written
