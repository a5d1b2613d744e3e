"""plots.py on synthetic run folders (no model, no dataset): every figure is written, atomically, from files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from shapecount import labels, plots, runfolder
from shapecount.config import make_config

HISTORY_COLS = ["epoch", "train_loss", "train_loss_cls", "train_loss_cnt", "val_loss", "val_loss_cls", "val_loss_cnt",
                "val_top1", "val_rmse", "val_mae", "lr", "seconds"]
PRED_COLS = (["name", *labels.TYPES, "true_class", "pred_class", *(f"pred_{t}" for t in labels.TYPES),
              "pred_class_from_counts", "confidence"])
DEFAULT_METRICS = {
    "classification": {"top1_accuracy": 0.8123, "macro_f1": 0.8011, "pair_accuracy": 0.9512, "rmse": 2.7461,
                       "mae": 2.1357, "count_decoded_accuracy": 0.0213, "loss": 0.6321},
    "regression": {"top1_accuracy": 0.0071, "macro_f1": 0.0009, "pair_accuracy": 0.0667, "rmse": 0.3177,
                   "mae": 0.1941, "count_decoded_accuracy": 0.7044, "loss": 0.0412},
    "multitask": {"top1_accuracy": 0.8567, "macro_f1": 0.8433, "pair_accuracy": 0.9688, "rmse": 0.2914,
                  "mae": 0.1702, "count_decoded_accuracy": 0.7359, "loss": 0.9876},
}


def _decode(pc: np.ndarray) -> np.ndarray:
    table = np.array([labels.class_to_counts(k) for k in range(labels.NUM_CLASSES)], dtype=float)
    return np.linalg.norm(pc[:, None, :] - table[None], axis=2).argmin(axis=1)


def make_run_folder(run_dir: Path, experiment: str = "multitask", n: int = 50, epochs: int = 6, seed: int = 0,
                    overrides: dict | None = None, metrics: dict | None = None) -> dict:
    """A run folder in the docs/run_folder.md format with plausible synthetic content; returns metrics."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = make_config(experiment, "fast", overrides or {})
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    with open(run_dir / "history.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HISTORY_COLS)
        for e in range(1, epochs + 1):
            cls_l = 3.0 / e if cfg.cls_weight > 0 else 4.9
            cnt_l = 1.0 / e
            w.writerow([e, cfg.cls_weight * cls_l + cfg.lambda_cnt * cnt_l, cls_l, cnt_l,
                        cfg.cls_weight * cls_l * 1.1 + cfg.lambda_cnt * cnt_l * 1.1, cls_l * 1.1, cnt_l * 1.1,
                        min(0.2 + 0.12 * e, 0.95), 2.0 / e, 1.5 / e, 1e-3, 3.2])

    true = rng.integers(0, labels.NUM_CLASSES, n)
    true[: labels.NUM_PAIRS] = np.arange(labels.NUM_PAIRS) * labels.SPLITS  # every pair present
    pred = np.where(rng.random(n) < 0.7, true, rng.integers(0, labels.NUM_CLASSES, n))
    counts = np.array([labels.class_to_counts(int(k)) for k in true], dtype=float)
    pc = counts + rng.normal(0, 0.4, counts.shape)
    with open(run_dir / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PRED_COLS)
        for i in range(n):
            w.writerow([f"{i:05d}.png", *counts[i].astype(int), true[i], pred[i], *np.round(pc[i], 4),
                        _decode(pc[i: i + 1])[0], round(float(rng.uniform(0.2, 1.0)), 4)])

    m = {"experiment": experiment, "loss_cls": 0.5, "loss_cnt": 0.05,
         **DEFAULT_METRICS[experiment], "macro_f1_classes": 40,
         "per_pair_accuracy": {labels.pair_name(p): round(0.5 + 0.03 * p, 4) for p in range(labels.NUM_PAIRS)},
         "rmse_per_type": {t: 0.3 for t in labels.TYPES}, "mae_per_type": {t: 0.2 for t in labels.TYPES},
         "single_view": {"loss": 1.0, "top1_accuracy": 0.8, "macro_f1": 0.79, "pair_accuracy": 0.9, "rmse": 0.33,
                         "mae": 0.2, "count_decoded_accuracy": 0.6543},
         "lambda_cnt": cfg.lambda_cnt, "cls_weight": cfg.cls_weight, "monitor": cfg.resolved_monitor(),
         "tta": cfg.tta, "epochs": epochs, "best_epoch": epochs - 1, "runtime_s": 123.456, "n_train": 9000,
         "n_val": 1000, **(metrics or {})}
    (run_dir / "metrics.json").write_text(json.dumps(m, indent=2))
    (run_dir / "model.txt").write_text("MultitaskNet(\n  (backbone): Backbone(...)\n)\n"
                                       "parameters: backbone 123,456 | cls head 12,345 | total 135,801\n")
    return m


def fake_images(run_dir: Path) -> dict[str, np.ndarray]:
    preds = runfolder.load_predictions(run_dir)
    rng = np.random.default_rng(1)
    return {str(n): (rng.random((28, 28)) > 0.8).astype(np.uint8) * 255 for n in preds["name"]}


@pytest.mark.parametrize("experiment", ["multitask", "classification", "regression"])
def test_make_run_plots_writes_every_png(tmp_path: Path, experiment: str) -> None:
    run = tmp_path / experiment
    make_run_folder(run, experiment)
    written = plots.make_run_plots(run)
    names = sorted(p.name for p in written)
    assert names == sorted(plots.PLOT_FILES)
    for p in written:
        assert p.parent == run / "plots"
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert p.stat().st_size > 5000
    assert not (run / "plots" / plots.WORST_ERRORS).exists()
    assert not [p for p in (run / "plots").iterdir() if p.name.endswith(".tmp")]


def test_worst_errors_only_with_images(tmp_path: Path) -> None:
    run = tmp_path / "mt"
    make_run_folder(run)
    written = plots.make_run_plots(run, images=fake_images(run))
    assert (run / "plots" / plots.WORST_ERRORS) in written
    assert (run / "plots" / plots.WORST_ERRORS).stat().st_size > 5000


def test_worst_error_ranking_is_most_confidently_wrong(tmp_path: Path) -> None:
    run = tmp_path / "mt"
    make_run_folder(run, n=80)
    preds = runfolder.load_predictions(run)
    idx = plots.worst_error_indices(preds, class_head=True, k=5)
    assert all(preds["pred_class"][i] != preds["true_class"][i] for i in idx)
    conf = preds["confidence"][idx]
    assert np.all(np.diff(conf) <= 0)
    wrong = preds["pred_class"] != preds["true_class"]
    assert conf[0] == preds["confidence"][wrong].max()


def test_missing_files_skip_their_plots(tmp_path: Path) -> None:
    run = tmp_path / "r"
    make_run_folder(run)
    (run / "predictions.csv").unlink()
    (run / "metrics.json").unlink()
    names = {p.name for p in plots.make_run_plots(run, images={})}
    assert names == {"loss.png", "top1.png", "rmse.png"}
    (run / "history.csv").unlink()
    assert plots.make_run_plots(run) == []


def test_curves_name_the_images_they_were_measured_on(tmp_path: Path, monkeypatch) -> None:
    """With a holdout the per-epoch columns are the held-out training images, and the figures say so."""
    assert runfolder.eval_set_name({"holdout": 0}) == "validation" and runfolder.eval_set_name(None) == "validation"
    assert runfolder.eval_set_name({"holdout": 1000}) == "held-out (1000 train images)"
    ylabels = []
    real = plots.plot_metric
    monkeypatch.setattr(plots, "plot_metric", lambda *a, **k: ylabels.append(a[4]) or real(*a, **k))
    make_run_folder(tmp_path / "ho", overrides={"holdout": 100})
    plots.make_run_plots(tmp_path / "ho")
    make_run_folder(tmp_path / "plain")
    plots.make_run_plots(tmp_path / "plain")
    assert ylabels == ["held-out (100 train images) top-1 accuracy", "held-out (100 train images) count RMSE",
                       "validation top-1 accuracy", "validation count RMSE"]
    legends = []
    real_save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: legends.append(
        [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]) or real_save(fig, path))
    plots.make_run_plots(tmp_path / "ho")
    top1_legend = next(lg for lg in legends if any("top-1" in t for t in lg))
    assert top1_legend[0].startswith("held-out (100 train images) top-1 accuracy (max ")
    assert not any("val_" in t for lg in legends for t in lg)  # no column names that say validation


def test_widened_network_figures_say_so(tmp_path: Path, monkeypatch) -> None:
    """A capacity study's figures carry its convolutions in the title; the assignment's backbone's do not."""
    titles = []
    real = plots.plot_metric
    monkeypatch.setattr(plots, "plot_metric", lambda *a, **k: titles.append(a[3]) or real(*a, **k))
    make_run_folder(tmp_path / "wide", overrides={"conv_widths": "32,64,64"})
    plots.make_run_plots(tmp_path / "wide")
    make_run_folder(tmp_path / "fixed")
    plots.make_run_plots(tmp_path / "fixed")
    assert titles[0] == titles[1] == "multitask (lambda=5), convolutions 32,64,64,64 (capacity study)"
    assert titles[2] == titles[3] == "multitask (lambda=5)"
