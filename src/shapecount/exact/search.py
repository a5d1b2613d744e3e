"""Exact search: every set of candidate shapes of one type pair whose XOR is exactly the image.

The candidates (see `geometry.PairCandidates`) are decided one at a time in the order of their first pixel.
When the search passes the last candidate that starts at pixel x, nothing decided later can touch x (later
candidates start after x), so x must already be right: the last candidate of each pixel's group is FORCED (in
iff x is still wrong), and only the others are free choices. In the interior each pixel starts one candidate per
type, so at a wrong pixel the choice is "the a-shape or the b-shape" and at a right pixel "neither or both".
A pixel that no later candidate can reach and that is still wrong ends the branch at once.

Pruning uses only valid lower bounds: a greedy set of wrong pixels no two of which one candidate can cover
(via `reach`) needs one candidate each, so a branch with `used + bound > max_total` holds no solution. Each
found solution is tallied by (shapes of type a, shapes of type b); the first one of each tally is kept as the
witness. A node limit turns an unfinished search into UNKNOWN (status 1), never a guess.

The decision order matters a lot for the time (not for the result): a contradiction low in the image is found
only after every way of explaining the rows above it was tried. `PairSearch` keeps a search's whole state in
arrays so it can pause and resume; the decoder runs the same pair in all 8 orientations of the image in turns
and takes the first to finish (a few times the cost of the best order, instead of the cost of a fixed one).

`_enumerate` is the compiled kernel (numba); `enumerate_pair_reference` a plain recursive version of the same
search without the bound, for the tests.
"""

from __future__ import annotations

import numpy as np

try:  # numba is a dependency; the fallback keeps the package importable where it fails to load
    from numba import njit
except ImportError:  # pragma: no cover
    njit = None

COMPLETE, PAUSED = 0, 1


def _ctz(v):
    """Index of the lowest set bit of a non-zero uint64."""
    n = 0
    if (v & np.uint64(0xFFFFFFFF)) == 0:
        n += 32
        v >>= np.uint64(32)
    if (v & np.uint64(0xFFFF)) == 0:
        n += 16
        v >>= np.uint64(16)
    if (v & np.uint64(0xFF)) == 0:
        n += 8
        v >>= np.uint64(8)
    if (v & np.uint64(0xF)) == 0:
        n += 4
        v >>= np.uint64(4)
    if (v & np.uint64(0x3)) == 0:
        n += 2
        v >>= np.uint64(2)
    if (v & np.uint64(0x1)) == 0:
        n += 1
    return n


def _lower_bound(res, reach, blocked, cap):
    """Greedy count of wrong pixels pairwise out of one candidate's reach (stops once it exceeds cap)."""
    words = res.shape[0]
    for j in range(words):
        blocked[j] = np.uint64(0)
    cnt = 0
    for w in range(words):
        while True:
            free = res[w] & ~blocked[w]
            if free == 0:
                break
            p = w * 64 + _ctz(free)
            cnt += 1
            if cnt > cap:
                return cnt
            for j in range(words):
                blocked[j] |= reach[p, j]
    return cnt


def _first_set(res):
    for w in range(res.shape[0]):
        if res[w] != 0:
            return w * 64 + _ctz(res[w])
    return -1


def _enumerate(masks, kind, start, group, reach, max_a, max_b, max_total, budget, hist, witness,
               res, path, used, branch_k, branch_n, st):
    """Run (or continue) one search until it ends or has tried `budget` nodes in all. The search state lives in
    the arrays passed in (res: residual, path: chosen candidates, used: per-kind counts, branch_k/branch_n:
    free candidates left out and the path length then, st: [k, nb, npath, nodes, mode]), so that a paused
    search resumes exactly. Fills hist[sa, sb] (solutions with sa a-shapes and sb b-shapes) and
    witness[sa, sb, :sa+sb] (candidate indices of the first such solution). Returns COMPLETE or PAUSED."""
    m = masks.shape[0]
    words = masks.shape[1]
    blocked = np.zeros(words, dtype=np.uint64)
    k, nb, npath, nodes, mode = st[0], st[1], st[2], st[3], st[4]
    caps = np.array([max_a, max_b], dtype=np.int64)

    while True:
        ok = mode == 0
        if not ok:
            pass
        elif k == m:
            if _first_set(res) == -1:
                sa = used[0]
                sb = used[1]
                if hist[sa, sb] == 0:
                    for i in range(npath):
                        witness[sa, sb, i] = path[i]
                hist[sa, sb] += 1
            ok = False
        else:
            x = start[k]
            if k == group[x]:  # entering pixel x's group: every pixel before x is final
                f = _first_set(res)
                if f != -1 and f < x:
                    ok = False
            if ok:
                if k == group[x + 1] - 1:  # last candidate covering x from here on: forced
                    if (res[x >> 6] >> np.uint64(x & 63)) & np.uint64(1):
                        t = kind[k]
                        if used[t] >= caps[t] or npath >= max_total:
                            ok = False
                        else:
                            for j in range(words):
                                res[j] ^= masks[k, j]
                            used[t] += 1
                            path[npath] = k
                            npath += 1
                            nodes += 1
                            cap = max_total - npath
                            lb = _lower_bound(res, reach, blocked, cap)
                            if lb > cap:
                                ok = False
                    if ok:
                        k += 1
                else:  # free: leave it out first, come back to put it in
                    branch_k[nb] = k
                    branch_n[nb] = npath
                    nb += 1
                    k += 1
        if ok:
            continue
        # backtrack to the most recent free candidate left out and put it in
        mode = 0
        while True:
            if nb == 0:
                st[0], st[1], st[2], st[3], st[4] = k, nb, npath, nodes, 1
                return COMPLETE
            if nodes >= budget:
                st[0], st[1], st[2], st[3], st[4] = k, nb, npath, nodes, 1
                return PAUSED
            nb -= 1
            k0 = branch_k[nb]
            n0 = branch_n[nb]
            while npath > n0:
                npath -= 1
                c = path[npath]
                for j in range(words):
                    res[j] ^= masks[c, j]
                used[kind[c]] -= 1
            t = kind[k0]
            if used[t] >= caps[t] or npath >= max_total:
                continue
            for j in range(words):
                res[j] ^= masks[k0, j]
            used[t] += 1
            path[npath] = k0
            npath += 1
            nodes += 1
            cap = max_total - npath
            lb = _lower_bound(res, reach, blocked, cap)
            if lb > cap:
                continue  # undone by the next pop (or at the end)
            k = k0 + 1
            break


if njit is not None:
    _ctz = njit(cache=True, inline="always")(_ctz)
    _lower_bound = njit(cache=True)(_lower_bound)
    _first_set = njit(cache=True)(_first_set)
    _enumerate_jit = njit(cache=True)(_enumerate)
else:  # pragma: no cover
    _enumerate_jit = None


class PairSearch:
    """One pausable search of one pair in one orientation (see `_enumerate`)."""

    def __init__(self, pc, image_bits: np.ndarray, max_a: int, max_b: int, max_total: int) -> None:
        self.pc, self.max_a, self.max_b, self.max_total = pc, max_a, max_b, max_total
        m = len(pc.kind)
        self.hist = np.zeros((max_a + 1, max_b + 1), dtype=np.int64)
        self.witness = np.full((max_a + 1, max_b + 1, max_total + 1), -1, dtype=np.int64)
        self.res = np.ascontiguousarray(image_bits, dtype=np.uint64).copy()
        self.path = np.zeros(max_total + 1, dtype=np.int64)
        self.used = np.zeros(2, dtype=np.int64)
        self.branch_k = np.zeros(m + 1, dtype=np.int64)
        self.branch_n = np.zeros(m + 1, dtype=np.int64)
        self.st = np.zeros(5, dtype=np.int64)
        self.done = False

    @property
    def nodes(self) -> int:
        return int(self.st[3])

    def run(self, budget: int) -> bool:
        """Go on until the search ends (True) or has tried `budget` nodes since it began (False)."""
        if not self.done:
            fn = _enumerate_jit if _enumerate_jit is not None else _enumerate
            pc = self.pc
            self.done = fn(pc.masks, pc.kind, pc.start, pc.group, pc.reach, self.max_a, self.max_b,
                           self.max_total, budget, self.hist, self.witness, self.res, self.path, self.used,
                           self.branch_k, self.branch_n, self.st) == COMPLETE
        return self.done


def enumerate_pair_reference(pc, ink: np.ndarray, max_a: int, max_b: int, max_total: int) -> dict:
    """The same enumeration written plainly (Python ints as bitsets, recursion, no bound): {(sa, sb): list of
    solutions, each a sorted tuple of candidate indices}. Exponential without pruning; for small grids."""
    side = ink.shape[-1]
    npix = side * side
    flat = ink.reshape(npix).astype(bool)
    target = sum(1 << p for p in range(npix) if flat[p])
    from shapecount.exact.geometry import unpack  # local: keeps this function self-contained for the tests
    masks = [sum(1 << p for p in np.flatnonzero(unpack(pc.masks[c], side).reshape(npix)))
             for c in range(len(pc.kind))]
    last_of = {}  # candidate index -> pixel it is the last of (group end)
    for x in range(npix):
        if pc.group[x + 1] > pc.group[x]:
            last_of[int(pc.group[x + 1] - 1)] = x
    out: dict = {}

    def rec(k: int, res: int, chosen: list[int], na: int, nb: int) -> None:
        if k == len(masks):
            if res == 0:
                out.setdefault((na, nb), []).append(tuple(chosen))
            return
        x = int(pc.start[k])
        if k == pc.group[x] and res & ((1 << x) - 1):
            return  # a wrong pixel before x can no longer change
        t = int(pc.kind[k])
        room = len(chosen) < max_total and (na < max_a if t == 0 else nb < max_b)
        take = (res >> x) & 1 if k in last_of else None
        if take in (None, 0):
            rec(k + 1, res, chosen, na, nb)
        if take in (None, 1) and room:
            rec(k + 1, res ^ masks[k], chosen + [k], na + (t == 0), nb + (t == 1))

    rec(0, target, [], 0, 0)
    return out
