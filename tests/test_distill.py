"""Training-only distillation from a teacher run: the settings it needs, the loss, the start from the teacher's
top layers, and a run that uses it, resumes exactly and exports the fixed network alone."""

import copy

import pytest
import torch

from shapecount import experiments
from shapecount.config import ConfigError, make_config
from shapecount.distill import distill_loss, init_from_teacher
from shapecount.errors import UserError
from shapecount.model import CONV_LAYERS, ShapeCountNet


def test_distillation_settings_come_together():
    with pytest.raises(ConfigError, match="need a teacher"):
        make_config("multitask", "best", {"distill_features": 1.0})
    with pytest.raises(ConfigError, match="a teacher is used only with"):
        make_config("multitask", "best", {"teacher": "runs/wide/checkpoint.pt"})
    with pytest.raises(ConfigError, match="must be >= 0"):
        make_config("multitask", "best", {"teacher": "t.pt", "distill_kl": -1.0})


def test_the_loss_is_zero_for_the_teachers_own_features_and_grows_away_from_them():
    torch.manual_seed(0)
    teacher = ShapeCountNet(conv_widths=(16, 16, 16)).eval()
    cfg = make_config("multitask", "best", {"teacher": "t.pt", "distill_features": 2.0, "distill_kl": 1.0})
    x = (torch.rand(8, 1, 28, 28) > 0.7).float()
    fmap = teacher.feature_map(x)
    same = distill_loss(teacher, x, fmap, teacher.heads(fmap)[0], cfg)
    assert float(same.detach()) == pytest.approx(0.0, abs=1e-6)
    other = ShapeCountNet()
    f2 = other.feature_map(x)
    loss = distill_loss(teacher, x, f2, other.heads(f2)[0], cfg)
    t = fmap.detach()
    expect_features = 2.0 * float(((f2 - t) ** 2).mean() / (t ** 2).mean())
    assert float(loss) > expect_features > 0  # the KL term adds to the relative feature error
    loss.backward()
    assert other.backbone[0].weight.grad is not None  # the student's convolutions learn from it


def test_the_student_starts_from_the_teachers_linear_layer_and_heads():
    teacher = ShapeCountNet(head_hidden=32, head_dropout1=0, head_dropout2=0, conv_widths=(16, 16, 16))
    student = ShapeCountNet(head_hidden=32, head_dropout1=0, head_dropout2=0)
    convs = copy.deepcopy(student.backbone[0].weight)
    init_from_teacher(student, teacher, "t.pt")
    fc = CONV_LAYERS + 1
    assert torch.equal(student.backbone[fc].weight, teacher.backbone[fc].weight)
    assert all(torch.equal(a, b) for a, b in zip(student.cls_head.parameters(), teacher.cls_head.parameters()))
    assert torch.equal(student.backbone[0].weight, convs)  # the convolutions are the student's own
    with pytest.raises(UserError, match="heads of another size"):
        init_from_teacher(ShapeCountNet(head_hidden=64), teacher, "t.pt")


def test_a_distilled_run_resumes_exactly_and_exports_the_fixed_network(tmp_path, monkeypatch):
    from conftest import write_gsn_dir
    from helpers.interrupt import run_interrupted
    from shapecount.data import load_gsn

    data = load_gsn(str(write_gsn_dir(tmp_path / "gsn", n=45)), progress=False)
    base = {"epochs": 2, "batch_size": 16, "tta": False, "head_hidden": 32}
    experiments.run_experiment(make_config("multitask", "protocol", {**base, "conv_widths": "16,16,16"}), data,
                               tmp_path / "teacher", progress=False)
    teacher = str(tmp_path / "teacher" / "checkpoint.pt")
    cfg = make_config("multitask", "protocol", {**base, "epochs": 3, "teacher": teacher, "distill_features": 1.0,
                                                "distill_kl": 0.5, "distill_init": True})
    a = experiments.run_experiment(cfg, data, tmp_path / "a", progress=False)

    def check(args, kwargs):
        assert kwargs["teacher"] is not None

    run_interrupted(cfg, data, tmp_path / "r", monkeypatch, epoch=2, check=check)
    r = experiments.run_experiment(cfg, data, tmp_path / "r", progress=False, resume=True)
    assert a["rmse"] == r["rmse"]
    wa, wr = (torch.load(p / "checkpoint.pt", weights_only=True)["model"] for p in (tmp_path / "a", tmp_path / "r"))
    assert all(torch.equal(wa[k], wr[k]) for k in wa)
    assert set(wa) == set(ShapeCountNet().state_dict())  # the teacher is not exported
    assert wa["backbone.0.weight"].shape == (8, 1, 3, 3)  # the fixed backbone
    hist = (tmp_path / "a" / "history.csv").read_text().splitlines()
    column = hist[0].split(",").index("train_loss_distill")
    assert all(float(row.split(",")[column]) > 0 for row in hist[1:])
    missing = make_config("multitask", "protocol", {**base, "teacher": str(tmp_path / "none.pt"),
                                                    "distill_kl": 1.0})
    with pytest.raises(UserError, match="checkpoint not found"):
        experiments.run_experiment(missing, data, tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()  # nothing half-made
