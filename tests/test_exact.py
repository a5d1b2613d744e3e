"""The exact decoder: completeness, planted ambiguities, the posterior against brute force, symmetry."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch

from shapecount import labels as L
from shapecount import synth
from shapecount.exact import geometry, search
from shapecount.exact.decoder import Decoder, draw_witness
from shapecount.exact.posterior import odd_set_sequences


def _draw(shapes: list[tuple[int, int, int]]) -> np.ndarray:
    """Bool 28x28 image of (type, row, col) shapes drawn by the generator's rules."""
    types = torch.tensor([[t for t, _, _ in shapes]])
    centres = torch.tensor([[[r, c] for _, r, c in shapes]])
    return synth.draw(types, centres)[0].numpy() > 0


@pytest.fixture(scope="module")
def decoder() -> Decoder:
    return Decoder()


def test_pack_roundtrip():
    rng = np.random.default_rng(0)
    ink = rng.random((3, 28, 28)) < 0.3
    assert np.array_equal(geometry.unpack(geometry.pack(ink), 28), ink)


def test_odd_set_sequences_matches_counting():
    for anchors in (3, 5):
        for n in range(1, 6):
            odd_sets = Counter()
            for seq in itertools.product(range(anchors), repeat=n):
                odd_sets[frozenset(a for a in range(anchors) if seq.count(a) % 2)] += 1
            for s, count in odd_sets.items():
                assert count == odd_set_sequences(n, len(s), anchors)


def test_true_class_feasible_and_witness_reproduces_image(decoder):
    images, counts = synth.generate(150, torch.Generator().manual_seed(3))
    classes = L.counts_to_class_batch(counts)
    seen = set()
    for img, cls in zip(images.numpy(), classes.tolist()):
        d = decoder.decode(img)
        assert not d.unknown
        assert cls in d.feasible
        for shapes in d.feasible.values():
            assert np.array_equal(draw_witness(shapes), img > 0), "every witness must redraw the image"
        assert abs(sum(d.posterior.values()) - 1) < 1e-9
        seen.add(cls)
    assert len(seen) > 60  # many pairs and splits covered


@pytest.mark.slow
def test_true_class_feasible_on_every_class_five_times():
    """Every pair and split five times, 525 drawn images: the truth is always among the feasible classes."""
    from shapecount.exact.audit import decode_images

    gen = torch.Generator().manual_seed(11)
    counts = torch.tensor([L.class_to_counts(k) for k in range(L.NUM_CLASSES)
                           if min(c for c in L.class_to_counts(k) if c) >= synth.MIN_COUNT] * 5)
    types, centres = synth.sample_shapes(counts, gen)
    images = synth.draw(types, centres).numpy()
    decoded = decode_images(images, jobs=2, progress=False)
    for (d, _), cls in zip(decoded, L.counts_to_class_batch(counts).tolist()):
        assert not d.unknown and cls in d.feasible


def test_planted_cancellation_gives_exactly_the_expected_classes(decoder):
    # 2 visible squares and 6 visible circles, well apart; the truth 4 squares + 6 circles hides one pair of
    # squares on one anchor. Exactly the splits with n_sq even, n_sq >= 2 and n_ci >= 6 are feasible.
    sq = [(0, 4, 4), (0, 4, 22)]
    ci = [(1, 13, 5), (1, 13, 15), (1, 22, 5), (1, 22, 15), (1, 13, 23), (1, 22, 23)]
    img = _draw(sq + ci + [(0, 10, 10), (0, 10, 10)])
    assert np.array_equal(img, _draw(sq + ci))
    d = decoder.decode(img)
    expect = {L.counts_to_class([2, 8, 0, 0, 0, 0]), L.counts_to_class([4, 6, 0, 0, 0, 0])}
    assert set(d.feasible) == expect
    # the split that needs no hidden pair of circles is likelier: F(4,2) F(6,6) vs F(2,2) F(8,6)
    n = 28 * 28
    w4 = odd_set_sequences(4, 2, n) * odd_set_sequences(6, 6, n)
    w2 = odd_set_sequences(2, 2, n) * odd_set_sequences(8, 6, n)
    assert d.posterior[L.counts_to_class([4, 6, 0, 0, 0, 0])] == pytest.approx(w4 / (w4 + w2))


def test_unique_image_is_decided(decoder):
    shapes = [(2, 6, 5), (2, 6, 20), (2, 15, 5), (2, 15, 20), (2, 24, 5), (4, 20, 13), (4, 2, 12),
              (4, 9, 12), (2, 24, 22), (4, 14, 24)]
    d = decoder.decode(_draw(shapes))
    cls = L.counts_to_class([0, 0, 6, 0, 4, 0])
    assert d.classes == [cls] and d.posterior[cls] == 1.0 and d.map_class == cls


def test_image_with_no_feasible_class(decoder):
    d = decoder.decode(np.ones((28, 28), bool))  # 784 ink pixels: more than ten shapes can cover
    assert d.feasible == {} and d.posterior == {} and d.map_class == -1 and not d.unknown


def test_hard_image_hits_the_node_limit_and_says_unknown():
    img = np.zeros((28, 28), bool)
    img[3:10, 3:10] = True
    img[5, 5] = False  # a square with a hole: the bound sees one small blob and many ways to try
    d = Decoder(node_limit=20_000).decode(img)
    assert d.unknown and d.feasible == {} and d.map_class == -1


def test_node_limit_means_unknown_not_a_guess():
    images, _ = synth.generate(3, torch.Generator().manual_seed(5))
    d = Decoder(node_limit=10).decode(images[0].numpy())
    assert d.unknown and len(d.unknown_pairs) > 0
    full = Decoder().decode(images[0].numpy())
    assert set(d.feasible) <= set(full.feasible)  # what it does report is still exact


@pytest.mark.parametrize("k,flip", [(1, False), (2, False), (3, False), (0, True), (1, True)])
def test_symmetric_images_give_permuted_classes(decoder, k, flip):
    # Shapes well inside the grid: their transformed copies are shapes of the rules too (near the border the
    # left triangle's apex anchor makes the rules themselves asymmetric).
    gen = torch.Generator().manual_seed(20 + k + 4 * flip)
    counts = synth.sample_labels(4, gen)
    types, _ = synth.sample_shapes(counts, gen)
    # ten of the 16 cells of a 4x4 lattice (spacing 5, some overlap), jittered by one pixel
    cells = torch.stack([torch.randperm(16, generator=gen)[: L.TOTAL] for _ in range(4)])
    lattice = torch.stack([cells // 4, cells % 4], dim=-1) * 5 + 6
    centres = lattice + torch.randint(-1, 2, lattice.shape, generator=gen)
    images = synth.draw(types, centres)
    perm = L.dihedral_perm(k, flip)
    cperm = L.class_permutation(perm)
    for img in images:
        x = torch.flip(img, dims=(-1,)) if flip else img
        x = torch.rot90(x, k, dims=(-2, -1))
        d0, d1 = decoder.decode(img.numpy()), decoder.decode(x.numpy())
        assert sorted(int(cperm[c]) for c in d0.classes) == d1.classes
        for c, p in d0.posterior.items():
            assert d1.posterior[int(cperm[c])] == pytest.approx(p)


# ---- tiny grids: the decoder against brute force over every anchor sequence ----

TINY = geometry.Grid(side=5, sizes=(1, 1, 1, 1, 1, 1))
TINY_TOTAL, TINY_COUNTS = 3, (1, 2)


def _brute_force_likelihoods() -> dict[bytes, Counter]:
    """image bytes -> Counter(class id -> number of anchor sequences drawing it), over all classes."""
    n = TINY.anchors
    seqs = torch.tensor(list(itertools.product(range(n), repeat=TINY_TOTAL)))
    centres = torch.stack([seqs // TINY.side, seqs % TINY.side], dim=-1)
    out: dict[bytes, Counter] = {}
    for pid, (a, b) in enumerate(L.PAIRS):
        for n_a in range(TINY_COUNTS[0], TINY_COUNTS[1] + 1):
            types = torch.tensor([a] * n_a + [b] * (TINY_TOTAL - n_a)).expand(len(seqs), -1)
            sizes = torch.ones_like(types)
            imgs = synth.draw(types, centres, sizes, side=TINY.side).numpy() > 0
            cid = pid * (TINY_TOTAL - 1) + n_a - 1
            keys, cnt = np.unique(np.packbits(imgs.reshape(len(imgs), -1), axis=1), axis=0, return_counts=True)
            for key, c in zip(keys, cnt):
                out.setdefault(key.tobytes(), Counter())[cid] += int(c)
    return out


def test_posterior_matches_brute_force_on_tiny_grid():
    likelihoods = _brute_force_likelihoods()
    dec = Decoder(grid=TINY, total=TINY_TOTAL, counts=TINY_COUNTS)
    rng = np.random.default_rng(0)
    keys = list(likelihoods)
    for i in rng.choice(len(keys), 300, replace=False):
        key = keys[i]
        img = np.unpackbits(np.frombuffer(key, np.uint8))[: TINY.anchors].reshape(TINY.side, TINY.side) > 0
        d = dec.decode(img)
        truth = likelihoods[key]
        assert set(d.feasible) == set(truth)
        z = sum(truth.values())
        for c, cnt in truth.items():
            assert d.posterior[c] == pytest.approx(cnt / z)


def test_kernel_matches_reference_search():
    likelihoods = _brute_force_likelihoods()
    rng = np.random.default_rng(1)
    keys = list(likelihoods)
    for i in rng.choice(len(keys), 40, replace=False):
        img = np.unpackbits(np.frombuffer(keys[i], np.uint8))[: TINY.anchors].reshape(TINY.side, TINY.side) > 0
        for a, b in [(0, 1), (2, 5), (3, 4)]:
            pc = geometry.pair_candidates(TINY, a, b)
            ref = search.enumerate_pair_reference(pc, img, 2, 2, TINY_TOTAL)
            s = search.PairSearch(pc, geometry.pack(img), 2, 2, TINY_TOTAL)
            assert s.run(10**9)
            got = {(sa, sb): int(s.hist[sa, sb]) for sa, sb in zip(*np.nonzero(s.hist))}
            assert got == {k: len(v) for k, v in ref.items()}


def test_paused_search_resumes_to_the_same_result():
    images, _ = synth.generate(2, torch.Generator().manual_seed(8))
    pc = geometry.pair_candidates(geometry.Grid(), 0, 1)
    bits = geometry.pack(images[1].numpy() > 0)
    whole = search.PairSearch(pc, bits, 8, 8, 10)
    assert whole.run(10**9)
    parts = search.PairSearch(pc, bits, 8, 8, 10)
    budget = 1
    while not parts.run(budget):
        budget += 37
    assert np.array_equal(whole.hist, parts.hist) and parts.nodes == whole.nodes


def test_split_correct_counts_decidable_and_ambiguous_images_apart():
    from shapecount.exact.audit import map_correct, split_correct

    def row(label, feasible, unknown=False):
        return {"label": label, "unknown": unknown, "feasible": {str(k): {"p": p} for k, p in feasible.items()}}

    rows = {"a": row(3, {3: 1.0}), "b": row(5, {5: 1.0}),  # decidable
            "c": row(7, {7: 0.6, 9: 0.4}), "d": row(9, {7: 0.6, 9: 0.4}),  # ambiguous: MAP right on c only
            "e": row(1, {1: 1.0}, unknown=True)}  # an unfinished search is not decidable
    got = split_correct(rows, {"a": True, "b": False, "c": False, "d": True, "e": True, "not audited": False})
    assert got == {"n_dec": 2, "n_amb": 3, "errors_dec": 1, "errors_amb": 1, "acc_dec": 0.5, "acc_amb": 2 / 3}
    ceiling = split_correct(rows, map_correct(rows))
    assert (ceiling["acc_dec"], ceiling["errors_amb"]) == (1.0, 1)  # the MAP class is right on every decidable one
    assert split_correct(rows, {})["acc_dec"] is None
