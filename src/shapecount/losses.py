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


def anchor_maps(points: torch.Tensor, sigma: float = 0.0, side: int = 28) -> torch.Tensor:
    """Dense targets (N, 6, side, side) float from shape points (N, K, 3) rows (type, row, col), as
    synth.generate_with_points gives them (type < 0: no shape): each point adds 1 to its type's channel, at its
    pixel (sigma 0) or spread into a normalised Gaussian of std sigma pixels (support 5x5 up to sigma 1, 7x7
    above), so that a prediction one pixel off costs less than one far off. A channel sums to that type's count
    (less where a Gaussian crosses the border). The Gaussian is symmetric: flips and turns commute with it."""
    n = points.shape[0]
    p = points.long()
    r = 0 if sigma <= 0 else 2 if sigma <= 1 else 3
    d = torch.arange(-r, r + 1, device=points.device)
    dy, dx = (v.reshape(-1) for v in torch.meshgrid(d, d, indexing="ij"))
    w = torch.ones(1, device=points.device) if r == 0 else torch.exp(-(dy ** 2 + dx ** 2) / (2 * sigma ** 2))
    w = w / w.sum()
    rows = p[..., 1:2] + dy
    cols = p[..., 2:3] + dx
    img = torch.arange(n, device=points.device).view(n, 1, 1)
    flat = ((img * 6 + p[..., 0:1].clamp(min=0)) * side + rows.clamp(0, side - 1)) * side + cols.clamp(0, side - 1)
    keep = (p[..., 0:1] >= 0) & (rows >= 0) & (rows < side) & (cols >= 0) & (cols < side)
    out = torch.zeros(n * 6 * side * side, device=points.device)
    out.index_add_(0, flat[keep], w.expand_as(flat)[keep].float())
    return out.view(n, 6, side, side)


def anchor_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared error of the anchor maps, summed over the map and divided by the 10 shapes of an image, averaged
    over the batch; images without a target (mask False) add 0. A sum over the map (not a mean over its 4,704
    outputs) keeps the gradient of one shape's point comparable to that of one count; a mean over the whole
    batch keeps the loss a per-image mean, as the other losses are (so a batch split over processes adds up)."""
    err = (pred.float() - target) ** 2
    per_image = err.sum((1, 2, 3)) * mask
    return per_image.sum() / (10 * max(len(mask), 1))
