"""The training-only anchor maps: reference points that move with the shapes, targets that sum to the counts,
augmentation that moves maps with images, and a training run that uses them and resumes exactly."""

import pytest
import torch

from shapecount import augment, experiments, labels, synth
from shapecount.config import ConfigError, make_config
from shapecount.losses import anchor_loss, anchor_maps
from shapecount.model import ShapeCountNet, make_anchor_head


def single_shape(t: int, row: int, col: int) -> torch.Tensor:
    return synth.draw(torch.tensor([[t]]), torch.tensor([[[row, col]]]))[0]


def find_anchor(t: int, image: torch.Tensor) -> tuple[int, int]:
    """The anchor that draws `image` with one shape of type t (searched over the whole image)."""
    hits = [(r, c) for r in range(28) for c in range(28) if torch.equal(single_shape(t, r, c), image)]
    assert len(hits) == 1, hits
    return hits[0]


@pytest.mark.parametrize("k,flip", augment.DIHEDRAL_GROUP)
def test_reference_points_move_with_the_shape(k, flip):
    perm = labels.dihedral_perm(k, flip)
    for t, (row, col) in enumerate([(10, 12), (9, 14), (15, 11), (12, 8), (8, 13), (14, 9)]):
        img = single_shape(t, row, col)
        point = synth.reference_points(torch.tensor([[t]]), torch.tensor([[[row, col]]]))[0, 0]
        marker = torch.zeros(28, 28)
        marker[point[0], point[1]] = 1
        moved_img = augment.dihedral(img, k, flip)
        moved_marker = augment.dihedral(marker, k, flip)
        t2 = perm[t]
        r2, c2 = find_anchor(t2, moved_img)
        p2 = synth.reference_points(torch.tensor([[t2]]), torch.tensor([[[r2, c2]]]))[0, 0]
        assert moved_marker[p2[0], p2[1]] == 1, (labels.TYPES[t], k, flip)


def test_points_come_with_the_same_images_and_sum_to_the_counts():
    images, counts = synth.generate(300, torch.Generator().manual_seed(3))
    images2, counts2, points = synth.generate_with_points(300, torch.Generator().manual_seed(3))
    assert torch.equal(images, images2) and torch.equal(counts, counts2)
    maps = anchor_maps(points)
    assert torch.equal(maps.sum((2, 3)), counts.float())
    assert ((points[..., 1:] >= 0) & (points[..., 1:] < 28)).all()
    blurred = anchor_maps(points, 1.0)
    assert (blurred.sum((2, 3)) <= counts + 1e-4).all() and torch.allclose(blurred.sum(), maps.sum(), rtol=0.1)
    # away from the border the spread keeps each point's mass, centred on it
    inner = torch.tensor([[[1, 10, 12], [4, 20, 5]]])
    m = anchor_maps(inner, 1.0)
    assert m[0, 1].sum() == pytest.approx(1.0) and m[0, 1].argmax() == 10 * 28 + 12 and m[0, 4].sum() == pytest.approx(1.0)


def test_augmented_points_follow_the_images():
    images, counts, points = synth.generate_with_points(64, torch.Generator().manual_seed(5))
    x = images.unsqueeze(1).float() / 255
    spec = augment.AugmentSpec(0.5, 0.5, 0.75)
    xa, ca = augment.augment_batch(x, counts.float(), spec, torch.Generator().manual_seed(9))
    xb, cb, pb = augment.augment_with_points(x, counts.float(), points, spec, torch.Generator().manual_seed(9))
    assert torch.equal(xa, xb) and torch.equal(ca, cb)  # the same random draws as without points
    mb = anchor_maps(pb)
    assert torch.equal(mb.sum((2, 3)), cb)  # types permuted with the counts
    maps = anchor_maps(points)
    # image by image: the maps moved by the symmetry that moved the image (found by trying all 8)
    for i in range(32):
        ks = [(k, f) for k, f in augment.DIHEDRAL_GROUP if torch.equal(augment.dihedral(x[i], k, f), xb[i])]
        assert any(torch.equal(labels.permute_counts(augment.dihedral(maps[i], k, f).movedim(0, -1),
                                                     labels.dihedral_perm(k, f)).movedim(-1, 0), mb[i])
                   for k, f in ks), i


def test_anchor_loss_is_zero_at_the_target_and_masked():
    maps = anchor_maps(synth.generate_with_points(8, torch.Generator().manual_seed(1))[2])
    mask = torch.tensor([True] * 4 + [False] * 4)
    assert anchor_loss(maps, maps, mask) == 0
    assert anchor_loss(maps + 1, maps, mask) == pytest.approx(4 / 8 * 6 * 28 * 28 / 10)  # 4 of 8 images count
    assert anchor_loss(maps, maps, torch.zeros(8, dtype=torch.bool)) == 0


def test_anchor_head_reads_the_last_feature_map():
    net = ShapeCountNet().eval()  # no dropout: two passes must agree
    x = torch.rand(2, 1, 28, 28)
    fmap = net.feature_map(x)
    assert fmap.shape == (2, 64, 28, 28)
    lp, cnt = net.heads(fmap)
    lp2, cnt2 = net(x)
    assert torch.equal(lp, lp2) and torch.equal(cnt, cnt2)
    assert make_anchor_head(3)(fmap).shape == (2, 6, 28, 28)


def test_anchor_loss_needs_synthetic_images():
    with pytest.raises(ConfigError, match="aux_anchor needs synthetic images"):
        make_config("multitask", "fast", {"aux_anchor": 1.0})
    with pytest.raises(ConfigError, match="aux_kernel must be odd"):
        make_config("multitask", "best", {"aux_anchor": 1.0, "aux_kernel": 4})


def test_training_with_anchor_maps_resumes_exactly(tmp_path, monkeypatch):
    from conftest import write_gsn_dir
    from helpers.interrupt import run_interrupted
    from shapecount.data import load_gsn

    data = load_gsn(str(write_gsn_dir(tmp_path / "gsn", n=45)), progress=False)
    cfg = make_config("multitask", "protocol", {"epochs": 3, "batch_size": 16, "tta": False, "synth_per_epoch": 32,
                                                "aux_anchor": 1.0, "aux_blur": 0.8})
    a = experiments.run_experiment(cfg, data, tmp_path / "a", progress=False)

    def check(args, kwargs):
        assert kwargs["anchor_head"] is not None and kwargs["points"].shape == (41 + 32, 10, 3)

    run_interrupted(cfg, data, tmp_path / "r", monkeypatch, epoch=2, check=check)
    r = experiments.run_experiment(cfg, data, tmp_path / "r", progress=False, resume=True)
    assert a["rmse"] == r["rmse"]
    wa, wr = (torch.load(p / "checkpoint.pt", weights_only=True)["model"] for p in (tmp_path / "a", tmp_path / "r"))
    assert all(torch.equal(wa[k], wr[k]) for k in wa)  # the anchor head's state was resumed too
    hist = (tmp_path / "a" / "history.csv").read_text().splitlines()
    assert "train_loss_aux" in hist[0] and float(hist[1].split(",")[4]) > 0
    assert set(wa) == set(ShapeCountNet().state_dict())  # training only: the anchor head is not exported
