"""Training and evaluation loops over whole uint8 tensors (no DataLoader, no per-item decoding).

Functions return dicts; the only state kept between epochs lives in small classes (EarlyStopping) or is
passed in (model, optimizer, scheduler, generator). Nothing here writes files.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from shapecount import augment, labels, runtime, synth
from shapecount.losses import multitask_loss
from shapecount.metrics import compute_metrics


def seed_everything(seed: int) -> torch.Generator:
    """The one seeding function: torch.manual_seed(seed) (the protocol), plus Python and NumPy, and a
    dedicated CPU generator for shuffling and augmentation so that data order does not depend on how many
    random numbers the model's initialisation or dropout consumed."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available (use --device cpu)")
    return torch.device(name)


def set_deterministic(on: bool, device: torch.device) -> None:
    """CPU training here is deterministic for a given thread count already. On CUDA, cuDNN picks kernels by
    benchmark and some backward kernels use atomics: `on` asks for deterministic ones (a bit slower)."""
    if on and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast when asked (callers decide with `runtime.use_bf16`; the benchmark times both)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def to_input(images_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, 28, 28) uint8 0/255 -> (N, 1, 28, 28) float in [0, 1] on device (converted after the copy: 4x less
    traffic)."""
    return images_u8.to(device, non_blocking=True).unsqueeze(1).float().div_(255)


def make_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    # Fused Adam does the update of all 12.9 M parameters in one kernel: the same maths, a large share of a
    # CPU step saved (see `shapecount bench`).
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg, steps_per_epoch: int):
    """Per-step LambdaLR: constant (the protocol), or linear warmup then cosine to 0 over cfg.epochs."""
    total = max(1, cfg.epochs * steps_per_epoch)
    # Warmup is capped below the run's length (e.g. `--epochs 2` with the fast recipe's 2 warmup epochs), so
    # that a short run still reaches its peak lr and decays.
    warm = min(cfg.warmup_epochs, max(cfg.epochs - 1, 0)) * steps_per_epoch

    def factor(step: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epoch_indices(n: int, copies: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffled indices for one epoch and whether each is an augmented copy. copies=0: every image once,
    augmented (when augmentation is on); copies=K: the seed report's expansion, originals + K augmented
    copies."""
    if copies == 0:
        return torch.randperm(n, generator=gen), torch.ones(n, dtype=torch.bool)
    idx = torch.arange(n).repeat(copies + 1)
    aug = torch.arange(n * (copies + 1)) >= n
    order = torch.randperm(len(idx), generator=gen)
    return idx[order], aug[order]


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, images: torch.Tensor,
                    counts: torch.Tensor, cfg, gen: torch.Generator, device: torch.device,
                    desc: str = "train", progress: bool = True) -> dict[str, float]:
    """One pass over the training tensors. Returns per-sample mean losses, lr, seconds and images/s."""
    model.train()
    spec = augment.AugmentSpec.from_config(cfg)
    idx, is_aug = epoch_indices(len(images), cfg.aug_copies, gen)
    bf16 = runtime.use_bf16(cfg.bf16, device)  # fp32 where the device has no native bf16
    sums = {"loss": 0.0, "loss_cls": 0.0, "loss_cnt": 0.0}
    seen = 0
    t0 = time.perf_counter()
    batches = range(0, len(idx), cfg.batch_size)
    bar = tqdm(batches, desc=desc, unit="batch", leave=False, disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    lr = optimizer.param_groups[0]["lr"]
    first_step_unix = None  # wall clock at the end of the first step: start-up time, measured by the caller
    for start in bar:
        b = idx[start:start + cfg.batch_size]
        x = to_input(images[b], device)
        y_cnt = counts[b].to(device).float()
        if spec.enabled:
            a = is_aug[start:start + cfg.batch_size].to(device)
            xa, ca = augment.augment_batch(x, y_cnt, spec, gen)
            x = torch.where(a.view(-1, 1, 1, 1), xa, x)
            y_cnt = torch.where(a.view(-1, 1), ca, y_cnt)
        # The class is recomputed from the (possibly permuted) counts: it must move with the image.
        y_cls = labels.counts_to_class_batch(y_cnt)
        lr = optimizer.param_groups[0]["lr"]
        with autocast(device, bf16):
            log_probs, pred_counts = model(x)
        losses = multitask_loss(log_probs, pred_counts, y_cls, y_cnt, cfg.cls_weight, cfg.lambda_cnt)
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"non-finite loss {float(losses['loss'].detach())} at {desc}, step {start // cfg.batch_size}")
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        scheduler.step()
        if first_step_unix is None:
            first_step_unix = time.time()
        n = len(b)
        seen += n
        for k in sums:
            sums[k] += float(losses[k].detach()) * n
        if progress:
            bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", refresh=False)
    seconds = time.perf_counter() - t0
    out = {f"train_{k}": v / max(seen, 1) for k, v in sums.items()}
    out.update(lr=lr, train_seconds=seconds, train_images_per_s=seen / max(seconds, 1e-9),
               first_step_unix=first_step_unix)
    return out


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1000,
            tta: bool = False, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-set outputs (log_probs (N, 135), counts (N, 6)) as float32 on the CPU, in eval mode.

    With tta the 8 symmetric views are predicted and mapped back to the original labels; log-probabilities
    are averaged (a geometric mean of the probabilities, renormalised) and counts averaged."""
    model.eval()
    out_lp, out_cnt = [], []
    for start in range(0, len(images), batch_size):
        x = to_input(images[start:start + batch_size], device)
        views = augment.tta_views(x) if tta else [(x, None, None)]
        lp_sum, cnt_sum = 0.0, 0.0
        for v, cls_idx, type_idx in views:
            with autocast(device, bf16):
                lp, cnt = model(v)
            lp, cnt = lp.float(), cnt.float()
            if cls_idx is not None:
                lp, cnt = lp[:, cls_idx], cnt[:, type_idx]
            lp_sum, cnt_sum = lp_sum + lp, cnt_sum + cnt
        lp = torch.log_softmax(lp_sum / len(views), dim=1)
        out_lp.append(lp.cpu())
        out_cnt.append((cnt_sum / len(views)).cpu())
    return torch.cat(out_lp), torch.cat(out_cnt)


def evaluate(model: nn.Module, images: torch.Tensor, counts: torch.Tensor, cfg, device: torch.device,
             tta: bool = False) -> dict[str, object]:
    """Losses and all metrics on a labelled set, plus the raw outputs under key 'outputs'."""
    classes = labels.counts_to_class_batch(counts)
    t0 = time.perf_counter()
    log_probs, pred_counts = predict(model, images, device, cfg.eval_batch_size, tta=tta,
                                     bf16=runtime.use_bf16(cfg.bf16, device))
    seconds = time.perf_counter() - t0
    losses = multitask_loss(log_probs, pred_counts, classes, counts, cfg.cls_weight, cfg.lambda_cnt)
    out: dict[str, object] = {k: float(v) for k, v in losses.items()}
    out.update(compute_metrics(log_probs, pred_counts, classes, counts))
    out["eval_seconds"] = seconds
    out["outputs"] = (log_probs, pred_counts)
    return out


class EarlyStopping:
    """Tracks the monitored validation quantity; keeps the best weights in memory (restored at the end)."""

    def __init__(self, monitor: str, patience: int) -> None:
        self.monitor, self.patience = monitor, patience
        self.mode = "max" if monitor == "val_top1" else "min"
        self.best = -math.inf if self.mode == "max" else math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def step(self, value: float, epoch: int, model: nn.Module) -> bool:
        """Record one epoch; returns True when it improved (strictly)."""
        better = value > self.best if self.mode == "max" else value < self.best
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def capture_state(model: nn.Module, optimizer, scheduler, stopper: EarlyStopping, gen: torch.Generator,
                  history: list[dict], epoch: int) -> dict:
    """Everything needed to continue after `epoch` exactly as if never stopped (CPU): weights, optimizer and
    scheduler state, every RNG the loop draws from, early-stopping state and the history so far."""
    return {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "rng_gen": gen.get_state(),
        "stopper": {"best": stopper.best, "best_epoch": stopper.best_epoch, "bad_epochs": stopper.bad_epochs,
                    "best_state": stopper.best_state},
        "history": history,
    }


def restore_state(state: dict, model: nn.Module, optimizer, scheduler, stopper: EarlyStopping,
                  gen: torch.Generator) -> tuple[int, list[dict]]:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_torch"])
    if state.get("rng_cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    gen.set_state(state["rng_gen"])
    st = state["stopper"]
    stopper.best, stopper.best_epoch, stopper.bad_epochs = st["best"], st["best_epoch"], st["bad_epochs"]
    stopper.best_state = st["best_state"]
    return int(state["epoch"]), list(state["history"])


def fit(model: nn.Module, train_images: torch.Tensor, train_counts: torch.Tensor, val_images: torch.Tensor,
        val_counts: torch.Tensor, cfg, device: torch.device, gen: torch.Generator,
        on_epoch: Callable[[dict, Callable[[], dict]], None] | None = None, progress: bool = True,
        resume: dict | None = None) -> dict[str, object]:
    """Train with early stopping on the validation set; restores the best weights. Returns
    {'history': [per-epoch dicts], 'best_epoch', 'epochs', 'optimizer', 'train_seconds'}.

    on_epoch(row, state) is called after every epoch; state() captures the full training state (for a resume
    checkpoint; the caller decides where it goes). resume: such a state, to continue after its epoch."""
    optimizer = make_optimizer(model, cfg)
    steps = math.ceil((len(train_images) + cfg.synth_per_epoch) * (cfg.aug_copies + 1) / cfg.batch_size)
    scheduler = make_scheduler(optimizer, cfg, steps)
    stopper = EarlyStopping(cfg.resolved_monitor(), cfg.patience)
    history: list[dict] = []
    done = 0
    if resume is not None:
        done, history = restore_state(resume, model, optimizer, scheduler, stopper, gen)
    t0 = time.perf_counter()
    first_step_unix = None
    for epoch in range(done + 1, cfg.epochs + 1):
        if stopper.should_stop:  # a run resumed after its last epoch
            break
        t_epoch = time.perf_counter()
        images, counts = train_images, train_counts
        if cfg.synth_per_epoch:  # fresh images every epoch, drawn from `gen`: deterministic and resumable
            s_images, s_counts = synth.generate(cfg.synth_per_epoch, gen)
            images, counts = torch.cat([images, s_images]), torch.cat([counts, s_counts.to(counts.dtype)])
        tr = train_one_epoch(model, optimizer, scheduler, images, counts, cfg, gen, device,
                             desc=f"epoch {epoch}/{cfg.epochs}", progress=progress)
        first_step_unix = first_step_unix or tr["first_step_unix"]
        ev = evaluate(model, val_images, val_counts, cfg, device, tta=False)
        row = {
            "epoch": epoch,
            "train_loss": tr["train_loss"], "train_loss_cls": tr["train_loss_cls"],
            "train_loss_cnt": tr["train_loss_cnt"],
            "val_loss": ev["loss"], "val_loss_cls": ev["loss_cls"], "val_loss_cnt": ev["loss_cnt"],
            "val_top1": ev["top1_accuracy"], "val_rmse": ev["rmse"], "val_mae": ev["mae"],
            "lr": tr["lr"], "seconds": time.perf_counter() - t_epoch,
        }
        improved = stopper.step(row[stopper.monitor], epoch, model)
        row["improved"] = improved
        row["train_images_per_s"] = tr["train_images_per_s"]
        history.append(row)
        if on_epoch:
            on_epoch(row, lambda e=epoch: capture_state(model, optimizer, scheduler, stopper, gen, history, e))
        if stopper.should_stop:
            break
    stopper.restore(model)
    return {"history": history, "best_epoch": stopper.best_epoch, "epochs": len(history),
            "optimizer": optimizer, "train_seconds": time.perf_counter() - t0, "monitor": stopper.monitor,
            "first_step_unix": first_step_unix}
