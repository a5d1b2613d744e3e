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


def test_beta_is_chosen_on_the_images_the_run_selected_on(tmp_path, monkeypatch):
    # limit_train cuts the training images first; the holdout is the end of what is left, as in training.
    from conftest import write_gsn_dir
    from shapecount import data as D
    from shapecount import evaluation
    from shapecount.cli import main

    gsn = write_gsn_dir(tmp_path / "gsn", n=80)
    run = tmp_path / "run"
    assert main(["train", "--data", str(gsn), "--recipe", "quick", "--epochs", "1", "--out", str(run), "--no-progress",
                 "--set", "limit_train=40", "--set", "holdout=10", "--set", "limit_val=5"]) == 0
    data = D.load_gsn(str(gsn), progress=False)
    seen = []
    real = evaluation.predict
    monkeypatch.setattr(evaluation, "predict", lambda m, images, *a, **k: seen.append(images) or real(m, images, *a, **k))
    decoding.check_run(run, data)
    assert [len(s) for s in seen] == [10, 5]
    assert torch.equal(seen[0], data.images[30:40]) and torch.equal(seen[1], data.images[72:77])
