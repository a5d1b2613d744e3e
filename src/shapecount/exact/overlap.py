"""How much the shapes of an image hide one another, measured on the exact decoder's witness placement, and a
model's top-1 by that amount.

A witness of an image's class is a placement of its 10 shapes that redraws the image exactly (`audit`). Where
two or more shapes cover a pixel, XOR keeps only their parity, so the shapes there hide one another. Two measures
of an image (MEASURES):
- overlap share: of the pixels covered by any shape, the part covered by two or more (the image as a whole);
- least visible share: of each shape's whole area, the part inside the image and covered by no other shape,
  the smallest over its shapes (the one shape that is hardest to see, hidden by others or cut by the border).
Grouping the decidable images (the pixels allow one class only) by either separates errors that come from what
the shapes hide from errors a model makes on images where every shape is plain to see.
"""

from __future__ import annotations

import numpy as np
import torch

from shapecount import synth
from shapecount.exact.audit import is_decidable
from shapecount.exact.decoder import Shape


def witness_shapes(row: dict, cls: int) -> tuple[list[int], list[tuple[int, int]]]:
    """The types (labels.TYPES index) and anchors (row, col) of the witness of class `cls` in an audit record
    (witness strings look like "up-triangle@2,19")."""
    shapes = [Shape.parse(w) for w in row["feasible"][str(cls)]["witness"]]
    return [s.type for s in shapes], [(s.row, s.col) for s in shapes]


def witness_masks(row: dict, cls: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """The image the witness of class `cls` draws (the XOR of its shapes) and each shape's type and pixel mask
    (clipped at the border, as the image is)."""
    kinds, anchors = witness_shapes(row, cls)
    if not kinds:
        return np.zeros((synth.SIDE, synth.SIDE), dtype=bool), []
    masks = synth.draw(torch.tensor(kinds).view(-1, 1), torch.tensor(anchors).view(-1, 1, 2)).numpy() > 0
    return np.logical_xor.reduce(masks, axis=0), list(zip(kinds, masks))


def overlap_share(masks: np.ndarray) -> float:
    """Of the pixels covered by at least one of the shapes (bool (K, H, W)), the share covered by two or more."""
    cover = np.asarray(masks, dtype=np.int32).sum(0)
    union = int((cover >= 1).sum())
    return float((cover >= 2).sum()) / union if union else 0.0


def least_visible_share(kinds: list[int], masks: np.ndarray) -> float:
    """Of each shape's whole area, the share of pixels inside the image that no other shape covers; the smallest
    over the shapes (bool masks (K, H, W), clipped at the border, in the order of `kinds`). 1.0 without shapes.
    synth.least_visible computes the same from shape types and anchors, for many images at once."""
    alone = masks & (np.asarray(masks, dtype=np.int32).sum(0) == 1)
    return min((float(a.sum()) / synth.whole_area(k) for k, a in zip(kinds, alone)), default=1.0)


# name -> (measure of an image from its witness's shape types and masks, column label)
MEASURES = {
    "overlap": (lambda kinds, masks: overlap_share(masks), "overlap"),
    "visible": (least_visible_share, "least visible"),
}


def decidable_measures(rows: dict[str, dict], measures: tuple[str, ...] = tuple(MEASURES)) -> dict[str, dict[str, float]]:
    """{measure: {image name: value}} for the measures (MEASURES) of every decidable image of an audit ({name:
    record}), from its label's witness; each witness is drawn once for all of them."""
    out: dict[str, dict[str, float]] = {m: {} for m in measures}
    for name, row in rows.items():
        if is_decidable(row):
            _, shapes = witness_masks(row, int(row["label"]))
            masks = np.stack([m for _, m in shapes]) if shapes else np.zeros((0, synth.SIDE, synth.SIDE), dtype=bool)
            kinds = [k for k, _ in shapes]
            for m in measures:
                out[m][name] = MEASURES[m][0](kinds, masks)
    return out


def decidable_measure(rows: dict[str, dict], measure: str = "overlap") -> dict[str, float]:
    """One measure (MEASURES) of every decidable image of an audit ({name: record})."""
    return decidable_measures(rows, (measure,))[measure]


def bin_edges(measure: dict[str, float], bins: int = 5) -> np.ndarray:
    """Quantile edges that split the images into `bins` groups of (nearly) equal size; the first edge is the
    smallest value and the last the largest."""
    return np.quantile(np.fromiter(measure.values(), dtype=float), np.linspace(0, 1, bins + 1))


def bin_of(value: float, edges: np.ndarray) -> int:
    """Index of the group a value falls in (the last group includes its upper edge)."""
    return int(min(max(np.searchsorted(edges, value, side="right") - 1, 0), len(edges) - 2))


def correct_by_name(names, pred, true) -> dict[str, bool]:
    """{image name: whether the predicted class is the true one}, the input of top1_by_group."""
    return {str(n): bool(q == t) for n, q, t in zip(names, np.asarray(pred), np.asarray(true))}


def top1_by_group(measure: dict[str, float], edges: np.ndarray, correct: dict[str, bool]) -> list[dict]:
    """Per group of a measure ({image name: value}, e.g. decidable_measure's): its value range, how many of the
    run's images fall in it and the run's top-1 there (None when none does). `correct` maps image names to whether
    the run's class was right; names the measure does not cover (not audited, or not decided) are left out."""
    hits = [[0, 0] for _ in range(len(edges) - 1)]
    for name, ok in correct.items():
        if name in measure:
            h = hits[bin_of(measure[name], edges)]
            h[0] += int(bool(ok))
            h[1] += 1
    return [{"lo": float(edges[i]), "hi": float(edges[i + 1]), "n": n, "top1": k / n if n else None}
            for i, (k, n) in enumerate(hits)]
