import math

import torch

from shapecount import engine, evaluation, schedule
from shapecount.config import make_config
from shapecount.model import build_model


def test_early_stopping_max_and_min():
    m = torch.nn.Linear(2, 2)
    es = engine.EarlyStopping("val_top1", patience=2)
    assert es.mode == "max"
    assert es.step(0.5, 1, m) and not es.should_stop
    assert not es.step(0.4, 2, m)
    assert es.step(0.6, 3, m) and es.best_epoch == 3
    assert not es.step(0.6, 4, m)  # ties do not count as improvement
    assert not es.step(0.1, 5, m) and es.should_stop
    es2 = engine.EarlyStopping("val_rmse", patience=1)
    assert es2.mode == "min" and es2.step(1.0, 1, m) and es2.step(0.9, 2, m) and not es2.step(0.95, 3, m)


def test_restore_best_weights():
    m = torch.nn.Linear(2, 2)
    es = engine.EarlyStopping("val_loss", patience=5)
    es.step(1.0, 1, m)
    best = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(1)
    es.step(2.0, 2, m)
    es.restore(m)
    assert torch.equal(m.weight, best)


def test_epoch_indices_expansion():
    g = torch.Generator().manual_seed(0)
    idx, aug = engine.epoch_indices(10, 0, g)
    assert sorted(idx.tolist()) == list(range(10)) and aug.all()
    idx, aug = engine.epoch_indices(10, 2, g)
    assert len(idx) == 30 and int((~aug).sum()) == 10
    assert sorted(idx[~aug].tolist()) == list(range(10))  # every original exactly once


def _tiny_tensors(n=48, seed=0):
    from shapecount import labels

    g = torch.Generator().manual_seed(seed)
    counts = labels.class_count_table()[torch.randint(0, 135, (n,), generator=g)]
    images = ((torch.rand(n, 28, 28, generator=g) > 0.8) * 255).to(torch.uint8)
    return images, counts


def test_fit_is_deterministic_and_learns():
    images, counts = _tiny_tensors()
    cfg = make_config("multitask", "fast", {"epochs": 3, "batch_size": 16, "tta": False})

    def run():
        gen = engine.seed_everything(cfg.seed)
        model = build_model(cfg)
        res = engine.fit(model, images, counts, images[:16], counts[:16], cfg, torch.device("cpu"), gen,
                         progress=False)
        return res["history"]

    h1, h2 = run(), run()
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]
    assert [r["val_top1"] for r in h1] == [r["val_top1"] for r in h2]
    assert h1[-1]["train_loss"] < h1[0]["train_loss"]


def test_predict_tta_equivariant_model_matches_single_view():
    """TTA over the symmetries of an image that is itself symmetric and labelled symmetric gives the same
    argmax as a single view; and TTA output is a normalised distribution."""
    cfg = make_config(overrides={"tta": True})
    torch.manual_seed(0)
    model = build_model(cfg)
    images, _ = _tiny_tensors(10)
    lp, cnt = evaluation.predict(model, images, torch.device("cpu"), batch_size=4, tta=True)
    assert lp.shape == (10, 135) and cnt.shape == (10, 6)
    assert torch.allclose(lp.exp().sum(1), torch.ones(10), atol=1e-4)
    lp1, _ = evaluation.predict(model, images, torch.device("cpu"), batch_size=4, tta=False)
    lp1b, _ = evaluation.predict(model, images, torch.device("cpu"), batch_size=10, tta=False)
    assert torch.allclose(lp1, lp1b, atol=1e-5)  # eval batch size does not change results


def test_fp16_with_a_gradient_scaler_trains(tmp_path, monkeypatch):
    """A GPU without bf16 (e.g. a T4) trains in fp16 with loss scaling; the same code path runs here on the CPU
    when the device is made to look like one."""
    from conftest import write_gsn_dir
    from shapecount import experiments, runtime
    from shapecount.config import make_config
    from shapecount.data import load_gsn

    monkeypatch.setattr(runtime, "amp_dtype", lambda requested, device: torch.float16 if requested else None)
    cfg = make_config("multitask", "protocol", {"epochs": 2, "batch_size": 16, "tta": False, "amp": True})
    assert engine.make_scaler(cfg, torch.device("cpu")) is not None
    m = experiments.run_experiment(cfg, load_gsn(str(write_gsn_dir(tmp_path / "gsn", n=45)), progress=False),
                                   tmp_path / "r", progress=False)
    assert m["precision"] == "fp16" and math.isfinite(m["loss"]) and math.isfinite(m["rmse"])
    h = (tmp_path / "r" / "history.csv").read_text().splitlines()
    assert len(h) == 3 and all(math.isfinite(float(v)) for v in h[2].split(",")[1:5])


def test_precision_per_device(monkeypatch):
    from shapecount import runtime

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(runtime, "native_bf16", lambda device: device.type == "cpu")
    assert runtime.amp_dtype(True, cpu) == torch.bfloat16 and runtime.amp_dtype(False, cpu) is None
    monkeypatch.setattr(runtime, "native_bf16", lambda device: False)
    assert runtime.amp_dtype(True, gpu) == torch.float16  # a GPU without bf16 units: fp16 (+ loss scaling)
    assert runtime.amp_dtype(True, cpu) is None  # a CPU without it: fp32 is faster
    assert runtime.amp_dtype(False, gpu) is None
    assert [runtime.precision_name(d) for d in (torch.bfloat16, torch.float16, None)] == ["bf16", "fp16", "fp32"]


def test_fc_lr_scale_gives_the_big_linear_layer_its_own_lr():
    cfg = make_config("multitask", "fast", {"fc_lr_scale": 0.05})
    model = build_model(cfg)
    opt = engine.make_optimizer(model, cfg)
    fc = model.backbone[9]
    by_param = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert by_param[id(fc.weight)] == by_param[id(fc.bias)] == cfg.lr * 0.05
    others = [p for n, p in model.named_parameters() if not n.startswith("backbone.9.")]
    assert {by_param[id(p)] for p in others} == {cfg.lr}
    assert len(by_param) == len(list(model.parameters()))  # every parameter once
    sched = schedule.make_scheduler(opt, cfg, steps_per_epoch=5)
    for _ in range(7):
        opt.step()
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert math.isclose(lrs[1] / lrs[0], 0.05)  # the schedule scales both groups alike


def test_conv_lr_scale_gives_the_convolutions_their_own_lr_and_only_then_a_group():
    plain = make_config("multitask", "fast")
    assert len(engine.make_optimizer(build_model(plain), plain).param_groups) == 2  # the layout older runs saved
    cfg = make_config("multitask", "fast", {"conv_lr_scale": 3.0, "fc_lr_scale": 0.5})
    model = build_model(cfg)
    opt = engine.make_optimizer(model, cfg)
    by_param = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert len(by_param) == len(list(model.parameters()))  # every parameter once
    for name, p in model.named_parameters():
        layer = int(name.split(".")[1]) if name.startswith("backbone.") else None
        want = cfg.lr * (3.0 if layer is not None and layer < 8 else 0.5 if layer == 9 else 1.0)
        assert math.isclose(by_param[id(p)], want), name
    sched = schedule.make_scheduler(opt, cfg, steps_per_epoch=5)
    for _ in range(7):
        opt.step()
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert math.isclose(lrs[2] / lrs[0], 3.0) and math.isclose(lrs[1] / lrs[0], 0.5)


def test_fc_share_trains_the_shared_weight_at_lr_over_784_and_keeps_the_bias_lr():
    cfg = make_config("multitask", "fast", {"fc_share": 1.0, "fc_lr_scale": 2.0})
    model = build_model(cfg)
    by_param = {id(p): g["lr"] for g in engine.make_optimizer(model, cfg).param_groups for p in g["params"]}
    fc = model.backbone[9]
    assert math.isclose(by_param[id(fc.weight)], cfg.lr * 2.0 / 784)
    assert by_param[id(fc.bias)] == cfg.lr * 2.0
    assert len(by_param) == len(list(model.parameters()))


def test_evaluate_counts_the_live_units():
    cfg = make_config("multitask", "fast", {"eval_batch_size": 7})  # 3 batches: units are gathered over all
    model = build_model(cfg)
    images = (torch.rand(20, 28, 28) > 0.6).to(torch.uint8) * 255
    counts = torch.tensor([[5, 5, 0, 0, 0, 0]] * 20).float()
    fc = model.backbone[9]
    with torch.no_grad():
        fc.bias.fill_(-1e3)  # every unit below zero on every image: all dead
    assert evaluation.evaluate(model, images, counts, cfg, torch.device("cpu"))["live_units"] == 0
    with torch.no_grad():
        fc.bias[[0, 7, 255]] = 1e3
    assert evaluation.evaluate(model, images, counts, cfg, torch.device("cpu"))["live_units"] == 3
    assert not model.backbone[-1]._forward_hooks  # the counting hook is removed


def test_init_and_fc_lr_scale_are_validated():
    import pytest

    from shapecount.config import ConfigError
    for bad, msg in (({"init": "xavier"}, "init must be one of"), ({"fc_lr_scale": 0.0}, "fc_lr_scale must be"),
                     ({"fc_share": 1.5}, "fc_share must be in"), ({"conv_lr_scale": -1.0}, "conv_lr_scale must be"),
                     ({"relu_leak": 1.0}, "relu_leak must be in"), ({"relu_leak_until": 0.0}, "relu_leak_until must")):
        with pytest.raises(ConfigError, match=msg):
            make_config("multitask", "fast", bad)


def test_synth_hidden_reaches_each_epochs_draw_and_the_run_resumes_exactly(tmp_path, monkeypatch):
    from conftest import write_gsn_dir
    from helpers.interrupt import run_interrupted
    from shapecount import experiments, synth
    from shapecount.data import load_gsn

    data = load_gsn(str(write_gsn_dir(tmp_path / "gsn", n=45)), progress=False)
    cfg = make_config("multitask", "protocol", {"epochs": 3, "batch_size": 16, "tta": False, "synth_per_epoch": 32,
                                                "synth_hidden": 1.0})
    asked = []
    draw = synth.generate_with_points
    monkeypatch.setattr(synth, "generate_with_points", lambda *a, **k: asked.append(k["hidden"]) or draw(*a, **k))
    a = experiments.run_experiment(cfg, data, tmp_path / "a", progress=False)
    assert asked == [1.0] * 3
    run_interrupted(cfg, data, tmp_path / "r", monkeypatch, epoch=2)
    r = experiments.run_experiment(cfg, data, tmp_path / "r", progress=False, resume=True)
    assert a["rmse"] == r["rmse"] and a["top1_accuracy"] == r["top1_accuracy"]
