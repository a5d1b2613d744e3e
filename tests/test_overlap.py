"""exact.overlap: overlap and least visible shares from witness placements, groups of equal size, top-1 per group."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shapecount import labels as L
from shapecount import synth
from shapecount.exact import overlap
from shapecount.exact.audit import is_decidable


def _row(name: str, shapes: list[tuple[int, int, int]], extra_classes: tuple[int, ...] = ()) -> dict:
    """An audit record whose label's witness is `shapes` ((type, row, col) each); extra feasible classes make it
    ambiguous."""
    counts = np.bincount([t for t, _, _ in shapes], minlength=6)
    label = L.counts_to_class(counts.tolist())
    witness = [f"{L.TYPE_SINGULAR[t]}@{r},{c}" for t, r, c in shapes]
    feasible = {str(label): {"p": 1.0, "witness": witness}}
    feasible.update({str(k): {"p": 0.0, "witness": witness} for k in extra_classes})
    return {"name": name, "label": label, "unknown": False, "nodes": 1, "ms": 0.1, "feasible": feasible}


def _ten(n_sq: int, spacing: int, row0: int = 3) -> list[tuple[int, int, int]]:
    """n_sq squares then circles, 10 in all, anchors `spacing` columns apart on two rows."""
    return [(0 if i < n_sq else 1, row0 + 14 * (i // 5), 3 + spacing * (i % 5)) for i in range(10)]


def test_overlap_share_of_masks():
    a = np.zeros((2, 4, 4), dtype=bool)
    a[0, :2] = True  # 8 pixels
    a[1, 2:] = True  # 8 other pixels
    assert overlap.overlap_share(a) == 0.0
    a[1, 1:] = True  # now shares row 1 (4 pixels) with the first: 4 of 16 covered pixels
    assert overlap.overlap_share(a) == pytest.approx(4 / 16)
    assert overlap.overlap_share(np.ones((3, 2, 2), dtype=bool)) == 1.0
    assert overlap.overlap_share(np.zeros((2, 3, 3), dtype=bool)) == 0.0


def test_least_visible_share_counts_what_no_other_shape_covers():
    def masks(shapes):
        types = torch.tensor([t for t, _, _ in shapes]).view(-1, 1)
        return synth.draw(types, torch.tensor([[r, c] for _, r, c in shapes]).view(-1, 1, 2)).numpy() > 0  # one per shape

    whole = [synth.whole_area(t) for t in range(6)]
    assert whole[0] == 49 and all(a > 0 for a in whole)  # the 7x7 square
    apart = [(0, 4, 4), (1, 18, 18)]  # a square and a circle far apart, both inside the image
    assert overlap.least_visible_share([0, 1], masks(apart)) == 1.0
    cut = [(0, 4, 4), (0, 27, 27)]  # the second square's anchor at the corner: part of it outside the image
    share = overlap.least_visible_share([0, 0], masks(cut))
    assert share == pytest.approx(int(masks(cut)[1].sum()) / 49) and share < 1
    same = [(0, 10, 10), (0, 10, 10), (1, 20, 20)]  # two squares on one anchor hide each other completely
    assert overlap.least_visible_share([0, 0, 1], masks(same)) == 0.0
    shifted = [(0, 10, 10), (0, 10, 11)]  # one column apart: each keeps one column of 7 pixels to itself
    assert overlap.least_visible_share([0, 0], masks(shifted)) == pytest.approx(7 / 49)
    assert overlap.least_visible_share([], np.zeros((0, 28, 28), dtype=bool)) == 1.0


def test_witness_masks_redraw_the_image():
    g = torch.Generator().manual_seed(3)
    counts = synth.sample_labels(1, g)
    types, centres = synth.sample_shapes(counts, g)
    shapes = [(int(t), int(r), int(c)) for t, (r, c) in zip(types[0], centres[0])]
    row = _row("img", shapes)
    ink, masks = overlap.witness_masks(row, row["label"])
    assert np.array_equal(ink, synth.draw(types, centres)[0].numpy() > 0)
    assert [k for k, _ in masks] == [t for t, _, _ in shapes]
    assert overlap.witness_shapes(row, row["label"]) == ([t for t, _, _ in shapes], [(r, c) for _, r, c in shapes])


def test_decidable_measure_skip_ambiguous_and_measure_the_rest():
    apart = _row("apart", _ten(4, 5))      # 7x7 squares / 9x9 circles 5 columns apart: neighbours overlap a little
    far = _row("far", _ten(4, 5, row0=4))
    amb = _row("amb", _ten(4, 5), extra_classes=(0,))
    assert not is_decidable(amb) and is_decidable(apart)
    shares = overlap.decidable_measure({r["name"]: r for r in (apart, far, amb)})
    assert set(shares) == {"apart", "far"}
    assert 0 < shares["apart"] < 1
    stacked = _row("stacked", [(0, 10, 10)] * 2 + [(0, 11, 10)] * 2 + [(1, 20, 20)] * 6)
    assert overlap.decidable_measure({"s": stacked})["s"] == pytest.approx(1.0)  # every inked pixel under two
    visible = overlap.decidable_measure({r["name"]: r for r in (apart, far, amb, stacked)}, "visible")
    assert set(visible) == {"apart", "far", "stacked"} and visible["stacked"] == 0.0 and 0 < visible["far"] <= 1


def test_groups_of_equal_size_and_top1_per_group():
    shares = {f"i{k}": k / 10 for k in range(10)}  # 0.0 .. 0.9
    edges = overlap.bin_edges(shares, 5)
    assert edges[0] == 0.0 and edges[-1] == pytest.approx(0.9) and len(edges) == 6
    assert [overlap.bin_of(shares[f"i{k}"], edges) for k in range(10)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    correct = {f"i{k}": k % 2 == 0 for k in range(10)}  # one right, one wrong in every group
    correct["not_audited"] = False
    groups = overlap.top1_by_group(shares, edges, correct)
    assert [g["n"] for g in groups] == [2] * 5 and [g["top1"] for g in groups] == [0.5] * 5
    only_first = overlap.top1_by_group(shares, edges, {"i0": True, "i1": True})
    assert only_first[0]["top1"] == 1.0 and all(g["top1"] is None and g["n"] == 0 for g in only_first[1:])
    assert overlap.correct_by_name(["a", "b"], np.array([3, 4]), np.array([3, 5])) == {"a": True, "b": False}


def test_a_witness_string_parses_back_to_its_shape():
    from shapecount.exact.decoder import Shape

    for t in range(6):
        s = Shape(t, 27, 0)
        assert Shape.parse(str(s)) == s
