"""`compare` (OUT/comparison/), `write_report` (OUT/report.md and the self-contained OUT/report.html) and
`clear_outputs` (both removed, for a study started again)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from shapecount import fileio, plots, runfolder
from shapecount.report.analysis import per_pair_row, result_row
from shapecount.report.ceiling import AUDIT_DIR
from shapecount.report.figures import plot_curves, plot_pair_confusions, plot_time_to_accuracy
from shapecount.report.html_page import markdown_to_html
from shapecount.report.runs import COMPARISON_DIR, Run, discover_runs
from shapecount.report.sections import ABLATION_FILE, SECTIONS, ablation, sections
from shapecount.report.tables import per_pair_md, results_csv, results_table_md

REPORT_MD, REPORT_HTML = "report.md", "report.html"


def compare(reproduce_dir: Path) -> dict[str, Any]:
    """Write OUT/comparison/ (results.csv/.md, per_pair.md, curves.png, confusions.png) and return
    {"rows": [result row per run], "per_pair": {run: [15 accuracies]}, "files": [paths], "notes": [...]}."""
    out = Path(reproduce_dir)
    runs, meta, notes = discover_runs(out)
    return _compare(out, runs, meta, notes)


def _compare(out: Path, runs: list[Run], meta: dict | None, notes: list[str]) -> dict[str, Any]:
    cdir = out / COMPARISON_DIR
    cdir.mkdir(parents=True, exist_ok=True)
    rows = [result_row(r) for r in runs]
    files = [fileio.write_text(cdir / "results.csv", results_csv(rows)),
             fileio.write_text(cdir / "results.md", "# Results\n\n" + results_table_md(rows)),
             fileio.write_text(cdir / "per_pair.md", "# Per-pair accuracy\n\n" + per_pair_md(runs))]
    if runs:
        files.append(plot_curves(runs, cdir / "curves.png"))
        timing = plot_time_to_accuracy(runs, cdir / "time_to_accuracy.png", shared=runfolder.trained_at_once(meta))
        if timing is not None:
            files.append(timing)
        conf = plot_pair_confusions(runs, cdir / "confusions.png")
        if conf is not None:
            files.append(conf)
    return {"rows": rows, "per_pair": {r.name: per_pair_row(r) for r in runs}, "files": files, "notes": notes}


def build_markdown(out: Path, runs: list[Run], meta: dict | None, notes: list[str], rows: list[dict]) -> str:
    s = ["# shapecount: classification and counting on GSN, reproduction report", ""]
    s += [f"Generated from the files in this folder by `shapecount.report` ({len(runs)} runs).", ""]
    for title, part in zip(SECTIONS, sections(out, runs, meta, notes, rows)):
        s += [f"## {title}", "", *part, ""]
    s += ablation(out)
    text = "\n".join(s)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def clear_outputs(reproduce_dir: Path) -> None:
    """Remove what the report and its inputs wrote into a reproduce folder (comparison/, audit/, the report, an
    ablation table), so that a study started again from scratch never shows the old one's figures (an audit
    comes back from the data cache in seconds); the run folders are cleared by their own runs."""
    out = Path(reproduce_dir)
    for name in (REPORT_MD, REPORT_HTML, ABLATION_FILE):
        (out / name).unlink(missing_ok=True)
    for folder in (COMPARISON_DIR, AUDIT_DIR):
        shutil.rmtree(out / folder, ignore_errors=True)


def write_report(reproduce_dir: Path, make_plots: bool = True) -> tuple[Path, Path]:
    """Write OUT/comparison/ (via compare), OUT/report.md and the self-contained OUT/report.html.

    With make_plots, a run folder without plots/ gets them from plots.make_run_plots (run files only)."""
    out = Path(reproduce_dir)
    runs, meta, notes = discover_runs(out)
    if make_plots:
        for r in runs:
            if not (r.dir / plots.PLOTS_DIR / "loss.png").is_file():
                plots.make_run_plots(r.dir)
    res = _compare(out, runs, meta, notes)
    md = build_markdown(out, runs, meta, notes, res["rows"])
    md_path = fileio.write_text(out / REPORT_MD, md)
    html_path = fileio.write_text(out / REPORT_HTML, markdown_to_html(md, out, title="shapecount report"))
    return md_path, html_path
