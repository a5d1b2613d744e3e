"""Data parallelism over torch.distributed: `torchrun --nproc_per_node N -m shapecount train ...`.

Every rank holds the whole model and walks the same shuffled epoch (the same generator, so the same order,
augmentation draws and synthetic images); each takes its contiguous share of every global batch, and the
gradients are averaged with one all-reduce per step: the maths of DistributedDataParallel, written out so that
the training-only anchor head and the non-finite check ride on the same all-reduce. With the same global
batch and seed, the weights equal a one-process run's up to float rounding of the sum (a test checks it).
gloo on CPUs, NCCL on GPUs. Rank 0 alone writes the run folder; every rank evaluates (identical results), so
early stopping decides the same everywhere.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from shapecount.errors import UserError

# A rank that stops answering (crashed, pre-empted) fails the others' next collective after this long.
TIMEOUT = _dt.timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Whether this rank writes files and logs (rank 0)."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def share(self, n: int) -> slice:
        """This rank's contiguous rows of a global batch of n (sizes differ by at most one)."""
        base, extra = divmod(n, self.size)
        lo = self.rank * base + min(self.rank, extra)
        return slice(lo, lo + base + (1 if self.rank < extra else 0))


SINGLE = World()


def world_size() -> int:
    """The number of processes the launcher (torchrun) says there are: WORLD_SIZE, 1 when unset; a value that is
    not a positive whole number is a one-line error."""
    raw = os.environ.get("WORLD_SIZE", "1").strip()
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise UserError("WORLD_SIZE", f"is {raw!r}, not a number of processes",
                        "unset it, or start the command with torchrun --nproc-per-node N")
    return int(raw)


def launched() -> bool:
    """True when started by torchrun (or another launcher setting WORLD_SIZE > 1)."""
    return world_size() > 1


def init(device: torch.device, batch_size: int) -> World:
    """Join the process group torchrun describes in the environment; SINGLE when not launched by it."""
    if not launched():
        return SINGLE
    size = world_size()
    if batch_size % size:
        raise UserError("batch_size", f"{batch_size} is not divisible by the {size} processes",
                        f"pass --set batch_size=N with N a multiple of {size} (the global batch is split "
                        "over the processes)")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=TIMEOUT)
    return World(dist.get_rank(), dist.get_world_size())


def barrier(world: World) -> None:
    if world.parallel:
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(params: list[torch.nn.Parameter], world: World, extra: torch.Tensor) -> torch.Tensor:
    """Average the gradients of `params` over the ranks in one all-reduce; `extra` (a 1-D float tensor, e.g. the
    local losses) is summed over the ranks in the same call and returned. A parameter without a gradient
    counts as zeros."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [extra.float().reshape(-1)])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = (flat[offset:offset + n] / world.size).view_as(p).to(p.dtype)
        offset += n
    return flat[offset:]


@torch.no_grad()
def average_buffers(modules: list[torch.nn.Module], world: World) -> None:
    """Average the floating-point buffers of `modules` (BatchNorm running statistics) over the ranks, in one
    all-reduce: each rank normalises its own share of a batch, so its running statistics drift from the others'."""
    bufs = [b for m in modules for b in m.buffers() if b.is_floating_point()]
    if not world.parallel or not bufs:
        return
    flat = torch.cat([b.reshape(-1).float() for b in bufs])
    dist.all_reduce(flat)
    offset = 0
    for b in bufs:
        n = b.numel()
        b.copy_((flat[offset:offset + n] / world.size).view_as(b))
        offset += n


def sum_over_ranks(values: torch.Tensor, world: World) -> torch.Tensor:
    if world.parallel:
        values = values.clone()
        dist.all_reduce(values)
    return values
