"""Comparison tables, figures and the final report of a `shapecount reproduce` folder, from its files alone.

Layout read (all paths relative to the reproduce folder OUT):
    OUT/runs.json                    optional: the runs and how they were made (runfolder.RUNS_FILE,
                                     docs/run_folder.md); without it the default run names that exist are used
    OUT/eda/                         class_histogram.png, count_table.md/.csv, examples.png, pair_balance.png/.csv,
                                     summary.md
    OUT/<run>/                       one run folder per experiment (docs/run_folder.md), with plots/
    OUT/ablation.md                  optional: copied in by `shapecount report --ablation ROOT`
Written:
    OUT/comparison/                  results.csv, results.md, per_pair.md, curves.png, time_to_accuracy.png,
                                     confusions.png
    OUT/report.md, OUT/report.html   the report (markdown with relative figure paths; self-contained HTML)
    OUT/<run>/plots/decidable_errors.png
                                     when OUT/audit/ is there: the run's errors on images the exact decoder decides

Nothing here loads a model or the dataset, and no number in the report is typed in: everything comes from the
files. Missing optional pieces (runs.json, a run, eda/, a figure) are left out with a note.

Modules: `runs` (finding and loading the runs), `analysis` (the numbers), `tables` (Markdown tables, number
format), `figures` (comparison figures), `sections` (the report's text, with templates/), `html_page`
(Markdown -> self-contained HTML) and `build` (`compare`, `write_report`, `clear_outputs`).
"""

from shapecount.report.analysis import error_analysis, macro_f1, result_row
from shapecount.report.build import build_markdown, clear_outputs, compare, write_report
from shapecount.report.html_page import markdown_to_html
from shapecount.report.runs import COMPARISON_DIR, DEFAULT_RUNS, EDA_DIR, Run, discover_runs
from shapecount.report.sections import ABLATION_FILE, ABLATION_SECTION, SECTIONS
from shapecount.report.tables import NOT_TRAINED_CLS, NOT_TRAINED_CNT, RESULT_FIELDS, fmt

__all__ = ["ABLATION_FILE", "ABLATION_SECTION", "COMPARISON_DIR", "DEFAULT_RUNS", "EDA_DIR", "NOT_TRAINED_CLS",
           "NOT_TRAINED_CNT", "RESULT_FIELDS", "SECTIONS", "Run", "build_markdown", "clear_outputs", "compare",
           "discover_runs", "error_analysis", "fmt", "macro_f1", "markdown_to_html", "result_row", "write_report"]
