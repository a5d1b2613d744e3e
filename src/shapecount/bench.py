"""`shapecount bench`: training/eval throughput of a typical pipeline vs ours, on the same machine, in one run.

(a) typical: PIL decode per item in __getitem__, per-item augmentation, DataLoader, fp32, plain Adam, default
    allocator (timed first, before this process changes any setting).
(b) ours: decoded-once uint8 tensors, batched label-aware augmentation, fused Adam, the tuned allocator
    (runtime.py), fp32 and bf16 autocast, optionally torch.compile; one bf16 row with the default allocator shows
    what the allocator alone is worth.
Also: per-step time split (data / forward / backward / optimizer), eval images/s, achieved GFLOP/s against the
machine's GEMM peak measured here (fp32 and bf16), and the time from process start to the first training step
of `shapecount train` (a subprocess). Prints a table and writes JSON.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from shapecount import augment, engine, evaluation, labels, runfolder, runtime
from shapecount.config import make_config
from shapecount.data import GSNData, load_gsn, resolve_source
from shapecount.data.cache import locate
from shapecount.data.sources import find_labels_dir
from shapecount.data.validation import LABELS_NAME, parse_labels, read_bytes, read_image
from shapecount.errors import TrainingError, UserError
from shapecount.losses import multitask_loss
from shapecount.model import ShapeCountNet

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class GSNDataset(Dataset):
    """Items `(image float32 (1, 28, 28) in [0, 1], class id, counts float32 (6,))`.

    From a GSNData: indexes the decoded tensors (no PIL). From a directory (or its labels.csv): reads
    labels.csv once and opens each PNG with PIL on every access (the typical pipeline, kept as a baseline).
    `transform(image, counts) -> (image, counts)` runs per item; the class is recomputed from its counts.
    """

    def __init__(self, source: GSNData | str | os.PathLike[str], transform: Transform | None = None) -> None:
        self.transform = transform
        self.data: GSNData | None = None
        if isinstance(source, GSNData):
            self.data = source
            self.names = source.names
            self._counts = source.counts.float()
            self._classes = source.classes.tolist()
        else:
            root = Path(source)
            folder = find_labels_dir(root.parent if root.name == LABELS_NAME else root)
            self.folder = folder
            self.names, counts = parse_labels(read_bytes(folder / LABELS_NAME), str(folder / LABELS_NAME))
            self._counts = torch.from_numpy(counts).float()
            self._classes = [labels.counts_to_class(c) for c in counts.tolist()]

    def __len__(self) -> int:
        return len(self.names)

    def _image(self, i: int) -> torch.Tensor:
        if self.data is not None:
            return self.data.images[i].float().div_(255.0).unsqueeze(0)
        arr = read_image(self.folder / self.names[i])
        return torch.from_numpy(arr).float().div_(255.0).unsqueeze(0)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        image, counts = self._image(i), self._counts[i].clone()
        if self.transform is None:
            return image, self._classes[i], counts
        image, counts = self.transform(image, counts)
        return image, labels.counts_to_class(counts.round().long().tolist()), counts


def model_flops_per_image() -> dict[str, int]:
    """Multiply-adds of one forward pass x 2 = FLOPs; training ~ 3x forward (forward + 2 backward GEMMs)."""
    m = ShapeCountNet()
    macs = 0
    for layer in m.modules():
        if isinstance(layer, torch.nn.Conv2d):
            macs += 28 * 28 * layer.in_channels * layer.out_channels * 9
        elif isinstance(layer, torch.nn.Linear):
            macs += layer.in_features * layer.out_features
    return {"forward": 2 * macs, "train": 6 * macs}


def gemm_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Best GFLOP/s of an n x n matmul on this machine and thread count: the ceiling we compare against.
    The output is preallocated so that the figure is the kernel's, not the allocator's."""
    a, b, c = (torch.randn(n, n, dtype=dtype) for _ in range(3))
    for _ in range(2):
        torch.mm(a, b, out=c)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _typical_transform(image: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item random symmetry, as public solutions do it (Python RNG, one image at a time)."""
    k, flip = random.randrange(4), random.random() < 0.5
    return augment.dihedral(image, k, flip), labels.permute_counts(counts, labels.dihedral_perm(k, flip))


def _extract(source: str, folder: Path) -> Path:
    """The typical pipeline reads PNG files from a folder: the folder of a directory source, else the zip (a
    URL's downloaded copy) unpacked once into `folder`, outside the timing."""
    kind, path = locate(source, {"progress": False})
    if kind == "zip":
        with zipfile.ZipFile(path) as z:
            z.extractall(folder)  # the archive already passed load_gsn's safety checks
        path = folder
    return find_labels_dir(path)


def bench_typical(folder: Path, steps: int, batch: int) -> dict:
    torch.manual_seed(0)
    ds = GSNDataset(folder, transform=_typical_transform)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0)
    model = ShapeCountNet().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    it = iter(loader)
    n = 0
    for step in range(steps + 2):
        t0 = time.perf_counter()
        x, y, c = next(it)
        t1 = time.perf_counter()
        lp, pc = model(x)
        loss = multitask_loss(lp, pc, y, c, 1.0, 5.0)["loss"]
        t2 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if step >= 2:  # warm-up steps excluded
            for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[k] += v
            n += len(x)
    total = sum(times.values())
    return {"images_per_s": n / total, "ms_per_step": {k: 1000 * v / steps for k, v in times.items()}}


def bench_ours(data, steps: int, batch: int, bf16: bool, compile_: bool) -> dict:
    cfg = make_config("multitask", "fast", {"batch_size": batch, "amp": bf16})
    gen = engine.seed_everything(0)
    model = ShapeCountNet().train()
    step_model = torch.compile(model) if compile_ else model
    opt = engine.make_optimizer(model, cfg)
    spec = augment.AugmentSpec.from_config(cfg)
    dev = torch.device("cpu")
    times = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    idx = torch.randperm(len(data.images), generator=gen)
    n = 0
    t_compile = time.perf_counter()
    for step in range(steps + 3):
        if step == 3:
            t_compile = time.perf_counter() - t_compile
        t0 = time.perf_counter()
        b = idx[(step * batch) % (len(idx) - batch + 1):][:batch]  # always a whole batch
        x = evaluation.to_input(data.images[b], dev)
        c = data.counts[b].float()
        x, c = augment.augment_batch(x, c, spec, gen)
        y = labels.counts_to_class_batch(c)
        t1 = time.perf_counter()
        with runtime.autocast(dev, bf16):
            lp, pc = step_model(x)
        loss = multitask_loss(lp, pc, y, c, 1.0, 5.0)["loss"]
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if step >= 3:
            for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[k] += v
            n += len(x)
    total = sum(times.values())
    return {"images_per_s": n / total, "ms_per_step": {k: 1000 * v / steps for k, v in times.items()},
            "warmup_s": t_compile}


def bench_eval(data, bf16: bool, batch: int) -> dict:
    model = ShapeCountNet()
    val = data.images[:1000]  # any 1,000 images: only the time is measured
    evaluation.predict(model, val[:batch], torch.device("cpu"), batch, amp=bf16)  # warm-up
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        evaluation.predict(model, val, torch.device("cpu"), batch, amp=bf16)
        best = min(best, time.perf_counter() - t)
    return {"seconds_1000": best, "images_per_s": len(val) / best, "batch": batch, "bf16": bf16}


def bench_startup(source: str) -> dict:
    """Wall time from launching `python -m shapecount train` to the end of its first training step (a fresh
    process: interpreter, imports, cached data load, model, first step; no compile). One epoch on 640 images."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "shapecount", "train", "--data", str(source), "--recipe", "quick",
               "--epochs", "1", "--set", "limit_train=640", "--set", "limit_val=100", "--out", f"{tmp}/run",
               "--no-progress"]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if proc.returncode != 0:
            return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        m = json.loads(Path(tmp, "run", runfolder.METRICS_FILE).read_text())
    return {"start_to_first_step_s": m["first_step_unix"] - t0, "import_to_first_step_s": m["startup_s"]}


# How OpenMP threads wait at a barrier, compared under contention: environment settings of a fresh process
# (libgomp reads them once, when torch loads it). shapecount's default is set in shapecount/__init__.py.
WAIT_POLICIES = {
    "spin 300k (OpenMP default)": {"GOMP_SPINCOUNT": "300000"},
    "spin 10k (shapecount)": {},
    "passive (no spin)": {"OMP_WAIT_POLICY": "PASSIVE"},
    # what `train` and `reproduce` choose when they start beside busy cores (cli._threads_beside_others)
    "1 thread, spin 10k (shapecount beside a busy process)": {"OMP_NUM_THREADS": "1"},
}
DEFAULT_POLICY = "spin 10k (shapecount)"


def _throughput_child(source: str, steps: int, batch: int, bf16: bool, policy: dict[str, str]) -> float:
    """Training images/s of `bench_ours` in a fresh process with the given OpenMP environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(policy)
    code = ("import json, sys; from shapecount import bench, runtime; from shapecount.data import load_gsn; "
            "runtime.tune_allocator(); runtime.flush_denormals(); "
            "r = bench.bench_ours(load_gsn(sys.argv[1], progress=False), int(sys.argv[2]), int(sys.argv[3]), "
            "sys.argv[4] == 'bf16', False); print(json.dumps(r['images_per_s']))")
    out = subprocess.run([sys.executable, "-c", code, source, str(steps), str(batch), "bf16" if bf16 else "fp32"],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
        raise TrainingError(f"a throughput process of the contention benchmark failed: {last}")
    return float(out.stdout.strip().splitlines()[-1])


def bench_contention(source: str, steps: int, batch: int, bf16: bool) -> dict:
    """Training throughput quiet and while one busy single-threaded process (a stand-in for whatever else runs
    on a laptop) shares the cores, for each OpenMP wait policy and thread count; `share` = busy / quiet of the
    same setting, `share_of_default_quiet` = busy / quiet of shapecount's default (a fair share of 2 cores
    against 1 busy thread is 50%)."""
    out = {}
    for name, policy in WAIT_POLICIES.items():
        quiet = _throughput_child(source, steps, batch, bf16, policy)
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            busy = _throughput_child(source, steps, batch, bf16, policy)
        finally:
            hog.kill()
            hog.wait()
        out[name] = {"quiet": quiet, "busy": busy, "share": busy / quiet}
    for c in out.values():  # against what training with all threads does on a quiet machine
        c["share_of_default_quiet"] = c["busy"] / out[DEFAULT_POLICY]["quiet"]
    return out


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    source = resolve_source(args.data)
    t = time.perf_counter()
    data = load_gsn(source, progress=False)
    load_s = time.perf_counter() - t
    if args.batch_size > len(data):
        raise UserError("--batch-size", f"{args.batch_size} is more than the {len(data)} images of {source}",
                        "pass a smaller --batch-size")
    flops = model_flops_per_image()
    res: dict = {"threads": torch.get_num_threads(), "torch": str(torch.__version__), "steps": args.steps,
                 "batch": args.batch_size, "dataset_load_s": load_s, "flops_per_image": flops,
                 "kernels": kernel_info()}
    res["gemm_peak_gflops"] = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}
    res["startup"] = bench_startup(source)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_typical:
            res["typical"] = bench_typical(_extract(source, Path(tmp)), args.steps, args.batch_size)
    res["ours"] = {}
    dtypes = ("fp32", "bf16") if args.dtype == "both" else (args.dtype,)
    if not runtime.allocator_tuned():  # measurable only before this process tunes it
        d = dtypes[-1]
        res["ours"][f"{d}, default malloc"] = bench_ours(data, args.steps, args.batch_size, d == "bf16", False)
    res["allocator_tuned"] = runtime.tune_allocator()
    res["flush_denormal"] = runtime.every_thread_flushes()
    variants = [(d, d == "bf16", False) for d in dtypes]
    if args.compile:
        variants += [(f"{d}+compile", d == "bf16", True) for d in dtypes]
    for name, bf16, comp in variants:
        res["ours"][name] = bench_ours(data, args.steps, args.batch_size, bf16, comp)
    for name, r in res["ours"].items():
        dtype = "bf16" if "bf16" in name else "fp32"
        r["gflops"] = r["images_per_s"] * flops["train"] / 1e9
        r["fraction_of_peak"] = r["gflops"] / res["gemm_peak_gflops"][dtype]
        if "typical" in res:
            r["ratio_vs_typical"] = r["images_per_s"] / res["typical"]["images_per_s"]
    if args.contention:
        res["contention"] = bench_contention(str(source), args.steps, args.batch_size, runtime.native_bf16(
            torch.device("cpu")))
    res["eval"] = {"fp32_b1000": bench_eval(data, False, 1000), "bf16_b250": bench_eval(data, True, 250),
                   "fp32_b250": bench_eval(data, False, 250)}
    return res


def kernel_info() -> dict:
    """Which CPU kernels torch dispatches to here, and whether the recipes' bf16 runs as bf16 (native matrix
    units: AVX512-BF16 or AMX) or falls back to fp32."""
    flags = runtime.cpu_flags() or set()
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "recipes_train_in": "bf16" if runtime.native_bf16(torch.device("cpu")) else "fp32"}


def format_table(res: dict) -> str:
    peak = res["gemm_peak_gflops"]
    k = res.get("kernels", {})
    lines = [
        f"threads {res['threads']}, torch {res['torch']}, batch {res['batch']}, {res['steps']} timed steps",
        (f"kernels: {k.get('cpu_capability')}, AMX-BF16 {'yes' if k.get('amx_bf16') else 'no'}, AVX512-BF16 "
         f"{'yes' if k.get('avx512_bf16') else 'no'}: recipes with amp=true train in {k.get('recipes_train_in')}"),
        (f"GEMM peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s; "
         f"model: {res['flops_per_image']['train'] / 1e6:.0f} MFLOP per training image"),
        (f"{'pipeline':<22}{'img/s':>8}{'data':>8}{'fwd':>8}{'bwd':>8}{'opt':>8}  (ms/step){'GFLOP/s':>10}"
         f"{'% peak':>8}{'x typ':>7}"),
    ]
    rows = ([("typical", res["typical"])] if "typical" in res else []) + list(res["ours"].items())
    for name, r in rows:
        ms = r["ms_per_step"]
        g = r.get("gflops", r["images_per_s"] * res["flops_per_image"]["train"] / 1e9)
        frac = r.get("fraction_of_peak", g / res["gemm_peak_gflops"]["fp32"])
        lines.append(f"{name:<22}{r['images_per_s']:>8.0f}{ms['data']:>8.1f}{ms['forward']:>8.1f}"
                     f"{ms['backward']:>8.1f}{ms['optimizer']:>8.1f}{'':>11}{g:>8.0f}{100 * frac:>7.0f}%"
                     + (f"{r.get('ratio_vs_typical', 1.0):>7.2f}" if "typical" in res else f"{'-':>7}"))
    for name, e in res["eval"].items():
        lines.append(f"eval {name}: {e['seconds_1000']:.3f} s per 1000 images ({e['images_per_s']:.0f} img/s)")
    for name, c in res.get("contention", {}).items():
        lines.append(f"contention, {name}: quiet {c['quiet']:.0f} img/s, beside one busy process "
                     f"{c['busy']:.0f} img/s = {100 * c['share']:.0f}% of its quiet, "
                     f"{100 * c['share_of_default_quiet']:.0f}% of the default's")
    lines.append(f"cached dataset load: {res['dataset_load_s']:.2f} s")
    st = res.get("startup", {})
    if "start_to_first_step_s" in st:
        lines.append(f"`shapecount train`: process start to end of first training step {st['start_to_first_step_s']:.2f} s "
                     f"(from `import shapecount`: {st['import_to_first_step_s']:.2f} s)")
    elif st:
        lines.append(f"start-up measurement failed: {st['error']}")
    return "\n".join(lines)


def main(args) -> int:
    res = run(args)
    print(format_table(res))
    if args.json:
        from shapecount import fileio

        fileio.write_json(args.json, res)
    return 0
