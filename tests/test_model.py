import torch
from torch import nn

from shapecount.config import make_config
from shapecount.losses import multitask_loss
from shapecount.model import ShapeCountNet, build_model, count_parameters, describe


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


def test_heads_configurable_and_shapes():
    cfg = make_config("multitask", overrides={"head_hidden": 32, "head_dropout1": 0.0})
    m = build_model(cfg).eval()
    assert m.cls_head[1].out_features == 32
    lp, cnt = m(torch.rand(5, 1, 28, 28))
    assert lp.shape == (5, 135) and cnt.shape == (5, 6)
    assert torch.allclose(lp.exp().sum(1), torch.ones(5), atol=1e-5)  # log-probabilities
    assert "12,911,757" not in describe(m) and "total" in describe(m)


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
