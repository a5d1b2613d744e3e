"""The comparison figures of OUT/comparison/: per-epoch curves of all runs and their type-pair confusions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shapecount import labels, metrics, plots, runfolder
from shapecount.report.analysis import ACCURACY_LEVELS, time_to_accuracy
from shapecount.report.runs import Run, num


def plot_curves(runs: list[Run], path: Path) -> Path:
    fig = plots.new_figure(figsize=(17, 4.6))
    axes = fig.subplots(1, 3)
    # Runs with a holdout log the held-out images per epoch; one shared name when all runs agree.
    names = {runfolder.eval_set_name(r.config) for r in runs} or {"validation"}
    ev = names.pop() if len(names) == 1 else "validation or held-out"
    panels = [("val_top1", f"{ev} top-1 accuracy", lambda r: r.class_head, "runs with a trained class head"),
              ("val_rmse", f"{ev} count RMSE", lambda r: r.count_head, "runs with a trained count head"),
              ("val_loss", f"{ev} loss (weighted total, log scale)", lambda r: True, "all runs")]
    for ax, (col, ylabel, keep, which) in zip(axes, panels):
        drawn = 0
        for i, run in enumerate(runs):
            h = run.history
            if h is None or col not in h or not keep(run):
                continue
            ep = h.get("epoch", np.arange(1, len(h[col]) + 1))
            line = ax.plot(ep, h[col], label=run.label, color=f"C{i}")[0]
            be = num(run.metrics.get("best_epoch"))
            hit = np.nonzero(ep == be)[0] if be is not None else []
            if len(hit):
                ax.plot([be], [h[col][hit[0]]], marker="*", markersize=11, color=line.get_color(), linestyle="none")
            drawn += 1
        if col == "val_loss" and drawn:
            ax.set_yscale("log")
        if not drawn:
            ax.text(0.5, 0.5, "no run to show", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{ylabel}\n({which}; star = best epoch)", fontsize=10)
        ax.set_xlabel("epoch")
        plots.int_epochs(ax)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
    fig.suptitle(f"Per-epoch {ev} curves of all runs", fontsize=12)
    return plots.save_figure(fig, path)


def plot_pair_confusions(runs: list[Run], path: Path) -> Path | None:
    have = [r for r in runs if r.preds is not None]
    if not have:
        return None
    fig = plots.new_figure(figsize=(6.6 * len(have), 6.6))
    axes = fig.subplots(1, len(have), squeeze=False)[0]
    for ax, run in zip(axes, have):
        pred = run.pred_class()
        cm = metrics.confusion(run.preds["true_class"] // labels.SPLITS, pred // labels.SPLITS, labels.NUM_PAIRS)
        plots.plot_confusion_pairs(cm, path, run.label + ("" if run.class_head else "\n[class decoded from counts]"),
                                   ax=ax)
    fig.suptitle("Type-pair confusion (15x15) per run: rows true pair, columns predicted pair", fontsize=12)
    return plots.save_figure(fig, path)


def plot_time_to_accuracy(runs: list[Run], path: Path, shared: bool = False) -> Path | None:
    """Per-epoch top-1 against training wall time, one line per run (dashed: the class decoded from the counts,
    for a run without a class head); dotted lines at the levels of the time-to-accuracy table. shared: the runs
    trained at once, so each had a share of the cores, and the axis says so."""
    curves = [(i, r, t) for i, r in enumerate(runs) if (t := time_to_accuracy(r)) is not None]
    if not curves:
        return None
    fig = plots.new_figure(figsize=(8, 4.6))
    ax = fig.subplots()
    for i, run, t in curves:
        ax.plot(t["minutes"], t["top1"], marker=".", color=f"C{i}", linestyle="--" if t["from_counts"] else "-",
                label=run.label + (" [class decoded from counts]" if t["from_counts"] else ""))
    for level in ACCURACY_LEVELS:
        ax.axhline(level, color="0.5", linestyle=":", linewidth=1)
    names = {runfolder.eval_set_name(r.config) for _, r, _ in curves}
    ax.set_xlabel("training wall time, minutes (per-epoch evaluation included"
                  + ("; the runs trained at once, sharing the cores)" if shared else ")"))
    ax.set_ylabel(f"{names.pop() if len(names) == 1 else 'per-epoch'} top-1 (single view)")
    ax.set_title("Time to accuracy (dotted: 0.521 best public solution, 0.80, 0.90)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return plots.save_figure(fig, path)
