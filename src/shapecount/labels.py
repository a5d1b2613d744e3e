"""Counts <-> class id, pairs, human names and the label side of the symmetries. Pure: no I/O, no state.

A GSN image holds exactly two of the six shape types, ten shapes in all. The 135 classes are
    class_id = pair_id * 9 + (count of the pair's first type - 1)
where pair_id indexes the 15 unordered type pairs in lexicographic order of type index
((squares, circles) = 0, (squares, up) = 1, ..., (down, left) = 14) and the first type's count is 1..9
(the second type has 10 minus that). The full table is in docs/labels.md and `shapecount labels`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

TYPES: tuple[str, ...] = ("squares", "circles", "up", "right", "down", "left")
# Names a person reads: "3 circles + 7 up-triangles".
TYPE_PLURAL: tuple[str, ...] = ("squares", "circles", "up-triangles", "right-triangles", "down-triangles",
                                "left-triangles")
TYPE_SINGULAR: tuple[str, ...] = ("square", "circle", "up-triangle", "right-triangle", "down-triangle",
                                  "left-triangle")
NUM_TYPES = 6
TOTAL = 10
SPLITS = TOTAL - 1  # first type's count 1..9
PAIRS: tuple[tuple[int, int], ...] = tuple(itertools.combinations(range(NUM_TYPES), 2))
NUM_PAIRS = len(PAIRS)  # 15
NUM_CLASSES = NUM_PAIRS * SPLITS  # 135

_PAIR_INDEX = {p: i for i, p in enumerate(PAIRS)}


class LabelError(ValueError):
    """A count vector that is not a valid GSN label (not two types summing to ten)."""


def counts_to_class(counts: Sequence[int]) -> int:
    """Class id of one valid count vector; raises LabelError on anything else."""
    c = [int(v) for v in counts]
    if len(c) != NUM_TYPES:
        raise LabelError(f"expected {NUM_TYPES} counts, got {len(c)}")
    if any(v < 0 for v in c):
        raise LabelError(f"negative count in {c}")
    nz = [i for i, v in enumerate(c) if v != 0]
    if len(nz) != 2:
        raise LabelError(f"expected exactly two shape types, got {len(nz)} in {c}")
    if sum(c) != TOTAL:
        raise LabelError(f"counts must sum to {TOTAL}, got {sum(c)} in {c}")
    return _PAIR_INDEX[(nz[0], nz[1])] * SPLITS + c[nz[0]] - 1


def class_to_counts(class_id: int) -> list[int]:
    """The count vector of a class id 0..134."""
    if not 0 <= int(class_id) < NUM_CLASSES:
        raise LabelError(f"class id must be in 0..{NUM_CLASSES - 1}, got {class_id}")
    pair, k = divmod(int(class_id), SPLITS)
    a, b = PAIRS[pair]
    out = [0] * NUM_TYPES
    out[a], out[b] = k + 1, TOTAL - (k + 1)
    return out


def class_to_pair(class_id: int) -> int:
    return int(class_id) // SPLITS


def pair_name(pair_id: int) -> str:
    a, b = PAIRS[pair_id]
    return f"{TYPE_PLURAL[a]} + {TYPE_PLURAL[b]}"


def pair_short(pair_id: int) -> str:
    """'squares+circles': the pair's type keys, for axis ticks."""
    a, b = PAIRS[pair_id]
    return f"{TYPES[a]}+{TYPES[b]}"


def class_name(class_id: int) -> str:
    """'3 squares + 7 circles' (pair order, so every class has one spelling)."""
    c = class_to_counts(class_id)
    a, b = PAIRS[class_to_pair(class_id)]

    def part(t: int) -> str:
        return f"{c[t]} {TYPE_SINGULAR[t] if c[t] == 1 else TYPE_PLURAL[t]}"

    return f"{part(a)} + {part(b)}"


# ---- batched (tensor) versions, used by augmentation, metrics and decoding ----

def class_count_table() -> torch.Tensor:
    """(135, 6) float table: row k is the count vector of class k."""
    return torch.tensor([class_to_counts(k) for k in range(NUM_CLASSES)], dtype=torch.float32)


def pair_lookup() -> torch.Tensor:
    """(6, 6) long table: pair id of types (i, j), -1 on the diagonal; symmetric."""
    t = torch.full((NUM_TYPES, NUM_TYPES), -1, dtype=torch.long)
    for i, (a, b) in enumerate(PAIRS):
        t[a, b] = t[b, a] = i
    return t


_PAIR_LOOKUP = pair_lookup()


def counts_to_class_batch(counts: torch.Tensor) -> torch.Tensor:
    """(N, 6) valid count vectors (any numeric dtype) -> (N,) long class ids. No validation: callers pass
    labels that passed data validation or were permuted from such."""
    c = counts.round().long()
    nz = c > 0
    # The two non-zero positions in ascending order: argsort of (not nz, index) puts them first.
    idx = torch.arange(NUM_TYPES, device=c.device).expand_as(c)
    key = (~nz).long() * NUM_TYPES + idx
    order = key.argsort(dim=1)[:, :2]
    first, second = order[:, 0], order[:, 1]
    pair = _PAIR_LOOKUP.to(c.device)[first, second]
    return pair * SPLITS + c.gather(1, first[:, None]).squeeze(1) - 1


def class_to_pair_batch(classes: torch.Tensor) -> torch.Tensor:
    return torch.div(classes, SPLITS, rounding_mode="floor")


# ---- symmetries: how each image transform permutes the six types ----
# Checked on real images (tests/test_augment.py): torch.rot90(x, 1, dims=(-2, -1)) turns the picture
# counter-clockwise, so an up-triangle becomes a left-triangle, left -> down, down -> right, right -> up.
# A horizontal flip (mirror left-right) swaps left/right; a vertical flip swaps up/down.
# A permutation `p` maps old type index -> new type index; apply to counts with `permute_counts`.
SQ, CI, UP, RI, DO, LE = range(NUM_TYPES)
ROT90_CCW: tuple[int, ...] = (SQ, CI, LE, UP, RI, DO)  # up->left, right->up, down->right, left->down
HFLIP: tuple[int, ...] = (SQ, CI, UP, LE, DO, RI)
VFLIP: tuple[int, ...] = (SQ, CI, DO, RI, UP, LE)
IDENTITY: tuple[int, ...] = tuple(range(NUM_TYPES))


def compose(*perms: Sequence[int]) -> tuple[int, ...]:
    """Permutation of applying perms[0] first, then perms[1], ..."""
    out = list(IDENTITY)
    for p in perms:
        out = [p[o] for o in out]
    return tuple(out)


def dihedral_perm(k: int, flip: bool) -> tuple[int, ...]:
    """Type permutation of the image transform `rot90(hflip(x) if flip else x, k)` (k counter-clockwise)."""
    steps = [HFLIP] if flip else []
    steps += [ROT90_CCW] * (k % 4)
    return compose(*steps)


def permute_counts(counts: torch.Tensor, perm: Sequence[int]) -> torch.Tensor:
    """Counts after the image was transformed by a symmetry with type permutation `perm` (old -> new)."""
    out = torch.empty_like(counts)
    out[..., list(perm)] = counts
    return out


def inverse(perm: Sequence[int]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for old, new in enumerate(perm):
        inv[new] = old
    return tuple(inv)


def class_permutation(perm: Sequence[int]) -> torch.Tensor:
    """(135,) long: class k of an image becomes class out[k] after a transform with type permutation perm."""
    table = class_count_table()
    return counts_to_class_batch(permute_counts(table, perm))


def count_distances(pred_counts: torch.Tensor) -> torch.Tensor:
    """(N, 6) predicted counts -> (N, 135) float32 Euclidean distance to each class's count vector."""
    return torch.cdist(pred_counts.float(), class_count_table().to(pred_counts.device))


def decode_counts(pred_counts: torch.Tensor) -> torch.Tensor:
    """Nearest valid class (L2) to each predicted count vector: (N, 6) -> (N,). This is how a regression-only
    model is scored as a classifier; for a prediction that rounds to a valid label it is that label."""
    return count_distances(pred_counts).argmin(dim=1)
