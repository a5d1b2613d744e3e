"""Exploratory analysis of a GSN dataset: the figures and tables behind the generated report's section 2.

Everything is computed from the data passed in (nothing about GSN is hard-coded beyond labels.py). Figures use
the object-oriented matplotlib API (`Figure`, rendered by Agg), so no pyplot state is touched; every file is
written atomically (temp name, then os.replace).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from shapecount import labels as L
from shapecount.data import GSNData, official_split, summary
from shapecount.fileio import write_csv, write_text
from shapecount.mdtable import md_table
from shapecount.plots import save_figure

FILES = ("class_histogram.png", "class_counts.csv", "count_table.csv", "count_table.md", "examples.png",
         "pair_balance.png", "pair_balance.csv", "summary.md")
MAX_COUNT_ROW = L.TOTAL - 1  # a present type has 1..9 shapes, so count rows 0..9
EXAMPLE_GRID = (4, 6)
_PAIR_COLORS = ("#4c72b0", "#55a868")  # alternate per pair so the 15 blocks are told apart
_ABSENT = "#d62728"


# ---------------------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------------------

def class_histogram(data: GSNData) -> np.ndarray:
    """(135,) images per class."""
    return torch.bincount(data.classes, minlength=L.NUM_CLASSES).numpy()


def count_table(data: GSNData) -> np.ndarray:
    """(10, 6) table: [k, t] = number of images with exactly k shapes of type t (k = 0..9)."""
    table = np.zeros((MAX_COUNT_ROW + 1, L.NUM_TYPES), dtype=np.int64)
    counts = data.counts.numpy()
    for t in range(L.NUM_TYPES):
        table[:, t] = np.bincount(counts[:, t], minlength=L.TOTAL + 1)[: MAX_COUNT_ROW + 1]
    return table


def pair_balance(s: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Images per type pair (15,) in the official train and validation splits, from the dataset's summary
    (data.summary, as `shapecount check` counts them)."""
    rows = s["pair_balance"]
    return np.array([r["train"] for r in rows]), np.array([r["val"] for r in rows])


def example_indices(data: GSNData, n: int) -> list[int]:
    """Up to n images, the first of each pair in turn, so the grid shows every pair (deterministic)."""
    pairs = L.class_to_pair_batch(data.classes).tolist()
    by_pair: list[list[int]] = [[] for _ in range(L.NUM_PAIRS)]
    for i, p in enumerate(pairs):
        by_pair[p].append(i)
    out: list[int] = []
    for rank in range(max((len(b) for b in by_pair), default=0)):
        out += [b[rank] for b in by_pair if rank < len(b)]
        if len(out) >= n:
            break
    return out[:n]


# ---------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------

def plot_class_histogram(hist: np.ndarray, path: Path) -> Path:
    fig = Figure(figsize=(16, 5.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(L.NUM_CLASSES)
    colors = [_PAIR_COLORS[L.class_to_pair(k) % 2] for k in x]
    ax.bar(x, hist, width=0.85, color=colors)
    absent = x[hist == 0]
    # Absent classes have no bar: a red tick at zero shows where they are.
    ax.plot(absent, np.zeros_like(absent), linestyle="none", marker="|", markersize=14, markeredgewidth=2,
            color=_ABSENT, label=f"absent class ({len(absent)} of {L.NUM_CLASSES})", clip_on=False)
    for b in range(1, L.NUM_PAIRS):
        ax.axvline(b * L.SPLITS - 0.5, color="gray", linewidth=0.6, linestyle="--")
    ax.set_xticks([p * L.SPLITS + (L.SPLITS - 1) / 2 for p in range(L.NUM_PAIRS)],
                  [L.pair_short(p) for p in range(L.NUM_PAIRS)], rotation=35, ha="right", fontsize=9)
    ax.set_xlim(-0.8, L.NUM_CLASSES - 0.2)
    ax.set_xlabel("class (grouped by type pair; within a pair the first type's count rises 1..9)")
    ax.set_ylabel("images")
    present = int((hist > 0).sum())
    ax.set_title(f"Images per class: {present} of {L.NUM_CLASSES} classes occur, {len(absent)} are absent "
                 f"(red ticks); {int(hist.sum())} images")
    ax.legend(loc="upper right")
    return save_figure(fig, path, bbox_inches="tight")


def plot_examples(data: GSNData, path: Path) -> Path:
    rows, cols = EXAMPLE_GRID
    idx = example_indices(data, rows * cols)
    fig = Figure(figsize=(cols * 2.3, rows * 2.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= len(idx):
            continue
        i = idx[k]
        ax.imshow(data.images[i].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        label = L.class_name(int(data.classes[i])).replace(" + ", " +\n")  # two short lines
        ax.set_title(f"{data.names[i]}\n{label}", fontsize=8)
    fig.suptitle(f"Example images with their labels ({len(idx)} of {len(data)}, covering every type pair)")
    return save_figure(fig, path, bbox_inches="tight")


def plot_pair_balance(train: np.ndarray, val: np.ndarray, path: Path) -> Path:
    fig = Figure(figsize=(12, 5.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(L.NUM_PAIRS)
    # Shares, not counts: the splits differ 9:1 in size, and balance means equal shares.
    share_t = 100 * train / max(int(train.sum()), 1)
    share_v = 100 * val / max(int(val.sum()), 1)
    ax.bar(x - 0.2, share_t, width=0.4, label=f"train ({int(train.sum())} images)")
    ax.bar(x + 0.2, share_v, width=0.4, label=f"validation ({int(val.sum())} images)")
    ax.axhline(100 / L.NUM_PAIRS, color="gray", linestyle="--", linewidth=0.8, label="uniform (1/15)")
    ax.set_xticks(x, [L.pair_name(p) for p in x], rotation=35, ha="right", fontsize=9)
    ax.set_xlabel("type pair")
    ax.set_ylabel("share of the split's images (%)")
    ax.set_title("Images per type pair in the official split: train vs validation")
    ax.set_ylim(0, max(float(share_t.max()), float(share_v.max()), 100 / L.NUM_PAIRS) * 1.25)
    ax.legend(loc="upper center", ncol=3)
    return save_figure(fig, path, bbox_inches="tight")


# ---------------------------------------------------------------------------------------------------------
# Tables and the summary
# ---------------------------------------------------------------------------------------------------------

def _count_table_rows(table: np.ndarray) -> list[list[int]]:
    return [[k, *table[k].tolist()] for k in range(table.shape[0])]


def _class_rows(data: GSNData, hist: np.ndarray) -> list[list[Any]]:
    train, val = official_split(len(data))
    h_train = torch.bincount(data.classes[train], minlength=L.NUM_CLASSES).tolist()
    h_val = torch.bincount(data.classes[val], minlength=L.NUM_CLASSES).tolist()
    return [[k, L.class_name(k), L.pair_name(L.class_to_pair(k)), *L.class_to_counts(k), int(hist[k]),
             h_train[k], h_val[k]] for k in range(L.NUM_CLASSES)]


def facts(s: dict[str, Any], hist: np.ndarray) -> dict[str, Any]:
    """The key numbers of the dataset: `shapecount check`'s (s, data.summary) and the class frequencies (hist,
    class_histogram)."""
    present = np.flatnonzero(hist)
    most = int(hist.argmax())
    least = int(present[hist[present].argmin()]) if present.size else 0
    return {
        "images": s["images"], "train": s["train"], "val": s["val"],
        "classes_present": s["classes_present"], "classes_absent": L.NUM_CLASSES - s["classes_present"],
        "count_min": s["count_min"], "count_max": s["count_max"],
        "most_frequent_class": most, "most_frequent_name": L.class_name(most),
        "most_frequent_images": int(hist[most]),
        "least_frequent_class": least, "least_frequent_name": L.class_name(least),
        "least_frequent_images": int(hist[least]),
        "images_per_present_class_mean": round(float(hist[present].mean()), 1) if present.size else 0.0,
        "warnings": len(s["warnings"]),
        "sha256": s["sha256"], "labels_sha256": s["labels_sha256"],
    }


def summary_markdown(f: dict[str, Any], table: np.ndarray, train: np.ndarray, val: np.ndarray,
                     source: str, warnings: Sequence[str] = ()) -> str:
    never = [str(k) for k in range(1, table.shape[0]) if table[k].sum() == 0]
    counts = f"- Non-zero counts range {f['count_min']}..{f['count_max']}"
    if never:
        counts += f"; no image has {' or '.join(never)} shapes of any type"
    most = (f"- Most frequent class: {f['most_frequent_name']} (class {f['most_frequent_class']}, "
            f"{f['most_frequent_images']} images)")
    least = (f"- Least frequent present class: {f['least_frequent_name']} "
             f"(class {f['least_frequent_class']}, {f['least_frequent_images']} images); "
             f"mean {f['images_per_present_class_mean']} images per present class")
    pairs = (f"- Images per type pair: train {int(train.min())}..{int(train.max())}, "
             f"validation {int(val.min())}..{int(val.max())}")
    lines = [
        "# GSN dataset: exploratory analysis",
        "",
        f"- Source: `{source}` (sha256 `{f['sha256']}`; labels.csv sha256 `{f['labels_sha256']}`)",
        f"- Images: {f['images']}; official split: {f['train']} train (first), {f['val']} validation (last)",
        f"- {f['classes_present']} of {L.NUM_CLASSES} classes occur; {f['classes_absent']} never do",
        counts, most, least, pairs,
        f"- Warnings: {len(warnings)}",
        *[f"  - {w}" for w in warnings],
        "",
        # The report embeds this file and adds the figures and count_table.md itself, so neither is repeated.
        "Tables: count_table.md (images per count and type), class_counts.csv, pair_balance.csv.",
        "Figures: class_histogram.png, examples.png, pair_balance.png.",
        "",
    ]
    return "\n".join(lines)


def run_eda(data: GSNData, out_dir: Path) -> dict[str, Any]:
    """Write the EDA files (FILES) into out_dir; return the key figures and {"files": {name: path}}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hist, table, s = class_histogram(data), count_table(data), summary(data)
    train, val = pair_balance(s)
    f = facts(s, hist)
    files = {
        "class_histogram.png": plot_class_histogram(hist, out / "class_histogram.png"),
        "class_counts.csv": write_csv(out / "class_counts.csv",
                                      ["class_id", "name", "pair", *L.TYPES, "images", "train", "val"],
                                      _class_rows(data, hist)),
        "count_table.csv": write_csv(out / "count_table.csv", ["count", *L.TYPES], _count_table_rows(table)),
        "count_table.md": write_text(out / "count_table.md",
                                     md_table(["count", *L.TYPES], _count_table_rows(table)) + "\n"),
        "examples.png": plot_examples(data, out / "examples.png"),
        "pair_balance.png": plot_pair_balance(train, val, out / "pair_balance.png"),
        "pair_balance.csv": write_csv(
            out / "pair_balance.csv", ["pair_id", "pair", "train", "val", "train_share", "val_share"],
            [[p, L.pair_name(p), int(train[p]), int(val[p]), round(float(train[p] / max(train.sum(), 1)), 4),
              round(float(val[p] / max(val.sum(), 1)), 4)] for p in range(L.NUM_PAIRS)]),
        "summary.md": write_text(out / "summary.md",
                                 summary_markdown(f, table, train, val, data.source, data.warnings)),
    }
    return {**f, "out_dir": str(out), "files": {k: str(v) for k, v in files.items()}}
