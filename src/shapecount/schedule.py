"""The learning-rate schedule of a run, and how many epochs a time budget (cfg.minutes) gives it.

A budgeted run is planned after its first epoch (plan_epochs) and cut shorter only when later epochs run too
slow (replan_epochs); the schedule is then laid out over the new count from the step reached (replanned).
"""

from __future__ import annotations

import math

import torch


def make_scheduler(optimizer: torch.optim.Optimizer, cfg, steps_per_epoch: int, epochs: int | None = None):
    """Per-step LambdaLR: constant (the protocol), or linear warmup then cosine to 0 over `epochs` (default
    cfg.epochs; fewer when a time budget chose them, plan_epochs)."""
    epochs = cfg.epochs if epochs is None else epochs
    total = max(1, epochs * steps_per_epoch)
    # Warmup is capped below the run's length (e.g. `--epochs 2` with the fast recipe's 2 warmup epochs), so
    # that a short run still reaches its peak lr and decays.
    warm = min(cfg.warmup_epochs, max(epochs - 1, 0)) * steps_per_epoch

    def factor(step: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def plan_epochs(cfg, first_epoch_s: float) -> int:
    """How many epochs fit in cfg.minutes, judged by the first one (training and evaluation): at most
    cfg.epochs, and at least enough to end the warmup. The first epoch's lr is then the same as in a run of
    that many epochs without a budget (it is in the warmup, or the schedule is constant), so `--epochs N`
    with minutes=0 repeats the run exactly."""
    fits = int(cfg.minutes * 60 // max(first_epoch_s, 1e-9))
    return max(_least_epochs(cfg), min(cfg.epochs, fits))


def _least_epochs(cfg) -> int:
    """The shortest plan a budget may give: one that ends the cosine schedule's warmup (at most cfg.epochs)."""
    return min(cfg.epochs, cfg.warmup_epochs + 1) if cfg.schedule == "cosine" else 1


# A budgeted run is cut short only when it is heading this far past its budget: epochs on one machine vary by
# 10-30% from one to the next, and a plan that is redone at every wobble no longer equals one plain run.
OVERRUN_TOLERANCE = 0.10
# Epochs whose mean predicts the rest: recent enough to see a slow-down (another process starting), several
# so that one slow evaluation does not cut the run.
RECENT_EPOCHS = 3


def replan_epochs(cfg, planned: int, seconds: list[float]) -> int:
    """The plan after an epoch of a budgeted run, given every epoch's seconds so far: `planned` while the run
    is on course to end within cfg.minutes (plus OVERRUN_TOLERANCE), else as many epochs as the budget left
    holds at the pace of the last RECENT_EPOCHS (at least the epochs done, and the end of the warmup). Never
    more than planned: the first epoch's plan (plan_epochs) stays the run's length unless the machine slows."""
    done = len(seconds)
    recent = sum(seconds[-RECENT_EPOCHS:]) / len(seconds[-RECENT_EPOCHS:])
    budget, spent = cfg.minutes * 60, sum(seconds)
    if spent + (planned - done) * recent <= budget * (1 + OVERRUN_TOLERANCE):
        return planned
    fits = done + int(max(0.0, budget - spent) // max(recent, 1e-9))
    return max(done, _least_epochs(cfg), min(planned, fits))


def replanned(scheduler, optimizer: torch.optim.Optimizer, cfg, steps_per_epoch: int, epochs: int):
    """The scheduler laid out over `epochs` instead, at the step `scheduler` has reached. A new LambdaLR sets
    the optimizer's lr to its step-0 value, so the lr of the step reached is put back."""
    new = make_scheduler(optimizer, cfg, steps_per_epoch, epochs)
    new.load_state_dict(scheduler.state_dict())
    lrs = [base * f(new.last_epoch) for base, f in zip(new.base_lrs, new.lr_lambdas)]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    new._last_lr = lrs
    return new
