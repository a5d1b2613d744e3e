"""The run folder format (docs/run_folder.md): the columns its files are written with, and their readers; and
runs.json, the list of runs of a reproduce folder.

A run folder holds config.json, history.csv, metrics.json, predictions.csv, model.txt, checkpoint.pt and plots/
(checkpoint.pt and the resume state are read and written by checkpoint.py, plots/ by plots.py). Training writes
with the functions here; plots, the report and the ablation summary read with them. Reading needs numpy and
torch only: no matplotlib, no model, no dataset.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from shapecount import fileio, labels
from shapecount.errors import UserError

if TYPE_CHECKING:
    from shapecount.data import GSNData

HISTORY_COLUMNS = ["epoch", "train_loss", "train_loss_cls", "train_loss_cnt", "train_loss_aux", "train_loss_distill",
                   "val_loss", "val_loss_cls",
                   "val_loss_cnt", "val_top1", "val_rmse", "val_mae", "val_count_top1", "val_live_units", "lr",
                   "seconds"]
PRED_TYPE_COLS = tuple(f"pred_{t}" for t in labels.TYPES)
PRED_COLUMNS = (["name", *labels.TYPES, "true_class", "pred_class", *PRED_TYPE_COLS]
                + ["pred_class_from_counts", "confidence"])
# A reproduce folder's list of its runs: {"runs": [{"name", "dir", "label"}, ...], "command", "recipe", "machine",
# "date", "wall_s", "resumed", "at_once"} (experiments.reproduce writes it, the report reads it).
RUNS_FILE = "runs.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
PREDICTIONS_FILE = "predictions.csv"
MODEL_FILE = "model.txt"
CHECKPOINT_FILE = "checkpoint.pt"
# The resume state of a run that has not finished (checkpoint.py writes and reads it; a finished run removes it).
RESUME_FILE = "last.pt"
PLOTS_DIR = "plots"
# Files whose presence means a folder already holds a run.
RUN_MARKERS = (METRICS_FILE, HISTORY_FILE, CHECKPOINT_FILE)
# Every file a run writes at the top of its folder (plots/ besides).
RUN_FILES = (CONFIG_FILE, HISTORY_FILE, METRICS_FILE, PREDICTIONS_FILE, MODEL_FILE, CHECKPOINT_FILE, RESUME_FILE)
_INT_COLS = {"true_class", "pred_class", "pred_class_from_counts", *labels.TYPES}
_STR_COLS = {"name"}
_FIX_RUN_FILE = "rerun the command that wrote the run (with --force), or move the folder away"


class RunFileError(UserError):
    """A run-folder file that exists but is not what its writer writes (cut short, edited by hand)."""


# ---------------------------------------------------------------- writers

def write_metrics(run_dir: Path, metrics: dict) -> Path:
    return fileio.write_json(Path(run_dir) / METRICS_FILE, metrics)


HELD_OUT_PREFIX = "holdout_"


def history_header(held_out: bool) -> list[str]:
    """history.csv's columns: the per-epoch evaluation is on the validation images (`val_*`) or, when the run
    selects its epoch on held-out training images, on those (`holdout_*`): each column says which it is."""
    if not held_out:
        return list(HISTORY_COLUMNS)
    return [HELD_OUT_PREFIX + c[len("val_"):] if c.startswith("val_") else c for c in HISTORY_COLUMNS]


def write_history(run_dir: Path, rows: list[dict], held_out: bool = False) -> Path:
    """history.csv from the per-epoch dicts of engine.fit (keys as in HISTORY_COLUMNS), rewritten whole
    (atomically) after every epoch, so an interrupted run keeps the epochs done so far."""
    return fileio.write_csv(Path(run_dir) / HISTORY_FILE, history_header(held_out),
                            [[r[c] for c in HISTORY_COLUMNS] for r in rows])


def write_predictions(path: Path, data: GSNData, log_probs: torch.Tensor, pred_counts: torch.Tensor) -> None:
    pred = log_probs.argmax(1)
    conf = log_probs.max(1).values.exp()
    decoded = labels.decode_counts(pred_counts)
    rows = []
    for i, name in enumerate(data.names):
        rows.append([name, *data.counts[i].tolist(), int(data.classes[i]), int(pred[i]),
                     *(f"{v:.4f}" for v in pred_counts[i].tolist()), int(decoded[i]), f"{float(conf[i]):.4f}"])
    fileio.write_csv(path, PRED_COLUMNS, rows)


# ---------------------------------------------------------------- readers

def _to_float(s: str) -> float:
    try:
        return float(s)
    except (TypeError, ValueError):
        return math.nan


def _to_int(s: str) -> int:
    v = _to_float(s)
    return round(v) if math.isfinite(v) else -1


def _read_columns(path: Path) -> dict[str, list[str]]:
    """A CSV file of a run folder as column name -> cells; a file that cannot be read as CSV raises RunFileError."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols: dict[str, list[str]] = {k: [] for k in (reader.fieldnames or [])}
            for row in reader:
                for k, vals in cols.items():
                    vals.append(row.get(k) or "")
    except (OSError, ValueError, csv.Error) as e:  # ValueError: UnicodeDecodeError
        raise RunFileError(path, f"cannot be read as CSV ({' '.join(str(e).split())})", _FIX_RUN_FILE) from None
    return cols


def load_history(run_dir: Path) -> dict[str, np.ndarray]:
    """history.csv as column name -> float array (an empty or unparsable cell is NaN). The per-epoch
    evaluation columns come back under their `val_*` names whichever images they were measured on
    (`holdout_*` in the file): readers learn which from the config (`eval_set_name`)."""
    cols = _read_columns(Path(run_dir) / HISTORY_FILE)
    return {("val_" + k[len(HELD_OUT_PREFIX):] if k.startswith(HELD_OUT_PREFIX) else k):
            np.array([_to_float(v) for v in vals], dtype=float) for k, vals in cols.items()}


def load_predictions(run_dir: Path) -> dict[str, np.ndarray]:
    """predictions.csv as column name -> array: `name` str, class ids and true counts int, the rest float."""
    cols = _read_columns(Path(run_dir) / PREDICTIONS_FILE)
    out: dict[str, np.ndarray] = {}
    for k, vals in cols.items():
        if k in _STR_COLS:
            out[k] = np.array(vals, dtype=str)
        elif k in _INT_COLS:
            out[k] = np.array([_to_int(v) for v in vals], dtype=np.int64)
        else:
            out[k] = np.array([_to_float(v) for v in vals], dtype=float)
    return out


def clear_run(run_dir: Path) -> None:
    """Remove what a run wrote into `run_dir` (RUN_FILES and plots/), so that a run started again from scratch
    never mixes with the old one's files; anything else in the folder stays."""
    run_dir = Path(run_dir)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / PLOTS_DIR, ignore_errors=True)


def finished(run_dir: Path) -> bool:
    """Whether a run folder holds a finished run: its metrics and no resume state."""
    return (Path(run_dir) / METRICS_FILE).is_file() and not (Path(run_dir) / RESUME_FILE).exists()


def load_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file of a run folder (config.json, metrics.json), or None when it does not exist. A file
    that is not a JSON object raises RunFileError, one line naming it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise RunFileError(path, f"cannot be read as JSON ({' '.join(str(e).split())})", _FIX_RUN_FILE) from None
    if not isinstance(obj, dict):
        raise RunFileError(path, f"holds a JSON {type(obj).__name__}, not an object", _FIX_RUN_FILE)
    return obj


def head_flags(config: Mapping[str, Any] | None, metrics: Mapping[str, Any] | None = None) -> tuple[bool, bool]:
    """(class head trained, count head trained) from config.json weights (else the experiment name)."""
    if config and "cls_weight" in config and "lambda_cnt" in config:
        return float(config["cls_weight"]) > 0, float(config["lambda_cnt"]) > 0
    exp = (config or {}).get("experiment") or (metrics or {}).get("experiment") or "multitask"
    return exp != "regression", exp != "classification"


def eval_set_name(config: Mapping[str, Any] | None) -> str:
    """What the per-epoch `val_*` columns measure: the validation images, or (holdout > 0, the honest protocol)
    the held-out training images that select the epoch."""
    n = int((config or {}).get("holdout") or 0)
    return f"held-out ({n} train images)" if n else "validation"


def true_counts(preds: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.stack([preds[t] for t in labels.TYPES], axis=1).astype(float)


def pred_counts(preds: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.stack([preds[c] for c in PRED_TYPE_COLS], axis=1).astype(float)


def effective_pred_class(preds: Mapping[str, np.ndarray], class_head: bool) -> np.ndarray:
    """The class a run predicts: the class head's argmax, or for a run whose class head was not trained
    (regression-only) the class decoded from its count head (labels.decode_counts; a missing count is 0)."""
    if not class_head:
        if "pred_class_from_counts" in preds:
            return preds["pred_class_from_counts"]
        if all(c in preds for c in PRED_TYPE_COLS):
            counts = torch.from_numpy(np.nan_to_num(pred_counts(preds)))
            return labels.decode_counts(counts).numpy().astype(np.int64)
    return preds["pred_class"]


# ---------------------------------------------------------------- reproduce folders

def write_runs_json(out: Path, info: dict[str, Any]) -> Path:
    """A reproduce folder's runs.json: its runs ({"name", "dir", "label"} each) and how they were made."""
    return fileio.write_json(Path(out) / RUNS_FILE, info)


def read_runs_json(out: Path, notes: list[str]) -> dict[str, Any] | None:
    """A reproduce folder's runs.json, or None (missing or unreadable, with a note saying so)."""
    p = Path(out) / RUNS_FILE
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


def trained_at_once(meta: dict[str, Any] | None) -> bool:
    """Whether runs.json says the runs trained at the same time (reproduce's default on a CPU), sharing the cores."""
    return bool(meta and meta.get("at_once"))
