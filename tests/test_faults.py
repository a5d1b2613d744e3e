"""Faults a real user meets: a full disk, a damaged checkpoint, a resume with other settings, two processes on one
folder, SIGTERM, pathological images for the exact decoder, and NaN weights or outputs. Each test is one row of
docs/reliability.md."""

import errno
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import rgba, write_gsn_dir
from helpers.interrupt import run_interrupted
from shapecount import evaluation, experiments, fileio, runlock
from shapecount.cli import main
from shapecount.config import make_config
from shapecount.data import load_gsn
from shapecount.errors import UserError

TRAIN = ["--recipe", "protocol", "--epochs", "3", "--patience", "10", "--no-progress", "--set", "batch_size=16",
         "--set", "tta=false"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_gsn_dir(tmp_path_factory.mktemp("tiny") / "gsn", n=60)


@pytest.fixture(scope="module")
def run_dir(tiny, tmp_path_factory):
    """A complete one-epoch run (checkpoint.pt) and a kept resume state (last.pt) of the same config."""
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", "--data", str(tiny), "--out", str(out), *TRAIN, "--epochs", "1"]) == 0
    return out


def one_error_line(capsys) -> str:
    """The one stderr line (progress-bar frames, which a terminal overwrites, left out)."""
    frames = re.compile(r"\d+%\|")
    err = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines()
           if ln.strip() and not frames.search(ln)]
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


def cfg(**kw):
    return make_config("multitask", "protocol",
                       overrides={"epochs": 3, "patience": 10, "batch_size": 16, "tta": False, **kw})


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------- 1. disk full

def test_json_outputs_are_strict_json(tmp_path):
    # NaN is not JSON: strict readers (JavaScript, jq) refuse it, so a non-finite figure is written as null.
    import math

    from shapecount import fileio

    fileio.write_json(tmp_path / "a.json", {"rmse": math.nan, "per_type": [math.inf, 1.5], "n": 3})

    def refuse(name):
        raise ValueError(f"{name} in JSON")

    assert json.loads((tmp_path / "a.json").read_text(), parse_constant=refuse) == {
        "rmse": None, "per_type": [None, 1.5], "n": 3}
    # the same policy for what goes to stdout or a JSON-lines file (evaluate, predict, solve, witnesses.jsonl)
    assert json.loads(fileio.dumps([{"p": -math.inf}]), parse_constant=refuse) == [{"p": None}]


def test_atomic_write_on_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    target = fileio.write_text(tmp_path / "report.md", "old, complete\n")

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: full(self, a))
    with pytest.raises(fileio.DiskFullError, match=r"report.md: could not be written: No space left"):
        fileio.write_text(target, "new")
    assert target.read_text() == "old, complete\n" and no_temp_files(tmp_path)


def test_disk_full_mid_training_keeps_the_last_epoch_then_resume_matches(tiny, tmp_path, monkeypatch):
    data = load_gsn(str(tiny), progress=False)
    experiments.run_experiment(cfg(), data, tmp_path / "a", progress=False)
    real = fileio.write_bytes
    saves = {"n": 0}

    def fills_up(path, payload):
        if Path(path).name == "last.pt":
            saves["n"] += 1
            if saves["n"] == 2:  # the disk fills while epoch 2's state is written
                def no_space(p):
                    p.write_bytes(bytes(payload)[:4096])
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return fileio.atomic_write(path, no_space)
        return real(path, payload)

    monkeypatch.setattr(fileio, "write_bytes", fills_up)
    with pytest.raises(fileio.DiskFullError, match="last.pt: could not be written"):
        experiments.run_experiment(cfg(), data, tmp_path / "r", progress=False)
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["state"]["epoch"] == 1
    assert no_temp_files(tmp_path / "r")
    monkeypatch.setattr(fileio, "write_bytes", real)
    experiments.run_experiment(cfg(), data, tmp_path / "r", progress=False, resume=True)
    a, r = (torch.load(p / "checkpoint.pt", weights_only=True)["model"] for p in (tmp_path / "a", tmp_path / "r"))
    assert all(torch.equal(a[k], r[k]) for k in a)


@pytest.mark.slow
def test_file_size_limit_is_one_line_error_then_resume_works(tiny, tmp_path):
    """A real process under `ulimit -f` (1 MB): writing last.pt fails with EFBIG, reported like a full disk."""
    out = tmp_path / "q"
    argv = [sys.executable, "-m", "shapecount", "train", "--data", str(tiny), "--out", str(out), *TRAIN,
            "--epochs", "1"]

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))

    r = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    err = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error: ")]
    assert r.returncode == 2 and len(err) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "last.pt: could not be written: File too large" in err[0] and "--resume" in err[0]
    assert not (out / "last.pt").exists() and no_temp_files(out)
    r = subprocess.run(argv + ["--resume"], check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (out / "checkpoint.pt").is_file()


# ------------------------------------------------------------------------------- 2. corrupt checkpoints

def damaged(blob: bytes, how: str, rng: random.Random) -> bytes:
    if how == "truncated":
        return blob[:rng.randrange(1, len(blob))]
    if how == "random bytes":
        return rng.randbytes(rng.randrange(1, 5000))
    if how == "empty":
        return b""
    # header overwritten: the zip's local header and the pickle's first bytes
    return rng.randbytes(64) + blob[64:]


CORRUPTIONS = [("truncated", s) for s in range(4)] + [("random bytes", 0), ("empty", 0), ("header", 0)]


@pytest.mark.parametrize("how,seed", CORRUPTIONS)
def test_corrupt_checkpoint_is_one_line_error(run_dir, tmp_path, capsys, how, seed):
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(damaged((run_dir / "checkpoint.pt").read_bytes(), how, random.Random(seed)))
    img = tmp_path / "x.png"
    rgba(np.zeros((28, 28), np.uint8)).save(img)
    assert main(["predict", "--checkpoint", str(ckpt), str(img)]) == 2
    line = one_error_line(capsys)
    assert str(ckpt) in line and "checkpoint" in line


@pytest.mark.parametrize("how,seed", CORRUPTIONS)
def test_corrupt_last_pt_is_one_line_error_naming_the_fix(tiny, run_dir, tmp_path, capsys, monkeypatch, how, seed):
    # a resume state of the same config: a run interrupted after epoch 1 of 3
    out = tmp_path / "r"
    run_interrupted(cfg(), load_gsn(str(tiny), progress=False), out, monkeypatch, epoch=2)
    last = out / "last.pt"
    last.write_bytes(damaged(last.read_bytes(), how, random.Random(seed)))
    argv = ["train", "--data", str(tiny), "--out", str(out), *TRAIN]
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 2
    line = one_error_line(capsys)
    assert "last.pt" in line and "--force" in line
    assert main(argv + ["--force"]) == 0  # the fix the message names works
    assert (out / "checkpoint.pt").is_file() and not last.exists()


def test_resume_state_with_missing_keys_is_refused(tiny, tmp_path, monkeypatch):
    data = load_gsn(str(tiny), progress=False)
    run_interrupted(cfg(), data, tmp_path / "r", monkeypatch, epoch=1)
    from shapecount.checkpoint import save_resume_state
    save_resume_state(tmp_path / "r", cfg(), {"epoch": 1, "model": {}}, 1.0)
    with pytest.raises(UserError, match="last.pt: is incomplete"):
        experiments.run_experiment(cfg(), data, tmp_path / "r", progress=False, resume=True)


# ------------------------------------------------------------------------- 3. resume with other settings

def test_resume_with_other_settings_lists_every_difference(tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    run_interrupted(cfg(), load_gsn(str(tiny), progress=False), out, monkeypatch, epoch=2)
    base = ["train", "--data", str(tiny), "--out", str(out), *TRAIN, "--resume"]
    capsys.readouterr()
    assert main(base + ["--seed", "2", "--set", "lambda_cnt=2", "--set", "lr=0.002"]) == 2
    line = one_error_line(capsys)
    for part in ("lr: 0.001 -> 0.002", "lambda_cnt: 5.0 -> 2.0", "seed: 1 -> 2", "--force"):
        assert part in line, line
    assert main(base + ["--recipe", "fast"]) == 2
    assert "schedule: 'constant' -> 'cosine'" in one_error_line(capsys)
    other = write_gsn_dir(tmp_path / "other", n=45)  # other data, same config
    assert main(["train", "--data", str(other), "--out", str(out), *TRAIN, "--resume"]) == 2
    assert "data: " in one_error_line(capsys)
    assert main(base) == 0  # the same settings resume


# ------------------------------------------------------------------------- 4. two processes, one folder

def test_second_training_on_a_busy_folder_refuses_at_once(tiny, tmp_path, capsys):
    out = tmp_path / "busy"
    with runlock.locked(out, "evaluation"):  # another process's evaluation holds the folder
        t = time.perf_counter()
        assert main(["train", "--data", str(tiny), "--out", str(out), *TRAIN]) == 2
        assert time.perf_counter() - t < 30
    line = one_error_line(capsys)
    assert f"is in use by another shapecount evaluation (pid {os.getpid()})" in line  # what the holder does
    assert not (out / "config.json").exists()
    with runlock.locked(out):
        assert main(["reproduce", "--data", str(tiny), "--out", str(out), "--quick", "--no-audit"]) == 2
    assert "in use" in one_error_line(capsys)


def test_a_crashed_holder_does_not_leave_the_folder_locked(tiny, tmp_path):
    out = tmp_path / "crashed"
    code = ("import sys, time; from shapecount import runlock\n"
            "with runlock.locked(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match="in use"), runlock.locked(out):
        pass
    proc.kill()  # SIGKILL: no cleanup code runs
    proc.wait()
    with runlock.locked(out):  # the kernel released the lock with the process
        pass
    assert (out / runlock.LOCK_NAME).read_text().split()[0] == str(os.getpid())



def test_a_failure_before_anything_is_written_leaves_no_folder(tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError), runlock.locked(out, "training"):
        assert (out / runlock.LOCK_NAME).is_file()
        raise RuntimeError("failed before writing")
    assert not (tmp_path / "new").exists()  # the folder and the parent the lock made are gone
    with runlock.locked(out):
        (out / "config.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == [".lock", "config.json"]  # a folder written to stays
    kept = tmp_path / "existing"
    kept.mkdir()
    with runlock.locked(kept):
        pass
    assert (kept / runlock.LOCK_NAME).is_file()  # a folder the user made is left as it was, lock file and all


def test_a_refused_process_leaves_the_holders_folder_alone(tmp_path):
    out = tmp_path / "new"
    with runlock.locked(out, "training"):
        with pytest.raises(UserError, match="in use by another shapecount training"), runlock.locked(out):
            pass
        assert (out / runlock.LOCK_NAME).is_file()  # the holder's lock file and folder stay
        with pytest.raises(UserError, match="in use"), runlock.locked(out):  # so the folder is still locked
            pass
    assert not out.exists()  # the holder made it and wrote nothing: gone when the holder ends


def test_a_lock_file_removed_by_its_last_holder_is_not_trusted(tmp_path, monkeypatch):
    # The last holder unlinks the lock file of a folder it made just after another process opened it: a lock
    # on that file would lock nothing, so the lock is taken again on the folder's file.
    out = tmp_path / "run"
    out.mkdir()
    real_open, opened = os.open, []

    def open_then_lose(path, *args):
        fd = real_open(path, *args)
        opened.append(fd)
        if len(opened) == 1:
            os.unlink(path)
        return fd

    monkeypatch.setattr(runlock.os, "open", open_then_lose)
    with runlock.locked(out):
        assert len(opened) == 2
        assert os.stat(out / runlock.LOCK_NAME).st_ino == os.fstat(opened[1]).st_ino

def test_two_processes_building_the_data_cache_both_succeed(tiny, isolated_cache):
    argv = [sys.executable, "-m", "shapecount", "check", "--data", str(tiny)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [r[1] for r in results]
    caches = list(isolated_cache.glob("gsn-*.npz"))
    assert len(caches) == 1 and no_temp_files(isolated_cache)
    assert load_gsn(str(tiny), progress=False).images.shape == (60, 28, 28)


# ------------------------------------------------------------------------------------------ 5. SIGTERM

@pytest.mark.slow
def test_sigterm_keeps_the_last_epoch_and_says_how_to_resume(tiny, tmp_path):
    out = tmp_path / "t"
    argv = [sys.executable, "-m", "shapecount", "train", "--data", str(tiny), "--out", str(out), *TRAIN,
            "--epochs", "40"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if "epoch   2 " in proc.stderr.readline():
            break
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read().strip().splitlines()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert err[-1].startswith("terminated by SIGTERM") and "--resume" in err[-1]
    assert "Traceback" not in "\n".join(err)
    saved = torch.load(out / "last.pt", weights_only=True)
    assert saved["state"]["epoch"] >= 2 and no_temp_files(out)
    r = subprocess.run([*argv[:-2], "--epochs", "40", "--resume"], check=False, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and f"resuming after epoch {saved['state']['epoch']}" in r.stderr


# ----------------------------------------------------------------- 6. pathological exact-decoder inputs

def pathological() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[:28, :28]
    rng = np.random.default_rng(0)
    single = np.zeros((28, 28), bool)
    single[13, 13] = True
    return {"all ink": np.ones((28, 28), bool), "checkerboard": (yy + xx) % 2 == 0,
            "random pixels": rng.random((28, 28)) < 0.5, "one pixel": single,
            "stripes": yy % 3 == 0}


@pytest.mark.parametrize("name", list(pathological()))
def test_pathological_images_end_within_the_node_limit(name):
    """Dense or regular ink no placement can draw is proven infeasible in a few hundred nodes; an image the
    search cannot settle (one pixel) stops at the node limit with every pair UNKNOWN, never hangs."""
    from shapecount.exact.decoder import Decoder

    limit = 200_000
    dec = Decoder(node_limit=limit)
    dec.warm_up()
    t = time.perf_counter()
    d = dec.decode(pathological()[name])
    assert time.perf_counter() - t < 30
    assert d.nodes <= 15 * 2 * limit and not d.feasible and d.map_class == -1
    if name == "one pixel":
        assert len(d.unknown_pairs) == 15
    else:
        assert not d.unknown_pairs and d.nodes < 10_000  # proven: no class fits


def test_solve_streams_a_large_batch_of_hard_files(tmp_path, capsys):
    for i in range(40):
        img = np.where(pathological()["checkerboard"], 255, 0).astype(np.uint8)
        rgba(np.roll(img, i, axis=1)).save(tmp_path / f"h{i:03d}.png")
    assert main(["solve", "--node-limit", "2000", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert sum(ln.startswith(str(tmp_path)) for ln in out.splitlines()) == 40


# ------------------------------------------------------------------------------------- 7. NaN and Inf

def test_checkpoint_with_nan_weights_is_refused(run_dir, tmp_path, capsys):
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    ckpt["model"]["backbone.0.weight"][0, 0, 0, 0] = float("nan")
    bad = tmp_path / "nan.pt"
    torch.save(ckpt, bad)
    img = tmp_path / "x.png"
    rgba(np.zeros((28, 28), np.uint8)).save(img)
    assert main(["predict", "--checkpoint", str(bad), str(img)]) == 2
    assert "non-finite weights (NaN or Inf in backbone.0.weight)" in one_error_line(capsys)


def test_non_finite_outputs_are_reported_not_turned_into_metrics(tiny, tmp_path, monkeypatch, capsys):
    real = evaluation.predict

    def poisoned(*a, **kw):
        lp, cnt = real(*a, **kw)
        cnt = cnt.clone()
        cnt[3, 2] = float("inf")
        return lp, cnt

    monkeypatch.setattr(evaluation, "predict", poisoned)
    out = tmp_path / "n"
    assert main(["train", "--data", str(tiny), "--out", str(out), *TRAIN, "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "Traceback" not in err
    assert "NaN or Inf for 1 of" in line and "img_" in line
    assert not (out / "metrics.json").exists() and not (out / "checkpoint.pt").exists()
