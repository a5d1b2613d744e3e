"""Whole-set outputs and metrics of a model: what training evaluates each epoch and the commands report."""

from __future__ import annotations

import time

import torch
from torch import nn

from shapecount import augment, labels, runtime
from shapecount.errors import NonFiniteOutputError
from shapecount.losses import multitask_loss
from shapecount.metrics import compute_metrics


def to_input(images_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, 28, 28) uint8 0/255 -> (N, 1, 28, 28) float in [0, 1] on device (converted after the copy: 4x less
    traffic)."""
    return images_u8.to(device, non_blocking=True).unsqueeze(1).float().div_(255)


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1000,
            tta: bool = False, amp: torch.dtype | bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-set outputs (log_probs (N, 135), counts (N, 6)) as float32 on the CPU, in eval mode.

    With tta the 8 symmetric views are predicted and mapped back to the original labels; log-probabilities
    are averaged (a geometric mean of the probabilities, renormalised) and counts averaged."""
    model.eval()
    out_lp, out_cnt = [], []
    for start in range(0, len(images), batch_size):
        x = to_input(images[start:start + batch_size], device)
        views = augment.tta_views(x) if tta else [(x, None, None)]
        lp_sum, cnt_sum = 0.0, 0.0
        for v, cls_idx, type_idx in views:
            with runtime.autocast(device, amp):
                lp, cnt = model(v)
            lp, cnt = lp.float(), cnt.float()
            if cls_idx is not None:
                lp, cnt = lp[:, cls_idx], cnt[:, type_idx]
            lp_sum, cnt_sum = lp_sum + lp, cnt_sum + cnt
        lp = torch.log_softmax(lp_sum / len(views), dim=1)
        out_lp.append(lp.cpu())
        out_cnt.append((cnt_sum / len(views)).cpu())
    return torch.cat(out_lp), torch.cat(out_cnt)


def check_finite(log_probs: torch.Tensor, counts: torch.Tensor, names: list[str], where: str) -> None:
    """Raise NonFiniteOutputError naming the first inputs whose outputs hold NaN or Inf: a metric or a
    prediction computed from them would be meaningless."""
    bad = (~(torch.isfinite(log_probs).all(1) & torch.isfinite(counts).all(1))).nonzero().flatten().tolist()
    if bad:
        shown = ", ".join(names[i] for i in bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise NonFiniteOutputError(f"{where}: the model gives NaN or Inf for {len(bad)} of {len(names)} images "
                                   f"({shown}); its weights or inputs are broken, so no metrics are written")


def evaluate(model: nn.Module, images: torch.Tensor, counts: torch.Tensor, cfg, device: torch.device,
             tta: bool = False) -> dict[str, object]:
    """Losses and all metrics on a labelled set, plus the raw outputs under key 'outputs'."""
    classes = labels.counts_to_class_batch(counts)
    # Which of the 256 units of Linear(50176, 256) fire on at least one image: a unit that never does is dead
    # (no gradient ever reaches it again) and the heads work with the rest.
    fired: list[torch.Tensor] = []
    hook = model.backbone[-1].register_forward_hook(lambda _m, _i, z: fired.append((z > 0).any(0)))
    t0 = time.perf_counter()
    try:
        log_probs, pred_counts = predict(model, images, device, cfg.eval_batch_size, tta=tta,
                                         amp=runtime.amp_dtype(cfg.amp, device))
    finally:
        hook.remove()
    seconds = time.perf_counter() - t0
    losses = multitask_loss(log_probs, pred_counts, classes, counts, cfg.cls_weight, cfg.lambda_cnt)
    out: dict[str, object] = {k: float(v) for k, v in losses.items()}
    out.update(compute_metrics(log_probs, pred_counts, classes, counts))
    out["eval_seconds"] = seconds
    out["live_units"] = int(torch.stack(fired).any(0).sum()) if fired else 0
    out["outputs"] = (log_probs, pred_counts)
    return out
