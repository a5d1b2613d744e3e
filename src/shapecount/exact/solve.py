"""`shapecount solve PNG...`: exact decoding of single images (a user's own, drawn ones, or dataset files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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


def solve_paths(paths: list[Path], node_limit: int) -> list[dict]:
    images = [(p, load_binary(p)) for p in paths]  # every file checked before any search starts
    dec = Decoder(node_limit=node_limit)
    return [to_dict(p, dec.decode(img)) for p, img in images]


def format_records(records: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(records, indent=2) + "\n"
    return "\n".join(format_text(r) for r in records) + "\n"
