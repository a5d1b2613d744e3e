"""report.py on synthetic reproduce folders: tables equal the run files, the report has every section, the HTML is
self-contained, and missing optional pieces degrade to notes."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shapecount import labels, plots, report, runfolder

try:
    from test_plots import make_run_folder
except ImportError:  # tests collected as a package
    from tests.test_plots import make_run_folder

RUNS = {"classification": "classification-only", "regression": "regression-only", "multitask": "multitask (lambda=5)"}
RUN_PLOTS = (*plots.PLOT_FILES, plots.WORST_ERRORS)


def _png(path: Path, color: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), color, dtype=np.uint8)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())


def make_reproduce(out: Path, runs: tuple[str, ...] = tuple(RUNS), runs_json: bool = True, eda: bool = True,
                   fake_plots: bool = True) -> dict[str, dict]:
    """OUT/ with eda/, runs.json and one synthetic run folder per experiment. Run plots are tiny stand-in PNGs
    (make_run_plots is tested in test_plots.py) unless fake_plots is False. Returns metrics per run."""
    metrics = {}
    for i, name in enumerate(runs):
        metrics[name] = make_run_folder(out / name, name, n=60, seed=i)
        if fake_plots:
            for f in RUN_PLOTS:
                _png(out / name / plots.PLOTS_DIR / f, 40 * i)
    if eda:
        d = out / report.EDA_DIR
        for f in ("class_histogram.png", "examples.png", "pair_balance.png"):
            _png(d / f, 200)
        (d / "summary.md").write_text("# Dataset summary\n\n- 10000 images (9000 train, 1000 val)\n"
                                      "- every image has exactly **two** shape types\n\n"
                                      "![examples](examples.png)\n")
        (d / "count_table.md").write_text("| type | images | mean count |\n|---|---|---|\n| squares | 3301 | 5.02 |\n")
        (d / "count_table.csv").write_text("type,images,mean\nsquares,3301,5.02\n")
        (d / "pair_balance.csv").write_text("pair,train,val\nsquares + circles,611,67\n")
    if runs_json:
        (out / "runs.json").write_text(json.dumps({
            "runs": [{"name": n, "dir": n, "label": RUNS[n]} for n in runs],
            "command": "shapecount reproduce --out OUT", "machine": "test-box 2 cores", "date": "2031-02-03",
            "wall_s": 4321.5}))
    return metrics


def _results_csv(out: Path) -> dict[str, dict[str, str]]:
    with open(out / report.COMPARISON_DIR / "results.csv", newline="") as f:
        return {r["run"]: r for r in csv.DictReader(f)}


def test_compare_writes_files_and_values_equal_metrics(tmp_path: Path) -> None:
    m = make_reproduce(tmp_path)
    res = report.compare(tmp_path)
    cdir = tmp_path / report.COMPARISON_DIR
    for f in ("results.csv", "results.md", "per_pair.md", "curves.png", "confusions.png"):
        assert (cdir / f).is_file() and (cdir / f).stat().st_size > 100, f
    rows = _results_csv(tmp_path)
    assert list(rows) == list(RUNS)
    for name in ("classification", "multitask"):
        r, mm = rows[name], m[name]
        assert float(r["top1"]) == mm["top1_accuracy"] and r["top1_source"] == "class head"
        for k in ("macro_f1", "pair_accuracy", "loss", "runtime_s"):
            assert float(r[k]) == mm[k], k
        assert int(r["epochs"]) == mm["epochs"] and int(r["best_epoch"]) == mm["best_epoch"]
    assert float(rows["multitask"]["rmse"]) == m["multitask"]["rmse"]
    assert float(rows["multitask"]["count_decoded_accuracy"]) == m["multitask"]["count_decoded_accuracy"]
    # classification-only: untrained count head -> no count results
    assert rows["classification"]["rmse"] == rows["classification"]["mae"] == ""
    assert rows["classification"]["count_head_trained"] == "False"
    # regression-only: top-1 is the count-decoded accuracy; F1/pair accuracy from the decoded classes
    reg = rows["regression"]
    assert float(reg["top1"]) == m["regression"]["count_decoded_accuracy"]
    assert reg["top1_source"].startswith("count head")
    assert float(reg["rmse"]) == m["regression"]["rmse"]
    preds = runfolder.load_predictions(tmp_path / "regression")
    dec = preds["pred_class_from_counts"]
    assert float(reg["pair_accuracy"]) == pytest.approx(np.mean(dec // 9 == preds["true_class"] // 9))
    assert float(reg["macro_f1"]) != m["regression"]["macro_f1"]
    # the returned dict mirrors the files
    assert [r["run"] for r in res["rows"]] == list(RUNS)
    assert res["per_pair"]["multitask"][3] == m["multitask"]["per_pair_accuracy"][labels.pair_name(3)]

    md = (cdir / "results.md").read_text()
    assert f"{m['multitask']['top1_accuracy']:.3f}" in md and f"{m['multitask']['rmse']:.3f}" in md
    assert report.NOT_TRAINED_CNT in md and "count head not trained" in md
    assert str(m["regression"]["rmse"]) not in md  # 3 decimals only
    pp = (cdir / "per_pair.md").read_text()
    assert sum(1 for line in pp.splitlines() if line.startswith("| ") and " + " in line) == labels.NUM_PAIRS


def test_macro_f1_matches_sklearn() -> None:
    from sklearn.metrics import f1_score
    rng = np.random.default_rng(0)
    t = rng.integers(0, 135, 300)
    p = np.where(rng.random(300) < 0.6, t, rng.integers(0, 135, 300))
    present = np.unique(t)
    assert report.macro_f1(t, p) == pytest.approx(f1_score(t, p, labels=present, average="macro", zero_division=0))


def test_report_sections_numbers_and_html(tmp_path: Path) -> None:
    m = make_reproduce(tmp_path)
    md_path, html_path = report.write_report(tmp_path, make_plots=False)
    assert md_path == tmp_path / "report.md" and html_path == tmp_path / "report.html"
    md = md_path.read_text()
    for title in report.SECTIONS:
        assert f"## {title}" in md, title
    for name in ("classification", "multitask"):
        assert f"{m[name]['top1_accuracy']:.3f}" in md
        assert f"{m[name]['macro_f1']:.3f}" in md
    for name in ("regression", "multitask"):
        assert f"{m[name]['rmse']:.3f}" in md
    assert f"{m['regression']['count_decoded_accuracy']:.3f}" in md
    # runs.json, EDA, architecture, augmentation facts
    assert "shapecount reproduce --out OUT" in md and "test-box 2 cores" in md and "2031-02-03" in md
    assert "Dataset summary" in md and "3301" in md and "squares + circles" in md
    assert "](eda/examples.png)" in md  # summary.md's own figure paths are rebased
    assert "parameters: backbone 123,456" in md
    assert "up-triangles -> left-triangles" in md and "right-triangles <-> left-triangles" in md
    assert "Test-time augmentation: the final metrics average" in md
    assert "| 64, dropout 0.30/0.10 |" in md  # setups: head width and dropout of the default heads
    assert "| 0.654 ‡ | 0.704 ‡ |" in md  # regression-only: TTA effect on the count-decoded accuracy
    # discussion: computed difference and binomial std on n_val
    d = m["multitask"]["top1_accuracy"] - m["classification"]["top1_accuracy"]
    assert f"{d:+.3f}" in md
    p, n = m["multitask"]["top1_accuracy"], m["multitask"]["n_val"]
    assert f"{(p * (1 - p) / n) ** 0.5:.3f}" in md
    assert f"{m['multitask']['rmse'] - m['regression']['rmse']:+.3f}" in md
    assert "Only lambda_cnt = 0 and 5 were run" in md
    # figures referenced by relative path, every one exists
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert "comparison/curves.png" in refs and "multitask/plots/worst_errors.png" in refs
    assert all(not Path(r).is_absolute() and (tmp_path / r).is_file() for r in refs)

    page = html_path.read_text()
    assert 'src="' in page
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', page))
    assert len(re.findall(r'src="data:image/png;base64,', page)) == len(refs)
    assert not re.search(r'href="(?!#)', page) and "http" not in page.split("<main>")[0]
    assert "<table>" in page and "<pre><code>" in page

    class Check(HTMLParser):
        void = frozenset({"img", "meta", "br", "hr", "link", "input"})

        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []
            self.errors: list[str] = []
            self.ids: list[str] = []
            self.h2: list[str] = []
            self._in_h2 = False

        def handle_starttag(self, tag, attrs):
            self.ids += [v for k, v in attrs if k == "id"]
            if tag not in self.void:
                self.stack.append(tag)
            self._in_h2 = tag == "h2"

        def handle_endtag(self, tag):
            if not self.stack or self.stack.pop() != tag:
                self.errors.append(tag)
            self._in_h2 = False

        def handle_data(self, data):
            if self._in_h2:
                self.h2.append(data)

    c = Check()
    c.feed(page)
    c.close()
    assert not c.errors and not c.stack
    assert len(c.ids) == len(set(c.ids))
    assert c.h2 == list(report.SECTIONS)


def test_missing_run_and_optional_files_degrade(tmp_path: Path) -> None:
    make_reproduce(tmp_path, runs=("classification", "multitask"), eda=False)
    # runs.json lists a run whose folder is gone; the multitask run lost its gallery and predictions
    data = json.loads((tmp_path / "runs.json").read_text())
    data["runs"].append({"name": "regression", "dir": "regression", "label": "regression-only"})
    (tmp_path / "runs.json").write_text(json.dumps(data))
    (tmp_path / "classification" / plots.PLOTS_DIR / plots.WORST_ERRORS).unlink()
    (tmp_path / "multitask" / "predictions.csv").unlink()
    md_path, html_path = report.write_report(tmp_path, make_plots=False)
    md = md_path.read_text()
    assert "Run 'regression'" in md and "missing" in md
    assert "no `eda/` folder" in md
    assert "No worst-errors gallery" in md and "no predictions.csv" in md.lower()
    assert "Multitask vs regression-only RMSE: not available" in md
    rows = _results_csv(tmp_path)
    assert list(rows) == ["classification", "multitask"]
    for title in report.SECTIONS:
        assert f"## {title}" in md
    assert "data:image/png;base64," in html_path.read_text()


def test_no_runs_json_defaults_and_unfinished_run(tmp_path: Path) -> None:
    make_reproduce(tmp_path, runs=("regression", "multitask"), runs_json=False)
    (tmp_path / "multitask" / "metrics.json").unlink()  # an unfinished run
    md_path, _ = report.write_report(tmp_path, make_plots=False)
    md = md_path.read_text()
    assert "No runs.json" in md
    assert "Run 'classification'" in md and "Run 'multitask' has no metrics.json" in md
    assert list(_results_csv(tmp_path)) == ["regression"]


def test_a_damaged_run_file_leaves_the_run_out_with_a_note(tmp_path: Path) -> None:
    make_reproduce(tmp_path, runs=("regression", "multitask"))
    (tmp_path / "multitask" / "config.json").write_text("[]")
    (tmp_path / "regression" / "predictions.csv").write_bytes(b"name,true_class\n\xff\xfe,1\n")  # not UTF-8
    md = report.write_report(tmp_path, make_plots=False)[0].read_text()
    assert "Run 'multitask': " in md and "config.json: holds a JSON list, not an object" in md
    assert "predictions.csv: cannot be read as CSV" in md  # that run stays, without its error analysis
    assert list(_results_csv(tmp_path)) == ["regression"]
    (tmp_path / "regression" / "last.pt").write_bytes(b"")  # trained again and not finished: left out
    assert "Run 'regression' has no metrics.json or is still training" in report.write_report(
        tmp_path, make_plots=False)[0].read_text()


def test_empty_folder_still_writes_report(tmp_path: Path) -> None:
    md_path, html_path = report.write_report(tmp_path, make_plots=False)
    md = md_path.read_text()
    assert all(f"## {t}" in md for t in report.SECTIONS)
    assert "No finished run" in md
    assert html_path.read_text().startswith("<!DOCTYPE html>")
    assert (tmp_path / report.COMPARISON_DIR / "results.csv").read_text().startswith("run,")


def test_lambda_sweep_is_compared(tmp_path: Path) -> None:
    make_reproduce(tmp_path, fake_plots=True)
    shutil.copytree(tmp_path / "multitask", tmp_path / "mt_l1")
    cfg = json.loads((tmp_path / "mt_l1" / "config.json").read_text())
    cfg["lambda_cnt"] = 1.0
    (tmp_path / "mt_l1" / "config.json").write_text(json.dumps(cfg))
    met = json.loads((tmp_path / "mt_l1" / "metrics.json").read_text())
    met["top1_accuracy"] = 0.8711
    (tmp_path / "mt_l1" / "metrics.json").write_text(json.dumps(met))
    data = json.loads((tmp_path / "runs.json").read_text())
    data["runs"].append({"name": "mt_l1", "dir": "mt_l1", "label": "multitask (lambda=1)"})
    (tmp_path / "runs.json").write_text(json.dumps(data))
    md = report.write_report(tmp_path, make_plots=False)[0].read_text()
    assert "Highest top-1: lambda_cnt = 1" in md and "0.871" in md
    assert "Only lambda_cnt" not in md
    # the multitask effect still uses the run named "multitask"
    d = 0.8567 - 0.8123
    assert f"{d:+.3f}" in md


def test_write_report_makes_missing_run_plots(tmp_path: Path) -> None:
    make_reproduce(tmp_path, runs=("multitask",), fake_plots=False, eda=False)
    report.write_report(tmp_path)
    names = {p.name for p in (tmp_path / "multitask" / plots.PLOTS_DIR).iterdir()}
    assert names == set(plots.PLOT_FILES)
    md = (tmp_path / "report.md").read_text()
    assert "multitask/plots/confusion_135.png" in md


def test_empty_files_and_regression_without_decoded_column(tmp_path: Path) -> None:
    make_reproduce(tmp_path)
    header = (tmp_path / "classification" / "predictions.csv").read_text().splitlines()[0]
    (tmp_path / "classification" / "predictions.csv").write_text(header + "\n")
    (tmp_path / "classification" / "history.csv").write_text("")
    # a regression run without pred_class_from_counts is decoded from its pred_* columns
    reg = tmp_path / "regression" / "predictions.csv"
    with open(reg, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = [c for c in rows[0] if c != "pred_class_from_counts"]
    with open(reg, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    res = report.compare(tmp_path)
    r = {x["run"]: x for x in res["rows"]}
    dec = np.array([int(x["pred_class_from_counts"]) for x in rows])
    true = np.array([int(x["true_class"]) for x in rows])
    assert r["regression"]["pair_accuracy"] == pytest.approx(np.mean(dec // 9 == true // 9))
    md = report.write_report(tmp_path, make_plots=False)[0].read_text()
    assert "Run 'classification' has no (or an incomplete) predictions.csv" in md
    assert "no (or an empty) history.csv" in md


def test_eda_table_not_repeated_when_summary_holds_it(tmp_path: Path) -> None:
    make_reproduce(tmp_path, runs=(), runs_json=False)
    d = tmp_path / report.EDA_DIR
    table = (d / "count_table.md").read_text()
    (d / "summary.md").write_text("# EDA\n\n## Images per count and type\n\n" + table)
    md = report.write_report(tmp_path, make_plots=False)[0].read_text()
    assert md.count("| squares | 3301 | 5.02 |") == 1
    assert "part of the EDA summary above" in md
    assert "#### Images per count and type" in md  # summary.md headings demoted below the report's


def test_report_ablation_option_adds_the_table(tmp_path: Path, capsys) -> None:
    from shapecount.cli import main

    make_reproduce(tmp_path / "rep", fake_plots=True)
    root = tmp_path / "abl"
    for seed, top1 in ((1, 0.7), (2, 0.72)):
        run = root / "b_synth" / f"s{seed}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"top1_accuracy": top1, "epochs": 40, "runtime_s": 60.0}))
        (run / "config.json").write_text(json.dumps({"seed": seed, "synth_per_epoch": 18000}))
    assert main(["report", str(tmp_path / "rep"), "--ablation", str(root)]) == 2  # table not made yet
    err = capsys.readouterr().err.strip()
    assert "ablation.md: not found" in err and "shapecount ablation" in err and "\n" not in err
    assert not (tmp_path / "rep" / report.ABLATION_FILE).exists()
    assert main(["ablation", str(root)]) == 0
    assert main(["report", str(tmp_path / "rep"), "--ablation", str(root)]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"## {report.ABLATION_SECTION}" in md and "0.710 ± 0.014" in md and "Where the errors are" in md
    assert "0.710 ± 0.014" in (tmp_path / "rep" / "report.html").read_text()
    assert main(["report", str(tmp_path / "rep")]) == 0  # the copy stays: later rebuilds keep the section
    assert f"## {report.ABLATION_SECTION}" in (tmp_path / "rep" / "report.md").read_text()


def test_markdown_to_html_page(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    md = ("# T\n\n## 1. One\n\n- a\n- b\n\n- c\n\n| x | n |\n|---|---|\n| <b>raw</b> | 0.5 ‡ |\n\n"
          "| empty |\n|---|\n\n![cap](a.png)\n\n![gone](b.png)\n\n```\n<code> & stays\n```\n")
    page = report.markdown_to_html(md, tmp_path, title="t")
    body = page.split("<main>")[1]
    assert body.count("<ul>") == 2  # a blank line between bullets starts a new list
    assert "&lt;b&gt;raw&lt;/b&gt;" in body and "<b>" not in body  # no raw HTML
    assert '<td class="num">0.5 ‡</td>' in body and "<td></td>" not in body
    assert re.search(r'<figure><img alt="cap" src="data:image/png;base64,[^"]+"><figcaption>cap</figcaption>',
                     body)
    assert "Not available: <code>b.png</code> is missing." in body
    assert "&lt;code&gt; &amp; stays" in body
    assert '<nav class="toc"><strong>Contents</strong><ol><li><a href="#1-one">One</a></li></ol></nav>' in body


def test_time_to_accuracy_from_history(tmp_path: Path) -> None:
    from shapecount.report.analysis import time_to_accuracy
    from shapecount.report.runs import Run

    hist = {"epoch": np.array([1, 2, 3]), "seconds": np.array([60.0, 60.0, 90.0]),
            "val_top1": np.array([0.3, 0.55, 0.85])}
    run = Run("m", tmp_path, "m", config={"cls_weight": 1.0, "lambda_cnt": 5.0}, history=hist)
    t = time_to_accuracy(run)
    assert t[0.521] == 120.0 and t[0.80] == 210.0 and t[0.90] is None
    assert not t["from_counts"]
    regression = Run("r", tmp_path, "r", config={"cls_weight": 0.0, "lambda_cnt": 1.0}, history=hist)
    assert time_to_accuracy(regression) is None  # no class head and no count-decoded column: nothing to time
    counted = {**hist, "val_count_top1": np.array([0.2, 0.6, 0.7])}
    regression = Run("r", tmp_path, "r", config={"cls_weight": 0.0, "lambda_cnt": 1.0}, history=counted)
    t = time_to_accuracy(regression)
    assert t["from_counts"] and t[0.521] == 120.0 and t[0.80] is None


def test_report_has_time_to_accuracy(tmp_path: Path) -> None:
    make_reproduce(tmp_path)
    md, _ = report.write_report(tmp_path, make_plots=False)
    text = md.read_text()
    assert "### Time to accuracy" in text and "| run | top-1 0.521 | top-1 0.8 | top-1 0.9 |" in text
    assert (tmp_path / report.COMPARISON_DIR / "time_to_accuracy.png").is_file()


def test_setups_show_the_time_budget_and_the_convolutions_lr(tmp_path: Path) -> None:
    make_reproduce(tmp_path)
    run = tmp_path / "multitask"
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "minutes": 9.0, "conv_lr_scale": 3.0, "conv_widths": "32,64,64",
                                                 "teacher": "wide/checkpoint.pt", "distill_features": 1.0,
                                                 "distill_kl": 0.0, "distill_init": True}))
    m = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**m, "epochs_planned": 12}))
    md = report.write_report(tmp_path, make_plots=False)[0].read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if "| cosine |" in line}
    assert "| 0.002 (convolutions x3) |" in rows[RUNS["multitask"]] and "| 9 min (12 epochs) |" in rows[RUNS["multitask"]]
    assert "| 0.002 |" in rows[RUNS["classification"]] and "| none |" in rows[RUNS["classification"]]
    assert "| convolutions 32,64,64,64 (not the fixed one) |" in rows[RUNS["multitask"]]
    assert "| fixed |" in rows[RUNS["classification"]]  # also for configs written before conv_widths existed
    assert "| features 1, top layers from the teacher |" in rows[RUNS["multitask"]]


def test_clear_outputs_removes_the_report_and_its_inputs_but_not_the_runs(tmp_path: Path) -> None:
    make_reproduce(tmp_path, runs=("regression", "multitask"))
    report.write_report(tmp_path, make_plots=False)
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "summary.json").write_text("{}")
    (tmp_path / report.ABLATION_FILE).write_text("| old |")
    report.clear_outputs(tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert not set(left) & {"report.md", "report.html", "comparison", "audit", report.ABLATION_FILE}, left
    assert (tmp_path / "multitask" / "metrics.json").is_file() and (tmp_path / "runs.json").is_file()
