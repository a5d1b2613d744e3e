"""`shapecount audit`, `solve` and `synth` end to end through the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from shapecount.cli import main


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    assert main(["synth", "--out", str(out), "-n", "12", "--seed", "4"]) == 0
    return out


def test_synth_writes_a_gsn_folder_that_loads(synth_dir, capsys):
    assert (synth_dir / "labels.csv").read_text().startswith("name,squares,circles,up,right,down,left\n")
    assert len(list(synth_dir.glob("img_*.png"))) == 12
    capsys.readouterr()
    assert main(["check", "--data", str(synth_dir)]) == 0
    assert "12" in capsys.readouterr().out


def test_audit_writes_csv_summary_and_uses_cache(synth_dir, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(["audit", "--data", str(synth_dir), "--split", "all", "--out", str(out), "--jobs", "1",
                 "--no-progress"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["n_images"] == 12 and s["n_infeasible"] == 0 and s["n_unknown"] == 0
    assert s["n_unique"] + s["n_ambiguous"] == 12
    assert 0 < s["lower_bound"] <= s["map_accuracy"] <= 1 and 0 < s["bayes_accuracy_estimate"] <= 1
    rows = list(csv.DictReader((out / "audit.csv").open()))
    assert [r["name"] for r in rows] == [f"img_{i:05d}.png" for i in range(12)]
    assert all(r["label"] in r["feasible"].split(";") and r["label_feasible"] == "1" for r in rows)
    assert len((out / "witnesses.jsonl").read_text().splitlines()) == 12
    first = capsys.readouterr().out
    assert "unique" in first and "cached" not in first
    assert main(["audit", "--data", str(synth_dir), "--split", "all", "--jobs", "1", "--no-progress"]) == 0
    assert "(cached result)" in capsys.readouterr().out


def test_audit_reports_an_infeasible_label(tmp_path, synth_dir, capsys):
    import shutil

    d = tmp_path / "bad"
    shutil.copytree(synth_dir, d)
    lines = (d / "labels.csv").read_text().splitlines()
    name, *counts = lines[1].split(",")
    c = [int(x) for x in counts]
    nz = [i for i, v in enumerate(c) if v]
    if c[nz[0]] < 8:  # move one shape between the two types: a label the pixels cannot explain
        c[nz[0]] += 1
        c[nz[1]] -= 1
    else:
        c[nz[0]] -= 1
        c[nz[1]] += 1
    lines[1] = ",".join([name, *map(str, c)])
    (d / "labels.csv").write_text("\n".join(lines) + "\n")
    assert main(["audit", "--data", str(d), "--split", "all", "--jobs", "1", "--no-progress", "--no-cache",
                 "--out", str(tmp_path / "o")]) == 0
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    if s["n_infeasible"]:  # (a planted cancellation could make the moved label feasible too)
        assert s["infeasible"][0]["name"] == name and s["infeasible"][0]["nearest_feasible"]
        assert "label infeasible: " + name in capsys.readouterr().out


def test_audit_with_two_jobs_matches_one(synth_dir, tmp_path):
    for jobs in (1, 2):
        assert main(["audit", "--data", str(synth_dir), "--split", "all", "--jobs", str(jobs), "--no-cache",
                     "--no-progress", "--out", str(tmp_path / f"j{jobs}")]) == 0
    cols = lambda p: [r[:-2] for r in csv.reader((p / "audit.csv").open())]  # the last two columns (nodes, ms) may differ
    assert cols(tmp_path / "j1") == cols(tmp_path / "j2")


def test_solve_text_and_json(synth_dir, capsys):
    assert main(["solve", str(synth_dir / "img_00000.png")]) == 0
    out = capsys.readouterr().out
    label = (synth_dir / "labels.csv").read_text().splitlines()[1]
    assert "feasible class" in out and "witness:" in out
    assert main(["solve", "--format", "json", str(synth_dir / "img_00000.png"), str(synth_dir / "img_00001.png")]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert len(recs) == 2 and abs(sum(f["posterior"] for f in recs[0]["feasible"]) - 1) < 1e-9
    counts = [int(x) for x in label.split(",")[1:]]
    names = [f["class_name"] for f in recs[0]["feasible"]]
    assert any(all(f"{c} " in n for c in counts if c) for n in names)


@pytest.mark.parametrize("kind,expect", [
    ("gray", "gray pixels"), ("empty", "no ink"), ("small", "expected 28x28"), ("garbage", "not a PNG"),
    ("missing", "no such file"),
])
def test_solve_bad_input_one_line(tmp_path, capsys, kind, expect):
    p = tmp_path / f"{kind}.png"
    if kind == "gray":
        Image.fromarray(np.full((28, 28), 128, np.uint8)).save(p)
    elif kind == "empty":
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(p)
    elif kind == "small":
        Image.fromarray(np.zeros((20, 28), np.uint8)).save(p)
    elif kind == "garbage":
        p.write_bytes(b"not a png at all")
    assert main(["solve", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expect in err and "\n" not in err


def test_audit_bad_options(capsys):
    assert main(["audit", "--jobs", "0"]) == 2
    assert main(["solve", "--node-limit", "0", "x.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: ") for e in err)


def test_in_process_audit_keeps_the_callers_thread_count(synth_dir):
    import torch

    before = torch.get_num_threads()
    assert main(["audit", "--data", str(synth_dir), "--split", "val", "--jobs", "1", "--no-cache",
                 "--no-progress"]) == 0
    assert torch.get_num_threads() == before

