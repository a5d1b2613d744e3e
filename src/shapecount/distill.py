"""Training-only distillation: the fixed network learns from a teacher, the model of another run.

The teacher is a run's checkpoint.pt, typically one of the capacity study's wider convolutions
(`--set conv_widths=32,64,64`). Its last convolution has the same 64 channels at 28x28 as the fixed backbone's,
so the student can be taught that feature map itself (distill_features), not only the teacher's answers
(distill_kl), and can start from the teacher's Linear(50176, 256) and heads (distill_init), which read exactly
that map. The teacher is used in training only: it is not saved with the student, and the delivered network
is the fixed backbone and its two heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shapecount.errors import UserError
from shapecount.model import CONV_LAYERS, ShapeCountNet


def load_teacher(cfg, device: torch.device) -> ShapeCountNet | None:
    """The teacher of cfg.teacher in evaluation mode with frozen weights, or None without one."""
    if not cfg.teacher:
        return None
    from shapecount.checkpoint import load_checkpoint

    teacher = load_checkpoint(cfg.teacher, device)[0]
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def init_from_teacher(student: ShapeCountNet, teacher: ShapeCountNet, path: str) -> None:
    """Start the student's Linear(50176, 256) and both heads from the teacher's: they read the feature map the
    student is taught to reproduce, so the student's answers improve as soon as its convolutions come close."""
    for name in ("cls_head", "cnt_head"):
        mine = {k: v.shape for k, v in getattr(student, name).state_dict().items()}
        if mine != {k: v.shape for k, v in getattr(teacher, name).state_dict().items()}:
            raise UserError(path, "has heads of another size, so distill_init cannot start from them",
                            "set head_hidden and head_depth as the teacher's run did, or distill_init=false")
    student.backbone[CONV_LAYERS + 1].load_state_dict(teacher.backbone[CONV_LAYERS + 1].state_dict())
    student.cls_head.load_state_dict(teacher.cls_head.state_dict())
    student.cnt_head.load_state_dict(teacher.cnt_head.state_dict())


def distill_loss(teacher: nn.Module, x: torch.Tensor, fmap: torch.Tensor, log_probs: torch.Tensor,
                 cfg) -> torch.Tensor:
    """cfg.distill_features x the squared error of the student's last feature map against the teacher's,
    relative to the teacher map's mean square (so the weight does not depend on the teacher's scale), plus
    cfg.distill_kl x KL(teacher's class distribution || student's), both batch means."""
    with torch.no_grad():
        t_fmap = teacher.feature_map(x)
        t_log_probs = teacher.heads(t_fmap)[0] if cfg.distill_kl > 0 else None
    loss = torch.zeros((), device=x.device)
    if cfg.distill_features > 0:
        t = t_fmap.float()
        rel = F.mse_loss(fmap.float(), t) / t.pow(2).mean().clamp_min(1e-12)
        loss = loss + cfg.distill_features * rel
    if cfg.distill_kl > 0:
        kl = F.kl_div(log_probs.float(), t_log_probs.float(), log_target=True, reduction="batchmean")
        loss = loss + cfg.distill_kl * kl
    return loss
