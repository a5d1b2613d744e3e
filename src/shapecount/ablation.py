"""`shapecount ablation ROOT`: mean +- std over seeds of every setting under ROOT.

Layout: ROOT/<setting>/<seed run>/ (run folders written by `shapecount train`). Reads only metrics.json,
config.json and predictions.csv; prints two Markdown tables (the metrics, then where the errors are) and writes
ROOT/ablation.md and ROOT/ablation.json. With an audit of the validation images (`shapecount audit --split val
--out DIR`), two more tables give top-1 on the decidable images by how much their shapes overlap and by how
visible their least visible shape is (`exact.overlap`). The first setting in sorted order, or the one named by
--baseline, is the reference whose config the others are compared with.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np

from shapecount import fileio, runfolder
from shapecount import labels as L
from shapecount.exact import overlap
from shapecount.exact.audit import map_correct, read_audit, split_correct
from shapecount.mdtable import md_table
from shapecount.metrics import error_split

# (column, metrics.json key; sv_* are the keys of its single_view)
COLUMNS = [("top-1", "top1_accuracy"), ("macro F1", "macro_f1"), ("pair acc.", "pair_accuracy"), ("RMSE", "rmse"),
           ("MAE", "mae"), ("top-1 single view", "sv_top1_accuracy"), ("RMSE single view", "sv_rmse")]
IGNORED = {"seed", "threads", "device", "config_version"}
# Error-structure columns (fractions of the validation images, or count MAE), from predictions.csv.
ERROR_COLUMNS = [("wrong type pair", "err_pair"), ("right pair, split off by 1", "err_split1"),
                 ("right pair, split off by 2+", "err_split2"),
                 *((f"MAE {t}", f"mae_{t}") for t in L.TYPES)]


OVERLAP_BINS = 5
GROUPINGS = (("ov", "overlap"), ("vis", "visible"))  # (key prefix, exact.overlap.MEASURES name)


class AuditView:
    """A run's top-1 against an audit of the validation images: on the images the exact decoder decides, on the
    ambiguous ones, and on the decidable ones in OVERLAP_BINS groups of equal size by each measure of
    exact.overlap.MEASURES (how much the shapes overlap; how visible the least visible shape is)."""

    def __init__(self, audit_dir: Path) -> None:
        from shapecount.errors import UserError

        audit = read_audit(audit_dir)
        if audit is None:
            raise UserError(audit_dir, "holds no audit (summary.json and witnesses.jsonl)",
                            "write one with `shapecount audit --split val --out DIR`")
        self.rows = {r["name"]: r for r in audit.rows}
        # prefix -> {image name: value} of every decidable image; self.edges: prefix -> edges of its groups
        values = overlap.decidable_measures(self.rows, tuple(m for _, m in GROUPINGS))
        self.measures = {p: values[m] for p, m in GROUPINGS}
        self.decidable = set(self.measures["ov"])  # every measure covers the decidable images
        if len(self.decidable) < OVERLAP_BINS:
            raise UserError(audit_dir, f"decides only {len(self.decidable)} images, too few to group",
                            "audit the validation split")
        self.edges = {p: overlap.bin_edges(v, OVERLAP_BINS) for p, v in self.measures.items()}
        self.n_amb = len(self.rows) - len(self.decidable)

    def group_names(self, prefix: str) -> list[str]:
        label = overlap.MEASURES[dict(GROUPINGS)[prefix]][1]
        return [f"{label} {g['lo']:.2f}-{g['hi']:.2f}"
                for g in overlap.top1_by_group(self.measures[prefix], self.edges[prefix], {})]

    def ceiling(self) -> dict[str, float | None]:
        """The exact decoder's own row: its MAP class is right on every decidable image by definition."""
        correct = map_correct(self.rows)
        out: dict[str, float | None] = {f"{p}_{i}": 1.0 for p, _ in GROUPINGS for i in range(OVERLAP_BINS)}
        out["dec_top1"] = 1.0
        out["amb_top1"] = split_correct(self.rows, correct)["acc_amb"]
        out["top1_accuracy"] = sum(correct.values()) / len(correct)
        return out

    def of_run(self, run: Path, class_head: bool) -> dict[str, float]:
        """{"dec_top1", "amb_top1", "<prefix>_<group>": top-1} from the run's predictions.csv; empty when it is
        missing, a key missing when the run covers none of its images."""
        try:
            preds = runfolder.load_predictions(run)
            pred = runfolder.effective_pred_class(preds, class_head)
        except (OSError, KeyError, ValueError, runfolder.RunFileError):
            return {}
        correct = overlap.correct_by_name(preds["name"], pred, preds["true_class"])
        out = {f"{p}_{i}": g["top1"] for p, v in self.measures.items()
               for i, g in enumerate(overlap.top1_by_group(v, self.edges[p], correct)) if g["top1"] is not None}
        split = split_correct(self.rows, correct)
        out.update({key: split[acc] for key, acc in (("dec_top1", "acc_dec"), ("amb_top1", "acc_amb"))
                    if split[acc] is not None})
        return out


def group_keys(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}_{i}" for i in range(OVERLAP_BINS))


AUDIT_KEYS = ("dec_top1", "amb_top1", *(k for p, _ in GROUPINGS for k in group_keys(p)))


def _with_defaults(cfg: dict) -> dict:
    """A run's config with the keys added since it was written filled in with their defaults (and renamed keys
    under their new names), so that only real differences show; as written when it is not a full config."""
    from shapecount.config import ConfigError, config_from_dict

    try:
        return config_from_dict(cfg).to_dict() | {"seed": cfg.get("seed")}
    except (ConfigError, TypeError):
        return cfg


def _load(run: Path, groups: AuditView | None = None) -> tuple[dict, dict] | None:
    try:
        metrics = runfolder.load_json(run / runfolder.METRICS_FILE)
        raw_cfg = runfolder.load_json(run / runfolder.CONFIG_FILE)
    except runfolder.RunFileError as e:
        print(f"warning: {e}: left out", file=sys.stderr)
        return None
    if metrics is None or raw_cfg is None or not runfolder.finished(run):
        return None
    for k, v in (metrics.get("single_view") or {}).items():
        metrics[f"sv_{k}"] = v
    cfg = _with_defaults(raw_cfg)
    class_head = runfolder.head_flags(cfg, metrics)[0]
    metrics.update(error_structure(run, class_head))
    if groups is not None:
        metrics.update(groups.of_run(run, class_head))
    return metrics, cfg


def error_structure(run_dir: Path, class_head: bool = True) -> dict[str, float]:
    """Where a run's errors are: share of images with the wrong type pair, with the right pair but the split
    off by 1 or by 2+, and the count head's MAE per type. Empty when predictions.csv is missing or unreadable
    (the row then shows n/a: the summary never fails on one bad run)."""
    try:
        preds = runfolder.load_predictions(run_dir)
        true, pred = preds["true_class"], runfolder.effective_pred_class(preds, class_head)
        abs_err = np.abs(runfolder.pred_counts(preds) - runfolder.true_counts(preds))
    except (OSError, KeyError, ValueError, runfolder.RunFileError):
        return {}
    if not len(true):
        return {}
    e = error_split(true, pred)
    n = e["n"]
    out = {"err_pair": e["wrong_pair"] / n, "err_split1": e["split_off"][0] / n,
           "err_split2": (e["split_off"][1] + e["split_off"][2]) / n}
    out.update({f"mae_{t}": float(abs_err[:, j].mean()) for j, t in enumerate(L.TYPES)})
    return out


def summarize(root: Path, baseline: str | None = None, groups: AuditView | None = None) -> list[dict]:
    settings = sorted(p for p in root.iterdir() if p.is_dir())
    if baseline:
        settings.sort(key=lambda p: p.name != baseline)
    rows, ref_cfg = [], None
    for s in settings:
        runs = [r for r in (_load(p, groups) for p in sorted(s.iterdir()) if p.is_dir()) if r]
        if not runs:
            continue
        cfg = runs[0][1]
        ref_cfg = ref_cfg or cfg
        row = {"setting": s.name, "n": len(runs), "seeds": [r[1].get("seed") for r in runs],
               "changes": {k: v for k, v in cfg.items() if k not in IGNORED and ref_cfg.get(k) != v},
               "epochs": statistics.fmean(r[0].get("epochs") or 0 for r in runs),
               "minutes": statistics.fmean(r[0].get("runtime_s") or 0.0 for r in runs) / 60}
        keys = [k for _, k in COLUMNS + ERROR_COLUMNS] + list(AUDIT_KEYS if groups else ())
        for key in keys:
            vals = [r[0][key] for r in runs if r[0].get(key) is not None]
            row[key] = (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0) if vals else None
        rows.append(row)
    return rows


def _mean_std(r: dict, key: str) -> str:
    v = r.get(key)
    return "n/a" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}" if r["n"] > 1 else f"{v[0]:.3f}"


def to_markdown(rows: list[dict], groups: AuditView | None = None) -> str:
    head = ["setting", "seeds", *[c for c, _ in COLUMNS], "epochs", "min/run", "differs from the first row in"]
    body = [[r["setting"], ",".join(map(str, r["seeds"])), *(_mean_std(r, key) for _, key in COLUMNS),
             f"{r['epochs']:.0f}", f"{r['minutes']:.1f}",
             ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "(reference)"] for r in rows]
    if groups is not None:  # what the pixels allow, on top
        ceiling = f"{groups.ceiling()['top1_accuracy']:.3f}"
        body.insert(0, ["exact decoding, MAP (ceiling)", "", ceiling, *["n/a"] * (len(COLUMNS) - 1), "", "",
                        "knows the generator's rules"])
    errors = [[r["setting"], *(_mean_std(r, key) for _, key in ERROR_COLUMNS)] for r in rows]
    return "\n".join([md_table(head, body), "",
                      "Where the errors are (fraction of the validation images; count MAE of the count head, per type):",
                      "", md_table(["setting", *[c for c, _ in ERROR_COLUMNS]], errors)]
                     + _audit_markdown(rows, groups)) + "\n"


def _audit_markdown(rows: list[dict], groups: AuditView | None) -> list[str]:
    if groups is None:
        return []
    ceiling = groups.ceiling()

    def table(keys: tuple[str, ...], head: list[str]) -> str:
        top = ["exact decoding, MAP (ceiling)", *("n/a" if ceiling[k] is None else f"{ceiling[k]:.3f}" for k in keys)]
        return md_table(["setting", *head], [top, *([r["setting"], *(_mean_std(r, k) for k in keys)] for r in rows)])

    by_overlap = table(("dec_top1", "amb_top1", *group_keys("ov")),
                       [f"top-1 decidable ({len(groups.decidable)})", f"top-1 ambiguous ({groups.n_amb})",
                        *(f"top-1, {n}" for n in groups.group_names("ov"))])
    by_visible = table(group_keys("vis"), [f"top-1, {n}" for n in groups.group_names("vis")])
    return ["", (f"Against the exact decoder (`shapecount audit`; its MAP class is right on "
                 f"{ceiling['top1_accuracy']:.3f} of the audited images): top-1 on the images it decides and on the "
                 f"ambiguous ones, and on the decidable ones in {OVERLAP_BINS} groups of equal size by overlap share "
                 "(of the pixels the shapes of the label's witness cover, the share covered by two or more; "
                 "exact.overlap):"), "", by_overlap, "",
            (f"The same decidable images in {OVERLAP_BINS} groups of equal size by the least visible share (of each "
             "shape's whole area, the share inside the image that no other shape covers, the smallest over the "
             "image's shapes):"), "", by_visible]


def write_summary(root: Path, baseline: str | None = None, audit: Path | None = None) -> str:
    """Summarize ROOT, write ROOT/ablation.md and ROOT/ablation.json; returns the Markdown. audit: a folder
    written by `shapecount audit --split val --out`, for the table by overlap."""
    from shapecount.errors import UserError

    if not root.is_dir():
        raise UserError(root, "no such folder", "pass the folder holding one sub-folder per setting")
    groups = AuditView(audit) if audit is not None else None
    rows = summarize(root, baseline, groups)
    if not rows:
        raise UserError(root, "no finished runs (metrics.json + config.json) under its sub-folders",
                        "train runs into ROOT/<setting>/<seed>/ first")
    md = to_markdown(rows, groups)
    fileio.write_text(root / "ablation.md", md)
    fileio.write_json(root / "ablation.json", rows)
    return md
