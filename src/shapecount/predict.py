"""`shapecount predict`: PNG files or folders -> class, pair, counts and top-k probabilities."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from shapecount import engine, evaluation, fileio, labels, runtime
from shapecount.checkpoint import load_checkpoint
from shapecount.data import read_image
from shapecount.errors import UserError


def collect_pngs(paths: list[Path]) -> list[Path]:
    """Files as given; folders expanded to their *.png files (sorted, not recursive)."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() == ".png" and q.is_file())
            if not found:
                raise UserError(p, "folder holds no .png files", "pass PNG files or a folder of them")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(p, "no such file or folder", "check the path")
    return out


def predict_paths(checkpoint: Path, paths: list[Path], top_k: int = 3, tta: bool | None = None,
                  device_name: str = "auto") -> list[dict]:
    device = engine.pick_device(device_name)
    runtime.configure_cpu()
    model, cfg, _ = load_checkpoint(checkpoint, device)
    files = collect_pngs(paths)
    images = torch.from_numpy(np.stack([read_image(f) for f in files]))
    use_tta = cfg.tta if tta is None else tta
    log_probs, counts = evaluation.predict(model, images, device, cfg.eval_batch_size, tta=use_tta,
                                          amp=runtime.amp_dtype(cfg.amp, device))
    evaluation.check_finite(log_probs, counts, [str(f) for f in files], str(checkpoint))
    probs = log_probs.exp()
    k = min(top_k, labels.NUM_CLASSES)
    top_p, top_c = probs.topk(k, dim=1)
    rows = []
    for i, f in enumerate(files):
        cls = int(top_c[i, 0])
        rows.append({
            "file": str(f),
            "class_id": cls,
            "class_name": labels.class_name(cls),
            "pair": labels.pair_name(labels.class_to_pair(cls)),
            "counts": {t: round(float(v), 3) for t, v in zip(labels.TYPES, counts[i])},
            "top_k": [{"class_id": int(c), "class_name": labels.class_name(int(c)), "prob": round(float(p), 4)}
                      for p, c in zip(top_p[i], top_c[i])],
        })
    return rows


def format_rows(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return fileio.dumps(rows, indent=2) + "\n"
    buf = io.StringIO()
    w = csv.writer(buf)
    k = len(rows[0]["top_k"]) if rows else 0
    w.writerow(["file", "class_id", "class_name", "pair", *(f"count_{t}" for t in labels.TYPES),
                *(f"top{j + 1}_{x}" for j in range(k) for x in ("class", "prob"))])
    for r in rows:
        w.writerow([r["file"], r["class_id"], r["class_name"], r["pair"], *r["counts"].values(),
                    *(v for t in r["top_k"] for v in (t["class_name"], t["prob"]))])
    return buf.getvalue()
