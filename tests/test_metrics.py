import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, mean_absolute_error, mean_squared_error

from shapecount import labels, metrics


def crafted(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, 60, (n,), generator=g)  # only some classes present, like the real data
    pred = torch.where(torch.rand(n, generator=g) < 0.6, true, torch.randint(0, 135, (n,), generator=g))
    counts = labels.class_count_table()[true]
    pred_counts = counts + torch.randn(n, 6, generator=g)
    return true, pred, counts, pred_counts


def test_macro_f1_matches_sklearn_over_present_classes():
    true, pred, _, _ = crafted()
    f1, n = metrics.macro_f1(pred, true)
    present = sorted(set(true.tolist()))
    assert n == len(present)
    assert f1 == pytest.approx(f1_score(true, pred, labels=present, average="macro", zero_division=0), abs=1e-6)


def test_count_errors_match_sklearn():
    _, _, counts, pred_counts = crafted()
    m = metrics.count_errors(pred_counts, counts)
    assert m["rmse"] == pytest.approx(math.sqrt(mean_squared_error(counts.flatten(), pred_counts.flatten())), rel=1e-5)
    assert m["mae"] == pytest.approx(mean_absolute_error(counts.flatten(), pred_counts.flatten()), rel=1e-5)
    for i, t in enumerate(labels.TYPES):
        assert m["rmse_per_type"][t] == pytest.approx(
            math.sqrt(mean_squared_error(counts[:, i], pred_counts[:, i])), rel=1e-5)
        assert m["mae_per_type"][t] == pytest.approx(mean_absolute_error(counts[:, i], pred_counts[:, i]), rel=1e-5)


def test_hand_computed_small_case():
    # 4 images: classes 0 (1 sq + 9 ci), 1 (2 sq + 8 ci), 9 (1 sq + 9 up), 9
    true = torch.tensor([0, 1, 9, 9])
    pred = torch.tensor([0, 2, 9, 0])  # right, same pair wrong split, right, wrong pair
    m = metrics.classification_metrics(pred, true)
    assert m["top1_accuracy"] == 0.5
    assert m["pair_accuracy"] == 0.75
    assert m["per_pair_accuracy"]["squares + circles"] == 0.5
    assert m["per_pair_accuracy"]["squares + up-triangles"] == 0.5
    assert math.isnan(m["per_pair_accuracy"]["down-triangles + left-triangles"])
    # F1 over present classes {0, 1, 9}: class 0: P=1/2, R=1 -> 2/3; class 1: 0; class 9: P=1, R=1/2 -> 2/3
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)
    assert m["macro_f1_classes"] == 3


def test_perfect_predictions():
    true = torch.arange(135)
    counts = labels.class_count_table()
    lp = torch.log_softmax(torch.nn.functional.one_hot(true, 135).float() * 20, 1)
    m = metrics.compute_metrics(lp, counts, true, counts)
    assert m["top1_accuracy"] == 1 and m["macro_f1"] == 1 and m["pair_accuracy"] == 1
    assert m["rmse"] == 0 and m["mae"] == 0 and m["count_decoded_accuracy"] == 1


def test_metrics_are_per_sample_not_per_batch():
    # one set of 1000 vs "average of batch accuracies" with an uneven last batch would differ
    true = torch.zeros(1001, dtype=torch.long)
    pred = torch.zeros(1001, dtype=torch.long)
    pred[-1] = 5
    assert metrics.classification_metrics(pred, true)["top1_accuracy"] == pytest.approx(1000 / 1001)


def test_binomial_std():
    assert metrics.binomial_std(0.5, 1000) == pytest.approx(np.sqrt(0.25 / 1000))


def test_error_split_and_per_pair_accuracy():
    c = labels.counts_to_class
    true = np.array([c([5, 5, 0, 0, 0, 0])] * 4 + [c([0, 0, 5, 5, 0, 0])])
    pred = np.array([c([5, 5, 0, 0, 0, 0]), c([4, 6, 0, 0, 0, 0]), c([2, 8, 0, 0, 0, 0]), c([5, 0, 5, 0, 0, 0]),
                     c([0, 0, 5, 5, 0, 0])])
    assert metrics.error_split(true, pred) == {"n": 5, "errors": 3, "same_pair": 2, "wrong_pair": 1,
                                               "split_off": [1, 0, 1]}
    acc = metrics.per_pair_accuracy(torch.as_tensor(pred), torch.as_tensor(true))
    assert acc[0] == 0.25 and acc[labels.class_to_pair(true[-1])] == 1.0
    assert sum(math.isnan(a) for a in acc) == labels.NUM_PAIRS - 2
    cm = metrics.confusion(true, pred, labels.NUM_CLASSES)
    assert cm.sum() == 5 and cm[true[0], true[0]] == 1
