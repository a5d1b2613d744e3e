"""The candidate shapes of the exact decoder: every (type, anchor) of the generator as a pixel bitset.

Under the generator's rules (`shapecount.synth`) a shape of type t at anchor (y, x) covers a fixed, clipped
pixel pattern; the anchor is uniform on the whole grid, so each type has side * side candidates. A pair of types
(a, b) has 2 * side * side candidates; the search decides them in the order of their first pixel (raster order),
which is what makes each decision cheap to check (see `search.py`).

Bitsets: a side x side binary image is `words` uint64 words, pixel p = row * side + col in bit p % 64 of word
p // 64. Everything here is plain numpy, so the search kernel can take it as arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from shapecount import synth


def num_words(side: int) -> int:
    return (side * side + 63) // 64


def pack(ink: np.ndarray) -> np.ndarray:
    """Bool (..., side, side) -> uint64 (..., words) bitsets."""
    side = ink.shape[-1]
    flat = ink.reshape(*ink.shape[:-2], side * side).astype(bool)
    pad = num_words(side) * 64 - side * side
    flat = np.concatenate([flat, np.zeros((*flat.shape[:-1], pad), dtype=bool)], axis=-1)
    # little-endian bit order inside each byte and byte order inside each word: bit i of word w = pixel 64w + i
    by = np.packbits(flat.reshape(*flat.shape[:-1], -1, 8), axis=-1, bitorder="little")[..., 0]
    return np.ascontiguousarray(by).view("<u8").reshape(*flat.shape[:-1], -1).astype(np.uint64)


def unpack(bits: np.ndarray, side: int) -> np.ndarray:
    """uint64 (..., words) -> bool (..., side, side)."""
    by = np.ascontiguousarray(bits.astype("<u8")).view(np.uint8)
    flat = np.unpackbits(by, axis=-1, bitorder="little")[..., : side * side]
    return flat.reshape(*bits.shape[:-1], side, side).astype(bool)


@dataclass(frozen=True)
class Grid:
    """The generator's geometry: grid side and each type's size parameter (see `synth.SIZES`)."""
    side: int = synth.SIDE
    sizes: tuple[int, ...] = synth.SIZES

    @property
    def anchors(self) -> int:
        return self.side * self.side


GSN = Grid()  # the real dataset's geometry


@lru_cache(maxsize=8)
def type_masks(grid: Grid) -> np.ndarray:
    """Bool (6, side*side, side, side): the clipped pattern of every type at every anchor (row-major anchors)."""
    n = grid.anchors
    yy, xx = np.divmod(np.arange(n), grid.side)
    centres = torch.from_numpy(np.stack([yy, xx], axis=1)).view(n, 1, 2)
    out = np.empty((len(grid.sizes), n, grid.side, grid.side), dtype=bool)
    for t, s in enumerate(grid.sizes):
        types = torch.full((n, 1), t, dtype=torch.long)
        out[t] = synth.draw(types, centres, torch.full((n, 1), s, dtype=torch.long), side=grid.side).numpy() > 0
    return out


@dataclass(frozen=True)
class PairCandidates:
    """Candidates of one type pair (a, b), sorted by first pixel. `kind` is 0 for type a and 1 for type b;
    `anchor` the anchor index (row * side + col); `group` the CSR offsets: candidates starting at pixel p are
    group[p]:group[p+1]; `reach[p]` the union of all candidates that cover pixel p (two set pixels u, v can be
    covered by one candidate only if v is in reach[u], the basis of the search's lower bound)."""
    a: int
    b: int
    masks: np.ndarray   # (M, words) uint64
    kind: np.ndarray    # (M,) int64
    anchor: np.ndarray  # (M,) int64
    start: np.ndarray   # (M,) int64 first pixel
    group: np.ndarray   # (side*side + 1,) int64
    reach: np.ndarray   # (side*side, words) uint64


ORIENTATIONS = 8


def orient(img: np.ndarray, o: int) -> np.ndarray:
    """One of the 8 symmetries of the square applied to the last two axes: o = 4 * flip + quarter turns."""
    if o >= 4:
        img = img[..., ::-1]
    return np.rot90(img, o % 4, axes=(-2, -1))


@lru_cache(maxsize=128)
def pair_candidates(grid: Grid, a: int, b: int, o: int = 0) -> PairCandidates:
    """The candidates of pair (a, b) seen in orientation o (the image is searched as `orient(image, o)`):
    the same solution sets, but another decision order, which can make the search much shorter."""
    tm = type_masks(grid)
    npix = grid.anchors
    ink = orient(np.concatenate([tm[a], tm[b]]), o).reshape(2 * npix, npix)
    kind = np.repeat(np.arange(2), npix)
    anchor = np.tile(np.arange(npix), 2)
    start = ink.argmax(axis=1)  # every pattern holds its anchor pixel, so it is never empty
    order = np.argsort(start, kind="stable")
    ink, kind, anchor, start = ink[order], kind[order], anchor[order], start[order]
    group = np.searchsorted(start, np.arange(npix + 1), side="left").astype(np.int64)
    # reach[p] = OR of the candidates covering p: (npix, M) @ (M, npix) > 0 on bools
    cover = ink.T.astype(np.float32)
    reach_ink = (cover @ ink.astype(np.float32)) > 0
    side = grid.side
    return PairCandidates(a, b, pack(ink.reshape(-1, side, side)), kind.astype(np.int64),
                          anchor.astype(np.int64), start.astype(np.int64), group,
                          pack(reach_ink.reshape(npix, side, side)))
