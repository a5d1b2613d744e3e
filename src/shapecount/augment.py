"""Batched, label-aware augmentation on tensors. No per-image Python loop: each transform is applied to the
subset of the batch that drew it (at most 3 slices per transform), and the counts move with the image.

Images are float (N, 1, 28, 28) in [0, 1]; counts are float (N, 6) in labels.TYPES order. The class id must be
recomputed from the transformed counts (labels.counts_to_class_batch); the engine does that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shapecount import labels

# Geometric transforms are exact symmetries of the task (the labels permute); the photometric ones keep the
# labels; random erasing may hide part of a shape, so it is kept small and off by default.
TRANSFORMS = ("hflip", "vflip", "rot90", "brightness", "noise", "erase")


@dataclass(frozen=True)
class AugmentSpec:
    hflip: float = 0.0
    vflip: float = 0.0
    rot90: float = 0.0
    brightness: float = 0.0
    noise: float = 0.0
    erase: float = 0.0
    at_least_one: bool = False
    # strengths (fixed: "mild" as the assignment asks)
    contrast_range: float = 0.2  # contrast factor in [1 - r, 1 + r]
    brightness_range: float = 0.1  # offset in [-r, r]
    noise_std: float = 0.05
    erase_max: int = 4  # erased square side 2..erase_max pixels

    @classmethod
    def from_config(cls, cfg) -> AugmentSpec:
        return cls(cfg.aug_hflip, cfg.aug_vflip, cfg.aug_rot90, cfg.aug_brightness, cfg.aug_noise, cfg.aug_erase,
                   cfg.aug_at_least_one)

    def probs(self) -> list[float]:
        return [getattr(self, t) for t in TRANSFORMS]

    @property
    def enabled(self) -> bool:
        return any(p > 0 for p in self.probs())


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """rot90(hflip(x) if flip else x, k): k quarter turns counter-clockwise. Labels: labels.dihedral_perm."""
    if flip:
        x = x.flip(-1)
    return torch.rot90(x, k, dims=(-2, -1)) if k % 4 else x


DIHEDRAL_GROUP: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))


def _draw(spec: AugmentSpec, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 6) bool: which transform each image gets."""
    probs = torch.tensor(spec.probs())
    chosen = torch.rand(n, len(TRANSFORMS), generator=gen) < probs
    if spec.at_least_one and spec.enabled:
        # The seed report's policy: an image that drew nothing gets one enabled transform, uniformly.
        none = ~chosen.any(dim=1)
        weights = (probs > 0).float().expand(int(none.sum()), -1)
        if len(weights):
            pick = torch.multinomial(weights, 1, generator=gen).squeeze(1)
            rows = none.nonzero().squeeze(1)
            chosen[rows, pick] = True
    return chosen


def augment_batch(x: torch.Tensor, counts: torch.Tensor, spec: AugmentSpec,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random label-aware augmentation of a batch; returns new tensors (inputs untouched).

    Randomness comes only from `gen` (on the CPU), so a run is reproducible whatever the device."""
    x, counts, _ = augment_with_points(x, counts, None, spec, gen)
    return x, counts


def dihedral_points(points: torch.Tensor, k: int, flip: bool, side: int = 28) -> torch.Tensor:
    """Shape points (..., 3) rows (type, row, col) moved as `dihedral(image, k, flip)` moves the image: the
    coordinates follow the pixel they mark and the type is permuted like the counts (type < 0 stays)."""
    t, r, c = points.unbind(-1)
    if flip:
        c = side - 1 - c
    for _ in range(k % 4):  # rot90 counter-clockwise: the pixel at (r, c) moves to (side - 1 - c, r)
        r, c = side - 1 - c, r
    perm = torch.tensor(labels.dihedral_perm(k, flip), dtype=t.dtype, device=t.device)
    t = torch.where(t >= 0, perm[t.clamp(min=0).long()], t)
    return torch.stack([t, r, c], -1)


def augment_with_points(x: torch.Tensor, counts: torch.Tensor, points: torch.Tensor | None, spec: AugmentSpec,
                        gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """augment_batch, plus shape points (N, K, 3) (type, row, col; synth.generate_with_points) that undergo
    the same flips and quarter turns as their image (dihedral_points); the photometric transforms leave them
    alone. Draws the same random numbers as augment_batch."""
    n = x.shape[0]
    if not spec.enabled or n == 0:
        return x, counts, points
    chosen = _draw(spec, n, gen).to(x.device)
    x, counts = x.clone(), counts.clone()
    points = points.clone() if points is not None else None
    col = {t: i for i, t in enumerate(TRANSFORMS)}

    def geometric(mask: torch.Tensor, k: int, flip: bool) -> None:
        if mask.any():
            x[mask] = dihedral(x[mask], k, flip)
            counts[mask] = labels.permute_counts(counts[mask], labels.dihedral_perm(k, flip))
            if points is not None:
                points[mask] = dihedral_points(points[mask], k, flip)

    geometric(chosen[:, col["hflip"]], 0, True)
    # A vertical flip is a horizontal flip followed by a half turn; labels.VFLIP is checked against that.
    geometric(chosen[:, col["vflip"]], 2, True)
    quarter = torch.randint(1, 4, (n,), generator=gen).to(x.device)
    for k in (1, 2, 3):
        geometric(chosen[:, col["rot90"]] & (quarter == k), k, False)

    m = chosen[:, col["brightness"]]
    if m.any():
        r = torch.rand(n, 2, generator=gen).to(x.device)
        c = 1 + spec.contrast_range * (2 * r[:, 0] - 1)
        b = spec.brightness_range * (2 * r[:, 1] - 1)
        adj = ((x - 0.5) * c.view(-1, 1, 1, 1) + 0.5 + b.view(-1, 1, 1, 1)).clamp(0, 1)
        x = torch.where(m.view(-1, 1, 1, 1), adj, x)

    m = chosen[:, col["noise"]]
    if m.any():
        noise = torch.randn(x.shape, generator=gen).to(x.device) * spec.noise_std
        x = torch.where(m.view(-1, 1, 1, 1), (x + noise).clamp(0, 1), x)

    m = chosen[:, col["erase"]]
    if m.any():
        h, w = x.shape[-2:]
        size = torch.randint(2, spec.erase_max + 1, (n,), generator=gen).to(x.device)
        top = (torch.rand(n, generator=gen).to(x.device) * (h - size + 1)).long()
        left = (torch.rand(n, generator=gen).to(x.device) * (w - size + 1)).long()
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        box = ((rows >= top.view(-1, 1, 1)) & (rows < (top + size).view(-1, 1, 1))
               & (cols >= left.view(-1, 1, 1)) & (cols < (left + size).view(-1, 1, 1)))
        x = torch.where((box & m.view(-1, 1, 1)).unsqueeze(1), torch.zeros((), device=x.device), x)
    return x, counts, points


def tta_views(x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, list[int]]]:
    """The 8 symmetric views of a batch, each with how to map its predictions back to the original labels:
    (view, class_index (135,) such that logp_view[:, class_index] is in original class order,
    type_index (6,) such that counts_view[:, type_index] is in original type order)."""
    out = []
    for k, flip in DIHEDRAL_GROUP:
        perm = labels.dihedral_perm(k, flip)
        out.append((dihedral(x, k, flip), labels.class_permutation(perm).to(x.device), list(perm)))
    return out
