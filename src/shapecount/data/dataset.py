"""The loaded dataset (`GSNData`), the official train/validation split and the `shapecount check` summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from shapecount import labels as L


@dataclass
class GSNData:
    """All images and labels of a GSN source, in labels.csv order.

    images: uint8 (N, 28, 28), the PNG's gray values (0/255); counts: int64 (N, 6) in labels.TYPES order;
    classes: int64 (N,) from labels.counts_to_class; sha256: the zip's sha256 (zip and URL sources) or, for a
    directory, a hash of labels.csv plus each image's name, size and mtime (the cache key);
    labels_sha256: sha256 of labels.csv.
    """

    images: torch.Tensor
    counts: torch.Tensor
    classes: torch.Tensor
    names: list[str]
    source: str = ""
    sha256: str = ""
    warnings: list[str] = field(default_factory=list)
    labels_sha256: str = ""

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx: Sequence[int] | torch.Tensor | np.ndarray | slice | range) -> GSNData:
        """The rows `idx` (indices, a bool mask or a slice), in that order."""
        index = _as_index(idx, len(self))
        return GSNData(images=self.images[index], counts=self.counts[index], classes=self.classes[index],
                       names=[self.names[i] for i in index.tolist()], source=self.source, sha256=self.sha256,
                       warnings=list(self.warnings), labels_sha256=self.labels_sha256)


def _as_index(idx: Any, n: int) -> torch.Tensor:
    if isinstance(idx, slice):
        return torch.arange(n)[idx]
    if isinstance(idx, range):
        return torch.as_tensor(list(idx), dtype=torch.long)
    t = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx)
    if t.dtype == torch.bool:
        return t.nonzero().flatten()
    return t.long().flatten()


def official_split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The assignment's split: the first n - n//10 images train, the last n//10 validate (file order)."""
    n_val = n // 10
    return torch.arange(0, n - n_val), torch.arange(n - n_val, n)


def split(data: GSNData) -> tuple[GSNData, GSNData]:
    train, val = official_split(len(data))
    return data.subset(train), data.subset(val)


# ---------------------------------------------------------------------------------------------------------
# Summary for `shapecount check`
# ---------------------------------------------------------------------------------------------------------

def _pair_counts(classes: torch.Tensor) -> list[int]:
    return torch.bincount(L.class_to_pair_batch(classes), minlength=L.NUM_PAIRS).tolist()


def summary(data: GSNData) -> dict[str, Any]:
    """The facts `shapecount check` prints (plain types, JSON-ready)."""
    train, val = official_split(len(data))
    present = torch.unique(data.classes)
    nz = data.counts[data.counts > 0]
    train_pairs, val_pairs = _pair_counts(data.classes[train]), _pair_counts(data.classes[val])
    return {
        "source": data.source,
        "sha256": data.sha256,
        "labels_sha256": data.labels_sha256,
        "images": len(data),
        "train": len(train),
        "val": len(val),
        "classes_present": int(present.numel()),
        "classes_total": L.NUM_CLASSES,
        "count_min": int(nz.min()) if nz.numel() else 0,
        "count_max": int(nz.max()) if nz.numel() else 0,
        "pair_balance": [{"pair": L.pair_name(p), "train": train_pairs[p], "val": val_pairs[p]}
                         for p in range(L.NUM_PAIRS)],
        "warnings": list(data.warnings),
    }


def format_summary(s: dict[str, Any]) -> str:
    """A readable multi-line text of `summary(data)`."""
    lines = [
        f"source:   {s['source']}",
        f"sha256:   {s['sha256']}",
        f"labels:   sha256 {s['labels_sha256']}",
        f"images:   {s['images']} (train {s['train']}, validation {s['val']}: the official split)",
        f"classes:  {s['classes_present']} of {s['classes_total']} present",
        f"counts:   non-zero counts range {s['count_min']}..{s['count_max']}",
        "pairs:    images per type pair (train / validation)",
    ]
    width = max(len(r["pair"]) for r in s["pair_balance"])
    lines += [f"  {r['pair']:<{width}}  {r['train']:>6} / {r['val']:>5}" for r in s["pair_balance"]]
    lines.append(f"warnings: {len(s['warnings'])}" if not s["warnings"] else "warnings:")
    lines += [f"  warning: {w}" for w in s["warnings"]]
    return "\n".join(lines)
