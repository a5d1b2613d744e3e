"""Decode one binary image exactly: its feasible classes, a witness placement for each and the exact posterior.

A class (a, b, n_a) is feasible when some set of type-a and type-b shapes XORs to exactly the image with
|S_a| <= n_a, |S_b| <= n_b and matching parities (the missing shapes cancelled in same-anchor pairs). The
search (`search.py`) runs once per type pair and tallies every solution by (|S_a|, |S_b|); every split of the
pair is then read off the tally, and the posterior (`posterior.py`) weighs each solution by the number of
anchor sequences that produce it. Classes use the generator's count range (`synth.MIN_COUNT..MAX_COUNT`, 2..8):
the others have prior zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from shapecount import labels as L
from shapecount import synth
from shapecount.exact import geometry, posterior, search

# Nodes (shapes tried, all orientations together) per type pair before the search gives up and says UNKNOWN:
# about 20 s of one core. Images with two hidden pairs are the slowest (see `shapecount audit`'s max_nodes).
DEFAULT_NODE_LIMIT = 200_000_000
# Nodes each orientation may try in the first round (doubled every round).
FIRST_BUDGET = 1000


@dataclass(frozen=True)
class Shape:
    type: int      # index into labels.TYPES
    row: int       # anchor (see synth: centre, base midpoint, or apex for the left triangle)
    col: int

    def __str__(self) -> str:
        return f"{L.TYPE_SINGULAR[self.type]}@{self.row},{self.col}"

    @classmethod
    def parse(cls, text: str) -> Shape:
        """The inverse of str(): "up-triangle@2,19" -> Shape(type of up, 2, 19)."""
        name, _, anchor = text.rpartition("@")
        row, _, col = anchor.partition(",")
        return cls(L.TYPE_SINGULAR.index(name), int(row), int(col))


@dataclass
class Decoding:
    """What the pixels say about one image. `feasible` maps class id -> witness shapes (the odd-multiplicity
    set of one placement); `posterior` class id -> probability (sums to 1 over feasible classes unless the
    image is unknown or infeasible); `unknown_pairs` the type pairs whose search hit the node limit."""
    feasible: dict[int, list[Shape]] = field(default_factory=dict)
    posterior: dict[int, float] = field(default_factory=dict)
    unknown_pairs: list[int] = field(default_factory=list)
    nodes: int = 0

    @property
    def unknown(self) -> bool:
        return bool(self.unknown_pairs)

    @property
    def map_class(self) -> int:
        """The most probable class (ties: lowest id); -1 when nothing is feasible."""
        if not self.posterior:
            return -1
        return max(sorted(self.posterior), key=lambda k: self.posterior[k])

    @property
    def classes(self) -> list[int]:
        return sorted(self.feasible)


class Decoder:
    """Exact decoder for one grid geometry (the real dataset's by default). Reuse one instance: the candidate
    tables of each pair are built once."""

    def __init__(self, grid: geometry.Grid = geometry.GSN, total: int = L.TOTAL,
                 counts: tuple[int, int] = (synth.MIN_COUNT, synth.MAX_COUNT),
                 node_limit: int = DEFAULT_NODE_LIMIT, pairs: tuple[tuple[int, int], ...] = L.PAIRS) -> None:
        self.grid, self.total, self.counts, self.node_limit = grid, total, counts, node_limit
        self.pairs = pairs
        self.max_count = min(counts[1], total)

    def warm_up(self) -> None:
        """Build every candidate table and compile the kernel now, so later timings are the decoding's own."""
        ink = np.zeros((self.grid.side, self.grid.side), dtype=bool)
        ink[0, 0] = True
        for a, b in self.pairs:
            for o in range(geometry.ORIENTATIONS):
                pc = geometry.pair_candidates(self.grid, a, b, o)
        # a few nodes of one search compile the kernel (numba caches it on disk for the next process)
        search.PairSearch(pc, geometry.pack(ink), self.max_count, self.max_count, self.total).run(10)

    def _class_id(self, a: int, b: int, n_a: int) -> int:
        c = [0] * L.NUM_TYPES
        c[a], c[b] = n_a, self.total - n_a
        if self.total == L.TOTAL:
            return L.counts_to_class(c)
        # other totals (small test grids): pair index * (total - 1) + n_a - 1, the same layout as labels
        return self.pairs.index((a, b)) * (self.total - 1) + n_a - 1

    def decode(self, ink: np.ndarray) -> Decoding:
        """ink: bool or {0, 255} array (side, side)."""
        ink = np.asarray(ink) > 0
        if ink.shape != (self.grid.side, self.grid.side):
            raise ValueError(f"expected a {self.grid.side}x{self.grid.side} image, got {ink.shape}")
        out = Decoding()
        weights: dict[int, int] = {}
        lo, hi = self.counts
        for pid, (a, b) in enumerate(self.pairs):
            done, nodes = self._search_pair(ink, a, b)
            out.nodes += nodes
            if done is None:
                out.unknown_pairs.append(pid)
                continue
            pc, hist, witness = done.pc, done.hist, done.witness
            for n_a in range(lo, hi + 1):
                n_b = self.total - n_a
                if not lo <= n_b <= hi:
                    continue
                w = posterior.class_weight(hist, n_a, n_b, self.grid.anchors)
                if not w:
                    continue
                cid = self._class_id(a, b, n_a)
                weights[cid] = w
                out.feasible[cid] = self._witness(pc, hist, witness, n_a, n_b)
        total = sum(weights.values())
        if total:
            out.posterior = {k: float(Fraction(w, total)) for k, w in sorted(weights.items())}
        return out

    def _search_pair(self, ink: np.ndarray, a: int, b: int) -> tuple[search.PairSearch | None, int]:
        """Search pair (a, b) in every orientation in turns, with a budget doubling each round; the first to
        finish wins. None when together they reach the node limit."""
        runs = [search.PairSearch(geometry.pair_candidates(self.grid, a, b, o),
                                  geometry.pack(np.ascontiguousarray(geometry.orient(ink, o))),
                                  self.max_count, self.max_count, self.total)
                for o in range(geometry.ORIENTATIONS)]
        budget = FIRST_BUDGET
        while True:
            for r in runs:
                if r.run(budget):
                    return r, sum(x.nodes for x in runs)
            nodes = sum(x.nodes for x in runs)
            if nodes >= self.node_limit:
                return None, nodes
            budget = min(2 * budget, self.node_limit)

    def _witness(self, pc, hist, witness, n_a: int, n_b: int) -> list[Shape]:
        """The smallest solution usable for the split (n_a, n_b)."""
        best = None
        for sa in range(min(n_a, hist.shape[0] - 1) + 1):
            for sb in range(min(n_b, hist.shape[1] - 1) + 1):
                usable = hist[sa, sb] and (n_a - sa) % 2 == 0 and (n_b - sb) % 2 == 0
                if usable and (best is None or sa + sb < sum(best)):
                    best = (sa, sb)
        sa, sb = best
        side = self.grid.side
        shapes = []
        for c in witness[sa, sb, : sa + sb]:
            t = pc.a if pc.kind[c] == 0 else pc.b
            r, col = divmod(int(pc.anchor[c]), side)
            shapes.append(Shape(t, r, col))
        return sorted(shapes, key=lambda s: (s.type, s.row, s.col))


def draw_witness(shapes: list[Shape], grid: geometry.Grid = geometry.GSN) -> np.ndarray:
    """Render a witness back to a bool image (its XOR must equal the decoded image)."""
    if not shapes:
        return np.zeros((grid.side, grid.side), dtype=bool)
    import torch

    types = torch.tensor([[s.type for s in shapes]])
    centres = torch.tensor([[[s.row, s.col] for s in shapes]])
    sizes = torch.tensor([[grid.sizes[s.type] for s in shapes]])
    return synth.draw(types, centres, sizes, side=grid.side)[0].numpy() > 0
