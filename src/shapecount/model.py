"""The network: the assignment's fixed backbone and two configurable heads. No I/O, no optimizer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

from shapecount.config import FIXED_CONV_WIDTHS, capacity_note
from shapecount.labels import NUM_CLASSES, NUM_TYPES

FEATURES = 256
CONV_LAYERS = 8  # the four Conv2d + ReLU pairs of the backbone, before Flatten


def make_backbone(widths: tuple[int, ...] = FIXED_CONV_WIDTHS) -> nn.Sequential:
    """Fixed by the assignment (the default widths); a test pins the layer list and its 12,869,696 parameters.
    Other widths of the first three convolutions serve the capacity study only (Config.conv_widths): the last
    convolution, Linear(64*28*28, 256) and everything after keep their shapes."""
    a, b, c = widths
    return nn.Sequential(
        nn.Conv2d(1, a, 3, stride=1, padding=1), nn.ReLU(),
        nn.Conv2d(a, b, 3, stride=1, padding=1), nn.ReLU(),
        nn.Conv2d(b, c, 3, stride=1, padding=1), nn.ReLU(),
        nn.Conv2d(c, 64, 3, stride=1, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 28 * 28, FEATURES), nn.ReLU(),
    )


def make_head(out: int, hidden: int, dropout1: float, dropout2: float, log_softmax: bool,
              depth: int = 1) -> nn.Sequential:
    """The seed report's head: Dropout, Linear(256, hidden), SiLU, Dropout, Linear(hidden, out)
    [, LogSoftmax]; depth > 1 adds depth - 1 blocks of Linear(hidden, hidden), SiLU after the first SiLU."""
    layers: list[nn.Module] = [nn.Dropout(dropout1), nn.Linear(FEATURES, hidden), nn.SiLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(hidden, hidden), nn.SiLU()]
    layers += [nn.Dropout(dropout2), nn.Linear(hidden, out)]
    if log_softmax:
        layers.append(nn.LogSoftmax(dim=1))
    return nn.Sequential(*layers)


class ShapeCountNet(nn.Module):
    """forward(x: (N, 1, 28, 28) float in [0, 1]) -> (log_probs (N, 135), counts (N, 6))."""

    def __init__(self, head_hidden: int = 64, head_dropout1: float = 0.3, head_dropout2: float = 0.1,
                 head_depth: int = 1, conv_widths: tuple[int, ...] = FIXED_CONV_WIDTHS) -> None:
        super().__init__()
        self.backbone = make_backbone(tuple(conv_widths))
        self.cls_head = make_head(NUM_CLASSES, head_hidden, head_dropout1, head_dropout2, True, head_depth)
        self.cnt_head = make_head(NUM_TYPES, head_hidden, head_dropout1, head_dropout2, False, head_depth)
        # Training only (attach_norms / fold_norms): a BatchNorm after each of the five layers, before its ReLU.
        # None in the delivered network, so its state dict holds the fixed backbone and the heads only.
        self.norms: nn.ModuleList | None = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.feature_map(x))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolution's ReLU output (N, 64, 28, 28): what a training-only anchor head reads."""
        return self._through(x, 0, CONV_LAYERS)

    def heads(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self._through(fmap, CONV_LAYERS, len(self.backbone))
        return self.cls_head(z), self.cnt_head(z)

    def _through(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Backbone layers start..stop-1, each Conv2d/Linear followed by its norm while norms are attached."""
        if self.norms is None:
            return self.backbone[start:stop](x)
        for i in range(start, stop):
            x = self.backbone[i](x)
            if i in NORMED:
                x = self.norms[NORMED.index(i)](x)  # five positions: a scan costs nothing next to the layer
        return x


def make_anchor_head(kernel: int) -> nn.Conv2d:
    """Training only: a linear convolution from the last feature map to one anchor map per shape type (see
    losses.anchor_loss). Being linear, the sum of its output over the image - the count of each type - is a
    linear function of the features that Linear(50176, 256) can represent exactly. Dropped at export."""
    return nn.Conv2d(64, NUM_TYPES, kernel, padding=kernel // 2)


# Backbone positions of the four Conv2d and the Linear, in order: where a training-only BatchNorm goes.
NORMED = (0, 2, 4, 6, CONV_LAYERS + 1)


def attach_norms(model: ShapeCountNet) -> None:
    """Training only: a BatchNorm after each of the backbone's five layers, before its ReLU; fold_norms turns each
    into its layer's weights and bias, so the delivered network keeps the fixed backbone's layers. Normalised
    pre-activations keep every channel and unit centred on the batch whatever the layers below do, so no unit
    dies, and a layer's output no longer scales with its weights, so the small convolutions are not slowed by
    theirs (docs/ablation.md, "BatchNorm in training")."""
    layers = [model.backbone[i] for i in NORMED]
    norms = [nn.BatchNorm2d(layer.out_channels) if isinstance(layer, nn.Conv2d) else nn.BatchNorm1d(layer.out_features)
             for layer in layers]
    device = layers[0].weight.device
    model.norms = nn.ModuleList(norms).to(device).train(model.training)


@torch.no_grad()
def fold_norms(model: ShapeCountNet) -> None:
    """Fold each attached norm's evaluation-mode transform (running statistics, scale and shift) into the weights
    and bias of the layer before it, and detach the norms: the plain network then computes what the normed one
    computes in evaluation mode (up to float rounding). No-op without norms."""
    if model.norms is None:
        return
    for i, norm in zip(NORMED, model.norms):
        layer = model.backbone[i]
        fuse = fuse_conv_bn_weights if isinstance(layer, nn.Conv2d) else fuse_linear_bn_weights
        w, b = fuse(layer.weight, layer.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias)
        layer.weight.copy_(w)
        layer.bias.copy_(b)
    model.norms = None


class TrainingLeakyReLU(nn.Module):
    """ReLU, except in training while `slope` > 0: then leaky (negative inputs times `slope`). A unit that is
    below zero on every image still gets a gradient and, under Adam (whose step does not shrink with the
    gradient), a full-size step back; at slope 0 and in evaluation it is exactly nn.ReLU. Stateless."""

    def __init__(self) -> None:
        super().__init__()
        self.slope = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.slope > 0:
            return F.leaky_relu(x, self.slope)
        return F.relu(x)


@contextlib.contextmanager
def leaky_in_training(model: ShapeCountNet) -> Iterator[list[TrainingLeakyReLU]]:
    """Within the block the backbone's five ReLUs are TrainingLeakyReLU (slope 0 until the caller sets it);
    after it, nn.ReLU again. Neither has parameters or buffers, so the state dict is the same throughout."""
    positions = [i for i, layer in enumerate(model.backbone) if isinstance(layer, nn.ReLU)]
    leaky = [TrainingLeakyReLU().train(model.training) for _ in positions]
    for i, layer in zip(positions, leaky):
        model.backbone[i] = layer
    try:
        yield leaky
    finally:
        for i in positions:
            model.backbone[i] = nn.ReLU().train(model.training)


def build_model(cfg) -> ShapeCountNet:
    return ShapeCountNet(cfg.head_hidden, cfg.head_dropout1, cfg.head_dropout2, cfg.head_depth, cfg.widths())


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(model: ShapeCountNet) -> str:
    """Module tree and parameter counts, written to model.txt and shown in the report."""
    lines = [str(model), "", "parameters:"]
    for name in ("backbone", "cls_head", "cnt_head"):
        lines.append(f"  {name:<9} {count_parameters(getattr(model, name)):>12,}")
    lines.append(f"  {'total':<9} {count_parameters(model):>12,}")
    note = capacity_note(tuple(model.backbone[i].out_channels for i in (0, 2, 4)))
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


FC_POSITIONS = 28 * 28


def big_linear(model: ShapeCountNet) -> nn.Linear:
    """The backbone's Linear(50176, 256), after the convolutions and Flatten."""
    return model.backbone[CONV_LAYERS + 1]


@torch.no_grad()
def init_shared(fc: nn.Linear) -> None:
    """Position-shared init of Linear(50176, 256): each unit's weight on a channel is the same at all 784 positions,
    i.e. the layer starts as global average pooling followed by PyTorch's default init of a Linear(64, 256)."""
    units, inputs = fc.weight.shape
    channels = inputs // FC_POSITIONS
    bound = channels ** -0.5
    w = torch.empty(units, channels, 1).uniform_(-bound, bound) / FC_POSITIONS
    fc.weight.copy_(w.expand(units, channels, FC_POSITIONS).reshape(units, inputs))


def shared_gradient(share: float):
    """A gradient hook for Linear(50176, 256)'s weight: keeps the mean over the 784 positions of each (unit,
    channel) gradient and scales what differs between positions by 1 - share. share=1 trains the layer as global
    sum pooling + Linear(64, 256) (weights that start equal over positions stay equal, also under Adam, whose
    per-element update is then equal too); the layer keeps its shape and its 12.8 M parameters."""
    keep = 1.0 - share

    def hook(grad: torch.Tensor) -> torch.Tensor:
        g = grad.view(grad.shape[0], -1, FC_POSITIONS)
        mean = g.mean(2, keepdim=True)
        out = mean.expand_as(g) if keep == 0 else torch.lerp(mean.expand_as(g), g, keep)
        return out.reshape(grad.shape)
    return hook


@torch.no_grad()
def init_from_data(model: ShapeCountNet, x: torch.Tensor, mode: str) -> None:
    """Data-dependent initialisation of the backbone's five layers, in order, from a batch x of training images.

    With PyTorch's default init every input of Linear(50176, 256) is a non-negative ReLU output, so a unit's
    pre-activation is dominated by its offset (w . mean input), not by what varies between images: about a
    fifth of the 256 units start dead on every image and the rest nearly always on, and dead ReLUs get no
    gradient to recover. "centre" sets each layer's bias so that every channel/unit's pre-activation has median
    0 over the batch (it fires on half of it); "lsuv" also scales each channel/unit's weights to unit std first
    (layer-sequential unit-variance init, Mishkin and Matas 2016). "default" leaves PyTorch's init."""
    if mode == "default":
        return
    h = x
    for layer in model.backbone:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            pre = layer(h)
            per_unit = pre.transpose(0, 1).reshape(pre.shape[1], -1)  # (channels or units, samples)
            if mode == "lsuv":
                std = (per_unit - per_unit.mean(1, keepdim=True)).std(1).clamp(min=1e-8)
                shape = (-1,) + (1,) * (layer.weight.dim() - 1)
                layer.weight.div_(std.view(shape))
                layer.bias.div_(std)
                pre = layer(h)
                per_unit = pre.transpose(0, 1).reshape(pre.shape[1], -1)
            layer.bias.sub_(per_unit.median(1).values)
        h = layer(h)
