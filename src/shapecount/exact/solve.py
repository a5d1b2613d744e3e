"""`shapecount solve PNG...`: exact decoding of single images (a user's own, drawn ones, or dataset files)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from shapecount import fileio
from shapecount import labels as L
from shapecount.data import read_image
from shapecount.errors import DataError
from shapecount.exact.decoder import Decoder, Decoding, Shape

FIX_BINARY = "threshold it first: the decoder needs every pixel 0 or 255"
FIX_FILE = "give a 28x28 PNG with the shapes in 255 on 0"


def load_binary(path: Path) -> np.ndarray:
    """A 28x28 PNG as a bool image; one-line errors for anything the decoder cannot take."""
    try:
        img = read_image(path)  # size, format and readability checks
    except DataError as e:
        raise DataError(e.where, e.what, FIX_FILE) from None
    gray = np.unique(img[(img != 0) & (img != 255)])
    if gray.size:
        raise DataError(str(path), f"has {int(((img != 0) & (img != 255)).sum())} gray pixels "
                                   f"(values like {int(gray[0])})", FIX_BINARY)
    if not (img == 255).any():
        raise DataError(str(path), "has no ink (all pixels 0)", FIX_FILE)
    return img == 255


def to_dict(path: Path, d: Decoding) -> dict:
    return {
        "file": str(path),
        "map_class": d.map_class if d.map_class >= 0 else None,
        "map_class_name": L.class_name(d.map_class) if d.map_class >= 0 else None,
        "unknown_pairs": [L.pair_name(p) for p in d.unknown_pairs],
        "nodes": d.nodes,
        "feasible": [{"class_id": k, "class_name": L.class_name(k), "posterior": d.posterior[k],
                      "witness": [{"type": L.TYPES[s.type], "row": s.row, "col": s.col} for s in d.feasible[k]]}
                     for k in sorted(d.feasible, key=lambda c: -d.posterior[c])],
    }


def format_text(rec: dict) -> str:
    feas = rec["feasible"]
    if not feas:
        head = f"{rec['file']}: no feasible class"
        head += " among the pairs searched" if rec["unknown_pairs"] else " (no placement of the rules draws it)"
    else:
        head = (f"{rec['file']}: {len(feas)} feasible class{'es' if len(feas) > 1 else ''}, most probable "
                f"{rec['map_class_name']} (p={feas[0]['posterior']:.4f})")
    lines = [head]
    width = max((len(f["class_name"]) for f in feas), default=0)
    for f in feas:
        shapes = " ".join(str(Shape(L.TYPES.index(w["type"]), w["row"], w["col"])) for w in f["witness"])
        lines.append(f"  {f['class_name']:<{width}}  p={f['posterior']:.6f}  witness: {shapes}")
    if rec["unknown_pairs"]:
        lines.append(f"  unknown (node limit reached): {', '.join(rec['unknown_pairs'])}")
    return "\n".join(lines)


def solve_paths(paths: list[Path], node_limit: int) -> Iterator[dict]:
    """One record per file, as each is decoded (time per image is bounded by the node limit, memory by one
    image). Every file is checked before any search starts, so a bad file fails the batch at once."""
    for p in paths:
        load_binary(p)
    dec = Decoder(node_limit=node_limit)
    for p in paths:
        yield to_dict(p, dec.decode(load_binary(p)))


def write_records(records: Iterable[dict], fmt: str, out: TextIO) -> None:
    """Text: one block per image; json: one array. Written as the records come, flushed after each."""
    first = True
    for rec in records:
        if fmt == "json":
            body = "\n".join("  " + ln for ln in fileio.dumps(rec, indent=2).splitlines())
            out.write(("[\n" if first else ",\n") + body)
        else:
            out.write(format_text(rec) + "\n")
        out.flush()
        first = False
    if fmt == "json":
        out.write("[]\n" if first else "\n]\n")
