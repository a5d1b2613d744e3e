"""One experiment = one run folder (docs/run_folder.md); reproduce = EDA + the three experiments + report."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from shapecount import IMPORT_TIME, distributed, engine, evaluation, fileio, runfolder, runlock, runtime
from shapecount.checkpoint import (
    FIX_RESTART,
    RESUME_FILE,
    load_checkpoint,
    load_resume_state,
    save_checkpoint,
    save_resume_state,
)
from shapecount.config import DEFAULT_RECIPE, Config, capacity_note, make_config
from shapecount.data import GSNData, split
from shapecount.distill import load_teacher
from shapecount.errors import TrainingError, UserError
from shapecount.model import build_model, describe

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def refuse_a_file(out: Path) -> None:
    """An output folder that is a file is a one-line error, checked before anything is locked or written."""
    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(out, "exists and is not a folder", "choose another --out")


def prepare_out_dir(out: Path, force: bool, resume: bool = False) -> Path:
    """Refuse to mix a new run into an old one unless asked: results must never be silently overwritten."""
    out = Path(out)
    refuse_a_file(out)
    if not (force or resume) and any((out / m).exists() for m in (*runfolder.RUN_MARKERS, RESUME_FILE)):
        raise UserError(out, "already holds a run", "choose another --out, pass --resume to continue it, "
                        "or --force to overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return out


def machine_description() -> str:
    cpu = runtime.cpu_model()
    dev = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} threads{dev}, torch {torch.__version__}, Python {platform.python_version()}"


def limit(data: GSNData, n: int) -> GSNData:
    return data.subset(torch.arange(min(n, len(data)))) if n else data


def holdout_split(train: GSNData, val: GSNData, n: int) -> tuple[GSNData, GSNData]:
    """(images to train on, images to select the epoch on): the official validation images when n == 0, else
    the last n training images, which are then not trained on."""
    if not n:
        return train, val
    if n >= len(train):
        raise UserError("holdout", f"{n} is not less than the {len(train)} training images",
                        f"pass --set holdout=N with N below {len(train)}, e.g. {max(1, len(train) // 10)}, or "
                        "--set holdout=0 to select on the validation images")
    return train.subset(slice(0, len(train) - n)), train.subset(slice(len(train) - n, len(train)))


def run_splits(cfg: Config, data: GSNData) -> tuple[GSNData, GSNData, GSNData]:
    """(images to train on, images to select the epoch on, official validation images) of a run's config: the
    official split, cut to limit_train / limit_val, and the holdout taken from the end of the training images."""
    train, val = split(data)
    train, val = limit(train, cfg.limit_train), limit(val, cfg.limit_val)
    train, select = holdout_split(train, val, cfg.holdout)
    return train, select, val


def final_metrics(model, cfg: Config, val: GSNData, device) -> tuple[dict, tuple[torch.Tensor, torch.Tensor]]:
    """Metrics of the given weights on val: with TTA if configured, and always the single-view figures."""
    single = evaluation.evaluate(model, val.images, val.counts.float(), cfg, device, tta=False)
    final = evaluation.evaluate(model, val.images, val.counts.float(), cfg, device, tta=True) if cfg.tta else single
    outputs = final.pop("outputs")
    single.pop("outputs", None)
    evaluation.check_finite(*outputs, val.names, "validation")  # NaN/Inf is an error, never a metric
    metrics = {k: v for k, v in final.items()}
    metrics["single_view"] = {k: single[k] for k in ("loss", "top1_accuracy", "macro_f1", "pair_accuracy",
                                                      "rmse", "mae", "count_decoded_accuracy")}
    metrics["live_units"] = single["live_units"]  # of the single view: each image once
    metrics["tta"] = cfg.tta
    metrics["n_val"] = len(val)
    return metrics, outputs


def write_run_outputs(out: Path, model, cfg: Config, val: GSNData, device, extra: dict,
                      optimizer=None, epoch: int = 0) -> dict:
    """Final evaluation -> metrics.json, predictions.csv, checkpoint.pt and plots."""
    from shapecount import plots  # deferred: matplotlib import costs ~1 s, not needed for training start

    metrics, (log_probs, pred_counts) = final_metrics(model, cfg, val, device)
    metrics = {"experiment": cfg.experiment, "lambda_cnt": cfg.lambda_cnt, "cls_weight": cfg.cls_weight,
               "fixed_backbone": cfg.fixed_backbone(), **metrics, **extra}
    runfolder.write_predictions(out / runfolder.PREDICTIONS_FILE, val, log_probs, pred_counts)
    save_checkpoint(out / runfolder.CHECKPOINT_FILE, model, optimizer, cfg, epoch, metrics)
    runfolder.write_metrics(out, metrics)
    images = {n: val.images[i].numpy() for i, n in enumerate(val.names)}
    plots.make_run_plots(out, images=images)
    return metrics


def run_experiment(cfg: Config, data: GSNData, out: Path, log: Log = _stderr, progress: bool = True,
                   force: bool = False, resume: bool = False, world: distributed.World = distributed.SINGLE) -> dict:
    """Train one configuration on the official split and write its run folder. Returns metrics.

    After every epoch the full training state goes to last.pt (atomically), so `resume=True` continues an
    interrupted run from its last complete epoch, with the same result as an uninterrupted run on CPU."""
    train, select, val = run_splits(cfg, data)  # checked before anything is written (or cleared by --force)
    engine.pick_device(cfg.device)
    load_teacher(cfg, torch.device("cpu"))  # a missing or unreadable teacher too (read again on the device)
    refuse_a_file(out)
    if not world.main:
        return _run_worker(cfg, data, train, select, Path(out), resume, world)
    with runlock.locked(out, "training"):
        return _run_locked(cfg, data, train, val, select, Path(out), log, progress, force, resume, world)


def _run_worker(cfg: Config, data: GSNData, train: GSNData, select: GSNData, out: Path, resume: bool,
                world: distributed.World) -> dict:
    """A rank other than 0 under torchrun: the same training on its share of every batch; writes nothing."""
    if resume and runfolder.finished(out):
        return {}  # already complete: rank 0 keeps it too
    distributed.barrier(world)  # rank 0 has checked and prepared the folder (and its resume state)
    saved = load_resume_state(out, cfg, data.sha256) if resume else None
    runtime.configure_cpu(cfg.threads)
    gen = engine.seed_everything(cfg.seed)
    device = engine.pick_device(cfg.device)
    model = build_model(cfg).to(device)
    engine.fit(model, train.images, train.counts.float(), select.images, select.counts.float(), cfg, device, gen,
               progress=False, resume=saved["state"] if saved else None, world=world)
    return {}


def _trained_heads(cfg: Config, class_figures: list[str], count_figures: list[str]) -> list[str]:
    """The figures of the heads this experiment trains: an untrained head's are noise."""
    return (class_figures if cfg.cls_weight > 0 else []) + (count_figures if cfg.lambda_cnt > 0 else [])


def _run_locked(cfg: Config, data: GSNData, train: GSNData, val: GSNData, select: GSNData, out: Path, log: Log,
                progress: bool, force: bool, resume: bool, world: distributed.World) -> dict:
    out = prepare_out_dir(out, force, resume)
    if resume and runfolder.finished(out):
        metrics = runfolder.load_json(out / runfolder.METRICS_FILE) or {}
        log(f"[{cfg.experiment}] already complete in {out}: kept")
        return metrics
    saved = load_resume_state(out, cfg, data.sha256) if resume else None
    if saved and not cfg.threads and saved["config"].get("threads"):  # the same threads, the same sums
        cfg = dataclasses.replace(cfg, threads=int(saved["config"]["threads"]))
    if force and not resume and world.main:
        runfolder.clear_run(out)
    distributed.barrier(world)  # the other ranks may read the folder now
    t0 = time.perf_counter() - (saved["elapsed_s"] if saved else 0.0)
    cpu = runtime.configure_cpu(cfg.threads)
    fileio.write_json(out / runfolder.CONFIG_FILE, cfg.to_dict())
    gen = engine.seed_everything(cfg.seed)
    device = engine.pick_device(cfg.device)
    engine.set_deterministic(cfg.deterministic, device)
    model = build_model(cfg).to(device)
    fileio.write_text(out / runfolder.MODEL_FILE, describe(model))
    state = saved["state"] if saved else None
    start = f", resuming after epoch {state['epoch']}" if state else ""
    precision = runtime.precision_name(runtime.amp_dtype(cfg.amp, device))
    if cfg.amp and precision == "fp32":  # a CPU without native bf16
        log(f"[{cfg.experiment}] amp requested, but {device} has no native bf16 (no AVX512-BF16 or AMX): "
            "training in fp32, which is faster there")
    log(f"[{cfg.experiment}] {len(train)} train / {len(val)} val images on {device} in {precision}; "
        f"cls_weight={cfg.cls_weight} lambda_cnt={cfg.lambda_cnt}; up to {cfg.epochs} epochs"
        f"{f' within {cfg.minutes:g} min' if cfg.minutes else ''}, "
        f"patience {cfg.patience} on {cfg.resolved_monitor()}"
        f"{f' of {len(select)} held-out training images' if cfg.holdout else ''}{start}")
    note = capacity_note(cfg.widths())
    if note:
        log(f"[{cfg.experiment}] {note}")
    history: list[dict] = list(state["history"]) if state else []

    select_name = "held-out" if cfg.holdout else "val"  # what the per-epoch figures are measured on

    def on_epoch(row: dict, capture) -> None:
        history.append(row)
        runfolder.write_history(out, history, held_out=cfg.holdout > 0)
        save_resume_state(out, cfg, capture(), time.perf_counter() - t0, data.sha256)
        mark = " *" if row["improved"] else ""
        shown = _trained_heads(cfg, [f"top1 {row['val_top1']:.3f}"], [f"rmse {row['val_rmse']:.3f}"])
        log(f"[{cfg.experiment}] epoch {row['epoch']:3d}  train {row['train_loss']:.4f}  {select_name} "
            f"{row['val_loss']:.4f}  "
            f"{'  '.join(shown)}  {row['seconds']:.1f}s ({row['train_images_per_s']:.0f} img/s){mark}")

    def on_plan(epochs: int, seconds: list[float]) -> None:
        if len(seconds) == 1:
            log(f"[{cfg.experiment}] time budget {cfg.minutes:g} min: the first epoch took {seconds[0]:.0f}s, so "
                f"{epochs} epochs (the same run without a budget: --epochs {epochs} --set minutes=0)")
        else:
            log(f"[{cfg.experiment}] time budget {cfg.minutes:g} min: epochs now take {seconds[-1]:.0f}s "
                f"({sum(seconds) / 60:.1f} min spent in {len(seconds)}), so {epochs} epochs in all, the lr "
                f"schedule laid out again over them")

    try:
        result = engine.fit(model, train.images, train.counts.float(), select.images, select.counts.float(), cfg,
                            device, gen, on_epoch=on_epoch, progress=progress, resume=state, world=world,
                            on_plan=on_plan)
    except FloatingPointError as e:
        raise TrainingError(f"{out}: training diverged: {e}; the last good epoch is kept in "
                            f"{out / RESUME_FILE}") from None
    except engine.ResumeError as e:
        raise UserError(out / RESUME_FILE, str(e), FIX_RESTART) from None
    extra = {"epochs": result["epochs"], "epochs_planned": result["epochs_planned"], "best_epoch": result["best_epoch"],
             "monitor": result["monitor"], "n_train": len(train), "selected_on": f"holdout ({len(select)} training images)" if cfg.holdout
             else "validation", "precision": precision, **cpu}
    if result["first_step_unix"] is not None and saved is None and runtime.claim_startup():
        # Only the first training of a fresh process measures start-up (import, data load, model, first step).
        extra["first_step_unix"] = result["first_step_unix"]
        extra["startup_s"] = result["first_step_unix"] - IMPORT_TIME
    metrics = write_run_outputs(out, model, cfg, val, device, extra, result["optimizer"], result["epochs"])
    metrics["runtime_s"] = time.perf_counter() - t0
    runfolder.write_metrics(out, metrics)
    (out / RESUME_FILE).unlink(missing_ok=True)  # the run is complete: checkpoint.pt holds the result
    shown = _trained_heads(cfg, [f"top1 {metrics['top1_accuracy']:.3f}", f"macro F1 {metrics['macro_f1']:.3f}",
                                 f"pair {metrics['pair_accuracy']:.3f}"],
                           [f"rmse {metrics['rmse']:.3f}", f"mae {metrics['mae']:.3f}",
                            f"count-decoded {metrics['count_decoded_accuracy']:.3f}"])
    log(f"[{cfg.experiment}] done in {metrics['runtime_s']:.0f}s: best epoch {metrics['best_epoch']}, "
        f"{', '.join(shown)} -> {out}")
    return metrics


def evaluate_checkpoint(checkpoint: Path, data: GSNData, out: Path, force: bool = False,
                        device_name: str = "auto") -> dict:
    """Rebuild metrics, predictions and plots of a checkpoint on the official validation split."""
    device = engine.pick_device(device_name)
    cpu = runtime.configure_cpu()
    model, cfg, ckpt = load_checkpoint(checkpoint, device)
    refuse_a_file(out)
    with runlock.locked(out, "evaluation"):
        out = prepare_out_dir(out, force)
        val = run_splits(dataclasses.replace(cfg, holdout=0), data)[2]
        fileio.write_json(out / runfolder.CONFIG_FILE, cfg.to_dict())
        fileio.write_text(out / runfolder.MODEL_FILE, describe(model))
        # How the model was trained comes from its checkpoint, and what was measured after it was saved (the run's
        # wall time) from the metrics.json beside it; the machine's settings are this evaluation's.
        old = ckpt.get("metrics", {})
        try:
            beside = runfolder.load_json(Path(checkpoint).parent / runfolder.METRICS_FILE) or {}
        except runfolder.RunFileError:
            beside = {}
        extra = {k: old[k] if old.get(k) is not None else beside.get(k)
                 for k in ("epochs", "epochs_planned", "best_epoch", "monitor", "n_train", "selected_on", "precision",
                           "runtime_s")}
        extra.update(cpu)
        history = Path(checkpoint).parent / runfolder.HISTORY_FILE
        if history.is_file() and history.resolve() != (out / runfolder.HISTORY_FILE).resolve():
            fileio.write_text(out / runfolder.HISTORY_FILE, history.read_text())
        # The optimizer state goes along, so that evaluating a run into its own folder loses nothing.
        return write_run_outputs(out, model, cfg, val, device, extra, ckpt.get("optimizer") or None,
                                 int(ckpt.get("epoch", 0)))


def _audit_val(data: GSNData, out: Path, n: int | None, log: Log, progress: bool) -> None:
    """OUT/audit/: the exact decoder on the official validation images (cached by content)."""
    from shapecount.data import cache_dir, split
    from shapecount.exact.audit import default_jobs, format_summary, run_audit
    from shapecount.report.ceiling import write_audit_files

    val = split(data)[1]
    if n is not None:
        val = limit(val, n)
    log(f"exact decoding of {len(val)} validation images -> {out / 'audit'}")
    result = run_audit(val.images.numpy(), val.classes.numpy(), val.names, split="val", jobs=default_jobs(),
                       cache=cache_dir(), progress=progress)
    write_audit_files(out, result)
    log(format_summary(result.summary))


def at_once_plan(cfgs: dict[str, Config], at_once: bool | None) -> dict[str, Config] | None:
    """The configs for training `cfgs` at the same time, or None to train them one after another.

    At once by default where it pays: several experiments on a CPU with two or more threads. The threads are
    shared out (one each at least, so three runs on two cores take turns), and the time budget of one run is
    multiplied by the number of runs: together they take the wall time the runs would one after another, and
    each trains for all of it."""
    first = next(iter(cfgs.values()))
    threads = first.threads or torch.get_num_threads()
    if at_once is None:
        at_once = len(cfgs) > 1 and threads > 1 and engine.pick_device(first.device).type == "cpu"
    if not at_once or len(cfgs) < 2:
        return None
    each = max(1, threads // len(cfgs))
    return {name: dataclasses.replace(cfg, threads=each, minutes=cfg.minutes * len(cfgs))
            for name, cfg in cfgs.items()}


def started_at_once(out: Path, cfgs: dict[str, Config]) -> bool | None:
    """Whether the experiments already begun in `out` train at once or one after another: runs.json's `at_once`
    (written before training starts), else, for a folder without it, their config.json (at once, each holds the
    time budget of one run multiplied by the number of runs, as `at_once_plan` lays it out). None where nothing
    tells: nothing begun, one experiment only, or a recipe without a budget (both ways give the same configs)."""
    if len(cfgs) < 2 or not any(cfg.minutes for cfg in cfgs.values()):
        return None
    meta = runfolder.read_runs_json(Path(out), [])
    if meta is not None and isinstance(meta.get("at_once"), bool):
        return meta["at_once"]
    for name, cfg in cfgs.items():
        try:
            saved = runfolder.load_json(Path(out) / name / runfolder.CONFIG_FILE)
        except runfolder.RunFileError:  # a damaged file tells nothing; training rewrites it
            continue
        minutes = saved.get("minutes") if isinstance(saved, dict) else None
        if not cfg.minutes or not isinstance(minutes, int | float):
            continue
        if math.isclose(minutes, cfg.minutes * len(cfgs)):
            return True
        if math.isclose(minutes, cfg.minutes):
            return False
    return None


def _resume_mode(out: Path, cfgs: dict[str, Config], at_once: bool | None, log: Log) -> bool | None:
    """How a resumed reproduce trains: as it was started, so that each run continues under its own config."""
    begun = started_at_once(out, cfgs)
    if begun is None or at_once == begun:
        return at_once
    if at_once is None:
        log(f"resuming as the run started: {'at once' if begun else 'one at a time'}")
        return begun
    how, fix = (("at once", "resume without --one-at-a-time") if begun
                else ("one at a time", "resume with --one-at-a-time"))
    raise UserError(out, f"was started with its experiments training {how}", f"{fix}, or {FIX_RESTART}")


def reproduce(data: GSNData, out: Path, recipe: str = DEFAULT_RECIPE, overrides: dict | None = None,
              experiments: tuple[str, ...] = ("classification", "regression", "multitask"),
              command: str = "", log: Log = _stderr, progress: bool = True, force: bool = False,
              resume: bool = False, audit: bool = True, audit_images: int | None = None,
              at_once: bool | None = None) -> dict:
    """EDA, the exact-decoding audit of the validation images (all, or the first `audit_images`), the three
    experiments, comparison and report, all under `out`. With resume, finished experiments are kept and an
    interrupted one continues from its last complete epoch; the audit comes from its cache.

    at_once: train the experiments at the same time, one process each (see `at_once_plan`); None decides by
    the machine."""
    out = Path(out)
    refuse_a_file(out)
    for e in experiments:  # validate every config, and its device, before anything is created or cleared
        engine.pick_device(make_config(e, recipe, overrides).device)
    with runlock.locked(out, "reproduce"):
        return _reproduce_locked(data, out, recipe, overrides, experiments, command, log, progress, force,
                                 resume, audit, audit_images, at_once)


def _reproduce_locked(data: GSNData, out: Path, recipe: str, overrides: dict | None, experiments: tuple[str, ...],
                      command: str, log: Log, progress: bool, force: bool, resume: bool, audit: bool,
                      audit_images: int | None, at_once: bool | None) -> dict:
    from shapecount import eda, report

    started = any((out / e).is_dir() for e in experiments) or (out / runfolder.RUNS_FILE).exists()
    if out.exists() and started and not (force or resume):
        raise UserError(out, "already holds a reproduce run",
                        "choose another --out, pass --resume to continue it, or --force to start over")
    out.mkdir(parents=True, exist_ok=True)
    if force and not resume:
        report.clear_outputs(out)
    t0 = time.perf_counter()
    cfgs = {e: make_config(e, recipe, overrides) for e in experiments}  # validate all before any work
    if resume:
        at_once = _resume_mode(out, cfgs, at_once, log)
    log(f"EDA -> {out / 'eda'}")
    eda.run_eda(data, out / "eda")
    if audit:
        _audit_val(data, out, audit_images, log, progress)
    plan = at_once_plan(cfgs, at_once)
    runs = [{"name": name, "dir": name, "label": f"{name} (lambda={cfg.lambda_cnt:g})"} for name, cfg in cfgs.items()]
    info = {"runs": runs, "command": command, "resumed": resume, "machine": machine_description(),
            "date": _dt.date.today().isoformat(), "recipe": recipe, "at_once": bool(plan)}
    runfolder.write_runs_json(out, info)  # before training: a --resume continues in the same way
    if plan:
        from shapecount.runs_at_once import train_at_once

        cfgs = plan
        one = next(iter(cfgs.values()))
        budget = f", each within {one.minutes:g} min" if one.minutes else ""
        log(f"the {len(cfgs)} experiments train at once, {one.threads} thread{'s' if one.threads > 1 else ''} "
            f"each{budget} (--one-at-a-time: one after another)")
        results = train_at_once({name: (cfg, out / name) for name, cfg in cfgs.items()}, data, resume=resume)
    else:
        results = {name: run_experiment(cfg, data, out / name, log=log, progress=progress, force=not resume,
                                        resume=resume) for name, cfg in cfgs.items()}
    info["wall_s"] = time.perf_counter() - t0
    runfolder.write_runs_json(out, info)
    md, html = report.write_report(out)  # also writes comparison/
    info["wall_s"] = time.perf_counter() - t0
    runfolder.write_runs_json(out, info)
    log(f"reproduce done in {info['wall_s']:.0f}s -> {md} and {html}")
    return {"results": results, **info}

