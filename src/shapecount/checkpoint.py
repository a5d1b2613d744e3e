"""checkpoint.pt (the final weights of a run) and last.pt (the state after the last complete epoch, for
--resume). Both are plain torch.save dicts with a format marker, loaded with weights_only=True: no code runs."""

from __future__ import annotations

from pathlib import Path

import torch

from shapecount import fileio
from shapecount.config import Config, config_from_dict
from shapecount.errors import UserError
from shapecount.model import build_model
from shapecount.runfolder import json_safe

CHECKPOINT_FORMAT = "shapecount-checkpoint-v1"
RESUME_FORMAT = "shapecount-resume-v1"
RESUME_FILE = "last.pt"
# Fields that may differ between an interrupted run and its resumption: they do not change the maths on CPU.
RUNTIME_FIELDS = ("device", "threads")


def save_checkpoint(path: Path, model, optimizer, cfg: Config, epoch: int, metrics: dict) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "epoch": epoch,
        "config": cfg.to_dict(),
        "metrics": json_safe(metrics),
        "torch_version": str(torch.__version__),
    }
    fileio.atomic_write(path, lambda p: torch.save(payload, p))


def load_checkpoint(path: Path, device: torch.device | str = "cpu"):
    """(model in eval mode, config, raw checkpoint dict). Loads with weights_only=True: no code runs."""
    path = Path(path)
    if not path.is_file():
        raise UserError(path, "checkpoint not found", "pass the checkpoint.pt of a run folder")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not our checkpoint"
        raise UserError(path, f"not a readable shapecount checkpoint ({type(e).__name__})",
                        "pass the checkpoint.pt written by `shapecount train`") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(path, "not a shapecount checkpoint (format marker missing or different)",
                        f"expected format {CHECKPOINT_FORMAT}")
    try:
        cfg = config_from_dict(ckpt["config"])
    except Exception as e:  # noqa: BLE001
        raise UserError(path, f"checkpoint config does not fit this version: {e}", "retrain with this version") from None
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = "; ".join(s.strip() for s in first[1:3]) or first[0]
        raise UserError(path, f"weights do not fit the model architecture: {detail}",
                        "use a checkpoint written by this version of shapecount") from None
    return model.to(device).eval(), cfg, ckpt


def save_resume_state(out: Path, cfg: Config, state: dict, elapsed_s: float) -> None:
    """last.pt: the full training state after an epoch (engine.capture_state) and the run time so far."""
    payload = {"format": RESUME_FORMAT, "config": cfg.to_dict(), "state": state, "elapsed_s": elapsed_s}
    fileio.atomic_write(Path(out) / RESUME_FILE, lambda p: torch.save(payload, p))


def load_resume_state(out: Path, cfg: Config) -> dict | None:
    """The state saved after the last complete epoch of an interrupted run in `out`, checked against cfg."""
    path = Path(out) / RESUME_FILE
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file must not be trusted
        raise UserError(path, f"cannot be read ({type(e).__name__}): not a complete resume checkpoint",
                        "delete it to start the run again from scratch") from None
    if not isinstance(saved, dict) or saved.get("format") != RESUME_FORMAT:
        raise UserError(path, "is not a shapecount resume checkpoint", "delete it, or choose another --out")
    old, new = dict(saved["config"]), cfg.to_dict()
    diff = [k for k in new if k not in RUNTIME_FIELDS and old.get(k, new[k]) != new[k]]
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in diff[:4])
        raise UserError(out, f"--resume with a different config ({shown})",
                        "resume with the options of the interrupted run, or start a new --out")
    return saved
