import itertools

import pytest
import torch

from shapecount import labels


def all_valid_counts():
    for a, b in itertools.combinations(range(6), 2):
        for k in range(1, 10):
            c = [0] * 6
            c[a], c[b] = k, 10 - k
            yield c


def test_round_trip_all_135():
    seen = set()
    for c in all_valid_counts():
        k = labels.counts_to_class(c)
        assert labels.class_to_counts(k) == c
        seen.add(k)
    assert seen == set(range(135))


def test_batch_matches_scalar():
    table = labels.class_count_table()
    assert table.shape == (135, 6)
    assert torch.equal(labels.counts_to_class_batch(table), torch.arange(135))
    shuffled = table[torch.randperm(135)]
    expected = torch.tensor([labels.counts_to_class(r.long().tolist()) for r in shuffled])
    assert torch.equal(labels.counts_to_class_batch(shuffled), expected)


def test_layout_documented():
    # pair 0 = (squares, circles), class 0 = 1 square + 9 circles; pair 14 = (down, left)
    assert labels.PAIRS[0] == (0, 1) and labels.PAIRS[14] == (4, 5)
    assert labels.class_to_counts(0) == [1, 9, 0, 0, 0, 0]
    assert labels.class_to_counts(8) == [9, 1, 0, 0, 0, 0]
    assert labels.class_to_counts(134) == [0, 0, 0, 0, 9, 1]
    assert labels.class_name(2) == "3 squares + 7 circles"
    assert labels.class_name(0) == "1 square + 9 circles"
    assert labels.pair_name(0) == "squares + circles"


@pytest.mark.parametrize("bad", [
    [10, 0, 0, 0, 0, 0],  # one type
    [2, 2, 6, 0, 0, 0],  # three types
    [3, 6, 0, 0, 0, 0],  # sum 9
    [-1, 11, 0, 0, 0, 0],  # negative
    [5, 5, 0, 0, 0],  # five entries
    [0, 0, 0, 0, 0, 0],
])
def test_rejects_invalid(bad):
    with pytest.raises(labels.LabelError):
        labels.counts_to_class(bad)


@pytest.mark.parametrize("k", [-1, 135, 1000])
def test_rejects_bad_class(k):
    with pytest.raises(labels.LabelError):
        labels.class_to_counts(k)


def test_rotation_facts():
    up, right, down, left = 2, 3, 4, 5
    p = labels.ROT90_CCW
    assert (p[up], p[left], p[down], p[right]) == (left, down, right, up)
    assert labels.HFLIP[left] == right and labels.HFLIP[right] == left and labels.HFLIP[up] == up
    assert labels.VFLIP[up] == down and labels.VFLIP[down] == up and labels.VFLIP[left] == left


def test_group_structure():
    assert labels.compose(*[labels.ROT90_CCW] * 4) == labels.IDENTITY
    assert labels.compose(labels.HFLIP, labels.HFLIP) == labels.IDENTITY
    # vertical flip = horizontal flip then a half turn
    assert labels.dihedral_perm(2, True) == labels.VFLIP
    perms = {labels.dihedral_perm(k, f) for k in range(4) for f in (False, True)}
    assert len(perms) == 8  # the 8 symmetries act as 8 different label permutations
    for p in perms:
        assert labels.compose(p, labels.inverse(p)) == labels.IDENTITY


def test_permutations_keep_totals_and_classes_valid():
    table = labels.class_count_table()
    for k in range(4):
        for f in (False, True):
            perm = labels.dihedral_perm(k, f)
            moved = labels.permute_counts(table, perm)
            assert torch.equal(moved.sum(1), torch.full((135,), 10.0))
            cp = labels.class_permutation(perm)
            assert sorted(cp.tolist()) == list(range(135))  # a bijection of the classes
            # squares and circles never move
            assert torch.equal(moved[:, :2], table[:, :2])


def test_decode_counts_nearest_valid():
    table = labels.class_count_table()
    noisy = table + 0.3 * (torch.rand_like(table) - 0.5)
    assert torch.equal(labels.decode_counts(noisy), torch.arange(135))
    # an invalid rounding (sum 11) is projected onto a valid label
    assert labels.decode_counts(torch.tensor([[3.4, 7.4, 0, 0, 0, 0.2]])).item() == labels.counts_to_class(
        [3, 7, 0, 0, 0, 0])


def test_docs_table_is_current():
    """docs/labels.md is the output of `shapecount labels`; regenerate it if the mapping ever changes."""
    import contextlib
    import io
    from pathlib import Path

    from shapecount.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["labels"]) == 0
    doc = (Path(__file__).parent.parent / "docs" / "labels.md").read_text()
    assert buf.getvalue() in doc
