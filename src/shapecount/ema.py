"""An exponential moving average of the weights (as timm's ModelEmaV3 keeps one): evaluated, selected and
delivered in place of the raw weights when `ema_decay` > 0.

While the learning rate is high, the raw weights wander around a minimum by the gradient noise of one batch;
their average sits closer to it and predicts better mid-schedule, at no cost in training images. Once a cosine
schedule has brought the learning rate near zero the raw weights barely move, and the average adds little
(docs/ablation.md).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEma:
    """Keeps `module`, a frozen copy of the model whose weights are the moving average.

    The decay warms up as 1 - (1 + step) ** -2/3, capped at `decay` (timm's warmup, power 2/3): 0.9 after 30
    steps, 0.99 after 1,000, 0.999 after 31,600. Without it the average would hold mostly the random initial
    weights for thousands of steps."""

    def __init__(self, model: nn.Module, decay: float, every: int = 4) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        if every < 1:
            raise ValueError(f"ema update period must be >= 1, got {every}")
        self.decay, self.every = decay, every
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.steps = 0

    def current_decay(self) -> float:
        return min(self.decay, 1 - (1 + self.steps) ** (-2 / 3))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One training step. Every `every` steps: avg <- avg + (1 - decay ** every) * (weights - avg), all
        tensors in one fused call. Averaging every few steps with the decay compounded keeps the same horizon
        at a fraction of the memory traffic: one update streams three copies of the 51 MB of weights through
        memory, which on a CPU is a noticeable share of a training step."""
        self.steps += 1
        if self.steps % self.every:
            return
        weight = 1 - self.current_decay() ** self.every
        avg = [p for p in self.module.state_dict().values() if p.is_floating_point()]
        new = [p.detach() for p in model.state_dict().values() if p.is_floating_point()]
        torch._foreach_lerp_(avg, new, weight)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = int(state["steps"])
