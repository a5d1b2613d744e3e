"""The training loop over whole uint8 tensors (no DataLoader, no per-item decoding); evaluation is in evaluation.py.

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

from shapecount import augment, distributed, labels, runtime, schedule, synth
from shapecount.config import DEVICE_NAMES
from shapecount.distill import distill_loss, init_from_teacher, load_teacher
from shapecount.ema import WeightEma
from shapecount.errors import UserError
from shapecount.evaluation import evaluate, to_input
from shapecount.losses import anchor_loss, anchor_maps, multitask_loss
from shapecount.model import (
    CONV_LAYERS,
    FC_POSITIONS,
    attach_norms,
    big_linear,
    fold_norms,
    init_from_data,
    init_shared,
    leaky_in_training,
    make_anchor_head,
    shared_gradient,
)


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
    """auto (CUDA when present, else the CPU), cpu, cuda or cuda:N; anything else is a one-line UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICE_NAMES.fullmatch(name):
        raise UserError("--device", f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device", f"{name} was asked for but no CUDA device is available", "use --device cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UserError("--device", f"{name} was asked for but this machine has {torch.cuda.device_count()} "
                            "CUDA device(s)", "use cuda:0 up to the last one")
    return torch.device(name)


def set_deterministic(on: bool, device: torch.device) -> None:
    """CPU training here is deterministic for a given thread count already. On CUDA, cuDNN picks kernels by
    benchmark and some backward kernels use atomics: `on` asks for deterministic ones (a bit slower)."""
    if on and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)


INIT_IMAGES = 512  # the batch model.init_from_data measures; enough for a stable median per unit


def make_optimizer(model: nn.Module, cfg, extra: nn.Module | None = None) -> torch.optim.Optimizer:
    # Fused Adam does the update of all 12.9 M parameters in one kernel: the same maths, a large share of a
    # CPU step saved (see `shapecount bench`). `extra`: a training-only module optimised alongside.
    # The backbone's Linear(50176, 256) gets its own lr (cfg.fc_lr_scale; see config.py for why), and so do the
    # convolutions when cfg.conv_lr_scale differs from 1 (a group of their own only then: the optimizer state
    # of a run that does not use it keeps its layout, so such runs resume as before).
    fc = list(model.backbone[CONV_LAYERS:].parameters())
    conv = list(model.backbone[:CONV_LAYERS].parameters()) if cfg.conv_lr_scale != 1 else []
    own = {id(p) for p in fc + conv}
    rest = [p for p in model.parameters() if id(p) not in own]
    rest += list(extra.parameters()) if extra is not None else []
    groups = [{"params": rest}, {"params": fc, "lr": cfg.lr * cfg.fc_lr_scale}]
    if cfg.fc_share > 0:
        # A weight shared over the 784 positions moves the output 784 times as much per step as one that is not:
        # at lr / 784 Adam trains it as it would train average pooling + Linear(64, 256) at lr.
        weight = big_linear(model).weight
        groups[1]["params"] = [p for p in fc if p is not weight]
        groups.append({"params": [weight], "lr": cfg.lr * cfg.fc_lr_scale / FC_POSITIONS})
    if conv:
        groups.append({"params": conv, "lr": cfg.lr * cfg.conv_lr_scale})
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


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


def _step_losses(model: nn.Module, anchor_head: nn.Module | None, x: torch.Tensor, y_cls: torch.Tensor,
                 y_cnt: torch.Tensor, maps: torch.Tensor | None, has_map: torch.Tensor | None, cfg,
                 device: torch.device, amp: torch.dtype | None,
                 teacher: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Forward pass and the losses of one batch (per-sample means); 'loss' is what is back-propagated."""
    with runtime.autocast(device, amp):
        if anchor_head is None and teacher is None:
            log_probs, pred_counts = model(x)
        else:  # the training-only losses read the last feature map
            fmap = model.feature_map(x)
            log_probs, pred_counts = model.heads(fmap)
            pred_maps = anchor_head(fmap) if anchor_head is not None else None
    losses = multitask_loss(log_probs, pred_counts, y_cls, y_cnt, cfg.cls_weight, cfg.lambda_cnt)
    if anchor_head is not None:
        losses["loss_aux"] = anchor_loss(pred_maps, maps, has_map)
        losses["loss"] = losses["loss"] + cfg.aux_anchor * losses["loss_aux"]
    else:
        losses["loss_aux"] = torch.zeros((), device=device)
    if teacher is not None:
        with runtime.autocast(device, amp):
            losses["loss_distill"] = distill_loss(teacher, x, fmap, log_probs, cfg)
        losses["loss"] = losses["loss"] + losses["loss_distill"]
    else:
        losses["loss_distill"] = torch.zeros((), device=device)
    return losses


LOSS_KEYS = ("loss", "loss_cls", "loss_cnt", "loss_aux", "loss_distill")  # per-epoch training losses (train_<key>)


def _scaled(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> torch.Tensor:
    return scaler.scale(loss) if scaler is not None else loss


def make_scaler(cfg, device: torch.device) -> torch.amp.GradScaler | None:
    """Loss scaling for fp16 training (GPUs without bf16): fp16 gradients underflow without it; bf16 has
    fp32's exponent range and needs none."""
    return torch.amp.GradScaler(device.type) if runtime.amp_dtype(cfg.amp, device) == torch.float16 else None


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, images: torch.Tensor,
                    counts: torch.Tensor, cfg, gen: torch.Generator, device: torch.device,
                    desc: str = "train", progress: bool = True, points: torch.Tensor | None = None,
                    anchor_head: nn.Module | None = None, world: distributed.World = distributed.SINGLE,
                    scaler: torch.amp.GradScaler | None = None, ema: WeightEma | None = None,
                    on_step: Callable[[int], None] | None = None,
                    teacher: nn.Module | None = None) -> dict[str, float]:
    """One pass over the training tensors. Returns per-sample mean losses, lr, seconds and images/s.
    With a teacher, the batch is also distilled from it (distill.distill_loss).
    With ema, every step's weights are offered to its average (which takes them in every few steps).
    on_step(steps taken so far in the run) is called before each step's forward pass.

    With anchor_head, images that come with shape points (int (N, 10, 3) type/row/col; type -1 for images
    without) also train it on their anchor maps (losses.anchor_loss, weight cfg.aux_anchor)."""
    model.train()
    spec = augment.AugmentSpec.from_config(cfg)
    idx, is_aug = epoch_indices(len(images), cfg.aug_copies, gen)
    amp = runtime.amp_dtype(cfg.amp, device)  # bf16 where native, fp16 on GPUs without it, else fp32
    # Per-sample loss sums, kept on the device: no host synchronisation per step on a GPU (read once per epoch;
    # on a CPU, where reading is free, every step is also checked for a non-finite loss).
    sums = torch.zeros(len(LOSS_KEYS), device=device)
    check_each_step = device.type == "cpu"
    seen = 0
    t0 = time.perf_counter()
    batches = range(0, len(idx), cfg.batch_size)
    bar = tqdm(batches, desc=desc, unit="batch", leave=False, disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    lr = optimizer.param_groups[0]["lr"]
    first_step_unix = None  # wall clock at the end of the first step: start-up time, measured by the caller
    params = [q for group in optimizer.param_groups for q in group["params"]]
    for start in bar:
        b = idx[start:start + cfg.batch_size]
        x = to_input(images[b], device)
        y_cnt = counts[b].to(device).float()
        pts = points[b].to(device) if anchor_head is not None else None
        if spec.enabled:
            a = is_aug[start:start + cfg.batch_size].to(device)
            xa, ca, pa = augment.augment_with_points(x, y_cnt, pts, spec, gen)
            x = torch.where(a.view(-1, 1, 1, 1), xa, x)
            y_cnt = torch.where(a.view(-1, 1), ca, y_cnt)
            if pts is not None:
                pts = torch.where(a.view(-1, 1, 1), pa, pts)
        maps = has_map = None
        if pts is not None:  # the anchor maps, built where the (augmented) points now are
            has_map = pts[:, 0, 0] >= 0
            maps = anchor_maps(pts, cfg.aux_blur)
        # The class is recomputed from the (possibly permuted) counts: it must move with the image.
        y_cls = labels.counts_to_class_batch(y_cnt)
        lr = optimizer.param_groups[0]["lr"]
        if world.parallel:  # this rank's share of the global batch (every rank drew the same batch)
            part = world.share(len(b))
            x, y_cnt, y_cls = x[part], y_cnt[part], y_cls[part]
            if maps is not None:
                maps, has_map = maps[part], has_map[part]
        n = len(x)
        if on_step is not None:
            on_step(scheduler.last_epoch)  # LambdaLR counts steps (it is stepped once per batch)
        optimizer.zero_grad(set_to_none=True)
        losses = _step_losses(model, anchor_head, x, y_cls, y_cnt, maps, has_map, cfg, device, amp, teacher) if n else {
            k: torch.zeros((), device=device) for k in LOSS_KEYS}
        if world.parallel:
            # Local mean * (local rows * ranks / global rows): averaged over the ranks, the gradients are those
            # of the global batch's mean, as one process computes them.
            if n:
                _scaled(losses["loss"] * (n * world.size / len(b)), scaler).backward()
            local = torch.stack([losses[k].detach().float() * n for k in LOSS_KEYS])
            step_sums = distributed.average_gradients(params, world, local)  # summed over the ranks
            n = len(b)
        else:
            step_sums = torch.stack([losses[k].detach().float() for k in LOSS_KEYS]) * n
            _scaled(losses["loss"], scaler).backward()
        if check_each_step and not math.isfinite(float(step_sums[0])):
            raise FloatingPointError(f"non-finite loss {float(step_sums[0]) / n} at {desc}, step {start // cfg.batch_size}")
        if scaler is not None:  # unscales, skips the step if a gradient overflowed, adapts the scale
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        if first_step_unix is None:
            first_step_unix = time.time()
        seen += n
        sums += step_sums
        if progress and (start // cfg.batch_size) % 20 == 0:
            bar.set_postfix(loss=f"{float(sums[0]) / seen:.4f}", refresh=False)
    totals = sums.tolist()
    if not math.isfinite(totals[0]):
        raise FloatingPointError(f"non-finite loss during {desc}")
    seconds = time.perf_counter() - t0
    out = {f"train_{k}": v / max(seen, 1) for k, v in zip(LOSS_KEYS, totals)}
    out.update(lr=lr, train_seconds=seconds, train_images_per_s=seen / max(seconds, 1e-9),
               first_step_unix=first_step_unix)
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
                  history: list[dict], epoch: int, anchor_head: nn.Module | None = None,
                  ema: WeightEma | None = None) -> dict:
    """Everything needed to continue after `epoch` exactly as if never stopped (CPU): weights (and the
    training-only anchor head's), optimizer and scheduler state, every RNG the loop draws from, early-stopping
    state, the weight average (when kept) and the history so far."""
    return {
        "anchor_head": anchor_head.state_dict() if anchor_head is not None else {},
        "ema": ema.state_dict() if ema is not None else {},
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


class ResumeError(ValueError):
    """A saved training state that does not fit the model, optimizer or loop it is restored into."""


def restore_state(state: dict, model: nn.Module, optimizer, scheduler, stopper: EarlyStopping,
                  gen: torch.Generator, anchor_head: nn.Module | None = None,
                  ema: WeightEma | None = None) -> tuple[int, list[dict]]:
    model.load_state_dict(state["model"])
    if anchor_head is not None:
        anchor_head.load_state_dict(state["anchor_head"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
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
        resume: dict | None = None, world: distributed.World = distributed.SINGLE,
        on_plan: Callable[[int, list[float]], None] | None = None) -> dict[str, object]:
    """Train with early stopping on the validation set; restores the best weights. Returns
    {'history': [per-epoch dicts], 'best_epoch', 'epochs', 'epochs_planned', 'optimizer', 'train_seconds'}.

    on_epoch(row, state) is called after every epoch; state() captures the full training state (for a resume
    checkpoint; the caller decides where it goes). resume: such a state, to continue after its epoch.
    With cfg.minutes, on_plan(epochs, epoch_seconds) tells the count chosen after the first epoch, and the
    shorter one if later epochs run too slow for the budget (schedule.replan_epochs)."""
    # Training only: the anchor head teaches the convolutions where each shape is (synthetic images carry the
    # points); it is not part of the returned model.
    anchor_head = make_anchor_head(cfg.aux_kernel).to(device) if cfg.aux_anchor > 0 else None
    if cfg.train_bn:  # training only: folded into the layers' weights before the model is returned
        attach_norms(model)
    fc_layer = big_linear(model)
    share_hook = fc_layer.weight.register_hook(shared_gradient(cfg.fc_share)) if cfg.fc_share > 0 else None
    # Training only: the teacher (another run's network) is read, never trained, and not part of the model.
    teacher = load_teacher(cfg, device)
    if resume is None:
        if teacher is not None and cfg.distill_init:
            init_from_teacher(model, teacher, cfg.teacher)
        if cfg.fc_share > 0:
            init_shared(fc_layer)
        # Data-dependent init (cfg.init) from the first training images, before the average copies the weights.
        init_from_data(model, to_input(train_images[:INIT_IMAGES], device), cfg.init)
    # With ema_decay, the weight average is what is evaluated, selected and returned; training steps the raw
    # weights as usual.
    ema = WeightEma(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    evaluated = ema.module if ema is not None else model
    optimizer = make_optimizer(model, cfg, anchor_head)
    scaler = make_scaler(cfg, device)
    steps = math.ceil((len(train_images) + cfg.synth_per_epoch) * (cfg.aug_copies + 1) / cfg.batch_size)
    scheduler = schedule.make_scheduler(optimizer, cfg, steps)
    stopper = EarlyStopping(cfg.resolved_monitor(), cfg.patience)
    history: list[dict] = []
    done = 0
    planned = cfg.epochs  # with cfg.minutes, fewer once the first epoch has been timed (schedule.plan_epochs)
    if resume is not None:
        try:
            done, history = restore_state(resume, model, optimizer, scheduler, stopper, gen, anchor_head, ema)
            if scaler is not None and resume.get("scaler"):
                scaler.load_state_dict(resume["scaler"])
            planned = int(resume.get("epochs_planned", cfg.epochs))
            if planned != cfg.epochs:
                scheduler = schedule.replanned(scheduler, optimizer, cfg, steps, planned)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise ResumeError(f"the saved training state does not fit ({type(e).__name__})") from e
    # On a GPU the training images live there (9,000 of them are 7 MB) and synthetic ones are drawn there:
    # per step only the batch's indices cross from the host. On the CPU nothing moves.
    data_device = device if device.type == "cuda" else torch.device("cpu")
    train_images, train_counts = train_images.to(data_device), train_counts.to(data_device)
    # Training only (cfg.relu_leak): the backbone's ReLUs leak in training, the slope falling linearly with the
    # step to 0 at cfg.relu_leak_until of the schedule, so that units below zero on every image can come back.
    leak_steps = max(1.0, cfg.relu_leak_until * cfg.epochs * steps)
    leaking = leaky_in_training(model) if cfg.relu_leak > 0 else contextlib.nullcontext([])
    with leaking as leaky:
        def set_leak(step: int) -> None:
            for m in leaky:
                m.slope = cfg.relu_leak * max(0.0, 1.0 - step / leak_steps)

        t0 = time.perf_counter()
        first_step_unix = None
        epoch = done
        # a budgeted run's epoch times (rank means), those of a resumed run's earlier epochs included
        epoch_seconds = [float(r["seconds"]) for r in history]
        while epoch < planned:
            epoch += 1
            if stopper.should_stop:  # a run resumed after its last epoch
                break
            t_epoch = time.perf_counter()
            images, counts, points = train_images, train_counts, None
            if cfg.synth_per_epoch:  # fresh images every epoch, drawn from `gen`: deterministic and resumable
                s_images, s_counts, s_points = synth.generate_with_points(cfg.synth_per_epoch, gen, device=data_device,
                                                                           hidden=cfg.synth_hidden)
                images, counts = torch.cat([images, s_images]), torch.cat([counts, s_counts.to(counts.dtype)])
                # real images have no known shape points: type -1 (no anchor-map loss for them)
                points = torch.cat([torch.full((len(train_images), *s_points.shape[1:]), -1, dtype=s_points.dtype,
                                               device=s_points.device), s_points])
            tr = train_one_epoch(model, optimizer, scheduler, images, counts, cfg, gen, device,
                                 desc=f"epoch {epoch}/{planned}", progress=progress, points=points,
                                 anchor_head=anchor_head, world=world, scaler=scaler, ema=ema,
                                 on_step=set_leak if leaky else None, teacher=teacher)
            first_step_unix = first_step_unix or tr["first_step_unix"]
            if model.norms is not None and world.parallel:  # every rank evaluates with the same statistics
                distributed.average_buffers([model] if evaluated is model else [model, evaluated], world)
            ev = evaluate(evaluated, val_images, val_counts, cfg, device, tta=False)
            row = {
                "epoch": epoch,
                "train_loss": tr["train_loss"], "train_loss_cls": tr["train_loss_cls"],
                "train_loss_cnt": tr["train_loss_cnt"], "train_loss_aux": tr["train_loss_aux"],
                "train_loss_distill": tr["train_loss_distill"],
                "val_loss": ev["loss"], "val_loss_cls": ev["loss_cls"], "val_loss_cnt": ev["loss_cnt"],
                "val_top1": ev["top1_accuracy"], "val_rmse": ev["rmse"], "val_mae": ev["mae"],
                "val_count_top1": ev["count_decoded_accuracy"], "val_live_units": ev["live_units"],
                "lr": tr["lr"], "seconds": time.perf_counter() - t_epoch,
            }
            if cfg.minutes > 0:
                # Every rank plans from the same (mean) times, so that all stop after the same epoch.
                seconds = float(distributed.sum_over_ranks(torch.tensor([row["seconds"]], dtype=torch.float64,
                                                                        device=device), world)[0]) / world.size
                epoch_seconds.append(seconds)
                before = planned
                planned = (schedule.plan_epochs(cfg, seconds) if epoch == 1
                           else schedule.replan_epochs(cfg, planned, epoch_seconds))
                if planned != before:
                    scheduler = schedule.replanned(scheduler, optimizer, cfg, steps, planned)
                if on_plan and (epoch == 1 or planned != before):
                    on_plan(planned, epoch_seconds)
            improved = stopper.step(row[stopper.monitor], epoch, evaluated)
            row["improved"] = improved
            row["train_images_per_s"] = tr["train_images_per_s"]
            history.append(row)
            if on_epoch:
                on_epoch(row, lambda e=epoch, s=scheduler, n=planned: {
                    **capture_state(model, optimizer, s, stopper, gen, history, e, anchor_head, ema),
                    "scaler": scaler.state_dict() if scaler is not None else {}, "epochs_planned": n})
            if stopper.should_stop:
                break
    if share_hook is not None:
        share_hook.remove()
    stopper.restore(model)  # the best epoch's weights (its weight average, with ema)
    fold_norms(model)  # with cfg.train_bn: the plain network, computing what the selected one computed
    return {"history": history, "best_epoch": stopper.best_epoch, "epochs": len(history), "epochs_planned": planned,
            "optimizer": optimizer, "train_seconds": time.perf_counter() - t0, "monitor": stopper.monitor,
            "first_step_unix": first_step_unix}
