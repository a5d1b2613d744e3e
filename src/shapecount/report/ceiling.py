"""The exact-decoding ceiling in the report: what the pixels allow on the validation images, and which of a
model's errors were avoidable (images the exact decoder decides uniquely) or not (ambiguous images).

Reads OUT/audit/summary.json and OUT/audit/witnesses.jsonl (written by `shapecount audit --out` or by
`reproduce`). A witness redraws its image exactly, so the gallery needs no dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shapecount import fileio
from shapecount import labels as L
from shapecount.exact import overlap
from shapecount.exact.audit import is_decidable, map_correct, read_audit, split_correct
from shapecount.mdtable import md_table
from shapecount.report.runs import Run
from shapecount.report.tables import fmt

AUDIT_DIR = "audit"
GALLERY = "decidable_errors.png"
# One colour per shape type (labels.TYPES order) for the witness outlines.
TYPE_COLOURS = ((0.89, 0.10, 0.11), (0.22, 0.49, 0.72), (0.30, 0.69, 0.29), (0.60, 0.31, 0.64),
                (1.00, 0.50, 0.00), (0.65, 0.34, 0.16))
COLOUR_NAMES = ("red", "blue", "green", "purple", "orange", "brown")


def load_audit(out: Path) -> dict[str, Any] | None:
    """{"summary": summary.json, "rows": {image name: audit record}} of OUT/audit, or None when there is none."""
    audit = read_audit(Path(out) / AUDIT_DIR)
    return None if audit is None else {"summary": audit.summary, "rows": {r["name"]: r for r in audit.rows}}


def split_accuracy(run: Run, audit: dict[str, Any]) -> dict[str, Any] | None:
    """A run's top-1 on the decidable and on the ambiguous validation images (exact.audit.split_correct), and
    its decidable errors as (name, true class, predicted class); None when it covers no audited image."""
    correct = run_correct(run)
    if correct is None:
        return None
    rows = audit["rows"]
    sp = split_correct(rows, correct)
    if not sp["n_dec"] + sp["n_amb"]:  # the audit may cover only some of the images
        return None
    p = run.preds
    sp["wrong_dec"] = [(str(n), int(t), int(q)) for n, t, q in zip(p["name"], p["true_class"], run.pred_class())
                       if str(n) in rows and is_decidable(rows[str(n)]) and not correct[str(n)]]
    return sp


def summary_line(audit: dict[str, Any]) -> str:
    s = audit["summary"]
    return (f"Exact-decoding ceiling on these {s['n_images']} validation images: the MAP class of the exact "
            f"posterior is right on **{fmt(s['map_accuracy'])}** (Bayes-optimal estimate "
            f"{fmt(s['bayes_accuracy_estimate'])}); {s['n_unique']} images are decided uniquely by their pixels, "
            f"{s['n_ambiguous']} are ambiguous, {s['n_infeasible']} labels are infeasible, {s['n_unknown']} "
            "searches unfinished (`shapecount audit`).")


def ceiling_table(runs: list[Run], rows: list[dict], audit: dict[str, Any]) -> list[str]:
    s = audit["summary"]
    best = split_correct(audit["rows"], map_correct(audit["rows"]))
    body = [["exact decoding, MAP (ceiling)", fmt(s["map_accuracy"]), "1.000", fmt(best["acc_amb"]), "0",
             str(best["errors_amb"])]]
    for r, row in zip(runs, rows):
        sp = split_accuracy(r, audit)
        if sp is None or row["top1"] is None:
            continue
        n = sp["n_dec"] + sp["n_amb"]
        acc = (n - sp["errors_dec"] - sp["errors_amb"]) / n
        body.append([r.label, fmt(acc), fmt(sp["acc_dec"]), fmt(sp["acc_amb"]), str(sp["errors_dec"]),
                     str(sp["errors_amb"])])
    head = ["", f"top-1 ({s['n_images']} audited)", f"top-1 decidable ({s['n_unique']})",
            f"top-1 ambiguous ({s['n_images'] - s['n_unique']})", "errors decidable", "errors ambiguous"]
    return [md_table(head, body), "",
            ("Decidable: the exact decoder finds exactly one class that can draw the image under the generator's "
             "rules, so an error there is avoidable; on ambiguous images (two same-type shapes on one anchor "
             "cancel, so the hidden pair could be of either type) even the ceiling guesses. The ceiling row's "
             "decidable accuracy is 1 by definition; on the ambiguous images it takes the most probable class."), ""]


def run_correct(run: Run) -> dict[str, bool] | None:
    """Whether the run's class is right, per validation image name (None without predictions)."""
    p = run.preds
    if p is None:
        return None
    return overlap.correct_by_name(p["name"], run.pred_class(), p["true_class"])


# measure (exact.overlap.MEASURES) -> (heading, what the groups are)
GROUPED_BY = {
    "overlap": ("Top-1 by how much the shapes overlap",
                ("their overlap share: of the pixels the shapes of the label's witness cover, the share covered by two "
                "or more (XOR keeps only their parity, so the shapes there hide one another). The exact decoder is "
                "right on all of them. Errors that come from shapes hiding one another gather in the last groups; "
                "those in the first group are on images whose shapes barely overlap.")),
    "visible": ("Top-1 by how visible the least visible shape is",
                ("their least visible share: of each shape's whole area, the share inside the image that no other "
                "shape covers, the smallest over the image's 10 shapes (a shape mostly hidden by others or cut by "
                "the border gives a small share). The exact decoder is right on all of them.")),
}


def grouped_tables(runs: list[Run], audit: dict[str, Any], bins: int = 5) -> list[str]:
    """grouped_table for each measure of GROUPED_BY, the witnesses drawn once for all."""
    values = overlap.decidable_measures(audit["rows"], tuple(GROUPED_BY))
    return [line for measure in GROUPED_BY for line in grouped_table(runs, values[measure], measure, bins)]


def grouped_table(runs: list[Run], values: dict[str, float], measure: str, bins: int = 5) -> list[str]:
    """Each run's top-1 on the decidable images, in groups of equal size by a measure of how much their shapes
    hide one another (values: {image name: value}, exact.overlap.decidable_measures)."""
    if len(values) < bins:
        return []
    edges = overlap.bin_edges(values, bins)
    body = []
    for r in runs:
        correct = run_correct(r)
        if correct is None:
            continue
        groups = overlap.top1_by_group(values, edges, correct)
        if sum(g["n"] for g in groups):
            body.append([r.label, *(fmt(g["top1"]) if g["top1"] is not None else "n/a" for g in groups)])
    if not body:
        return []
    label = overlap.MEASURES[measure][1]
    head = ["", *(f"{label} {g['lo']:.2f}-{g['hi']:.2f}" for g in overlap.top1_by_group(values, edges, {}))]
    title, what = GROUPED_BY[measure]
    return [f"#### {title}", "", f"The {len(values)} decidable images in {bins} groups of equal size by {what}", "",
            md_table(head, body), ""]


def plot_decidable_errors(run: Run, audit: dict[str, Any], path: Path, k: int = 12) -> Path | None:
    """Up to k decidable validation images the run gets wrong, each drawn from its label's witness."""
    sp = split_accuracy(run, audit)
    if sp is None or not sp["wrong_dec"]:
        return None
    from shapecount import plots

    wrong = sp["wrong_dec"][:k]
    cols = min(6, len(wrong))
    nrows = (len(wrong) + cols - 1) // cols
    fig = plots.new_figure(figsize=(2.3 * cols, 2.7 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, t, q) in zip(axes.flat, wrong):
        ink, shapes = overlap.witness_masks(audit["rows"][name], t)
        ax.imshow(ink, cmap="gray", vmin=0, vmax=1.6, interpolation="nearest")
        for kind, m in shapes:  # each shape's outline between pixels, so the ink stays readable
            ax.contour(m.astype(float), levels=[0.5], colors=[TYPE_COLOURS[kind]], linewidths=1.2)
        ax.set_title(f"{name}\ntrue {L.class_name(t)}\npred {L.class_name(q)}", fontsize=6)
    key = ", ".join(f"{n} {c}" for n, c in zip(L.TYPE_PLURAL, COLOUR_NAMES))
    fig.suptitle(f"{run.label}: decidable images it gets wrong, with the witness of the true class outlined "
                 f"({key})", fontsize=8)
    return plots.save_figure(fig, path)


def write_audit_files(out: Path, audit_result) -> None:
    """OUT/audit/ from an `exact.audit.Audit` (used by reproduce)."""
    from shapecount.exact.audit import write_audit

    write_audit(audit_result, Path(out) / AUDIT_DIR)
    fileio.write_text(Path(out) / AUDIT_DIR / "README.md",
                      "Exact decoding of the validation images (`shapecount audit --split val`): audit.csv, "
                      "witnesses.jsonl, summary.json.\n")
