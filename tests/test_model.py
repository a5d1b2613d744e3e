import torch
from torch import nn

from shapecount.config import make_config
from shapecount.losses import multitask_loss
from shapecount.model import (
    ShapeCountNet,
    attach_norms,
    build_model,
    count_parameters,
    describe,
    fold_norms,
    init_from_data,
)


def test_backbone_is_the_fixed_one():
    m = ShapeCountNet()
    kinds = [type(layer).__name__ for layer in m.backbone]
    assert kinds == ["Conv2d", "ReLU"] * 4 + ["Flatten", "Linear", "ReLU"]
    convs = [layer for layer in m.backbone if isinstance(layer, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 8), (8, 16), (16, 32), (32, 64)]
    for c in convs:
        assert c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (1, 1)
    lin = m.backbone[9]
    assert (lin.in_features, lin.out_features) == (64 * 28 * 28, 256)
    assert count_parameters(m.backbone) == 12_869_696
    assert count_parameters(m) == 12_911_757


def test_capacity_study_widens_the_first_three_convolutions_only():
    wide = build_model(make_config(overrides={"conv_widths": "32,64,64"}))
    convs = [layer for layer in wide.backbone if isinstance(layer, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 32), (32, 64), (64, 64), (64, 64)]
    assert [type(layer) for layer in wide.backbone] == [type(layer) for layer in ShapeCountNet().backbone]
    assert wide.backbone[9].in_features == 64 * 28 * 28 and wide(torch.rand(2, 1, 28, 28))[0].shape == (2, 135)
    assert "a capacity study, not the assignment's fixed backbone" in describe(wide)
    assert "capacity study" not in describe(ShapeCountNet())
    attach_norms(wide)  # the training-only norms take their widths from the layers
    assert [n.num_features for n in wide.norms] == [32, 64, 64, 64, 256]


def test_heads_configurable_and_shapes():
    cfg = make_config("multitask", overrides={"head_hidden": 32, "head_dropout1": 0.0})
    m = build_model(cfg).eval()
    assert m.cls_head[1].out_features == 32
    lp, cnt = m(torch.rand(5, 1, 28, 28))
    assert lp.shape == (5, 135) and cnt.shape == (5, 6)
    assert torch.allclose(lp.exp().sum(1), torch.ones(5), atol=1e-5)  # log-probabilities
    assert "12,911,757" not in describe(m) and "total" in describe(m)
    deep = build_model(make_config("multitask", overrides={"head_hidden": 32, "head_depth": 3})).eval()
    linears = [(layer.in_features, layer.out_features) for layer in deep.cls_head if isinstance(layer, nn.Linear)]
    assert linears == [(256, 32), (32, 32), (32, 32), (32, 135)]
    assert deep(torch.rand(2, 1, 28, 28))[1].shape == (2, 6)
    # one hidden layer keeps the layer positions (and so the state-dict keys) of the seed report's heads
    assert set(m.state_dict()) == set(ShapeCountNet(head_hidden=32).state_dict())


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    m = ShapeCountNet()
    x = (torch.rand(8, 1, 28, 28) > 0.7).float()
    lp, cnt = m(x)
    loss = multitask_loss(lp, cnt, torch.randint(0, 135, (8,)), torch.rand(8, 6) * 9, 1.0, 5.0)["loss"]
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_overfits_one_small_batch():
    torch.manual_seed(0)
    m = ShapeCountNet(head_dropout1=0.0, head_dropout2=0.0)
    x = (torch.rand(16, 1, 28, 28) > 0.7).float()
    y = torch.randint(0, 135, (16,))
    c = torch.rand(16, 6) * 9
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    for _ in range(100):
        lp, cnt = m(x)
        loss = multitask_loss(lp, cnt, y, c, 1.0, 5.0)
        opt.zero_grad()
        loss["loss"].backward()
        opt.step()
    assert (lp.argmax(1) == y).all()
    assert loss["loss_cnt"] < 0.1


def _fires(m, x):
    """Per backbone layer: the fraction of the batch (and positions) on which each channel/unit is positive."""
    out, h = [], x
    with torch.no_grad():
        for layer in m.backbone:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                out.append((h > 0).float().transpose(0, 1).reshape(h.shape[1], -1).mean(1))
    return out


def _images(n, seed=0):
    from shapecount import synth
    imgs, _ = synth.generate(n, torch.Generator().manual_seed(seed))
    return imgs.unsqueeze(1).float() / 255


def test_default_init_starts_with_dead_units_and_centre_init_has_none():
    x = _images(256)
    torch.manual_seed(0)
    m = ShapeCountNet()
    assert (_fires(m, x)[-1] == 0).sum() > 10  # PyTorch's default init: units that never fire
    init_from_data(m, x, "centre")
    fires = _fires(m, x)
    for frac in fires:  # every channel fires, on at most about half of the batch (ties at the median stay 0)
        assert ((frac > 0.05) & (frac < 0.55)).all()
    assert ((fires[-1] > 0.45) & (fires[-1] < 0.55)).all()  # the 256 units: half of the batch each


def test_lsuv_init_gives_unit_std_and_default_changes_nothing():
    x = _images(256)
    torch.manual_seed(0)
    m = ShapeCountNet()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    init_from_data(m, x, "default")
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    init_from_data(m, x, "lsuv")
    with torch.no_grad():
        pre = m.backbone[:10](x)  # Linear(50176, 256) before its ReLU
    assert torch.allclose(pre.std(0), torch.ones(256), atol=1e-3)
    assert torch.allclose(pre.median(0).values, torch.zeros(256), atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items() if "head" in k)  # heads untouched


def test_shared_positions_stay_shared_under_adam_and_partial_sharing_shrinks_what_differs():
    from shapecount.model import FC_POSITIONS, init_shared, shared_gradient
    torch.manual_seed(0)
    m = ShapeCountNet(head_hidden=32, head_dropout1=0, head_dropout2=0)
    fc = m.backbone[9]
    init_shared(fc)
    per_pos = fc.weight.detach().view(256, 64, FC_POSITIONS).clone()
    assert torch.equal(per_pos, per_pos[:, :, :1].expand_as(per_pos))  # one weight per (unit, channel)
    assert per_pos.std() > 0  # but not the same for all of them
    handle = fc.weight.register_hook(shared_gradient(1.0))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    x = _images(16)
    for _ in range(3):
        log_probs, counts = m(x)
        (-log_probs[:, 0].mean() + counts.pow(2).mean()).backward()
        opt.step()
        opt.zero_grad()
    after = fc.weight.detach().view(256, 64, FC_POSITIONS)
    assert not torch.equal(after, per_pos)  # it trained
    assert torch.equal(after, after[:, :, :1].expand_as(after))  # and stayed shared
    handle.remove()
    g = torch.randn(256, 64 * FC_POSITIONS)
    half = shared_gradient(0.5)(g).view(256, 64, FC_POSITIONS)
    g3 = g.view(256, 64, FC_POSITIONS)
    assert torch.allclose(half.mean(2), g3.mean(2), atol=1e-5)  # the shared part is kept
    assert torch.allclose(half - half.mean(2, keepdim=True), 0.5 * (g3 - g3.mean(2, keepdim=True)), atol=1e-5)


def test_training_leak_is_relu_in_evaluation_and_leaves_the_network_as_it_was():
    from shapecount.model import leaky_in_training
    model = build_model(make_config("multitask", "fast"))
    x = (torch.rand(4, 1, 28, 28) > 0.6).float()
    keys = list(model.state_dict())
    model.eval()
    with torch.no_grad():
        before = model(x)
    with leaky_in_training(model) as leaky:
        assert len(leaky) == 5 and not any(isinstance(m, nn.ReLU) for m in model.backbone)
        for m in leaky:
            m.slope = 0.3
        with torch.no_grad():
            assert all(torch.equal(a, b) for a, b in zip(model(x), before))  # evaluation: exactly ReLU
            model.train()
            z = torch.full((3,), -2.0)
            assert torch.equal(leaky[0](z), z * 0.3)  # training: negative inputs pass times the slope
            leaky[0].slope = 0.0
            assert torch.equal(leaky[0](z), torch.zeros(3))
        assert list(model.state_dict()) == keys  # no parameters or buffers of its own
    assert [type(m) for m in model.backbone] == [type(m) for m in build_model(make_config()).backbone]


def test_training_norms_fold_into_the_plain_network():
    torch.manual_seed(0)
    m = ShapeCountNet(head_dropout1=0.0, head_dropout2=0.0)
    plain_keys = set(m.state_dict())
    attach_norms(m)
    assert {k.split(".")[0] for k in m.state_dict()} == {"backbone", "cls_head", "cnt_head", "norms"}
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(5):  # moves the norms' scales, shifts and running statistics away from their start
        x = (torch.rand(16, 1, 28, 28) > 0.7).float()
        lp, cnt = m(x)
        loss = multitask_loss(lp, cnt, torch.randint(0, 135, (16,)), torch.rand(16, 6) * 9, 1.0, 5.0)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    assert all(float((n.running_var - 1).abs().max()) > 0.01 for n in m.norms)  # not the identity
    x = (torch.rand(8, 1, 28, 28) > 0.7).float()
    with torch.no_grad():
        normed = m(x)
        fold_norms(m)
        folded = m(x)
    assert m.norms is None and set(m.state_dict()) == plain_keys
    assert [type(layer).__name__ for layer in m.backbone] == ["Conv2d", "ReLU"] * 4 + ["Flatten", "Linear", "ReLU"]
    for a, b in zip(normed, folded):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
