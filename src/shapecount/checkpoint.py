"""checkpoint.pt (the final weights of a run) and last.pt (the state after the last complete epoch, for
--resume). Both are plain torch.save dicts with a format marker, loaded with weights_only=True: no code runs."""

from __future__ import annotations

from pathlib import Path

import torch

from shapecount import fileio
from shapecount.config import Config, config_from_dict
from shapecount.errors import UserError
from shapecount.model import build_model
from shapecount.runfolder import RESUME_FILE

CHECKPOINT_FORMAT = "shapecount-checkpoint-v1"
RESUME_FORMAT = "shapecount-resume-v1"
# Fields that may differ between an interrupted run and its resumption: they do not change what is computed. The
# thread count changes the order of parallel sums, so the last bits of the results (and, compounded over
# training, more): a resume without --threads therefore keeps the count the run was started with.
RUNTIME_FIELDS = ("device", "threads")
# The keys engine.capture_state writes; a resume state without them is not one this version can continue.
STATE_KEYS = ("epoch", "model", "optimizer", "scheduler", "rng_torch", "rng_gen", "stopper", "history")
FIX_RESTART = "pass --force instead of --resume to start this run again from scratch"


def nonfinite_tensors(state: dict) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold a NaN or an infinity."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def save_checkpoint(path: Path, model, optimizer, cfg: Config, epoch: int, metrics: dict) -> None:
    """optimizer: the optimizer, its state dict (as a loaded checkpoint holds it), or None."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": (optimizer if isinstance(optimizer, dict) else optimizer.state_dict()) if optimizer else {},
        "epoch": epoch,
        "config": cfg.to_dict(),
        "metrics": fileio.json_safe(metrics),
        "torch_version": str(torch.__version__),
    }
    fileio.save_torch(path, payload)


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
    bad = nonfinite_tensors(ckpt.get("model") or {})
    if bad:
        raise UserError(path, f"holds non-finite weights (NaN or Inf in {', '.join(bad[:3])})",
                        "use another checkpoint or train again; these weights cannot give meaningful predictions")
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = "; ".join(s.strip() for s in first[1:3]) or first[0]
        raise UserError(path, f"weights do not fit the model architecture: {detail}",
                        "use a checkpoint written by this version of shapecount") from None
    return model.to(device).eval(), cfg, ckpt


def save_resume_state(out: Path, cfg: Config, state: dict, elapsed_s: float, data_sha256: str = "") -> None:
    """last.pt: the full training state after an epoch (engine.capture_state), the run time so far and the
    hash of the dataset it trains on (a resume on other data is refused)."""
    payload = {"format": RESUME_FORMAT, "config": cfg.to_dict(), "state": state, "elapsed_s": elapsed_s,
               "data_sha256": data_sha256}
    fileio.save_torch(Path(out) / RESUME_FILE, payload)


def load_resume_state(out: Path, cfg: Config, data_sha256: str = "") -> dict | None:
    """The state saved after the last complete epoch of an interrupted run in `out`, checked against cfg and
    the data: a damaged file, another config or other data is a one-line error that lists what differs."""
    path = Path(out) / RESUME_FILE
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file must not be trusted
        raise UserError(path, f"cannot be read ({type(e).__name__}): not a complete resume checkpoint",
                        FIX_RESTART) from None
    if not isinstance(saved, dict) or saved.get("format") != RESUME_FORMAT:
        raise UserError(path, "is not a shapecount resume checkpoint", f"{FIX_RESTART}, or choose another --out")
    state = saved.get("state")
    if (not isinstance(state, dict) or any(k not in state for k in STATE_KEYS)
            or not isinstance(state["model"], dict) or not isinstance(saved.get("config"), dict)):
        raise UserError(path, "is incomplete (training state keys missing)", FIX_RESTART)
    bad = nonfinite_tensors(state["model"])
    if bad:
        raise UserError(path, f"holds non-finite weights (NaN or Inf in {', '.join(bad[:3])})", FIX_RESTART)
    old, new = dict(saved["config"]), cfg.to_dict()
    diff = [k for k in new if k not in RUNTIME_FIELDS and old.get(k, new[k]) != new[k]]
    shown = [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in diff]
    old_data = saved.get("data_sha256") or ""
    if old_data and data_sha256 and old_data != data_sha256:
        shown.append(f"data: {old_data[:12]} -> {data_sha256[:12]}")
    if shown:
        raise UserError(out, f"--resume with a different config or data ({'; '.join(shown)})",
                        f"resume with the options and data of the interrupted run, or {FIX_RESTART}")
    return saved
