"""The synthetic GSN generator (shapecount.synth): format, label validity, determinism, measured geometry, XOR,
and that the labels move with the image under the symmetries the augmentation uses."""

from __future__ import annotations

import pytest
import torch

from shapecount import labels as L
from shapecount import synth as S

SQ, CI, UP, RI, DO, LE = range(6)


def single(t: int, y: int, x: int) -> torch.Tensor:
    return S.draw(torch.tensor([[t]]), torch.tensor([[[y, x]]]))[0]


def test_generate_format_and_labels():
    images, counts = S.generate(300, torch.Generator().manual_seed(0))
    assert images.shape == (300, 28, 28) and images.dtype == torch.uint8
    assert counts.shape == (300, 6) and counts.dtype == torch.int64
    assert set(images.unique().tolist()) <= {0, 255}
    assert (counts.sum(1) == 10).all()
    assert ((counts > 0).sum(1) == 2).all()
    nz = counts[counts > 0]
    assert nz.min() >= 2 and nz.max() <= 8
    for c in counts[:20]:
        L.counts_to_class(c.tolist())  # a valid class
    assert images.flatten(1).any(1).all()  # no empty image in practice


def test_deterministic_for_a_seed():
    a = S.generate(64, torch.Generator().manual_seed(7))
    b = S.generate(64, torch.Generator().manual_seed(7))
    c = S.generate(64, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    # chunking does not change the result
    d = S.generate(64, torch.Generator().manual_seed(7), chunk=10)
    assert torch.equal(a[0], d[0])


def test_label_distribution_uniform_pairs_and_splits():
    counts = S.sample_labels(30000, torch.Generator().manual_seed(1))
    pair = torch.tensor([L.PAIRS.index(tuple(c.nonzero().flatten().tolist())) for c in counts[:6000]])
    freq = torch.bincount(pair, minlength=15).double() / len(pair)
    assert (freq - 1 / 15).abs().max() < 0.02
    first = torch.stack([c[c > 0][0] for c in counts[:6000]])
    assert set(first.tolist()) == set(range(2, 9))
    ff = torch.bincount(first - 2, minlength=7).double() / len(first)
    assert (ff - 1 / 7).abs().max() < 0.025


def test_templates_have_the_measured_geometry():
    shapes = {t: tuple(S.template(t).shape) for t in range(6)}
    assert shapes == {SQ: (7, 7), CI: (9, 9), UP: (6, 11), RI: (11, 6), DO: (6, 11), LE: (11, 6)}
    areas = [int(S.template(t).sum()) for t in range(6)]
    assert areas == [49, 49, 36, 36, 36, 36]
    assert S.template(CI).sum(1).tolist() == [1, 5, 7, 7, 9, 7, 7, 5, 1]
    assert S.template(UP).sum(1).tolist() == [1, 3, 5, 7, 9, 11]


def test_triangles_point_where_their_name_says():
    up = single(UP, 14, 14) > 0
    rows = up.sum(1)
    ink_rows = rows.nonzero().flatten()
    assert rows[ink_rows[0]] == 1 and rows[ink_rows[-1]] == 11  # apex row at the top (row 0 side)
    down = single(DO, 14, 14) > 0
    r = down.sum(1)[down.sum(1) > 0]
    assert r[0] > r[-1]
    right = single(RI, 14, 14) > 0
    c = right.sum(0)[right.sum(0) > 0]
    assert c[0] == 11 and c[-1] == 1  # apex column at the right
    left = single(LE, 14, 14) > 0
    c = left.sum(0)[left.sum(0) > 0]
    assert c[0] == 1 and c[-1] == 11


def test_xor_overlap_and_clipping():
    t = torch.tensor([[SQ, SQ]])
    assert not S.draw(t, torch.tensor([[[10, 10], [10, 10]]])).any()  # even coverage is background
    a, b = single(SQ, 10, 10), single(SQ, 12, 13)
    both = S.draw(t, torch.tensor([[[10, 10], [12, 13]]]))[0]
    assert torch.equal(both, a ^ b)
    corner = single(SQ, 0, 0)
    assert int((corner > 0).sum()) == 16  # 4x4 of the 7x7 square is inside
    assert not S.draw(torch.tensor([[-1]]), torch.tensor([[[5, 5]]])).any()  # type -1 draws nothing


def _anchors_of(t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All single-shape images of type t with anchors on -8..35 (shapes may hang over the border)."""
    r = torch.arange(-8, 36)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    centres = torch.stack([yy.flatten(), xx.flatten()], -1)
    imgs = S.draw(torch.full((len(centres), 1), t), centres[:, None, :])
    return imgs, centres


@pytest.mark.parametrize("t", range(6))
def test_rot90_single_shape_matches_the_permuted_type(t):
    """rot90 (counter-clockwise) of one shape is exactly one shape of the type labels.ROT90_CCW says."""
    g = torch.Generator().manual_seed(t)
    imgs, _ = _anchors_of(L.ROT90_CCW[t])
    for _ in range(3):
        y, x = torch.randint(8, 20, (2,), generator=g).tolist()
        rotated = torch.rot90(single(t, y, x), 1, dims=(-2, -1))
        hits = (imgs == rotated).flatten(1).all(1)
        assert int(hits.sum()) == 1
        # and no shape of any other triangle direction matches
        for other in (UP, RI, DO, LE):
            if other != L.ROT90_CCW[t] and t not in (SQ, CI):
                assert not (_anchors_of(other)[0] == rotated).flatten(1).all(1).any()


def _rot_anchor(t: int, yx: torch.Tensor) -> torch.Tensor:
    """Anchor of the rotated (CCW) shape; pixel (r, c) goes to (27 - c, r)."""
    y, x = yx[..., 0], yx[..., 1]
    if t == UP:  # up's apex (y - 5, x) becomes the left triangle's anchor (its apex)
        return torch.stack([27 - x, y - 5], -1)
    if t == LE:  # left's base midpoint (y, x + 5) becomes the down triangle's base midpoint
        return torch.stack([22 - x, y], -1)
    return torch.stack([27 - x, y], -1)  # centres and base midpoints


def test_rot90_whole_images_labels_move_with_the_image():
    gen = torch.Generator().manual_seed(3)
    counts = S.sample_labels(64, gen)
    types, centres = S.sample_shapes(counts, gen)
    images = S.draw(types, centres)
    new_types = torch.tensor(L.ROT90_CCW)[types]
    new_centres = torch.empty_like(centres)
    for t in range(6):
        m = types == t
        new_centres[m] = _rot_anchor(t, centres[m])
    assert torch.equal(torch.rot90(images, 1, dims=(-2, -1)), S.draw(new_types, new_centres))
    assert torch.equal(L.permute_counts(counts, L.ROT90_CCW),
                       torch.stack([(new_types == t).sum(1) for t in range(6)], 1))


def test_least_visible_agrees_with_the_share_from_drawn_masks():
    from shapecount.exact import overlap
    gen = torch.Generator().manual_seed(4)
    types, centres = S.sample_shapes(S.sample_labels(120, gen), gen)
    fast = S.least_visible(types, centres)
    assert torch.equal(S.least_visible(types, centres, chunk=7), fast)  # chunks do not change it
    for i in range(len(types)):
        masks = S.draw(types[i].view(-1, 1), centres[i].view(-1, 1, 2)).numpy() > 0
        assert fast[i].item() == pytest.approx(overlap.least_visible_share(types[i].tolist(), masks))
    # two squares on one anchor hide each other completely; a lone square away from the border keeps all 49 px
    assert S.least_visible(torch.tensor([[SQ, SQ]]), torch.tensor([[[9, 9], [9, 9]]])).item() == 0.0
    assert S.least_visible(torch.tensor([[SQ]]), torch.tensor([[[9, 9]]])).item() == 1.0
    # a square at the corner keeps its 16 pixels inside; types < 0 are no shape; an image without shapes: 1
    assert S.least_visible(torch.tensor([[SQ, -1]]), torch.tensor([[[0, 0], [0, 0]]])).item() == pytest.approx(16 / 49)
    assert S.least_visible(torch.tensor([[-1, -1]]), torch.zeros(1, 2, 2, dtype=torch.long)).item() == 1.0
    assert S.least_visible(torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 0, 2, dtype=torch.long)).tolist() == [1.0] * 3


def test_hide_shapes_redraws_anchors_until_a_shape_is_hidden():
    gen = torch.Generator().manual_seed(2)
    types, centres = S.sample_shapes(S.sample_labels(600, gen), gen)
    hidden = S.hide_shapes(types, centres, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(hidden, S.hide_shapes(types, centres, 1.0, torch.Generator().manual_seed(3)))
    assert torch.equal(S.hide_shapes(types, centres, 0.0, torch.Generator().manual_seed(3)), centres)
    half = S.hide_shapes(types, centres, 0.5, torch.Generator().manual_seed(3))

    def share(anchors):
        return (S.least_visible(types, anchors) <= S.HIDDEN_BELOW).float().mean().item()

    assert share(centres) < 0.45 and share(hidden) > 0.95 and 0.55 < share(half) < 0.8
    kept = (S.least_visible(types, centres) <= S.HIDDEN_BELOW)
    assert torch.equal(hidden[kept], centres[kept])  # images that have a hidden shape keep their anchors
    assert hidden.min() >= 0 and hidden.max() <= S.ANCHOR_MAX


def test_generate_with_hidden_shapes_keeps_the_labels_and_the_random_stream():
    plain = S.generate_with_points(300, torch.Generator().manual_seed(2))
    hidden = S.generate_with_points(300, torch.Generator().manual_seed(2), hidden=1.0)
    assert torch.equal(plain[1], hidden[1])  # same labels: only where the shapes lie changes
    assert not torch.equal(plain[0], hidden[0])
    # hidden=0 draws the labels, then the anchors, and nothing else from the generator
    gen = torch.Generator().manual_seed(2)
    assert torch.equal(plain[0], S.draw(*S.sample_shapes(S.sample_labels(300, gen), gen)))
    # the points follow the redrawn shapes: anchors rebuilt from them (exact unless clamped at the border) show
    # hidden shapes in most images drawn with hidden=1 (0.90 here), in about a third of the others

    def hidden_share(points):
        types = points[..., 0].long()
        anchors = points[..., 1:].long() - S._REF_OFFSET[types]
        return S.least_visible(types, anchors).le(S.HIDDEN_BELOW).float().mean().item()

    assert hidden_share(hidden[2]) > 0.8 and hidden_share(plain[2]) < 0.45


def test_fidelity_report_runs_and_self_agrees():
    real, counts = S.generate(200, torch.Generator().manual_seed(11))
    rep = S.fidelity_report(real, counts, n_synth=200, gen=torch.Generator().manual_seed(12), verbose=False)
    assert set(rep) == {"real", "synth", "diff", "noise"}
    assert abs(rep["diff"]["ink_mean"]) < 0.01
    assert rep["diff"]["pattern2x2_tv"] < 0.01
    assert len(rep["real"]["row_profile"]) == 28


def test_cli_speed_fidelity_and_bad_data_one_line(tmp_path, capsys):
    from shapecount.cli import main

    S.write_dataset(tmp_path / "gsn", 60, seed=2)
    assert main(["synth", "--data", str(tmp_path / "gsn")]) == 0
    out = capsys.readouterr().out
    assert "images/s" in out and "ink" in out
    assert main(["synth", "--data", str(tmp_path / "missing.zip")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing.zip" in err and "\n" not in err