"""`python -m shapecount.ablation ROOT`: mean +- std over seeds of every setting under ROOT.

Layout: ROOT/<setting>/<seed run>/ (run folders written by `shapecount train`). Reads only metrics.json,
config.json and predictions.csv; prints two Markdown tables (the metrics, then where the errors are) and writes
ROOT/ablation.md and ROOT/ablation.json. The first setting in sorted order, or the one named by --baseline, is the
reference whose config the others are compared with.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from shapecount import fileio
from shapecount import labels as L

# (column, metrics.json key or single_view key, digits)
COLUMNS = [("top-1", "top1_accuracy"), ("macro F1", "macro_f1"), ("pair acc.", "pair_accuracy"), ("RMSE", "rmse"),
           ("MAE", "mae"), ("top-1 single view", "sv_top1_accuracy"), ("RMSE single view", "sv_rmse")]
IGNORED = {"seed", "threads", "device", "config_version"}
# Error-structure columns (fractions of the validation images, or count MAE), from predictions.csv.
ERROR_COLUMNS = [("wrong type pair", "err_pair"), ("right pair, split off by 1", "err_split1"),
                 ("right pair, split off by 2+", "err_split2"),
                 *((f"MAE {t}", f"mae_{t}") for t in L.TYPES)]


def _load(run: Path) -> tuple[dict, dict] | None:
    m, c = run / "metrics.json", run / "config.json"
    if not (m.is_file() and c.is_file()):
        return None
    metrics = json.loads(m.read_text())
    for k, v in (metrics.get("single_view") or {}).items():
        metrics[f"sv_{k}"] = v
    cfg = json.loads(c.read_text())
    from shapecount.plots import head_flags  # deferred with the rest of plots (matplotlib)

    metrics.update(error_structure(run / "predictions.csv", head_flags(cfg, metrics)[0]))
    return metrics, cfg


def error_structure(path: Path, class_head: bool = True) -> dict[str, float]:
    """Where a run's errors are: share of images with the wrong type pair, with the right pair but the split
    off by 1 or by 2+, and the count head's MAE per type. Empty when predictions.csv is missing or unreadable
    (the row then shows n/a: the summary never fails on one bad run)."""
    from shapecount import plots  # deferred: matplotlib is only needed once predictions are read

    try:
        preds = plots.load_predictions(path.parent)
        true, pred = preds["true_class"], plots.effective_pred_class(preds, class_head)
        abs_err = np.abs(plots.pred_counts(preds) - plots.true_counts(preds))
    except (OSError, KeyError, ValueError):
        return {}
    if not len(true):
        return {}
    same = true // L.SPLITS == pred // L.SPLITS
    off = np.abs(true - pred)  # same pair: class ids differ by the split difference
    out = {"err_pair": float(np.mean(~same)), "err_split1": float(np.mean(same & (off == 1))),
           "err_split2": float(np.mean(same & (off >= 2)))}
    out.update({f"mae_{t}": float(abs_err[:, j].mean()) for j, t in enumerate(L.TYPES)})
    return out


def summarize(root: Path, baseline: str | None = None) -> list[dict]:
    settings = sorted(p for p in root.iterdir() if p.is_dir())
    if baseline:
        settings.sort(key=lambda p: p.name != baseline)
    rows, ref_cfg = [], None
    for s in settings:
        runs = [r for r in (_load(p) for p in sorted(s.iterdir()) if p.is_dir()) if r]
        if not runs:
            continue
        cfg = runs[0][1]
        ref_cfg = ref_cfg or cfg
        row = {"setting": s.name, "n": len(runs), "seeds": [r[1]["seed"] for r in runs],
               "changes": {k: v for k, v in cfg.items() if k not in IGNORED and ref_cfg.get(k) != v},
               "epochs": statistics.fmean(r[0]["epochs"] for r in runs),
               "minutes": statistics.fmean(r[0].get("runtime_s", 0.0) for r in runs) / 60}
        for _, key in COLUMNS + ERROR_COLUMNS:
            vals = [r[0][key] for r in runs if r[0].get(key) is not None]
            row[key] = (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0) if vals else None
        rows.append(row)
    return rows


def to_markdown(rows: list[dict]) -> str:
    head = ["setting", "seeds", *[c for c, _ in COLUMNS], "epochs", "min/run", "differs from the first row in"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["setting"], ",".join(map(str, r["seeds"]))]
        for _, key in COLUMNS:
            v = r[key]
            cells.append("n/a" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}" if r["n"] > 1 else f"{v[0]:.3f}")
        changes = ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "(reference)"
        cells += [f"{r['epochs']:.0f}", f"{r['minutes']:.1f}", changes]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "Where the errors are (fraction of the validation images; count MAE of the count head, per type):", ""]
    head = ["setting", *[c for c, _ in ERROR_COLUMNS]]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["setting"]]
        for _, key in ERROR_COLUMNS:
            v = r.get(key)
            cells.append("n/a" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}" if r["n"] > 1 else f"{v[0]:.3f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shapecount.ablation", description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--baseline", help="setting (sub-folder) to compare the others with")
    args = p.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root}: no such folder (pass the folder holding one sub-folder per setting)",
              file=sys.stderr)
        return 2
    rows = summarize(args.root, args.baseline)
    if not rows:
        print(f"error: {args.root}: no finished runs (metrics.json + config.json) under its sub-folders",
              file=sys.stderr)
        return 2
    md = to_markdown(rows)
    fileio.write_text(args.root / "ablation.md", md)
    fileio.write_json(args.root / "ablation.json", rows)
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
