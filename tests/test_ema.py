"""The weight average: its arithmetic, and that a run with it evaluates, selects, delivers and resumes it."""

import pytest
import torch
from torch import nn

from shapecount import experiments
from shapecount.config import ConfigError, make_config
from shapecount.ema import WeightEma


@pytest.mark.parametrize("every", [1, 4])
def test_average_follows_the_documented_recurrence(every):
    model = nn.Linear(3, 2)
    ema = WeightEma(model, decay=0.9, every=every)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    expected = {k: v.clone() for k, v in start.items()}
    for step in range(1, 41):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
        ema.update(model)
        if step % every == 0:
            d = min(0.9, 1 - (1 + step) ** (-2 / 3)) ** every
            for k, v in model.state_dict().items():
                expected[k] = d * expected[k] + (1 - d) * v
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, expected[k])
    assert ema.current_decay() == 0.9  # the warmup reached the cap (after 30 steps)
    assert not any(p.requires_grad for p in ema.module.parameters())
    # the average lags the weights that keep rising: it is neither the start nor the current weights
    w, a = model.weight.detach(), ema.module.weight
    assert bool((a > start["weight"]).all()) and bool((a < w).all())


def test_state_round_trip_continues_identically():
    torch.manual_seed(0)
    model = nn.Linear(4, 4)
    a = WeightEma(model, 0.99)
    for _ in range(6):
        a.update(model)
    b = WeightEma(nn.Linear(4, 4), 0.99)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        model.weight.mul_(2)
    for _ in range(2):  # the 8th step updates the average
        a.update(model)
        b.update(model)
    assert b.steps == a.steps == 8
    assert torch.equal(a.module.weight, b.module.weight)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_config_rejects_decay_outside_unit_interval(bad):
    with pytest.raises(ConfigError, match="ema_decay must be in"):
        make_config("multitask", "fast", {"ema_decay": bad})


def test_run_delivers_the_average_and_resumes_it_exactly(tmp_path, monkeypatch):
    from conftest import write_gsn_dir
    from helpers.interrupt import run_interrupted
    from shapecount.data import load_gsn

    data = load_gsn(str(write_gsn_dir(tmp_path / "gsn", n=45)), progress=False)
    base = {"epochs": 3, "patience": 5, "batch_size": 16, "tta": False}
    plain = experiments.run_experiment(make_config("multitask", "protocol", base), data, tmp_path / "p",
                                       progress=False)
    cfg = make_config("multitask", "protocol", {**base, "ema_decay": 0.9})
    a = experiments.run_experiment(cfg, data, tmp_path / "a", progress=False)
    # The same training steps (the average does not feed back into training), other weights evaluated.
    hp, ha = ((tmp_path / d / "history.csv").read_text().splitlines() for d in ("p", "a"))
    assert [r.split(",")[1] for r in hp[1:]] == [r.split(",")[1] for r in ha[1:]]  # train_loss per epoch
    assert plain["rmse"] != a["rmse"]

    def check(args, kwargs):
        assert kwargs["ema"] is not None

    run_interrupted(cfg, data, tmp_path / "r", monkeypatch, epoch=2, check=check)
    r = experiments.run_experiment(cfg, data, tmp_path / "r", progress=False, resume=True)
    assert a["rmse"] == r["rmse"] and a["top1_accuracy"] == r["top1_accuracy"]
    wa, wr = (torch.load(p / "checkpoint.pt", weights_only=True)["model"] for p in (tmp_path / "a", tmp_path / "r"))
    assert all(torch.equal(wa[k], wr[k]) for k in wa)
