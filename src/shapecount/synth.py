"""Batched generator of synthetic GSN-style images with exact labels, and a cheap real-vs-synthetic comparison.

The rules below are measured on the 10,000 real images (8-connected components, exact matches against clipped
templates, label counts):

- Every shape of a type has ONE fixed size and one exact pixel pattern (no size variation at all):
  square 7x7 (49 px); circle = the integer disc dy^2 + dx^2 <= 16 (9x9, rows 1,5,7,7,9,7,7,5,1 px = 49 px);
  triangles are isosceles with 45-degree sides, 6 px high and 11 px wide (rows 1,3,5,7,9,11 = 36 px).
  Of the isolated shapes not touching the border, 560 squares were 7x7, 298 circles the 9x9 disc and ~450 per
  direction the 6x11 triangle; every smaller "shape" found was an XOR fragment (no 5x5 square, no other disc).
- Each shape has an integer anchor (y, x), both uniform on 0..27 independently (so shapes may be mostly outside
  the image; the anchor pixel itself is always inside). Measured from exact matches of (clipped) templates:
  square: centre; circle: centre; up: base midpoint (rows y-5..y); down: base midpoint (rows y..y+5);
  right: base midpoint (cols x..x+5, apex at x+5); left: APEX (cols x..x+5, base at x+5). The left triangle's
  anchor is the odd one out (its bounding box spans x..x+5 like the right one's), a quirk of the original.
- Shapes are combined by XOR (a pixel covered an even number of times is background) and clipped at the border.
- Labels: the unordered type pair is uniform over the 15 pairs (chi2 = 9.5, 14 df), the count of the pair's
  first type is uniform on 2..8 (chi2 = 7.3, 6 df) and independent of the pair (chi2 = 79.6, 84 df); the second
  type has 10 minus that. No dependence between consecutive images (same pair as previous: 6.75% vs 6.67%).

Faithfulness: with these rules the real and synthetic statistics agree within sampling noise (see
`fidelity_report`: ink fraction overall and per pair, component count and area histograms, isolated-shape
counts per type, row/column ink profiles, 2x2 pixel-pattern frequencies). Not reproducible: the original's random
stream (so not the same images); whether the original avoided exact coincidences (two same-type shapes on the
same anchor cancel completely, ~3% of images here); any rule that only shows in joint statistics (e.g. a
minimum distance between shapes) - none was visible in the measured statistics.

Images are uint8 (N, 28, 28) with 0 = background and 255 = ink (as `data.load_gsn` returns them); counts are
int64 (N, 6) in labels.TYPES order (squares, circles, up, right, down, left).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from shapecount import labels as L

SIDE = 28
TOTAL = L.TOTAL  # shapes per image
# Count of the pair's first type: uniform on MIN_COUNT..MAX_COUNT (measured: 2..8, chi2 7.3 on 6 df).
MIN_COUNT, MAX_COUNT = 2, 8
# Per-type size parameter "s" (labels.TYPES order). Measured from isolated shapes: square half-side 3 (7x7),
# circle radius 4 (dy^2+dx^2 <= 16), triangles 5 (height s+1 = 6, base 2s+1 = 11).
SIZES: tuple[int, ...] = (3, 4, 5, 5, 5, 5)
# Anchor coordinates are uniform integers on 0..ANCHOR_MAX (measured: every type's anchor range is 0..27).
ANCHOR_MAX = SIDE - 1
SQUARE, CIRCLE, UP, RIGHT, DOWN, LEFT = range(6)
# A shape counts as hidden when at most this share of its whole area lies inside the image under no other shape:
# two pixels or fewer of any type (2/36 of a triangle; 3/49 of a square or circle is above it). The models err
# most on images with such a shape: the fifth of the decidable validation images whose least visible shape keeps
# at most 3% of its area to itself, one pixel (docs/ablation.md "Where the errors are"); two pixels take in the
# next-hardest images too. `hide_shapes` draws such images.
HIDDEN_BELOW = 0.06
# Anchor redraws `hide_shapes` tries per image before it keeps an ordinary one.
HIDDEN_ROUNDS = 12


# ---------------------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------------------

def _row_spans(types: torch.Tensor, sizes: torch.Tensor, dy: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For each shape and each row offset dy (row - anchor row): (valid, lo, hi), the shape covers columns
    x + lo .. x + hi of that row. All shapes are convex along rows, so a span per row describes them."""
    s = sizes.unsqueeze(-1)
    t = types.unsqueeze(-1)
    dy = dy.expand(torch.broadcast_shapes(s.shape, dy.shape))
    ady = dy.abs()
    zero = torch.zeros_like(dy)
    s = s.expand_as(dy)
    # square: |dy| <= s, cols -s..s
    sq_v, sq_h = ady <= s, s
    # circle: dy^2 + dx^2 <= s^2  ->  |dx| <= isqrt(s^2 - dy^2)
    rem = s * s - dy * dy
    ci_v = rem >= 0
    ci_h = torch.sqrt(rem.clamp(min=0).double()).floor().long()
    ci_h = ci_h - (ci_h * ci_h > rem).long() + ((ci_h + 1) * (ci_h + 1) <= rem).long()  # exact isqrt
    # up: apex at dy = -s, base (half-width s) at dy = 0; down: base at dy = 0, apex at dy = s
    up_v, up_h = (dy <= 0) & (dy >= -s), dy + s
    dn_v, dn_h = (dy >= 0) & (dy <= s), s - dy
    # right: base column at dx = 0 (rows -s..s), apex at dx = s; left: apex at dx = 0, base column at dx = s
    lr_v = ady <= s
    valid = torch.where(t == SQUARE, sq_v, torch.where(t == CIRCLE, ci_v, torch.where(
        t == UP, up_v, torch.where(t == DOWN, dn_v, lr_v))))
    half = torch.where(t == SQUARE, sq_h, torch.where(t == CIRCLE, ci_h, torch.where(t == UP, up_h, dn_h)))
    sym = (t != RIGHT) & (t != LEFT)  # squares, circles, up and down: symmetric about the anchor column
    lo = torch.where(sym, -half, torch.where(t == RIGHT, zero, ady))
    hi = torch.where(sym, half, torch.where(t == RIGHT, s - ady, s))
    return valid, lo, hi


def _clipped_spans(types: torch.Tensor, centres: torch.Tensor, sizes: torch.Tensor | None,
                   side: int) -> tuple[torch.Tensor, ...]:
    """The row spans of shapes (see `draw`) clipped to the image: (valid, rows, left, stop), each (N, K, rows of
    the largest shape); a valid span covers columns left .. stop - 1 of its row. Rows of invalid spans are
    clamped into the image so that they index it safely."""
    types = types.long()
    centres = centres.long()
    dev = types.device  # drawn where the shapes are (e.g. on the GPU that trains on them)
    if sizes is None:
        sizes = torch.tensor(SIZES, dtype=torch.long, device=dev)[types.clamp(min=0)]
    sizes = sizes.long()
    smax = int(sizes.max()) if sizes.numel() else 0
    dy = torch.arange(-smax, smax + 1, device=dev).view(1, 1, -1)
    valid, lo, hi = _row_spans(types, sizes, dy)
    rows = centres[..., 0:1] + dy
    x = centres[..., 1:2]
    left = x + lo
    right = x + hi
    valid = valid & (types.unsqueeze(-1) >= 0) & (rows >= 0) & (rows < side) & (right >= 0) & (left < side)
    return valid, rows.clamp(0, side - 1), left.clamp(0, side), (right + 1).clamp(0, side)


def draw(types: torch.Tensor, centres: torch.Tensor, sizes: torch.Tensor | None = None,
         side: int = SIDE) -> torch.Tensor:
    """XOR-draw shapes: types (N, K) int in labels.TYPES order, centres (N, K, 2) int anchors (row, col),
    sizes (N, K) int size parameters (default: SIZES per type, the real dataset's). A type < 0 draws nothing.
    Returns uint8 (N, side, side), 255 where an odd number of shapes cover the pixel, else 0.

    Anchors: square/circle centre; up/down/right triangle the midpoint of the base; left triangle the apex
    (see the module docstring). Anchors may lie anywhere; the shapes are clipped at the border."""
    n = types.shape[0]
    valid, rows, left, stop = _clipped_spans(types, centres, sizes, side)
    # Difference array: toggle at each span's start and one past its end; a cumulative sum mod 2 along the row
    # is then the XOR of all spans (spans of the same row from different shapes just add up).
    width = side + 1
    base = torch.arange(n, device=types.device).view(n, 1, 1) * (side * width) + rows * width
    idx = torch.cat([(base + left)[valid], (base + stop)[valid]])
    diff = torch.bincount(idx, minlength=n * side * width).view(n, side, width)
    ink = diff.cumsum(-1, dtype=torch.int32)[..., :side] & 1
    return ink.to(torch.uint8) * 255


# ---------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------

_PAIRS = torch.tensor(L.PAIRS, dtype=torch.long)  # (15, 2), lexicographic, first type < second type


def sample_labels(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 6) int64 counts: pair uniform over the 15 pairs, first type's count uniform on 2..8."""
    pair = torch.randint(len(L.PAIRS), (n,), generator=gen)
    first = torch.randint(MIN_COUNT, MAX_COUNT + 1, (n,), generator=gen)
    counts = torch.zeros(n, L.NUM_TYPES, dtype=torch.long)
    ab = _PAIRS[pair]
    counts.scatter_(1, ab[:, :1], first.unsqueeze(1))
    counts.scatter_(1, ab[:, 1:], (TOTAL - first).unsqueeze(1))
    return counts


def sample_shapes(counts: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Types (N, 10) and anchors (N, 10, 2) for count vectors with 10 shapes each: anchors uniform on 0..27."""
    n = counts.shape[0]
    total = int(counts[0].sum()) if n else TOTAL
    if n and not bool((counts.sum(1) == total).all()):
        raise ValueError("all count vectors must have the same total")
    # types: repeat_interleave of type ids by counts, per row (rows all have `total` shapes)
    types = torch.repeat_interleave(torch.arange(L.NUM_TYPES).repeat(n), counts.reshape(-1)).view(n, total)
    centres = torch.randint(0, ANCHOR_MAX + 1, (n, total, 2), generator=gen)
    return types, centres


@functools.cache
def whole_area(kind: int) -> int:
    """Pixels of one whole (unclipped) shape of type `kind` (labels.TYPES index)."""
    return int(template(kind).sum())


def least_visible(types: torch.Tensor, centres: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """(N,) float: for shapes given by types (N, K) and anchors (N, K, 2), of each shape's whole area the share
    that lies inside the image under no other shape, the smallest over an image's shapes (types < 0 are no
    shape; 1 where an image has none). The batched form of exact.overlap.least_visible_share, from the row spans
    alone: a difference array counts the shapes over each pixel, and a cumulative sum of the pixels covered once
    along each row gives each span's share of them without drawing any shape on its own. On the shapes' device,
    in chunks of `chunk` images to bound memory."""
    n, k = types.shape
    dev = types.device
    out = torch.ones(n, device=dev)
    if k == 0:
        return out
    area = torch.tensor([whole_area(t) for t in range(L.NUM_TYPES)], dtype=torch.float32, device=dev)
    width = SIDE + 1
    for i in range(0, n, chunk):
        t, c = types[i:i + chunk].long(), centres[i:i + chunk]
        m = len(t)
        valid, rows, left, stop = _clipped_spans(t, c, None, SIDE)
        base = torch.arange(m, device=dev).view(m, 1, 1) * (SIDE * width) + rows * width
        ones = torch.ones(int(valid.sum()), dtype=torch.int32, device=dev)
        diff = torch.zeros(m * SIDE * width, dtype=torch.int32, device=dev)
        diff.index_add_(0, (base + left)[valid], ones).index_add_(0, (base + stop)[valid], -ones)
        once = diff.view(m, SIDE, width).cumsum(-1, dtype=torch.int32)[..., :SIDE] == 1
        covered_once = F.pad(once.cumsum(-1, dtype=torch.int32), (1, 0)).reshape(-1)  # (m, SIDE, width), from 0
        alone = ((covered_once[base + stop] - covered_once[base + left]) * valid).sum(-1)  # (m, k) pixels
        share = (alone.float() / area[t.clamp(min=0)]).masked_fill(t < 0, float("inf")).amin(1)
        out[i:i + chunk] = share.clamp(max=1.0)  # an image without shapes: inf -> 1
    return out


def hide_shapes(types: torch.Tensor, centres: torch.Tensor, share: float, gen: torch.Generator,
                rounds: int = HIDDEN_ROUNDS) -> torch.Tensor:
    """Anchors (N, K, 2) where about `share` of the images (each with that probability, drawn from `gen`) have a
    hidden shape (least visible share <= HIDDEN_BELOW): their anchors are redrawn until they do, at most `rounds`
    times (after that the image keeps its last, ordinary draw). The types, so the labels, stay as they are: the
    class prior is unchanged and only where the shapes lie shifts towards the images the models find hardest."""
    centres = centres.clone()
    todo = (torch.rand(len(types), generator=gen) < share).nonzero().flatten()
    for _ in range(rounds):
        todo = todo[least_visible(types[todo], centres[todo]) > HIDDEN_BELOW]
        if not len(todo):
            break
        centres[todo] = torch.randint(0, ANCHOR_MAX + 1, (len(todo), *centres.shape[1:]), generator=gen)
    return centres


def generate(n: int, gen: torch.Generator | None = None, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """n synthetic GSN images: uint8 (n, 28, 28) in {0, 255} and int64 counts (n, 6). Deterministic for a given
    generator state (a fresh default-seeded generator if None). Drawn in chunks to bound memory."""
    images, counts, _ = generate_with_points(n, gen, chunk)
    return images, counts


def generate_with_points(n: int, gen: torch.Generator | None = None, chunk: int = 4096,
                         device: torch.device | str = "cpu",
                         hidden: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`generate` plus every shape's type and reference point: int16 (n, 10, 3) rows (type, row, col), see
    `reference_points`. Draws the same random numbers as `generate`, so the images are the same. The random
    draws come from `gen` on the CPU (the same images on any device); the drawing and the results are on
    `device`. hidden > 0: about that share of the images have a hidden shape (`hide_shapes`; more draws)."""
    if gen is None:
        gen = torch.Generator().manual_seed(0)
    counts = sample_labels(n, gen)
    types, centres = sample_shapes(counts, gen)
    if hidden > 0:
        centres = hide_shapes(types, centres, hidden, gen)
    counts, types, centres = counts.to(device), types.to(device), centres.to(device)
    images = torch.empty(n, SIDE, SIDE, dtype=torch.uint8, device=device)
    for i in range(0, n, chunk):
        images[i:i + chunk] = draw(types[i:i + chunk], centres[i:i + chunk])
    points = torch.cat([types.unsqueeze(-1), reference_points(types, centres)], -1).to(torch.int16)
    return images, counts, points


# Offset from a shape's anchor to its reference point: the centre of a square or circle, the midpoint of a
# triangle's base. Only the left triangle's anchor is its apex (module docstring), 5 columns from its base.
_REF_OFFSET = torch.tensor([[0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 5]])


def reference_points(types: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(N, K, 2) reference points (row, col) of shapes given by types (N, K) and anchors (N, K, 2), clamped
    into the image. Unlike the anchors, these points move with the shape under every flip and quarter turn
    of the image (a base maps to a base, a centre to a centre, and the clamp box is symmetric), so an anchor
    map built from them can be augmented exactly like the image."""
    return (centres + _REF_OFFSET.to(types.device)[types.long()]).clamp(0, SIDE - 1)


# ---------------------------------------------------------------------------------------------------------
# Fidelity: cheap statistics of real vs synthetic images
# ---------------------------------------------------------------------------------------------------------

def template(t: int, size: int | None = None) -> torch.Tensor:
    """The bool pixel pattern of one whole shape of type t (cropped to its bounding box)."""
    s = SIZES[t] if size is None else size
    c = 2 * s + 1
    img = draw(torch.tensor([[t]]), torch.tensor([[[s + 1, s + 1]]]), torch.tensor([[s]]), side=c + 2)[0] > 0
    rr = img.any(1).nonzero().flatten()
    cc = img.any(0).nonzero().flatten()
    return img[rr[0]:rr[-1] + 1, cc[0]:cc[-1] + 1]


def components(ink: torch.Tensor, max_iter: int = 400) -> torch.Tensor:
    """8-connected component labels (N, H, W) int64 of a bool batch: 0 background, else the largest flat
    index + 1 of the component (min-label propagation by 3x3 max pooling until nothing changes)."""
    n, h, w = ink.shape
    lab = (torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w).expand(n, h, w) * ink).unsqueeze(1)
    m = ink.unsqueeze(1).float()
    for _ in range(max_iter):
        new = F.max_pool2d(lab, 3, stride=1, padding=1) * m
        if torch.equal(new, lab):
            break
        lab = new
    return lab.squeeze(1).long()


def _component_stats(ink: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: number of 8-connected components; and the areas of all components (flat)."""
    n, h, w = ink.shape
    lab = components(ink)
    key = (torch.arange(n).view(n, 1, 1) * (h * w + 1) + lab)[lab > 0]
    sizes = torch.bincount(key, minlength=n * (h * w + 1))
    areas = sizes[sizes > 0]
    ncomp = (sizes.view(n, h * w + 1) > 0).sum(1)
    return ncomp, areas


def isolated_counts(ink: torch.Tensor) -> torch.Tensor:
    """(N, 6): per type, the number of whole shapes (exact template, fully inside the image) whose
    8-neighbourhood ring holds no ink (outside the image counts as background). A direct check of the shape
    geometry (size and rasterisation) and of how often shapes stay clear of the others."""
    xp = F.pad(ink.float().unsqueeze(1), (1, 1, 1, 1))
    out = []
    for t in range(L.NUM_TYPES):
        full = F.pad(template(t).float(), (1, 1, 1, 1))
        ring = F.max_pool2d(full[None, None], 3, stride=1, padding=1)[0, 0] - full
        hit = (F.conv2d(xp, full[None, None]) == full.sum()) & (F.conv2d(xp, ring[None, None]) == 0)
        out.append(hit.flatten(1).sum(1))
    return torch.stack(out, 1)


def _pattern_freq(ink: torch.Tensor) -> torch.Tensor:
    """Frequencies of the 16 2x2 binary pixel patterns over all positions of all images."""
    x = ink.long()
    code = x[:, :-1, :-1] + 2 * x[:, :-1, 1:] + 4 * x[:, 1:, :-1] + 8 * x[:, 1:, 1:]
    f = torch.bincount(code.flatten(), minlength=16).double()
    return f / f.sum()


def image_stats(images: torch.Tensor, counts: torch.Tensor) -> dict:
    """Statistics of one set of images (uint8 0/255 or bool) with their counts."""
    ink = images > 0
    n = ink.shape[0]
    frac = ink.flatten(1).double().mean(1)
    pair_id = torch.tensor([L.PAIRS.index(tuple(c.nonzero().flatten().tolist())) for c in counts])
    ncomp, areas = _component_stats(ink)
    area_bins = [1, 2, 3, 5, 10, 20, 35, 36, 37, 49, 50, 80, 150, 785]
    area_hist = torch.histogram(areas.double(), torch.tensor(area_bins, dtype=torch.double)).hist
    iso = isolated_counts(ink).double()
    present = counts > 0
    iso_per_type = [(iso[:, t][present[:, t]].sum() / counts[:, t].sum()).item() for t in range(L.NUM_TYPES)]
    first = torch.stack([c[c > 0][0] for c in counts])
    return {
        "n": n,
        "ink_mean": frac.mean().item(),
        "ink_std": frac.std().item(),
        "ink_q": torch.quantile(frac, torch.tensor([0.1, 0.5, 0.9], dtype=torch.double)).tolist(),
        "ink_per_pair": [frac[pair_id == p].mean().item() for p in range(len(L.PAIRS))],
        "ncomp_mean": ncomp.double().mean().item(),
        "ncomp_std": ncomp.double().std().item(),
        "area_bins": area_bins,
        "area_frac": (area_hist / area_hist.sum()).tolist(),
        "isolated_per_shape": iso_per_type,  # isolated whole shapes of type t per shape of type t
        "row_profile": ink.double().mean((0, 2)).tolist(),
        "col_profile": ink.double().mean((0, 1)).tolist(),
        "pattern2x2": _pattern_freq(ink).tolist(),
        "pair_freq": (torch.bincount(pair_id, minlength=len(L.PAIRS)).double() / n).tolist(),
        "first_count_freq": (torch.bincount(first - MIN_COUNT, minlength=MAX_COUNT - MIN_COUNT + 1).double()
                             / n).tolist(),
    }


def _diff(a: dict, b: dict) -> dict:
    def mad(k):
        return max(abs(x - y) for x, y in zip(a[k], b[k]))

    def tv(k):
        return 0.5 * sum(abs(x - y) for x, y in zip(a[k], b[k]))

    return {
        "ink_mean": b["ink_mean"] - a["ink_mean"],
        "ink_std": b["ink_std"] - a["ink_std"],
        "ink_per_pair_maxabs": mad("ink_per_pair"),
        "ncomp_mean": b["ncomp_mean"] - a["ncomp_mean"],
        "area_tv": tv("area_frac"),
        "isolated_maxabs": mad("isolated_per_shape"),
        "row_profile_maxabs": mad("row_profile"),
        "col_profile_maxabs": mad("col_profile"),
        "pattern2x2_tv": tv("pattern2x2"),
        "pair_freq_tv": tv("pair_freq"),
        "first_count_tv": tv("first_count_freq"),
    }


def fidelity_report(real_images: torch.Tensor, real_counts: torch.Tensor, n_synth: int | None = None,
                    gen: torch.Generator | None = None, verbose: bool = True) -> dict:
    """Compare real and synthetic images on cheap statistics. Returns {"real": stats, "synth": stats,
    "diff": synth - real summary, "noise": the same summary for real first half vs real second half (the
    sampling-noise floor at half the size)}. Prints a compact table if verbose."""
    if gen is None:
        gen = torch.Generator().manual_seed(0)
    n_synth = len(real_images) if n_synth is None else n_synth
    s_images, s_counts = generate(n_synth, gen)
    real = image_stats(real_images, real_counts)
    synth = image_stats(s_images, s_counts)
    h = len(real_images) // 2
    r1 = image_stats(real_images[:h], real_counts[:h])
    r2 = image_stats(real_images[h:], real_counts[h:])
    out = {"real": real, "synth": synth, "diff": _diff(real, synth), "noise": _diff(r1, r2)}
    if verbose:
        print(format_report(out))
    return out


def format_report(rep: dict) -> str:
    """A compact text table of a `fidelity_report` result."""
    real, synth, d, noise = rep["real"], rep["synth"], rep["diff"], rep["noise"]

    def f3(v):
        return " ".join(f"{x:.3f}" for x in v)

    def pick(v, idx=(0, 1, 13, 26, 27)):
        return [v[i] for i in idx]

    def row(name, a, b):
        return f"{name:34s} {a:>24s} {b:>24s}"

    lines = [
        row("statistic", "real", "synth"),
        row("n", str(real["n"]), str(synth["n"])),
        row("ink fraction mean / std", f"{real['ink_mean']:.4f} / {real['ink_std']:.4f}",
            f"{synth['ink_mean']:.4f} / {synth['ink_std']:.4f}"),
        row("ink fraction q10 q50 q90", f3(real["ink_q"]), f3(synth["ink_q"])),
        row("8-conn. components mean / std", f"{real['ncomp_mean']:.3f} / {real['ncomp_std']:.3f}",
            f"{synth['ncomp_mean']:.3f} / {synth['ncomp_std']:.3f}"),
        row("row ink, rows 0 1 13 26 27", f3(pick(real["row_profile"])), f3(pick(synth["row_profile"]))),
        row("col ink, cols 0 1 13 26 27", f3(pick(real["col_profile"])), f3(pick(synth["col_profile"]))),
    ]
    for title, key in (("isolated whole shapes per shape (sq ci up ri dn le)", "isolated_per_shape"),
                       (f"component area histogram, bin edges {real['area_bins']}", "area_frac"),
                       ("mean ink per pair (15 pairs, labels.PAIRS order)", "ink_per_pair")):
        lines += [title + ":", f"   real  {f3(real[key])}", f"   synth {f3(synth[key])}"]
    lines.append(f"{'difference summary':34s} {'synth - real':>14s} {'real half-half':>16s}")
    lines += [f"   {k:31s} {d[k]:>14.4f} {noise[k]:>16.4f}" for k in d]
    return "\n".join(lines)


def speed(n: int = 20000, seed: int = 0) -> float:
    """Images per second of `generate` on the current thread settings."""
    import time

    gen = torch.Generator().manual_seed(seed)
    generate(256, gen)
    t = time.perf_counter()
    generate(n, gen)
    return n / (time.perf_counter() - t)


def write_dataset(out, n: int, seed: int = 0) -> None:
    """n synthetic images as a GSN-layout folder: labels.csv and img_XXXXX.png (RGBA, like the originals)."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from shapecount import fileio

    out = Path(out)
    images, counts = generate(n, torch.Generator().manual_seed(seed))
    out.mkdir(parents=True, exist_ok=True)
    names = [f"img_{i:05d}.png" for i in range(n)]
    for name, img in zip(names, images.numpy()):
        rgba = np.dstack([img, img, img, np.full_like(img, 255)])
        fileio.atomic_write(out / name, lambda p, a=rgba: Image.fromarray(a, "RGBA").save(p, format="PNG"))
    fileio.write_csv(out / "labels.csv", ["name", *L.TYPES], ([nm, *c] for nm, c in zip(names, counts.tolist())))
