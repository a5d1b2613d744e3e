"""The text of the report, one function per section: each returns the section's Markdown lines.

Numbers come from analysis.py and tables from tables.py; sections 4 and 5 (how the runs were set up) are in
setups.py. Those two and the ablation section are mostly fixed prose, kept as Jinja2 templates
(templates/*.md.j2) filled with the runs' values. Figures are referenced by their path relative to the reproduce
folder, or replaced by a note when the file is missing.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from shapecount import labels, plots, runfolder
from shapecount.mdtable import md_table
from shapecount.report import ceiling
from shapecount.report.analysis import (
    ACCURACY_LEVELS,
    binomial_std,
    error_analysis,
    mcnemar,
    time_to_accuracy,
)
from shapecount.report.runs import COMPARISON_DIR, EDA_DIR, MULTITASK_LAMBDA, Run, num, pick
from shapecount.report.setups import augmentations, setups
from shapecount.report.tables import NOT_TRAINED_CNT, csv_to_md, fmt, per_pair_md, results_table_md
from shapecount.report.text import demote, fig, render

SECTIONS = ("1. Summary", "2. Data (EDA)", "3. Architecture", "4. Augmentations and why", "5. Setups",
            "6. Results", "7. Confusion matrices", "8. Error analysis", "9. Discussion")
ABLATION_FILE = "ablation.md"
ABLATION_SECTION = "10. Ablation"


def _summary(out: Path, runs: list[Run], rows: list[dict], meta: dict | None, notes: list[str]) -> list[str]:
    s = []
    audit = ceiling.load_audit(out)
    if audit is not None:
        s.append("- " + ceiling.summary_line(audit))
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
        if runfolder.trained_at_once(meta):
            s.append("- The experiments trained at once, one process each, sharing the cores: their wall times "
                     "overlap, and each time budget is the whole training time.")
        s.append("")
    if notes:
        s += ["Notes:", ""]  # a blank line, so that Markdown starts the list
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
        text = demote(summary, 2)
        # figure paths in summary.md are relative to eda/; the report lives one folder up
        text = re.sub(r"!\[(.*?)\]\((?![a-z]+:|/)(.*?)\)", rf"![\1]({EDA_DIR}/\2)", text)
        s += [text]
    else:
        s += ["> `eda/summary.md` is missing.", ""]
    s += ["### Class histogram", "", fig(out, f"{EDA_DIR}/class_histogram.png", "Images per class (135 classes)")]
    s += ["### Counts per type", ""]
    if (d / "count_table.md").is_file():
        table = (d / "count_table.md").read_text(encoding="utf-8")
        rows = [ln.strip() for ln in table.splitlines() if ln.strip().startswith("|")]
        if rows and all(r in summary for r in rows[:3]):
            s += ["(The table is part of the EDA summary above.)", ""]
        else:
            s += [demote(table, 3)]
    elif (d / "count_table.csv").is_file():
        s += [csv_to_md(d / "count_table.csv")]
    else:
        s += ["> Not available: `eda/count_table.md` is missing.", ""]
    s += ["### Examples", "", fig(out, f"{EDA_DIR}/examples.png", "Example images with their labels")]
    s += ["### Pair balance", "", fig(out, f"{EDA_DIR}/pair_balance.png", "Images per type pair")]
    if (d / "pair_balance.csv").is_file():
        s += [csv_to_md(d / "pair_balance.csv")]
    return s


def _architecture(out: Path, runs: list[Run]) -> list[str]:
    ref = pick(runs, "multitask", "multitask")
    cands = ([ref] if ref else []) + [r for r in runs if r is not ref]
    for r in cands:
        p = r.dir / runfolder.MODEL_FILE
        if p.is_file():
            text = p.read_text(encoding="utf-8").rstrip().replace("```", "'''")
            return [f"Module tree and parameter counts of the {r.label} run (`{r.rel(out, 'model.txt')}`):", "",
                    "```", text, "```", ""]
    return ["> Not available: no run has a model.txt.", ""]


def _results(out: Path, runs: list[Run], rows: list[dict], meta: dict | None) -> list[str]:
    s = ["### Results table", "", results_table_md(rows)]
    audit = ceiling.load_audit(out)
    if audit is not None:
        s += ["### Against the exact-decoding ceiling", "", ceiling.summary_line(audit), "",
              *ceiling.ceiling_table(runs, rows, audit), *ceiling.grouped_tables(runs, audit)]
    sv = [(r, row) for r, row in zip(runs, rows) if isinstance(r.metrics.get("single_view"), dict)]
    if sv and any(r.metrics.get("tta") for r, _ in sv):
        t = []
        for r, row in sv:
            v = r.metrics["single_view"]
            key = "top1_accuracy" if r.class_head else "count_decoded_accuracy"
            mark = "" if r.class_head else " ‡"
            t.append([r.label, fmt(num(v.get(key))) + mark, fmt(num(r.metrics.get(key))) + mark,
                      fmt(num(v.get("rmse"))) if r.count_head else NOT_TRAINED_CNT,
                      fmt(num(r.metrics.get("rmse"))) if r.count_head else NOT_TRAINED_CNT])
        s += ["### Test-time augmentation", "", md_table(["run", "top-1 single view", "top-1 with TTA",
                                                          "RMSE single view", "RMSE with TTA"], t),
              "", "(‡: count-decoded accuracy of a run without a trained class head; † as above.)", ""]
    s += ["### Per-pair accuracy", "", per_pair_md(runs)]
    s += _time_to_accuracy(out, runs, runfolder.trained_at_once(meta))
    s += ["### Per-epoch curves", "", fig(out, f"{COMPARISON_DIR}/curves.png", "Per-epoch curves of all runs "
                                           "(validation images, or the held-out ones when holdout > 0)")]
    for r in runs:
        s += [f"#### {r.label}", ""]
        ev = runfolder.eval_set_name(r.config)
        for f, cap in (("loss.png", "loss per epoch"), ("top1.png", f"{ev} top-1 per epoch"),
                       ("rmse.png", f"{ev} RMSE per epoch")):
            s.append(fig(out, r.rel(out, plots.PLOTS_DIR, f), f"{r.label}: {cap}"))
    return s


def _time_to_accuracy(out: Path, runs: list[Run], shared: bool = False) -> list[str]:
    """Training wall time to reach each top-1 level, per run, and the curve behind it."""
    rows = []
    for r in runs:
        t = time_to_accuracy(r)
        if t is None:
            continue
        cells = [f"{t[level] / 60:.1f} min" if t[level] is not None else "not reached" for level in ACCURACY_LEVELS]
        label = r.label + (" (class from counts)" if t["from_counts"] else "")
        rows.append([label, *cells, f"{t['minutes'][-1]:.1f} min"])
    if not rows:
        return []
    heads = ["run", *(f"top-1 {level:g}" for level in ACCURACY_LEVELS), "whole training"]
    text = ("Training wall time (per-epoch evaluation included, start-up and the final evaluation not) until the "
            "per-epoch top-1 first reaches 0.521 (the best public solution), 0.80 and 0.90. The per-epoch top-1 "
            "is single-view, on the images each run selects its epoch on (a run without a class head: the class its "
            "counts decode to); the results table's figures use the selected epoch with test-time augmentation on "
            "the validation images."
            + (" The runs trained at once, sharing the cores: each time is shared wall time, during which every "
               "run had a share of the machine." if shared else ""))
    return ["### Time to accuracy", "", text, "",
            md_table(heads, rows), "",
            fig(out, f"{COMPARISON_DIR}/time_to_accuracy.png", "Top-1 against training wall time"), ""]


def _confusions(out: Path, runs: list[Run]) -> list[str]:
    s = [fig(out, f"{COMPARISON_DIR}/confusions.png", "Type-pair confusion per run")]
    for r in runs:
        s += [f"### {r.label}", ""]
        src = "" if r.class_head else " (class decoded from the count head)"
        s.append(fig(out, r.rel(out, plots.PLOTS_DIR, "confusion_135.png"), f"{r.label}: 135-class confusion{src}"))
        note = "" if r.count_head else " (count head not trained: untrained outputs)"
        s.append(fig(out, r.rel(out, plots.PLOTS_DIR, "count_confusion.png"),
                      f"{r.label}: per-type count matrices{note}"))
    return s


def _decidable_errors(out: Path, r: Run, audit: dict | None) -> list[str]:
    """How many of a run's errors the pixels decide, and the gallery of those (drawn from their witness)."""
    if audit is None:
        return []
    sp = ceiling.split_accuracy(r, audit)
    if sp is None:
        return ["> The audit in audit/ does not cover this run's validation images.", ""]
    s = [(f"Against the exact decoder: {sp['errors_dec']} errors on the {sp['n_dec']} images whose pixels decide the "
          f"class (avoidable; top-1 there {fmt(sp['acc_dec'])}), {sp['errors_amb']} on the {sp['n_amb']} ambiguous "
          f"ones (top-1 there {fmt(sp['acc_amb'])})."), ""]
    rel = r.rel(out, plots.PLOTS_DIR, ceiling.GALLERY)
    if ceiling.plot_decidable_errors(r, audit, out / rel) is not None:
        s.append(fig(out, rel, f"{r.label}: decidable validation images it gets wrong, each drawn from the "
                                "witness placement of its true class"))
    return s


def _errors(out: Path, runs: list[Run]) -> list[str]:
    s = []
    audit = ceiling.load_audit(out)
    for r in runs:
        s += [f"### {r.label}", ""]
        s += _decidable_errors(out, r, audit)
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
            s.append(fig(out, gal, f"{r.label}: most confidently wrong validation images"))
        else:
            s += [("> No worst-errors gallery (`plots/worst_errors.png` is drawn by `train` and `evaluate`, which "
                  "have the validation images; plots rebuilt from the run files alone lack it)."), ""]
    return s or ["> No runs.", ""]


def _compare_acc(what: str, a: Run, pa: float, b: Run, pb: float) -> str:
    n = a.n_val or b.n_val
    d = pa - pb
    sa, sb = binomial_std(pa, a.n_val), binomial_std(pb, b.n_val)
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
    mt = pick(runs, "multitask", "multitask")
    co = pick(runs, "classification-only", "classification")
    ro = pick(runs, "regression-only", "regression")
    s += ["### Multitask effect", ""]
    if mt and co and row[mt.name]["top1"] is not None and row[co.name]["top1"] is not None:
        s.append("- " + _compare_acc("Top-1 accuracy", mt, row[mt.name]["top1"], co, row[co.name]["top1"]))
        mc = mcnemar(mt, co)
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
    elif set(lams) <= {0.0, MULTITASK_LAMBDA}:
        s.append("Only lambda_cnt = " + " and ".join(f"{v:g}" for v in lams) + " were run (0 = classification-only, "
                 f"{MULTITASK_LAMBDA:g} = the multitask default), so the effect of lambda is the multitask effect above; no other value "
                 "was measured and nothing is claimed about an optimal lambda.")
    else:
        t = []
        for r in sorted(with_cls, key=lambda r: r.lambda_cnt):
            rw = row[r.name]
            t.append([r.label, fmt(r.lambda_cnt, 2), fmt(rw["top1"]), fmt(binomial_std(rw["top1"], r.n_val)),
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
    stds = [f"{r['label']} {fmt(binomial_std(r['top1'], r['n_val']))}" for r in rows if r["top1"] is not None and r["n_val"]]
    if stds:
        s[-1] += " Binomial std of top-1 per run: " + "; ".join(stds) + "."
    return s + [""]


def ablation(out: Path) -> list[str]:
    """Section 10 when the folder holds ablation.md (copied in by `shapecount report --ablation ROOT`)."""
    path = out / ABLATION_FILE
    if not path.is_file():
        return []
    return render("ablation.md.j2", title=ABLATION_SECTION, table=path.read_text(encoding="utf-8"))


def sections(out: Path, runs: list[Run], meta: dict | None, notes: list[str], rows: list[dict]) -> list[list[str]]:
    """The lines of the sections SECTIONS, in order."""
    return [_summary(out, runs, rows, meta, notes), _eda(out), _architecture(out, runs), augmentations(runs),
            setups(runs), _results(out, runs, rows, meta), _confusions(out, runs), _errors(out, runs),
            _discussion(runs, rows)]
