"""Sections 4 and 5 of the report: the augmentations and how each run was set up, read from its config.json."""

from __future__ import annotations

from shapecount import labels
from shapecount.augment import AugmentSpec
from shapecount.config import widened_name
from shapecount.mdtable import md_table
from shapecount.report.runs import Run, num, pick
from shapecount.report.tables import fmt
from shapecount.report.text import render

AUG_KEYS = ("aug_hflip", "aug_vflip", "aug_rot90", "aug_brightness", "aug_noise", "aug_erase", "aug_at_least_one",
            "aug_copies", "tta")


def _perm_text(perm: tuple[int, ...]) -> str:
    """What a type permutation does to the counts, e.g. `left triangles <-> right triangles (... unchanged)`."""
    parts, seen = [], set()
    for i, j in enumerate(perm):
        if i == j or i in seen:
            continue
        if perm[j] == i:
            parts.append(f"{labels.TYPE_PLURAL[i]} <-> {labels.TYPE_PLURAL[j]}")
            seen |= {i, j}
        else:
            parts.append(f"{labels.TYPE_PLURAL[i]} -> {labels.TYPE_PLURAL[j]}")
    fixed = [labels.TYPE_PLURAL[i] for i, j in enumerate(perm) if i == j]
    return "; ".join(parts) + (f" ({', '.join(fixed)} unchanged)" if fixed else "")


def augmentations(runs: list[Run]) -> list[str]:
    ref = pick(runs, "multitask", "multitask") or (runs[0] if runs else None)
    if ref is None or ref.config is None:
        return ["> Not available: no config.json to read the augmentation settings from.", ""]
    spec = AugmentSpec()  # the strengths are fixed in the code; the probabilities come from config.json

    c = ref.config
    p = {k: c.get(k) for k in AUG_KEYS}
    geo = [("aug_hflip", "horizontal flip (mirror left-right)", labels.HFLIP),
           ("aug_vflip", "vertical flip (mirror up-down)", labels.VFLIP),
           ("aug_rot90", "quarter turn counter-clockwise by 90, 180 or 270 degrees (uniform)", labels.ROT90_CCW)]
    rows = []
    for key, what, perm in geo:
        lab = _perm_text(perm) + (" for 90 degrees; 180 and 270 degrees apply it 2 and 3 times" if key == "aug_rot90"
                                  else "")
        rows.append([what, fmt(num(p[key]), 2), lab])
    rows.append(["brightness/contrast", fmt(num(p["aug_brightness"]), 2),
                 (f"none (contrast x[{1 - spec.contrast_range:g}, {1 + spec.contrast_range:g}],"
                 f" offset +-{spec.brightness_range:g})")])
    rows.append(["Gaussian noise", fmt(num(p["aug_noise"]), 2), f"none (std {spec.noise_std:g})"])
    rows.append(["random erasing", fmt(num(p["aug_erase"]), 2),
                 f"none (a 2..{spec.erase_max} pixel square set to 0)"])
    diff = [r for r in runs if r.config and any(r.config.get(k) != c.get(k) for k in AUG_KEYS)]
    diff_table = md_table(["run", *AUG_KEYS], [[r.label, *(fmt(r.config.get(k), 2) for k in AUG_KEYS)] for r in diff])
    return render("augmentations.md.j2", label=ref.label,
                   table=md_table(["transform", "probability", "what happens to the labels (counts)"], rows),
                   enabled=[r[0] for r in rows if (num(r[1]) or 0) > 0], at_least_one=p.get("aug_at_least_one"),
                   copies=p.get("aug_copies"), tta=p.get("tta"), diff_table=diff_table if diff else "")


def _monitor(r: Run) -> str:
    m = r.cfg("monitor")
    if m in (None, "auto"):
        res = "val_top1" if r.class_head else "val_rmse"
        return f"auto ({res})" if m == "auto" else "n/a"
    return str(m)


def _heads(r: Run) -> str:
    """Head width and dropout, e.g. `64, dropout 0.3/0.1` (the seed report's heads) or `256, no dropout` (best)."""
    hidden, d1, d2 = r.cfg("head_hidden"), num(r.cfg("head_dropout1")), num(r.cfg("head_dropout2"))
    if hidden is None:
        return "n/a"
    depth = int(num(r.cfg("head_depth", 1)) or 1)
    width = f"{depth} x {hidden}" if depth > 1 else f"{hidden}"
    return f"{width}, no dropout" if not (d1 or d2) else f"{width}, dropout {fmt(d1, 2)}/{fmt(d2, 2)}"


def _backbone(r: Run) -> str:
    """"fixed" for the assignment's backbone, else the capacity study's convolution widths."""
    widened = widened_name(r.cfg("conv_widths"))
    return "fixed" if widened is None else f"convolutions {widened} (not the fixed one)"


def _lr(r: Run) -> str:
    scale = num(r.cfg("conv_lr_scale", 1.0))
    return fmt(r.cfg("lr")) + (f" (convolutions x{scale:g})" if scale not in (None, 1.0) else "")


def _distillation(r: Run) -> str:
    """The training-only distillation terms of a run, e.g. `features 1, KL 0.5, top layers from the teacher`."""
    if not r.cfg("teacher"):
        return "none"
    parts = [f"{what} {num(r.cfg(key)):g}" for what, key in (("features", "distill_features"), ("KL", "distill_kl"))
             if num(r.cfg(key, 0.0))]
    if r.cfg("distill_init"):
        parts.append("top layers from the teacher")
    return ", ".join(parts)


def _budget(r: Run) -> str:
    minutes = num(r.cfg("minutes", 0.0))
    if not minutes:
        return "none"
    planned = r.metrics.get("epochs_planned")
    return f"{minutes:g} min" + (f" ({planned} epochs)" if planned is not None else "")


def setups(runs: list[Run]) -> list[str]:
    header = ["run", "experiment", "cls_weight", "lambda_cnt", "lr", "weight decay", "batch", "epochs cap",
              "time budget", "patience", "monitor", "schedule", "warmup", "amp", "synthetic/epoch", "holdout",
              "backbone", "heads", "training norms", "distillation", "TTA", "seed"]
    rows = [[r.label, r.cfg("experiment", r.metrics.get("experiment")), fmt(num(r.cfg("cls_weight")), 2),
             fmt(r.lambda_cnt, 2), _lr(r), fmt(r.cfg("weight_decay")), fmt(r.cfg("batch_size")),
             fmt(r.cfg("epochs")), _budget(r), fmt(r.cfg("patience")), _monitor(r), fmt(r.cfg("schedule")),
             fmt(r.cfg("warmup_epochs", 0)), fmt(r.cfg("amp", r.cfg("bf16", False))), fmt(r.cfg("synth_per_epoch", 0)),
             fmt(r.cfg("holdout", 0)), _backbone(r), _heads(r), "BatchNorm, folded" if r.cfg("train_bn") else "none",
             _distillation(r), fmt(r.cfg("tta")), fmt(r.cfg("seed"))] for r in runs]
    if not rows:
        return ["> No runs.", ""]
    return render("setups.md.j2", table=md_table(header, rows))
