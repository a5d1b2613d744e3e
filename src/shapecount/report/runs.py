"""The runs of a reproduce folder: which there are (runs.json, else the default names) and their files, loaded.

Layout read (all paths relative to the reproduce folder OUT): OUT/runs.json (optional), OUT/eda/ and one run
folder per experiment (docs/run_folder.md). Missing pieces become notes, never errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shapecount import runfolder
from shapecount.config import EXPERIMENT_PRESETS

DEFAULT_RUNS = ("classification", "regression", "multitask")
EDA_DIR = "eda"
COMPARISON_DIR = "comparison"


def num(v: Any) -> float | None:
    """`v` as a finite float, else None (a missing, non-numeric or non-finite value)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass
class Run:
    """One run folder as the report sees it: its name and label, and its files as loaded (None if missing)."""

    name: str
    dir: Path
    label: str
    config: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: dict[str, np.ndarray] | None = None
    preds: dict[str, np.ndarray] | None = None

    @property
    def heads(self) -> tuple[bool, bool]:
        return runfolder.head_flags(self.config, self.metrics)

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
        return runfolder.effective_pred_class(self.preds, self.class_head)

    def rel(self, out: Path, *parts: str) -> str:
        """Path of a file of this run relative to the reproduce folder (for markdown links)."""
        p = self.dir.joinpath(*parts)
        try:
            return p.relative_to(out).as_posix()
        except ValueError:
            return p.as_posix()


def discover_runs(out: Path) -> tuple[list[Run], dict[str, Any] | None, list[str]]:
    """The runs of a reproduce folder with their files loaded, runs.json (or None) and notes on what is missing."""
    out = Path(out)
    notes: list[str] = []
    meta = runfolder.read_runs_json(out, notes)
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
        try:
            metrics = runfolder.load_json(run_dir / runfolder.METRICS_FILE)
            config = runfolder.load_json(run_dir / runfolder.CONFIG_FILE)
        except runfolder.RunFileError as e:
            notes.append(f"Run '{name}': {e}: left out.")
            continue
        if metrics is None or not runfolder.finished(run_dir):
            notes.append(f"Run '{name}' has no metrics.json or is still training (unfinished?): left out.")
            continue
        run = Run(name, run_dir, label, config, metrics)
        if run.config is None:
            notes.append(f"Run '{name}' has no config.json: its setup is inferred from metrics.json.")
        try:
            hist = runfolder.load_history(run_dir) if (run_dir / runfolder.HISTORY_FILE).is_file() else {}
        except runfolder.RunFileError as e:
            notes.append(f"Run '{name}': {e}.")
            hist = {}
        if hist and len(next(iter(hist.values()))):
            run.history = hist
        else:
            notes.append(f"Run '{name}' has no (or an empty) history.csv: no curves for it.")
        try:
            preds = runfolder.load_predictions(run_dir) if (run_dir / runfolder.PREDICTIONS_FILE).is_file() else {}
        except runfolder.RunFileError as e:
            notes.append(f"Run '{name}': {e}.")
            preds = {}
        if len(preds.get("true_class", [])) and "pred_class" in preds:
            run.preds = preds
        else:
            notes.append(f"Run '{name}' has no (or an incomplete) predictions.csv: no error analysis for it.")
        if label == name and run.lambda_cnt is not None and run.cfg("experiment") == name:
            run.label = f"{name} (lambda={run.lambda_cnt:g})"
        runs.append(run)
    return runs, meta, notes


MULTITASK_LAMBDA = EXPERIMENT_PRESETS["multitask"]["lambda_cnt"]


def pick(runs: list[Run], kind: str, name: str) -> Run | None:
    """The run of `kind` named `name`, else (multitask) the one with the preset's lambda_cnt, else the first of
    `kind`."""
    same = [r for r in runs if r.kind == kind]
    for r in same:
        if r.name == name:
            return r
    if kind == "multitask":
        for r in same:
            if r.lambda_cnt == MULTITASK_LAMBDA:
                return r
    return same[0] if same else None
