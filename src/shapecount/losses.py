"""Loss = cls_weight * NLL(log_probs, class) + lambda_cnt * SmoothL1(counts). Per-sample means."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def multitask_loss(log_probs: torch.Tensor, pred_counts: torch.Tensor, classes: torch.Tensor,
                   counts: torch.Tensor, cls_weight: float, lambda_cnt: float) -> dict[str, torch.Tensor]:
    """Returns total, cls and cnt losses (means over the batch; SmoothL1 also averaged over the 6 types).

    Both task losses are always computed and logged, so a single-task run still shows how the other head
    does; only the weighted sum is back-propagated."""
    cls = F.nll_loss(log_probs.float(), classes)
    cnt = F.smooth_l1_loss(pred_counts.float(), counts.float())
    return {"loss": cls_weight * cls + lambda_cnt * cnt, "loss_cls": cls, "loss_cnt": cnt}
