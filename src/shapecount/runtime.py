"""Process-level CPU settings: the allocator and the thread count (speed only), and the precision a recipe's
mixed precision (`amp`) trains in on this device (`amp_dtype`: bf16 where it is native, fp16 on other GPUs)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import time

import torch

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_tuned = False
_startup_claimed = False


def tune_allocator() -> bool:
    """Keep large tensors on the heap instead of a fresh mmap per allocation (glibc only).

    By default glibc serves every block above its mmap threshold (32 MB at most) with mmap and returns it to the
    kernel on free. A training step allocates and frees the 51 MB gradient of the Linear(50176, 256) weight and
    its bf16 copies each time, so every step page-faults ~100 MB of fresh zeroed memory. With mmap off and trimming
    raised, freed blocks are reused: ~1.6x faster steps in bf16 on 2 cores (see `shapecount bench`). The same
    trick as preloading jemalloc/tcmalloc in PyTorch's CPU tuning guide, without a dependency. Returns whether
    it was applied (no-op on non-glibc systems)."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    _tuned = ok
    return ok


def allocator_tuned() -> bool:
    return _tuned


def configure_cpu(threads: int = 0) -> dict[str, object]:
    """Apply the thread count (0: torch's default, all cores) and the allocator setting; return what is in
    effect, for the log and the run folder (including whether denormals are flushed: the command line sets
    that at its start, see flush_denormals)."""
    if threads:
        torch.set_num_threads(threads)
    return {"threads": torch.get_num_threads(), "allocator_tuned": tune_allocator(),
            "flush_denormal": every_thread_flushes()}


def busy_elsewhere(seconds: float = 0.2) -> float | None:
    """How many cores other processes keep busy, measured over `seconds`: the machine's busy time (/proc/stat)
    minus this process's own. None where /proc/stat cannot be read (not Linux)."""
    def busy_ticks() -> int:
        with open("/proc/stat", encoding="ascii") as f:
            v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return sum(v) - v[3] - v[4]

    try:
        t0, own0, b0 = time.monotonic(), sum(os.times()[:2]), busy_ticks()
        time.sleep(seconds)
        wall, own, busy = time.monotonic() - t0, sum(os.times()[:2]) - own0, busy_ticks() - b0
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, (busy / os.sysconf("SC_CLK_TCK") - own) / wall)


def threads_beside(busy: float, threads: int) -> int:
    """The training threads to use when other processes keep `busy` cores busy: one fewer per busy core (at
    least one). Threads that wait on each other at every operator stall whenever one of them is descheduled:
    beside one busy process, two threads on two cores keep about a third of their quiet speed, one thread
    nearly all of its own (docs/performance.md, "Training beside a busy process")."""
    return max(1, min(threads, int(threads - busy + 0.5)))


def flush_denormals() -> bool:
    """Treat floats below 1.2e-38 as zero (x86 FTZ/DAZ); True when every CPU thread does.

    After a few epochs, Adam's second moments of the rarely active weights of Linear(50176, 256) decay into that
    range, and every operation on such a number takes the CPU's slow microcode path: training slowed from about
    850 to 560 images/s by the third epoch (docs/performance.md). Numbers that small carry nothing for training.
    The mode is per thread and OpenMP threads copy it when they are created, so this must run before the first
    parallel operation of the process (the command line does it first thing); called later, it reaches only the
    calling thread, and the check below says so."""
    if not torch.set_flush_denormal(True):
        return False  # a CPU without the mode
    return every_thread_flushes()


def keep_denormals() -> None:
    """The IEEE default again, on the calling thread (threads already created keep what they have)."""
    torch.set_flush_denormal(False)


def every_thread_flushes() -> bool:
    """A denormal in every chunk of a parallel loop: all products are 0 only if every thread flushes. Written
    as bits, since a float literal converted on a flushing thread would already be 0."""
    tiny = torch.full(((1 << 16) * max(1, torch.get_num_threads()),), 1 << 21, dtype=torch.int32)
    return bool(((tiny.view(torch.float32) * 0.5) == 0).all())


def claim_startup() -> bool:
    """True once per process: for the first training run, whose time from import to first step is start-up."""
    global _startup_claimed
    first, _startup_claimed = not _startup_claimed, True
    return first


# CPU flags (Linux /proc/cpuinfo) of matrix units that compute bf16 natively: AVX512-BF16 (e.g. AMD Zen 4, Intel
# Cooper Lake and later), AMX-BF16 (Intel Sapphire Rapids and later), and the Arm BF16 extension.
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
_native_cpu_bf16: bool | None = None


def _cpuinfo(keys: tuple[str, ...]) -> str | None:
    """The value of the first line of Linux's /proc/cpuinfo whose key is one of `keys` (None elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set[str] | None:
    value = _cpuinfo(("flags", "Features"))
    return set(value.split()) if value is not None else None


def cpu_model() -> str:
    """The CPU's model name (e.g. "AMD EPYC 9B14"), or what the platform module knows where there is no
    /proc/cpuinfo."""
    import platform

    return _cpuinfo(("model name",)) or platform.processor() or platform.machine()


def _bf16_gemm_faster() -> bool:
    """Where the CPU flags cannot be read: time a bf16 and an fp32 matrix product (a few milliseconds)."""
    import time

    def rate(dtype: torch.dtype) -> float:
        a = torch.randn(384, 384).to(dtype)
        a @ a
        t = time.perf_counter()
        for _ in range(4):
            a @ a
        return 1.0 / (time.perf_counter() - t)

    return rate(torch.bfloat16) > 1.2 * rate(torch.float32)


def native_bf16(device: torch.device) -> bool:
    """Does this device multiply bf16 matrices natively? Without it (e.g. an AVX-512 CPU lacking AVX512-BF16),
    oneDNN emulates bf16 and a training step is several times slower than in fp32."""
    global _native_cpu_bf16
    if device.type == "cuda":
        # including_emulation=False: a GPU without bf16 units (e.g. a T4) would otherwise count as bf16-capable
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    if _native_cpu_bf16 is None:
        flags = cpu_flags()
        _native_cpu_bf16 = bool(flags & set(_NATIVE_BF16_FLAGS)) if flags is not None else _bf16_gemm_faster()
    return _native_cpu_bf16


def use_bf16(requested: bool, device: torch.device) -> bool:
    """bf16 autocast as a recipe's `amp=true` asks for it, but only where the device has native bf16: elsewhere
    fp32 is faster, and bf16 costs no accuracy either way (docs/results.md)."""
    return bool(requested) and native_bf16(device)


def amp_dtype(requested: bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a recipe's mixed precision (`amp=true`) on this device, None for fp32: bf16
    where the device computes it natively; on a CUDA GPU without bf16 units (e.g. a T4), fp16 with a gradient
    scaler (engine); on a CPU without native bf16, fp32 (faster there). `amp=false` is fp32 everywhere."""
    if use_bf16(requested, device):
        return torch.bfloat16
    if requested and device.type == "cuda":
        return torch.float16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def autocast(device: torch.device, dtype: torch.dtype | bool | None):
    """Autocast to `dtype` (bf16 or fp16; callers decide with `runtime.amp_dtype`), or none for fp32. `True`
    means bf16 (the benchmark times both precisions)."""
    if dtype is True:
        dtype = torch.bfloat16
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
