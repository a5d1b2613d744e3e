"""End to end through `shapecount.cli.main` on a tiny synthetic dataset: every file, every error path."""

import csv
import json
import subprocess
import sys

import pytest

from conftest import write_gsn_dir
from shapecount.cli import main

RUN_FILES = ["config.json", "history.csv", "metrics.json", "predictions.csv", "model.txt", "checkpoint.pt",
             "plots/loss.png", "plots/top1.png", "plots/rmse.png", "plots/confusion_135.png",
             "plots/confusion_pairs.png", "plots/count_confusion.png", "plots/worst_errors.png"]
METRIC_KEYS = ["loss", "top1_accuracy", "macro_f1", "pair_accuracy", "rmse", "mae", "rmse_per_type",
               "mae_per_type", "count_decoded_accuracy", "epochs", "best_epoch", "runtime_s"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_gsn_dir(tmp_path_factory.mktemp("tiny") / "gsn", n=80)


@pytest.fixture(scope="module")
def synth_gsn(tmp_path_factory):
    """Images drawn by the generator's rules, so that the exact decoder explains them (the glyphs of `tiny`
    follow no rule and take the decoder long to refute)."""
    from shapecount import synth

    out = tmp_path_factory.mktemp("synth") / "gsn"
    synth.write_dataset(out, 80, seed=1)
    return out


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "mt"
    rc = main(["train", "--data", str(tiny), "--experiment", "multitask", "--recipe", "protocol", "--epochs", "2",
               "--out", str(out), "--no-progress", "--set", "batch_size=16"])
    assert rc == 0
    return out


def test_train_writes_every_file(trained):
    for f in RUN_FILES:
        assert (trained / f).is_file(), f
    m = json.loads((trained / "metrics.json").read_text())
    for k in METRIC_KEYS:
        assert k in m, k
    assert set(m["rmse_per_type"]) == {"squares", "circles", "up", "right", "down", "left"}
    assert m["epochs"] == 2 and 1 <= m["best_epoch"] <= 2 and m["n_val"] == 8
    assert m["precision"] == "fp32"  # the protocol recipe asks for fp32 on any CPU
    assert m["fixed_backbone"] is True
    with open(trained / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and rows[0]["epoch"] == "1" and float(rows[0]["lr"]) == 1e-3
    with open(trained / "predictions.csv") as f:
        reader = csv.DictReader(f)
        preds = list(reader)
    assert reader.fieldnames[:15] == ["name", "squares", "circles", "up", "right", "down", "left", "true_class",
                                      "pred_class", "pred_squares", "pred_circles", "pred_up", "pred_right",
                                      "pred_down", "pred_left"]
    assert len(preds) == 8 and preds[0]["name"] == "img_00072.png"  # the last 10% of the files
    top1 = sum(p["true_class"] == p["pred_class"] for p in preds) / len(preds)
    assert top1 == pytest.approx(m["top1_accuracy"])
    cfg = json.loads((trained / "config.json").read_text())
    assert cfg["epochs"] == 2 and cfg["batch_size"] == 16 and cfg["lambda_cnt"] == 5


def test_refuses_to_overwrite_a_run(trained, tiny, capsys):
    rc = main(["train", "--data", str(tiny), "--recipe", "protocol", "--epochs", "1", "--out", str(trained),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "already holds a run" in err and "--force" in err and err.count("\n") == 1


def test_resume_of_a_finished_run_with_damaged_metrics_is_one_line(trained, tiny, tmp_path, capsys):
    import shutil

    run = tmp_path / "mt"
    shutil.copytree(trained, run)
    (run / "metrics.json").write_text('{"epochs": 2')
    rc = main(["train", "--data", str(tiny), "--experiment", "multitask", "--recipe", "protocol", "--epochs", "2",
               "--out", str(run), "--no-progress", "--set", "batch_size=16", "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {run / 'metrics.json'}: cannot be read as JSON") and err.count("\n") == 1


@pytest.mark.parametrize("command", [["synth", "-n", "3"], ["eda"]])
def test_a_file_in_the_way_of_out_is_one_line(command, tiny, tmp_path, capsys):
    (tmp_path / "taken").write_text("mine")
    for out in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        assert main([*command, "--out", str(out), "--data", str(tiny), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {out}: a file is in the way") and err.count("\n") == 1
    assert (tmp_path / "taken").read_text() == "mine"


def test_force_clears_the_old_run_before_training_again(trained, tiny, tmp_path, monkeypatch, capsys):
    import shutil

    from helpers.interrupt import interrupt_at_epoch

    run = tmp_path / "mt"
    shutil.copytree(trained, run)
    (run / "notes.txt").write_text("mine")
    interrupt_at_epoch(monkeypatch, 1)  # the new run stops before its first epoch ends
    rc = main(["train", "--data", str(tiny), "--experiment", "multitask", "--recipe", "protocol", "--epochs", "2",
               "--out", str(run), "--no-progress", "--set", "batch_size=16", "--force"])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    left = {p.relative_to(run).as_posix() for p in run.rglob("*")}
    assert not left & {"metrics.json", "predictions.csv", "checkpoint.pt", "plots", "plots/loss.png"}, left
    assert (run / "notes.txt").read_text() == "mine"


def test_evaluate_rebuilds_the_same_metrics(trained, tiny, tmp_path):
    out = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", str(trained / "checkpoint.pt"), "--data", str(tiny),
                 "--out", str(out)]) == 0
    a = json.loads((trained / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    for k in ("top1_accuracy", "macro_f1", "rmse", "mae", "count_decoded_accuracy"):
        assert a[k] == pytest.approx(b[k], abs=1e-6), k
    for k in ("epochs", "epochs_planned", "best_epoch", "monitor", "selected_on", "precision", "runtime_s"):
        assert b[k] == a[k] is not None, k  # how the model was trained comes along
    assert (out / "plots" / "confusion_135.png").is_file()


def test_reproduce_force_checks_the_device_before_clearing_anything(tiny, tmp_path, capsys):
    out = tmp_path / "rep"
    (out / "multitask").mkdir(parents=True)
    (out / "report.md").write_text("the old study")
    (out / "multitask" / "metrics.json").write_text("{}")
    rc = main(["reproduce", "--quick", "--data", str(tiny), "--out", str(out), "--no-progress", "--no-audit",
               "--force", "--threads", "1", "--device", "cuda:99"])
    assert rc == 2 and capsys.readouterr().err.startswith("error: --device: cuda:99 was asked for")
    assert (out / "report.md").read_text() == "the old study" and (out / "multitask" / "metrics.json").is_file()


def test_evaluate_into_the_runs_own_folder_keeps_its_optimizer_state(trained, tiny, tmp_path):
    import shutil

    import torch

    run = tmp_path / "mt"
    shutil.copytree(trained, run)
    before = torch.load(run / "checkpoint.pt", weights_only=True)["optimizer"]
    assert main(["evaluate", "--checkpoint", str(run / "checkpoint.pt"), "--data", str(tiny), "--out", str(run),
                 "--force"]) == 0
    after = torch.load(run / "checkpoint.pt", weights_only=True)["optimizer"]
    assert after["state"] and after["state"].keys() == before["state"].keys()


def test_a_widened_network_trains_evaluates_and_says_it_is_not_the_fixed_one(tiny, tmp_path, capsys):
    out = tmp_path / "wide"
    assert main(["train", "--data", str(tiny), "--recipe", "protocol", "--epochs", "1", "--out", str(out),
                 "--no-progress", "--set", "batch_size=16", "--set", "conv_widths=4,4,4"]) == 0
    assert "a capacity study, not the assignment's fixed backbone" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["fixed_backbone"] is False
    assert "capacity study" in (out / "model.txt").read_text()
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--data", str(tiny),
                 "--out", str(tmp_path / "ev")]) == 0  # the checkpoint's config rebuilds the widened network
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (out, tmp_path / "ev"))
    assert a["top1_accuracy"] == pytest.approx(b["top1_accuracy"]) and b["fixed_backbone"] is False


def test_predict_csv_and_json(trained, tiny, capsys):
    assert main(["predict", "--checkpoint", str(trained / "checkpoint.pt"), str(tiny / "img_00000.png"),
                 "--format", "json", "--top-k", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and len(rows[0]["top_k"]) == 2 and set(rows[0]["counts"]) >= {"squares", "left"}
    assert main(["predict", "--checkpoint", str(trained / "checkpoint.pt"), str(tiny)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("file,class_id,class_name,pair") and len(out) == 1 + 80


@pytest.mark.parametrize("argv, expect", [
    (["train", "--out", "X", "--set", "nope=1"], "unknown config key 'nope'"),
    (["train", "--out", "X", "--experiment", "both"], "invalid choice: 'both'"),
    (["train", "--out", "X", "--epochs", "0"], "epochs must be >= 1"),
    (["train", "--out", "X", "--data", "/does/not/exist"], "/does/not/exist"),
    (["predict", "--checkpoint", "/no/ckpt.pt", "a.png"], "checkpoint not found"),
    (["predict", "--checkpoint", "/no/ckpt.pt", "--device", "gpu", "a.png"], "unknown device 'gpu'"),
    (["predict", "--checkpoint", "/no/ckpt.pt", "--device", "cuda:99", "a.png"], "cuda:99 was asked for"),
    (["train", "--out", "X", "--device", "cuda:x"], "device must be auto, cpu or cuda[:N], got 'cuda:x'"),
    (["train"], "--out"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_options_one_line_exit_2(argv, expect, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parse_error = argv[0] == "frobnicate" or argv == ["train"] or "both" in argv  # argparse exits with 2
    with pytest.raises(SystemExit) if parse_error else _nullctx():
        rc = main(argv)
        assert rc == 2
    err = capsys.readouterr().err
    assert expect in err and err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_predict_rejects_bad_images(trained, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    assert main(["predict", "--checkpoint", str(trained / "checkpoint.pt"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.png" in err and err.count("\n") == 1
    assert main(["predict", "--checkpoint", str(bad), str(bad)]) == 2
    assert "not a readable shapecount checkpoint" in capsys.readouterr().err


def test_module_entry_point_and_labels_table():
    r = subprocess.run([sys.executable, "-m", "shapecount", "labels"], capture_output=True, text=True, check=True)
    lines = r.stdout.splitlines()
    assert len(lines) == 2 + 135 and "| 0 | 0 | 1 square + 9 circles |" in lines[2]


@pytest.mark.parametrize("terminal,flag,bar", [(True, False, True), (True, True, False), (False, False, False)])
def test_progress_bars_only_on_a_terminal_and_never_with_no_progress(gsn_dir, monkeypatch, capsys, terminal, flag,
                                                                     bar):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    assert main(["check", "--data", str(gsn_dir)] + (["--no-progress"] if flag else [])) == 0
    assert ("decoding GSN images" in capsys.readouterr().err) == bar


@pytest.mark.slow
def test_reproduce_quick_end_to_end(synth_gsn, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars would be drawn but for --no-progress
    out = tmp_path / "rep"
    assert main(["reproduce", "--quick", "--data", str(synth_gsn), "--out", str(out), "--no-progress",
                 "--epochs", "1"]) == 0
    assert "decoding GSN images" not in capsys.readouterr().err  # --no-progress: no bar, not even the data's
    for exp in ("classification", "regression", "multitask"):
        for f in RUN_FILES:
            assert (out / exp / f).is_file(), (exp, f)
    assert (out / "eda" / "class_histogram.png").is_file()
    assert (out / "comparison" / "results.md").is_file()
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and (out / "report.md").is_file()
    runs = json.loads((out / "runs.json").read_text())
    assert [r["name"] for r in runs["runs"]] == ["classification", "regression", "multitask"]
    audit = json.loads((out / "audit" / "summary.json").read_text())
    assert audit["n_images"] == 8 and audit["n_infeasible"] == 0 and audit["n_unknown"] == 0
    md = (out / "report.md").read_text()
    assert "### Against the exact-decoding ceiling" in md and "exact decoding, MAP (ceiling)" in md
    assert "Against the exact decoder:" in md
    assert "#### Top-1 by how much the shapes overlap" in md and "overlap 0." in md
    assert "#### Top-1 by how visible the least visible shape is" in md and "least visible 0." in md


@pytest.mark.slow
def test_reproduce_best_recipe_end_to_end_over_an_old_study(tiny, tmp_path, capfd):
    # The most accurate recipe through the one command (shrunk: 32 synthetic images an epoch, 16 held out), with
    # --force over a study of another recipe: nothing of the old one is left in the new report.
    out = tmp_path / "rep"
    common = ["reproduce", "--data", str(tiny), "--out", str(out), "--no-progress", "--epochs", "1", "--no-audit"]
    assert main([*common, "--quick"]) == 0
    (out / "ablation.md").write_text("| an old ablation |")
    assert main([*common, "--recipe", "best", "--force", "--set", "synth_per_epoch=32", "--set", "holdout=16",
                 "--set", "batch_size=16"]) == 0
    for exp in ("classification", "regression", "multitask"):
        cfg = json.loads((out / exp / "config.json").read_text())
        assert cfg["synth_per_epoch"] == 32 and cfg["head_hidden"] == 256 and cfg["holdout"] == 16, exp
        m = json.loads((out / exp / "metrics.json").read_text())
        assert m["selected_on"] == "holdout (16 training images)" and m["n_val"] == 8, exp
    assert json.loads((out / "runs.json").read_text())["recipe"] == "best"
    md = (out / "report.md").read_text()
    assert "an old ablation" not in md and not (out / "ablation.md").exists()
    assert "held-out" in md


@pytest.mark.slow
def test_reproduce_refuses_reuse_then_resumes(tiny, tmp_path, capfd):
    """capfd: where the experiments train at once, their lines come from their own processes."""
    out = tmp_path / "rep"
    argv = ["reproduce", "--quick", "--data", str(tiny), "--out", str(out), "--no-progress", "--epochs", "1",
            "--no-audit"]
    assert main(argv) == 0
    before = (out / "multitask" / "metrics.json").read_text()
    capfd.readouterr()
    assert main(argv) == 2
    assert "--resume" in capfd.readouterr().err
    assert main(argv + ["--resume"]) == 0
    assert "already complete" in capfd.readouterr().err
    assert (out / "multitask" / "metrics.json").read_text() == before  # finished runs are kept, not redone


def test_holdout_selects_on_training_images_and_reports_on_validation(tiny, tmp_path, capsys):
    out = tmp_path / "ho"
    assert main(["train", "--data", str(tiny), "--recipe", "quick", "--epochs", "1", "--set", "holdout=16",
                 "--set", "batch_size=16", "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_train"] == 72 - 16 and m["n_val"] == 8 and m["selected_on"] == "holdout (16 training images)"
    assert "holdout_top1" in (out / "history.csv").read_text().splitlines()[0]
    err = capsys.readouterr().err
    assert "of 16 held-out training images" in err
    epoch_line = next(line for line in err.splitlines() if "epoch   1  train" in line)
    assert " held-out " in epoch_line and " val " not in epoch_line  # the loss shown is the held-out images'
    assert main(["train", "--data", str(tiny), "--set", "holdout=72", "--out", str(tmp_path / "bad"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: holdout: 72 is not less than the 72 training images") and "\n" not in err
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_joint_decoding_tool_on_holdout_runs(tiny, trained, tmp_path, capsys):
    out = tmp_path / "ho"
    assert main(["train", "--data", str(tiny), "--recipe", "quick", "--epochs", "1", "--set", "holdout=16",
                 "--set", "batch_size=16", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["decode", str(out), "--data", str(tiny)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "chosen beta" in lines[1] and lines[-1].startswith("mean change of validation top-1 over 1 runs")
    assert main(["decode", str(trained), "--data", str(tiny)]) == 2  # selected on the validation images: refused
    err = capsys.readouterr().err.strip()
    assert "trained without a holdout" in err and "\n" not in err


def test_train_beside_a_busy_process_uses_fewer_threads_and_says_so(tiny, tmp_path, monkeypatch, capsys):
    import torch

    from shapecount import runtime
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # two threads, one to give up (a test worker may run with one)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "busy_elsewhere", lambda seconds=0.2: 1.0)
    argv = ["train", "--data", str(tiny), "--recipe", "quick", "--epochs", "1", "--set", "limit_train=32",
            "--no-progress"]
    try:
        assert main([*argv, "--out", str(tmp_path / "auto")]) == 0
        assert json.loads((tmp_path / "auto" / "config.json").read_text())["threads"] == 1
        assert "training with 1 thread" in capsys.readouterr().err
        assert main([*argv, "--threads", "2", "--out", str(tmp_path / "chosen")]) == 0  # a choice is kept
        assert json.loads((tmp_path / "chosen" / "config.json").read_text())["threads"] == 2
        assert "training with" not in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_single_task_runs_print_only_their_heads_figures(tiny, tmp_path, capsys):
    assert main(["train", "--data", str(tiny), "--experiment", "regression", "--recipe", "quick", "--epochs", "1",
                 "--set", "batch_size=16", "--out", str(tmp_path / "reg"), "--no-progress"]) == 0
    lines = capsys.readouterr().err.splitlines()
    epoch = next(ln for ln in lines if "] epoch" in ln)
    done = next(ln for ln in lines if "] done in" in ln)
    assert "rmse" in epoch and "top1" not in epoch
    assert "rmse" in done and "count-decoded" in done and "top1" not in done and "macro F1" not in done
