import itertools

import torch

from shapecount import schedule
from shapecount.config import make_config


def _lr_trace(cfg, steps_per_epoch: int) -> list[float]:
    """The lr factor at every step of a whole run (base lr 1.0)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = schedule.make_scheduler(opt, cfg, steps_per_epoch=steps_per_epoch)
    lrs = []
    for _ in range(cfg.epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_schedule_shape():
    cfg = make_config(overrides={"schedule": "cosine", "warmup_epochs": 1, "epochs": 4})
    lrs = _lr_trace(cfg, steps_per_epoch=10)
    assert lrs[0] == 0.1 and lrs[9] == 1.0 and lrs[-1] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))


def test_warmup_is_capped_below_a_short_run():
    # the fast recipe's 2 warmup epochs with --epochs 2: still reaches the peak, then decays
    cfg = make_config("multitask", "fast", {"epochs": 2})
    lrs = _lr_trace(cfg, steps_per_epoch=5)
    assert lrs[4] == 1.0 and lrs[-1] < 0.2


def test_plan_epochs_fits_the_budget_within_the_cap_and_ends_the_warmup():
    cfg = make_config("multitask", "fast", {"minutes": 10})  # 40 epochs at most, 2 of warmup
    assert schedule.plan_epochs(cfg, first_epoch_s=45) == 13  # 600 s // 45 s
    assert schedule.plan_epochs(cfg, first_epoch_s=1) == 40  # the cap
    assert schedule.plan_epochs(cfg, first_epoch_s=1000) == 3  # the warmup ends whatever the budget
    protocol = make_config("multitask", "protocol", {"minutes": 1})
    assert schedule.plan_epochs(protocol, first_epoch_s=1000) == 1


def test_a_budgeted_run_is_cut_short_only_when_it_slows_past_its_budget():
    cfg = make_config("multitask", "fast", {"minutes": 10})  # 600 s; 13 epochs planned from a 45 s first one
    assert schedule.replan_epochs(cfg, 13, [45.0, 44.0, 47.0]) == 13  # on course
    assert schedule.replan_epochs(cfg, 13, [45.0, 50.0, 49.0, 51.0]) == 13  # 10% over at most: the plan stays
    assert schedule.replan_epochs(cfg, 13, [45.0, 44.0, 90.0, 90.0, 90.0]) == 7  # 136 s left at the pace of 90 s
    assert schedule.replan_epochs(cfg, 13, [45.0] * 5 + [600.0]) == 6  # over budget already: stop now
    assert schedule.replan_epochs(cfg, 13, [45.0, 10.0, 10.0]) == 13  # faster: never longer than planned
    assert schedule.replan_epochs(cfg, 13, [400.0, 400.0]) == 3  # the warmup (2 epochs) still ends
