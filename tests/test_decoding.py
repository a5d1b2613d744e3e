import pytest
import torch

from shapecount import decoding
from shapecount import labels as L


def _outputs(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    lp = torch.log_softmax(torch.randn(n, L.NUM_CLASSES, generator=g), dim=1)
    counts = L.class_count_table()[torch.randint(0, L.NUM_CLASSES, (n,), generator=g)].float()
    return lp, counts + 0.4 * torch.randn(n, L.NUM_TYPES, generator=g)


def test_beta_zero_is_the_classifier_and_infinite_beta_the_count_decoder():
    lp, counts = _outputs()
    assert torch.equal(decoding.joint_scores(lp, counts, 0.0).argmax(1), lp.argmax(1))
    assert torch.equal(decoding.joint_scores(lp, counts, float("inf")).argmax(1), L.decode_counts(counts))


def test_a_confident_count_head_overrides_an_unsure_classifier():
    lp = torch.log_softmax(torch.zeros(1, L.NUM_CLASSES), dim=1)  # uniform: argmax would be class 0
    lp[0, 0] += 0.01
    target = L.counts_to_class([4, 6, 0, 0, 0, 0])
    counts = L.class_count_table()[target].float().unsqueeze(0)
    assert decoding.joint_scores(lp, counts, 1.0).argmax(1).item() == target


def test_accuracy_by_beta_and_choice():
    lp, counts = _outputs()
    truth = L.decode_counts(counts)  # the count head is always right here
    acc = decoding.accuracy_by_beta(lp, counts, truth)
    assert acc[-1] == 1.0 and acc[0] < 0.2
    assert decoding.choose_beta([0.5, 0.7, 0.7, 0.6], (0, 1, 2, 3)) == 1  # ties go to the smaller beta
    with pytest.raises(ValueError):
        decoding.choose_beta([], ())
