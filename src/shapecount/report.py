"""Comparison tables, figures and the final report of a `shapecount reproduce` folder, from its files alone.

Layout read (all paths relative to the reproduce folder OUT):
    OUT/runs.json                    optional: {"runs": [{"name", "dir", "label"}, ...], "command", "machine",
                                     "date", "wall_s"}; without it the default run names that exist are used
    OUT/eda/                         class_histogram.png, count_table.md/.csv, examples.png, pair_balance.png/.csv,
                                     summary.md
    OUT/<run>/                       one run folder per experiment (docs/run_folder.md), with plots/
Written:
    OUT/comparison/                  results.csv, results.md, per_pair.md, curves.png, confusions.png
    OUT/report.md, OUT/report.html   the report (markdown with relative figure paths; self-contained HTML)

Nothing here loads a model or the dataset, and no number in the report is typed in: everything comes from the
files. Missing optional pieces (runs.json, a run, eda/, a figure) are left out with a note.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shapecount import labels, metrics, plots

DEFAULT_RUNS = ("classification", "regression", "multitask")
EDA_DIR = "eda"
COMPARISON_DIR = "comparison"
SECTIONS = ("1. Summary", "2. Data (EDA)", "3. Architecture", "4. Augmentations and why", "5. Setups",
            "6. Results", "7. Confusion matrices", "8. Error analysis", "9. Discussion")
ABLATION_FILE = "ablation.md"
ABLATION_SECTION = "10. Ablation"
ABLATION_INTRO = ("Written by `python -m shapecount.ablation ROOT` from one run folder per setting and seed, and copied "
                  "here by `shapecount report FOLDER --ablation ROOT`. Each setting is a multitask run whose epoch is "
                  "selected on held-out training images and scored on the official validation images (mean ± std "
                  "over the seeds listed). The second table shows how each setting moves the errors: wrong type "
                  "pair, right pair with the split off by one or more, and the count head's error per type.")
RESULT_FIELDS = ("run", "label", "experiment", "kind", "cls_weight", "lambda_cnt", "loss", "top1", "top1_source",
                 "macro_f1", "pair_accuracy", "rmse", "mae", "count_decoded_accuracy", "epochs", "best_epoch",
                 "runtime_s", "n_val", "class_head_trained", "count_head_trained")
NOT_TRAINED_CNT = "n/a†"
NOT_TRAINED_CLS = "n/a‡"


# ====================================================================== runs

@dataclass
class Run:
    name: str
    dir: Path
    label: str
    config: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: dict[str, np.ndarray] | None = None
    preds: dict[str, np.ndarray] | None = None

    @property
    def heads(self) -> tuple[bool, bool]:
        return plots.head_flags(self.config, self.metrics)

    @property
    def class_head(self) -> bool:
        return self.heads[0]

    @property
    def count_head(self) -> bool:
        return self.heads[1]

    @property
    def kind(self) -> str:
        c, r = self.heads
        return "multitask" if c and r else "classification-only" if c else "regression-only"

    def cfg(self, key: str, default: Any = None) -> Any:
        return (self.config or {}).get(key, default)

    @property
    def lambda_cnt(self) -> float | None:
        v = self.cfg("lambda_cnt")
        return None if v is None else float(v)

    @property
    def n_val(self) -> int | None:
        n = self.metrics.get("n_val")
        if n is None and self.preds is not None:
            n = len(self.preds["true_class"])
        return None if n is None else int(n)

    def pred_class(self) -> np.ndarray | None:
        if self.preds is None:
            return None
        return plots.effective_pred_class(self.preds, self.class_head)

    def rel(self, out: Path, *parts: str) -> str:
        """Path of a file of this run relative to the reproduce folder (for markdown links)."""
        p = self.dir.joinpath(*parts)
        try:
            return p.relative_to(out).as_posix()
        except ValueError:
            return p.as_posix()


def _read_runs_json(out: Path, notes: list[str]) -> dict[str, Any] | None:
    p = out / "runs.json"
    if not p.is_file():
        notes.append("No runs.json: the default run folders that exist are used; command, machine and date "
                     "are unknown.")
        return None
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(d, dict) or not isinstance(d.get("runs", []), list):
            raise TypeError("expected an object with a 'runs' list")
        return d
    except (OSError, ValueError, TypeError) as e:
        notes.append(f"runs.json could not be read ({e}); the default run folders are used.")
        return None


def discover_runs(out: Path) -> tuple[list[Run], dict[str, Any] | None, list[str]]:
    """The runs of a reproduce folder with their files loaded, runs.json (or None) and notes on what is missing."""
    out = Path(out)
    notes: list[str] = []
    meta = _read_runs_json(out, notes)
    entries = []
    if meta and meta.get("runs"):
        for e in meta["runs"]:
            if isinstance(e, dict) and (e.get("name") or e.get("dir")):
                name = str(e.get("name") or e.get("dir"))
                entries.append((name, str(e.get("dir") or name), str(e.get("label") or name), True))
    else:
        entries = [(n, n, n, False) for n in DEFAULT_RUNS]
    runs = []
    for name, d, label, listed in entries:
        run_dir = Path(d) if Path(d).is_absolute() else out / d
        if not run_dir.is_dir():
            notes.append(f"Run '{name}' ({'listed in runs.json, ' if listed else ''}folder `{d}/`) is missing: "
                         "left out.")
            continue
        metrics = plots.load_json(run_dir / "metrics.json")
        if metrics is None:
            notes.append(f"Run '{name}' has no metrics.json (unfinished?): left out.")
            continue
        run = Run(name, run_dir, label, plots.load_json(run_dir / "config.json"), metrics)
        if run.config is None:
            notes.append(f"Run '{name}' has no config.json: its setup is inferred from metrics.json.")
        hist = plots.load_history(run_dir) if (run_dir / "history.csv").is_file() else {}
        if hist and len(next(iter(hist.values()))):
            run.history = hist
        else:
            notes.append(f"Run '{name}' has no (or an empty) history.csv: no curves for it.")
        preds = plots.load_predictions(run_dir) if (run_dir / "predictions.csv").is_file() else {}
        if len(preds.get("true_class", [])) and "pred_class" in preds:
            run.preds = preds
        else:
            notes.append(f"Run '{name}' has no (or an incomplete) predictions.csv: no error analysis for it.")
        if label == name and run.lambda_cnt is not None and run.cfg("experiment") == name:
            run.label = f"{name} (lambda={run.lambda_cnt:g})"
        runs.append(run)
    return runs, meta, notes


# ====================================================================== metrics from predictions

def macro_f1(true: np.ndarray, pred: np.ndarray) -> float:
    """Macro F1 over the classes present in `true` (the convention of shapecount.metrics)."""
    if len(true) == 0:
        return math.nan
    return metrics.macro_f1(torch.as_tensor(pred, dtype=torch.long), torch.as_tensor(true, dtype=torch.long))[0]


def per_pair_from_predictions(true: np.ndarray, pred: np.ndarray) -> list[float]:
    tp = true // labels.SPLITS
    return [float(np.mean(pred[tp == p] == true[tp == p])) if np.any(tp == p) else math.nan
            for p in range(labels.NUM_PAIRS)]


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def result_row(run: Run) -> dict[str, Any]:
    """One row of the results table. A head that was not trained gives no metrics (None): the class of a
    regression-only run is decoded from its counts, a classification-only run has no count results."""
    m = run.metrics
    row: dict[str, Any] = {
        "run": run.name, "label": run.label, "experiment": run.cfg("experiment", m.get("experiment")),
        "kind": run.kind, "cls_weight": _num(run.cfg("cls_weight")), "lambda_cnt": run.lambda_cnt,
        "loss": _num(m.get("loss")), "epochs": m.get("epochs"), "best_epoch": m.get("best_epoch"),
        "runtime_s": _num(m.get("runtime_s")), "n_val": run.n_val,
        "class_head_trained": run.class_head, "count_head_trained": run.count_head,
    }
    if run.class_head:
        row.update(top1=_num(m.get("top1_accuracy")), top1_source="class head", macro_f1=_num(m.get("macro_f1")),
                   pair_accuracy=_num(m.get("pair_accuracy")))
    else:
        row.update(top1=_num(m.get("count_decoded_accuracy")), top1_source="count head (decoded)",
                   macro_f1=None, pair_accuracy=None)
        pred = run.pred_class()
        if pred is not None:
            true = run.preds["true_class"]
            row["macro_f1"] = macro_f1(true, pred)
            row["pair_accuracy"] = float(np.mean(true // labels.SPLITS == pred // labels.SPLITS))
    if run.count_head:
        row.update(rmse=_num(m.get("rmse")), mae=_num(m.get("mae")),
                   count_decoded_accuracy=_num(m.get("count_decoded_accuracy")))
    else:
        row.update(rmse=None, mae=None, count_decoded_accuracy=None)
    return row


def per_pair_row(run: Run) -> list[float | None]:
    """Exact (135-class) accuracy on the images of each true type pair."""
    if run.class_head and isinstance(run.metrics.get("per_pair_accuracy"), dict):
        d = run.metrics["per_pair_accuracy"]
        return [_num(d.get(labels.pair_name(p))) for p in range(labels.NUM_PAIRS)]
    pred = run.pred_class()
    if pred is None:
        return [None] * labels.NUM_PAIRS
    return [_num(v) for v in per_pair_from_predictions(run.preds["true_class"], pred)]


# ====================================================================== formatting

def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def results_table_md(rows: list[dict[str, Any]]) -> str:
    header = ["experiment", "lambda_cnt", "loss", "top-1", "top-1 source", "macro F1", "pair acc.", "RMSE", "MAE",
              "count-decoded acc.", "epochs", "best epoch", "runtime s"]
    body = []
    for r in rows:
        def cnt(k: str, r: dict[str, Any] = r) -> str:
            return fmt(r[k]) if r["count_head_trained"] else NOT_TRAINED_CNT

        def cls(k: str, r: dict[str, Any] = r) -> str:
            return fmt(r[k]) if r["class_head_trained"] or r[k] is not None else NOT_TRAINED_CLS

        top1 = fmt(r["top1"]) + ("" if r["class_head_trained"] else " ‡")
        body.append([r["label"], fmt(r["lambda_cnt"], 2) if r["lambda_cnt"] is not None else "n/a", fmt(r["loss"]),
                     top1, r["top1_source"], cls("macro_f1"), cls("pair_accuracy"), cnt("rmse"), cnt("mae"),
                     cnt("count_decoded_accuracy"), fmt(r["epochs"]), fmt(r["best_epoch"]), fmt(r["runtime_s"], 1)])
    notes = [("- loss: the validation loss each run optimised (cls_weight x NLL + lambda_cnt x SmoothL1), so rows with "
             "different weights are not comparable on it.")]
    if any(not r["count_head_trained"] for r in rows):
        notes.append(f"- {NOT_TRAINED_CNT}: count head not trained (lambda_cnt = 0); its outputs are those of an "
                     "untrained head, so RMSE, MAE and count-decoded accuracy are not reported.")
    if any(not r["class_head_trained"] for r in rows):
        notes.append("- ‡: class head not trained (cls_weight = 0); top-1 is the count-decoded accuracy (the valid "
                     "label nearest to the predicted counts), and macro F1 / pair accuracy are computed from those "
                     f"decoded classes in predictions.csv ({NOT_TRAINED_CLS} when that file is missing).")
    return md_table(header, body) + "\n\n" + "\n".join(notes) + "\n"


def per_pair_md(runs: list[Run]) -> str:
    counts = next((np.bincount(r.preds["true_class"] // labels.SPLITS, minlength=labels.NUM_PAIRS)
                   for r in runs if r.preds is not None), None)
    vals = [per_pair_row(r) for r in runs]
    header = ["type pair", *([] if counts is None else ["val images"]), *[r.label for r in runs]]
    rows = []
    for p in range(labels.NUM_PAIRS):
        row: list[Any] = [labels.pair_name(p)]
        if counts is not None:
            row.append(int(counts[p]))
        row += [fmt(v[p]) for v in vals]
        rows.append(row)
    note = ("Exact (135-class) accuracy on the validation images of each true type pair; a run without a trained "
            "class head is scored on the class decoded from its counts.")
    return md_table(header, rows) + "\n\n" + note + "\n"


# ====================================================================== comparison figures

def plot_curves(runs: list[Run], path: Path) -> Path:
    fig = plots.new_figure(figsize=(17, 4.6))
    axes = fig.subplots(1, 3)
    # Runs with a holdout log the held-out images per epoch; one shared name when all runs agree.
    names = {plots.eval_set_name(r.config) for r in runs} or {"validation"}
    ev = names.pop() if len(names) == 1 else "validation or held-out"
    panels = [("val_top1", f"{ev} top-1 accuracy", lambda r: r.class_head, "runs with a trained class head"),
              ("val_rmse", f"{ev} count RMSE", lambda r: r.count_head, "runs with a trained count head"),
              ("val_loss", f"{ev} loss (weighted total, log scale)", lambda r: True, "all runs")]
    for ax, (col, ylabel, keep, which) in zip(axes, panels):
        drawn = 0
        for i, run in enumerate(runs):
            h = run.history
            if h is None or col not in h or not keep(run):
                continue
            ep = h.get("epoch", np.arange(1, len(h[col]) + 1))
            line = ax.plot(ep, h[col], label=run.label, color=f"C{i}")[0]
            be = _num(run.metrics.get("best_epoch"))
            hit = np.nonzero(ep == be)[0] if be is not None else []
            if len(hit):
                ax.plot([be], [h[col][hit[0]]], marker="*", markersize=11, color=line.get_color(), linestyle="none")
            drawn += 1
        if col == "val_loss" and drawn:
            ax.set_yscale("log")
        if not drawn:
            ax.text(0.5, 0.5, "no run to show", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{ylabel}\n({which}; star = best epoch)", fontsize=10)
        ax.set_xlabel("epoch")
        plots._int_epochs(ax)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
    fig.suptitle(f"Per-epoch {ev} curves of all runs", fontsize=12)
    return plots.save_figure(fig, path)


def plot_pair_confusions(runs: list[Run], path: Path) -> Path | None:
    have = [r for r in runs if r.preds is not None]
    if not have:
        return None
    fig = plots.new_figure(figsize=(6.6 * len(have), 6.6))
    axes = fig.subplots(1, len(have), squeeze=False)[0]
    for ax, run in zip(axes, have):
        pred = run.pred_class()
        cm = plots.confusion(run.preds["true_class"] // labels.SPLITS, pred // labels.SPLITS, labels.NUM_PAIRS)
        plots.plot_confusion_pairs(cm, path, run.label + ("" if run.class_head else "\n[class decoded from counts]"),
                                   ax=ax)
    fig.suptitle("Type-pair confusion (15x15) per run: rows true pair, columns predicted pair", fontsize=12)
    return plots.save_figure(fig, path)


# ====================================================================== compare

def compare(reproduce_dir: Path) -> dict[str, Any]:
    """Write OUT/comparison/ (results.csv/.md, per_pair.md, curves.png, confusions.png) and return
    {"rows": [result row per run], "per_pair": {run: [15 accuracies]}, "files": [paths], "notes": [...]}."""
    out = Path(reproduce_dir)
    runs, _, notes = discover_runs(out)
    return _compare(out, runs, notes)


def _compare(out: Path, runs: list[Run], notes: list[str]) -> dict[str, Any]:
    cdir = out / COMPARISON_DIR
    cdir.mkdir(parents=True, exist_ok=True)
    rows = [result_row(r) for r in runs]
    files = []
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(RESULT_FIELDS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r[k] is None else (repr(r[k]) if isinstance(r[k], float) else r[k])
                    for k in RESULT_FIELDS})
    files.append(plots.atomic_write_text(cdir / "results.csv", buf.getvalue()))
    files.append(plots.atomic_write_text(cdir / "results.md", "# Results\n\n" + results_table_md(rows)))
    files.append(plots.atomic_write_text(cdir / "per_pair.md", "# Per-pair accuracy\n\n" + per_pair_md(runs)))
    if runs:
        files.append(plot_curves(runs, cdir / "curves.png"))
        conf = plot_pair_confusions(runs, cdir / "confusions.png")
        if conf is not None:
            files.append(conf)
    return {"rows": rows, "per_pair": {r.name: per_pair_row(r) for r in runs}, "files": files, "notes": notes}


# ====================================================================== report sections

def _fig(out: Path, rel: str, caption: str) -> str:
    if (out / rel).is_file():
        return f"![{caption}]({rel})\n"
    return f"> Not available: `{rel}` is missing.\n"


def _demote(text: str, by: int = 2) -> str:
    out, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and re.match(r"#{1,6} ", line):
            line = "#" * by + line
        out.append(line)
    return "\n".join(out).strip() + "\n"


def _csv_to_md(path: Path, max_rows: int = 60) -> str:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return "> (empty)\n"
    body = rows[1:max_rows + 1]
    extra = f"\n\n({len(rows) - 1 - max_rows} more rows in `{path.name}`)" if len(rows) - 1 > max_rows else ""
    return md_table(rows[0], body) + extra + "\n"


def _pick(runs: list[Run], kind: str, name: str) -> Run | None:
    same = [r for r in runs if r.kind == kind]
    for r in same:
        if r.name == name:
            return r
    if kind == "multitask":
        for r in same:
            if r.lambda_cnt == 5.0:
                return r
    return same[0] if same else None


def _summary(out: Path, runs: list[Run], rows: list[dict], meta: dict | None, notes: list[str]) -> list[str]:
    s = []
    cls_rows = [r for r in rows if r["top1"] is not None]
    if cls_rows:
        b = max(cls_rows, key=lambda r: r["top1"])
        s.append(f"- Best top-1 accuracy: **{fmt(b['top1'])}** ({b['label']}, from the {b['top1_source']}).")
    cnt_rows = [r for r in rows if r["rmse"] is not None]
    if cnt_rows:
        b = min(cnt_rows, key=lambda r: r["rmse"])
        s.append(f"- Best count RMSE: **{fmt(b['rmse'])}** ({b['label']}; MAE {fmt(b['mae'])}).")
    for r in rows:
        bits = [f"top-1 {fmt(r['top1'])}"]
        if r["count_head_trained"]:
            bits.append(f"RMSE {fmt(r['rmse'])}")
        s.append(f"- {r['label']}: " + ", ".join(bits) + f", best epoch {fmt(r['best_epoch'])} of "
                 f"{fmt(r['epochs'])}, {fmt(r['runtime_s'], 1)} s.")
    if runs:
        m = runs[0].metrics
        s.append(f"- Images: {fmt(m.get('n_train'))} training, {fmt(runs[0].n_val)} validation.")
    if not runs:
        s.append("- No finished run was found.")
    s.append("")
    if meta:
        for key, name in (("command", "Command"), ("recipe", "Recipe"), ("machine", "Machine"), ("date", "Date"),
                          ("wall_s", "Total wall time (s)")):
            if meta.get(key) not in (None, ""):
                v = meta[key]
                s.append(f"- {name}: " + (f"`{v}`" if key == "command" else fmt(v, 1) if key == "wall_s" else str(v)))
        s.append("")
    if notes:
        s.append("Notes:")
        s += [f"- {n}" for n in notes]
        s.append("")
    return s


def _eda(out: Path) -> list[str]:
    d = out / EDA_DIR
    if not d.is_dir():
        return ["> Not available: no `eda/` folder.", ""]
    s = []
    summary = ""
    if (d / "summary.md").is_file():
        summary = (d / "summary.md").read_text(encoding="utf-8")
        text = _demote(summary, 2)
        # figure paths in summary.md are relative to eda/; the report lives one folder up
        text = re.sub(r"!\[(.*?)\]\((?![a-z]+:|/)(.*?)\)", rf"![\1]({EDA_DIR}/\2)", text)
        s += [text]
    else:
        s += ["> `eda/summary.md` is missing.", ""]
    s += ["### Class histogram", "", _fig(out, f"{EDA_DIR}/class_histogram.png", "Images per class (135 classes)")]
    s += ["### Counts per type", ""]
    if (d / "count_table.md").is_file():
        table = (d / "count_table.md").read_text(encoding="utf-8")
        rows = [ln.strip() for ln in table.splitlines() if ln.strip().startswith("|")]
        if rows and all(r in summary for r in rows[:3]):
            s += ["(The table is part of the EDA summary above.)", ""]
        else:
            s += [_demote(table, 3)]
    elif (d / "count_table.csv").is_file():
        s += [_csv_to_md(d / "count_table.csv")]
    else:
        s += ["> Not available: `eda/count_table.md` is missing.", ""]
    s += ["### Examples", "", _fig(out, f"{EDA_DIR}/examples.png", "Example images with their labels")]
    s += ["### Pair balance", "", _fig(out, f"{EDA_DIR}/pair_balance.png", "Images per type pair")]
    if (d / "pair_balance.csv").is_file():
        s += [_csv_to_md(d / "pair_balance.csv")]
    return s


def _architecture(out: Path, runs: list[Run]) -> list[str]:
    ref = _pick(runs, "multitask", "multitask")
    cands = ([ref] if ref else []) + [r for r in runs if r is not ref]
    for r in cands:
        p = r.dir / "model.txt"
        if p.is_file():
            text = p.read_text(encoding="utf-8").rstrip().replace("```", "'''")
            return [f"Module tree and parameter counts of the {r.label} run (`{r.rel(out, 'model.txt')}`):", "",
                    "```", text, "```", ""]
    return ["> Not available: no run has a model.txt.", ""]


def _perm_text(perm: tuple[int, ...]) -> str:
    parts, seen = [], set()
    for i, j in enumerate(perm):
        if i == j or i in seen:
            continue
        if perm[j] == i:
            parts.append(f"{labels.TYPE_PLURAL[i]} <-> {labels.TYPE_PLURAL[j]}")
            seen |= {i, j}
        else:
            parts.append(f"{labels.TYPE_PLURAL[i]} -> {labels.TYPE_PLURAL[j]}")
    fixed = [labels.TYPE_PLURAL[i] for i, j in enumerate(perm) if i == j]
    return "; ".join(parts) + (f" ({', '.join(fixed)} unchanged)" if fixed else "")


AUG_KEYS = ("aug_hflip", "aug_vflip", "aug_rot90", "aug_brightness", "aug_noise", "aug_erase", "aug_at_least_one",
            "aug_copies", "tta")


def _augmentations(runs: list[Run]) -> list[str]:
    ref = _pick(runs, "multitask", "multitask") or (runs[0] if runs else None)
    if ref is None or ref.config is None:
        return ["> Not available: no config.json to read the augmentation settings from.", ""]
    try:
        from shapecount.augment import AugmentSpec
        spec = AugmentSpec()
    except Exception:  # noqa: BLE001 - the strengths are a detail; the probabilities come from config.json
        spec = None

    def strength(attr: str, default: float) -> float:
        return float(getattr(spec, attr, default)) if spec is not None else default

    c = ref.config
    p = {k: c.get(k) for k in AUG_KEYS}
    s = [(f"Settings of the {ref.label} run (config.json); the probability is per training image and per transform, "
         "drawn independently."), ""]
    geo = [("aug_hflip", "horizontal flip (mirror left-right)", labels.HFLIP),
           ("aug_vflip", "vertical flip (mirror up-down)", labels.VFLIP),
           ("aug_rot90", "quarter turn counter-clockwise by 90, 180 or 270 degrees (uniform)", labels.ROT90_CCW)]
    rows = []
    for key, what, perm in geo:
        lab = _perm_text(perm) + (" for 90 degrees; 180 and 270 degrees apply it 2 and 3 times" if key == "aug_rot90"
                                  else "")
        rows.append([what, fmt(_num(p[key]), 2), lab])
    rows.append(["brightness/contrast", fmt(_num(p["aug_brightness"]), 2),
                 (f"none (contrast x[{1 - strength('contrast_range', 0.2):g}, {1 + strength('contrast_range', 0.2):g}],"
                 f" offset +-{strength('brightness_range', 0.1):g})")])
    rows.append(["Gaussian noise", fmt(_num(p["aug_noise"]), 2), f"none (std {strength('noise_std', 0.05):g})"])
    rows.append(["random erasing", fmt(_num(p["aug_erase"]), 2),
                 f"none (a 2..{int(strength('erase_max', 4))} pixel square set to 0)"])
    s += [md_table(["transform", "probability", "what happens to the labels (counts)"], rows), ""]
    active = [r[0] for r in rows if (_num(r[1]) or 0) > 0]
    if not active:
        s.append("No augmentation was enabled in this run.")
    else:
        s.append("Enabled: " + ", ".join(active) + ".")
    if p.get("aug_at_least_one"):
        s.append("Every augmented image gets at least one transform (an image that drew none gets one enabled "
                 "transform, chosen uniformly).")
    if p.get("aug_copies"):
        s.append(f"Each epoch holds the original images plus {p['aug_copies']} augmented copies of each.")
    s += ["", ("Why: a GSN label is the number of shapes of each type, and the four triangle types differ only by "
          "orientation. A flip or a quarter turn of an image is another valid GSN image whose counts are those of "
          "the original with the triangle types permuted (squares and circles keep their type), so these "
          "transforms give new, exactly labelled training images; the labels are permuted together with the image "
          "(a label-preserving rotation would teach the wrong answer). The photometric transforms keep the labels "
          "and only add robustness; erasing can hide part of a shape, so it stays small or off."), ""]
    if p.get("tta"):
        s += [("Test-time augmentation: the final metrics average the predictions over the 8 symmetric views "
              "(4 rotations x optional flip); each view's class probabilities and counts are mapped back to the "
              "original labels with the inverse permutation before averaging. `single_view` in metrics.json holds "
              "the same metrics without it (see Results)."), ""]
    else:
        s += ["Test-time augmentation: off (single view).", ""]
    diff = [r for r in runs if r.config and any(r.config.get(k) != c.get(k) for k in AUG_KEYS)]
    if diff:
        s += ["Runs with different augmentation settings:", "",
              md_table(["run", *AUG_KEYS], [[r.label, *(fmt(r.config.get(k), 2) for k in AUG_KEYS)] for r in diff]),
              ""]
    return s


def _monitor(r: Run) -> str:
    m = r.cfg("monitor")
    if m in (None, "auto"):
        res = "val_top1" if r.class_head else "val_rmse"
        return f"auto ({res})" if m == "auto" else "n/a"
    return str(m)


def _heads(r: Run) -> str:
    """Head width and dropout, e.g. `64, dropout 0.3/0.1` (the report's heads) or `256, no dropout` (best)."""
    hidden, d1, d2 = r.cfg("head_hidden"), _num(r.cfg("head_dropout1")), _num(r.cfg("head_dropout2"))
    if hidden is None:
        return "n/a"
    return f"{hidden}, no dropout" if not (d1 or d2) else f"{hidden}, dropout {fmt(d1, 2)}/{fmt(d2, 2)}"


def _setups(runs: list[Run]) -> list[str]:
    header = ["run", "experiment", "cls_weight", "lambda_cnt", "lr", "weight decay", "batch", "epochs cap",
              "patience", "monitor", "schedule", "warmup", "bf16", "synthetic/epoch", "holdout", "heads", "TTA",
              "seed"]
    rows = [[r.label, r.cfg("experiment", r.metrics.get("experiment")), fmt(_num(r.cfg("cls_weight")), 2),
             fmt(r.lambda_cnt, 2), fmt(r.cfg("lr")), fmt(r.cfg("weight_decay")), fmt(r.cfg("batch_size")),
             fmt(r.cfg("epochs")), fmt(r.cfg("patience")), _monitor(r), fmt(r.cfg("schedule")),
             fmt(r.cfg("warmup_epochs", 0)), fmt(r.cfg("bf16", False)), fmt(r.cfg("synth_per_epoch", 0)),
             fmt(r.cfg("holdout", 0)), _heads(r), fmt(r.cfg("tta")), fmt(r.cfg("seed"))] for r in runs]
    if not rows:
        return ["> No runs.", ""]
    return [md_table(header, rows), "",
            ("Loss = cls_weight x NLL(class) + lambda_cnt x SmoothL1(counts); training stops after `patience` epochs "
            "without improvement of the monitored metric, and the best epoch's weights are evaluated. The metric is "
            "monitored on the validation images (the assignment's protocol) unless `holdout` > 0, in which case the "
            "last `holdout` training images are held out for it and not trained on. heads: hidden units of each "
            "head's Linear-SiLU-Linear, and the dropout before and inside it."), ""]


def _results(out: Path, runs: list[Run], rows: list[dict]) -> list[str]:
    s = ["### Results table", "", results_table_md(rows)]
    sv = [(r, row) for r, row in zip(runs, rows) if isinstance(r.metrics.get("single_view"), dict)]
    if sv and any(r.metrics.get("tta") for r, _ in sv):
        t = []
        for r, row in sv:
            v = r.metrics["single_view"]
            key = "top1_accuracy" if r.class_head else "count_decoded_accuracy"
            mark = "" if r.class_head else " ‡"
            t.append([r.label, fmt(_num(v.get(key))) + mark, fmt(_num(r.metrics.get(key))) + mark,
                      fmt(_num(v.get("rmse"))) if r.count_head else NOT_TRAINED_CNT,
                      fmt(_num(r.metrics.get("rmse"))) if r.count_head else NOT_TRAINED_CNT])
        s += ["### Test-time augmentation", "", md_table(["run", "top-1 single view", "top-1 with TTA",
                                                          "RMSE single view", "RMSE with TTA"], t),
              "", "(‡: count-decoded accuracy of a run without a trained class head; † as above.)", ""]
    s += ["### Per-pair accuracy", "", per_pair_md(runs)]
    s += ["### Per-epoch curves", "", _fig(out, f"{COMPARISON_DIR}/curves.png", "Per-epoch curves of all runs "
                                           "(validation images, or the held-out ones when holdout > 0)")]
    for r in runs:
        s += [f"#### {r.label}", ""]
        ev = plots.eval_set_name(r.config)
        for f, cap in (("loss.png", "loss per epoch"), ("top1.png", f"{ev} top-1 per epoch"),
                       ("rmse.png", f"{ev} RMSE per epoch")):
            s.append(_fig(out, r.rel(out, plots.PLOTS_DIR, f), f"{r.label}: {cap}"))
    return s


def _confusions(out: Path, runs: list[Run]) -> list[str]:
    s = [_fig(out, f"{COMPARISON_DIR}/confusions.png", "Type-pair confusion per run")]
    for r in runs:
        s += [f"### {r.label}", ""]
        src = "" if r.class_head else " (class decoded from the count head)"
        s.append(_fig(out, r.rel(out, plots.PLOTS_DIR, "confusion_135.png"), f"{r.label}: 135-class confusion{src}"))
        note = "" if r.count_head else " (count head not trained: untrained outputs)"
        s.append(_fig(out, r.rel(out, plots.PLOTS_DIR, "count_confusion.png"),
                      f"{r.label}: per-type count matrices{note}"))
    return s


def error_analysis(run: Run, top: int = 8) -> dict[str, Any] | None:
    """Numbers of section 8 for one run, from predictions.csv (None without it)."""
    if run.preds is None:
        return None
    p = run.preds
    true, pred = p["true_class"], run.pred_class()
    n = len(true)
    wrong = pred != true
    same_pair = wrong & (true // labels.SPLITS == pred // labels.SPLITS)
    split_off = np.abs(true % labels.SPLITS - pred % labels.SPLITS)[same_pair]
    cm = plots.confusion(true, pred, labels.NUM_CLASSES)
    np.fill_diagonal(cm, 0)
    order = np.argsort(-cm, axis=None, kind="stable")[:top]
    classes = [(int(i // labels.NUM_CLASSES), int(i % labels.NUM_CLASSES), int(cm.flat[i])) for i in order
               if cm.flat[i] > 0]
    pcm = plots.confusion(true // labels.SPLITS, pred // labels.SPLITS, labels.NUM_PAIRS)
    np.fill_diagonal(pcm, 0)
    porder = np.argsort(-pcm, axis=None, kind="stable")[:5]
    pairs = [(int(i // labels.NUM_PAIRS), int(i % labels.NUM_PAIRS), int(pcm.flat[i])) for i in porder
             if pcm.flat[i] > 0]
    tc = plots.true_counts(p)
    sources = {}
    if run.count_head and all(c in p for c in plots.PRED_TYPE_COLS):
        sources["count head"] = plots.pred_counts(p)
    if run.class_head:
        sources["implied by the predicted class"] = np.array([labels.class_to_counts(int(k)) for k in p["pred_class"]],
                                                            dtype=float).reshape(-1, labels.NUM_TYPES)
    count_err = {}
    for name, pc in sources.items():
        abs_err = np.abs(pc - tc)
        rounded = np.abs(np.clip(np.rint(pc), 0, labels.TOTAL) - tc)
        count_err[name] = {
            "mae_per_type": abs_err.mean(axis=0).tolist() if n else [math.nan] * labels.NUM_TYPES,
            "hist": [float(np.mean(rounded == 0)), float(np.mean(rounded == 1)), float(np.mean(rounded == 2)),
                     float(np.mean(rounded > 2))] if n else [math.nan] * 4,
            "all_exact": float(np.mean(np.all(rounded == 0, axis=1))) if n else math.nan,
        }
    return {"n": n, "errors": int(wrong.sum()), "same_pair": int(same_pair.sum()),
            "split_off": [int(np.sum(split_off == 1)), int(np.sum(split_off == 2)), int(np.sum(split_off > 2))],
            "top_classes": classes, "top_pairs": pairs, "count_errors": count_err}


def _errors(out: Path, runs: list[Run]) -> list[str]:
    s = []
    for r in runs:
        s += [f"### {r.label}", ""]
        e = error_analysis(r)
        if e is None:
            s += ["> Not available: no predictions.csv.", ""]
            continue
        src = "" if r.class_head else ", class decoded from the count head"
        n, k = e["n"], e["errors"]
        if k == 0:
            s += [f"No misclassified validation images out of {n}{src}.", ""]
        else:
            o1, o2, o3 = e["split_off"]
            s += [(f"{k} of {n} validation images misclassified ({k / max(n, 1):.3f}{src}). Of these, "
                  f"{e['same_pair']} ({e['same_pair'] / k:.3f}) have the right type pair and a wrong split "
                  f"(first type's count off by 1: {o1}, by 2: {o2}, by more: {o3}); {k - e['same_pair']} "
                  f"({(k - e['same_pair']) / k:.3f}) have a wrong type pair."), ""]
            s += ["Most confused classes (true -> predicted):", "",
                  md_table(["true class", "predicted class", "images", "same type pair"],
                           [[labels.class_name(t), labels.class_name(q), c,
                             fmt(labels.class_to_pair(t) == labels.class_to_pair(q))]
                            for t, q, c in e["top_classes"]]), ""]
            if e["top_pairs"]:
                s += ["Most confused type pairs (true -> predicted):", "",
                      md_table(["true pair", "predicted pair", "images"],
                               [[labels.pair_name(a), labels.pair_name(b), c] for a, b, c in e["top_pairs"]]), ""]
        if e["count_errors"]:
            s += ["Mean absolute count error by type:", "",
                  md_table(["counts from", *labels.TYPE_PLURAL],
                           [[name, *(fmt(v) for v in d["mae_per_type"])] for name, d in e["count_errors"].items()]),
                  "", ("Distribution of |count error| over all (image, type) entries (predicted counts rounded and "
                      "clipped to 0..10):"), "",
                  md_table(["counts from", "0", "1", "2", ">2", "all 6 counts exact"],
                           [[name, *(fmt(v) for v in d["hist"]), fmt(d["all_exact"])]
                            for name, d in e["count_errors"].items()]), ""]
        if not r.count_head:
            s += [("(The count head of this run was not trained, so only the counts implied by its predicted class "
                  "are scored.)"), ""]
        gal = r.rel(out, plots.PLOTS_DIR, plots.WORST_ERRORS)
        if (out / gal).is_file():
            s.append(_fig(out, gal, f"{r.label}: most confidently wrong validation images"))
        else:
            s += [("> No worst-errors gallery (`plots/worst_errors.png` is made only when the validation images are "
                  "passed to make_run_plots)."), ""]
    return s or ["> No runs.", ""]


def _std(p: float | None, n: int | None) -> float | None:
    if p is None or not n:
        return None
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def _mcnemar(a: Run, b: Run) -> tuple[int, int] | None:
    """(images a gets right and b wrong, b right and a wrong) on the validation images both predicted."""
    if a.preds is None or b.preds is None or "name" not in a.preds or "name" not in b.preds:
        return None
    ia = {str(n): i for i, n in enumerate(a.preds["name"])}
    common = [(ia[str(n)], j) for j, n in enumerate(b.preds["name"]) if str(n) in ia]
    if not common:
        return None
    i, j = np.array(common).T
    ra = a.pred_class()[i] == a.preds["true_class"][i]
    rb = b.pred_class()[j] == b.preds["true_class"][j]
    return int(np.sum(ra & ~rb)), int(np.sum(rb & ~ra))


def _compare_acc(what: str, a: Run, pa: float, b: Run, pb: float) -> str:
    n = a.n_val or b.n_val
    d = pa - pb
    sa, sb = _std(pa, a.n_val), _std(pb, b.n_val)
    txt = (f"{what}: {a.label} {fmt(pa)} vs {b.label} {fmt(pb)}, a difference of {d:+.3f} "
           f"({100 * d:+.1f} points)")
    if sa is not None and sb is not None:
        sd = math.sqrt(sa ** 2 + sb ** 2)
        z = abs(d) / sd if sd > 0 else math.inf
        verdict = "larger than" if z > 2 else "within"
        txt += (f". On n = {n} validation images the binomial std of each accuracy is about {fmt(sa)} and "
                f"{fmt(sb)}, so the std of the difference is about {fmt(sd)}: the difference is {z:.1f} std, "
                f"{verdict} two std of single-run noise")
    return txt + "."


def _discussion(runs: list[Run], rows: list[dict]) -> list[str]:
    s = []
    row = {r["run"]: r for r in rows}
    mt = _pick(runs, "multitask", "multitask")
    co = _pick(runs, "classification-only", "classification")
    ro = _pick(runs, "regression-only", "regression")
    s += ["### Multitask effect", ""]
    if mt and co and row[mt.name]["top1"] is not None and row[co.name]["top1"] is not None:
        s.append("- " + _compare_acc("Top-1 accuracy", mt, row[mt.name]["top1"], co, row[co.name]["top1"]))
        mc = _mcnemar(mt, co)
        if mc is not None:
            b, c = mc
            z = (b - c) / math.sqrt(b + c) if b + c else 0.0
            if b + c == 0:
                s.append(f"- {mt.label} and {co.label} are right on exactly the same validation images.")
            else:
                s.append(f"- On the same validation images, {b} are right only for {mt.label} and {c} only for "
                         f"{co.label} (paired McNemar z = {z:+.2f}; |z| > 2 would be unlikely under equal "
                         "accuracy).")
    else:
        s.append("- Multitask vs classification-only top-1: not available (one of the two runs is missing).")
    if mt and ro and row[mt.name]["rmse"] is not None and row[ro.name]["rmse"] is not None:
        rm, rr = row[mt.name]["rmse"], row[ro.name]["rmse"]
        rel = f" ({100 * (rm - rr) / rr:+.1f}% relative)" if rr else ""
        s.append(f"- Count RMSE: {mt.label} {fmt(rm)} vs {ro.label} {fmt(rr)}, a difference of {rm - rr:+.3f}"
                 f"{rel} (lower is better); MAE {fmt(row[mt.name]['mae'])} vs {fmt(row[ro.name]['mae'])}.")
        cm_, cr = row[mt.name]["count_decoded_accuracy"], row[ro.name]["count_decoded_accuracy"]
        if cm_ is not None and cr is not None:
            s.append("- " + _compare_acc("Accuracy of the class decoded from the count head", mt, cm_, ro, cr))
    else:
        s.append("- Multitask vs regression-only RMSE: not available (one of the two runs is missing).")
    s += ["", "### Loss weight lambda_cnt", ""]
    with_cls = [r for r in runs if r.class_head and r.lambda_cnt is not None]
    lams = sorted({r.lambda_cnt for r in with_cls})
    if not lams:
        s.append("No run with a trained class head and a known lambda_cnt.")
    elif set(lams) <= {0.0, 5.0}:
        s.append("Only lambda_cnt = " + " and ".join(f"{v:g}" for v in lams) + " were run (0 = classification-only, "
                 "5 = the multitask default), so the effect of lambda is the multitask effect above; no other value "
                 "was measured and nothing is claimed about an optimal lambda.")
    else:
        t = []
        for r in sorted(with_cls, key=lambda r: r.lambda_cnt):
            rw = row[r.name]
            t.append([r.label, fmt(r.lambda_cnt, 2), fmt(rw["top1"]), fmt(_std(rw["top1"], r.n_val)),
                      fmt(rw["rmse"]) if r.count_head else NOT_TRAINED_CNT])
        s += [md_table(["run", "lambda_cnt", "top-1", "binomial std", "RMSE"], t), ""]
        ranked = sorted(with_cls, key=lambda r: -(row[r.name]["top1"] or 0))
        best = ranked[0]
        s.append(f"Highest top-1: lambda_cnt = {best.lambda_cnt:g} ({best.label}, {fmt(row[best.name]['top1'])}).")
        if len(ranked) > 1:
            s.append(" " + _compare_acc("Against the runner-up", best, row[best.name]["top1"], ranked[1],
                                        row[ranked[1].name]["top1"]))
    s += ["", "### Caveat", "",
          ("Every number comes from a single training run (one seed) evaluated on one validation split. The binomial "
          "std sqrt(p(1-p)/n) above only covers the sampling of validation images; seed-to-seed variation of "
          "training is not measured and can be of the same order or larger, so differences within about "
          "two std should not be read as real effects.")]
    stds = [f"{r['label']} {fmt(_std(r['top1'], r['n_val']))}" for r in rows if r["top1"] is not None and r["n_val"]]
    if stds:
        s[-1] += " Binomial std of top-1 per run: " + "; ".join(stds) + "."
    return s + [""]


def build_markdown(out: Path, runs: list[Run], meta: dict | None, notes: list[str], rows: list[dict]) -> str:
    s = ["# shapecount: classification and counting on GSN, reproduction report", ""]
    s += [f"Generated from the files in this folder by `shapecount.report` ({len(runs)} runs).", ""]
    body = [_summary(out, runs, rows, meta, notes), _eda(out), _architecture(out, runs), _augmentations(runs),
            _setups(runs), _results(out, runs, rows), _confusions(out, runs), _errors(out, runs),
            _discussion(runs, rows)]
    for title, part in zip(SECTIONS, body):
        s += [f"## {title}", "", *part, ""]
    ablation = out / ABLATION_FILE
    if ablation.is_file():  # copied in by `shapecount report --ablation ROOT`
        s += [f"## {ABLATION_SECTION}", "", ABLATION_INTRO, "", ablation.read_text(encoding="utf-8"), ""]
    text = "\n".join(s)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


# ====================================================================== markdown -> self-contained HTML

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#222;background:#fafafa;
margin:0;line-height:1.5}
main{max-width:1100px;margin:0 auto;padding:24px 32px;background:#fff;box-shadow:0 0 8px rgba(0,0,0,.06)}
h1{border-bottom:2px solid #333;padding-bottom:6px}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;margin:12px 0;font-size:13px;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f3f3f3;padding:1px 4px;border-radius:3px;font-size:90%}
pre{background:#f6f8fa;border:1px solid #e1e4e8;padding:10px;overflow-x:auto;font-size:12px;line-height:1.35}
pre code{background:none;padding:0}
figure{margin:16px 0;text-align:center}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:13px;color:#555}
blockquote{margin:10px 0;padding:6px 12px;border-left:4px solid #e0a800;background:#fff8e1;color:#5d4500}
nav.toc{background:#f6f8fa;border:1px solid #e1e4e8;padding:8px 16px;margin:12px 0}nav.toc ol{margin:4px 0}
"""

_NUM_RE = re.compile(r"^[+-]?\d+(\.\d+)?( [†‡])?$")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _inline(text: str) -> str:
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if len(part) >= 2 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            e = html.escape(part, quote=False)
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", e))
    return "".join(out)


def _split_row(line: str) -> list[str]:
    inner = line.strip()
    inner = inner.removeprefix("|")
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def markdown_to_html(md: str, base: Path, title: str = "report") -> str:
    """The subset of markdown this module writes (and eda/summary.md is expected to use) -> a self-contained page:
    headings, paragraphs, pipe tables, lists, block quotes, code fences, `code`, **bold** and images, which are
    embedded as data URIs (an image file that is missing becomes a note)."""
    lines = md.splitlines()
    body: list[str] = []
    toc: list[tuple[str, str]] = []
    para: list[str] = []
    used: dict[str, int] = {}
    i = 0

    def flush() -> None:
        if para:
            body.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        st = line.strip()
        if st.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            body.append("<pre><code>" + html.escape("\n".join(lines[i + 1:j])) + "</code></pre>")
            i = j + 1
            continue
        m = re.match(r"(#{1,6}) (.*)", st)
        if m:
            flush()
            level, text = len(m.group(1)), m.group(2).strip()
            sid = _slug(text)
            if sid in used:
                used[sid] += 1
                sid = f"{sid}-{used[sid]}"
            used.setdefault(sid, 0)
            if level == 2:
                toc.append((sid, text))
            body.append(f'<h{level} id="{sid}">{_inline(text)}</h{level}>')
            i += 1
            continue
        m = re.match(r"!\[(.*?)\]\((.*?)\)$", st)
        if m:
            flush()
            cap, src = m.group(1), m.group(2)
            p = base / src
            if p.is_file():
                body.append(f'<figure><img src="{_data_uri(p)}" alt="{html.escape(cap)}">'
                            f"<figcaption>{_inline(cap)}</figcaption></figure>")
            else:
                body.append(f"<blockquote>Not available: <code>{html.escape(src)}</code> is missing.</blockquote>")
            i += 1
            continue
        if st.startswith("|"):
            flush()
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(_split_row(lines[i]))
                i += 1
            has_sep = len(block) > 1 and all(re.fullmatch(r":?-{1,}:?", c) for c in block[1] if c)
            head, rows = (block[0], block[2:]) if has_sep else ([], block)
            t = ["<table>"]
            if head:
                t.append("<thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead>")
            t.append("<tbody>")
            for r in rows:
                t.append("<tr>" + "".join(f'<td class="num">{_inline(c)}</td>' if _NUM_RE.match(c)
                                          else f"<td>{_inline(c)}</td>" for c in r) + "</tr>")
            t.append("</tbody></table>")
            body.append("".join(t))
            continue
        if re.match(r"([-*]|\d+\.) ", st):
            flush()
            ordered = bool(re.match(r"\d+\. ", st))
            tag = "ol" if ordered else "ul"
            items = []
            while i < len(lines) and re.match(r"([-*]|\d+\.) ", lines[i].strip()):
                items.append(re.sub(r"^([-*]|\d+\.) ", "", lines[i].strip()))
                i += 1
                while i < len(lines) and lines[i].startswith("  ") and lines[i].strip() \
                        and not re.match(r"([-*]|\d+\.) ", lines[i].strip()):
                    items[-1] += " " + lines[i].strip()
                    i += 1
            body.append(f"<{tag}>" + "".join(f"<li>{_inline(x)}</li>" for x in items) + f"</{tag}>")
            continue
        if st.startswith(">"):
            flush()
            q = []
            while i < len(lines) and lines[i].strip().startswith(">"):
                q.append(lines[i].strip()[1:].strip())
                i += 1
            body.append("<blockquote>" + _inline(" ".join(q)) + "</blockquote>")
            continue
        if not st:
            flush()
        else:
            para.append(st)
        i += 1
    flush()
    nav = ""
    if toc:
        nav = '<nav class="toc"><strong>Contents</strong><ol>' + "".join(
            f'<li><a href="#{sid}">{_inline(re.sub(r"^[0-9]+[.] ", "", t))}</a></li>' for sid, t in toc) + "</ol></nav>"
    if body and body[0].startswith("<h1"):
        body.insert(1, nav)
    else:
        body.insert(0, nav)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


# ====================================================================== write_report

def write_report(reproduce_dir: Path, make_plots: bool = True) -> tuple[Path, Path]:
    """Write OUT/comparison/ (via compare), OUT/report.md and the self-contained OUT/report.html.

    With make_plots, a run folder without plots/ gets them from plots.make_run_plots (run files only)."""
    out = Path(reproduce_dir)
    runs, meta, notes = discover_runs(out)
    if make_plots:
        for r in runs:
            if not (r.dir / plots.PLOTS_DIR / "loss.png").is_file():
                plots.make_run_plots(r.dir)
    res = _compare(out, runs, notes)
    md = build_markdown(out, runs, meta, notes, res["rows"])
    md_path = plots.atomic_write_text(out / "report.md", md)
    page = markdown_to_html(md, out, title="shapecount report")
    html_path = plots.atomic_write_text(out / "report.html", page)
    return md_path, html_path
