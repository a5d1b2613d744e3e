"""Data parallelism under torchrun: each rank's share of a batch, and 2 CPU ranks (gloo) training to the same
weights as one process with the same global batch and seed."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import write_gsn_dir
from shapecount.distributed import World

TRAIN = ["--recipe", "protocol", "--epochs", "2", "--no-progress", "--set", "tta=false", "--set", "head_dropout1=0",
         "--set", "head_dropout2=0", "--set", "synth_per_epoch=20", "--set", "aux_anchor=1", "--minutes", "1000"]


@pytest.mark.parametrize("n,size", [(16, 2), (6, 4), (1, 2), (17, 3)])
def test_shares_cover_the_batch_once(n, size):
    parts = [World(r, size).share(n) for r in range(size)]
    rows = [i for p in parts for i in range(n)[p]]
    assert rows == list(range(n))
    assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def torchrun(nproc: int, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "shapecount", *args]
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    data = write_gsn_dir(tmp_path / "gsn", n=60)
    one = tmp_path / "one"
    r = subprocess.run([sys.executable, "-m", "shapecount", "train", "--data", str(data), "--out", str(one), *TRAIN,
                        "--set", "batch_size=16", "--threads", "1"], check=False, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads((one / "metrics.json").read_text())["flush_denormal"] is True  # set before any parallel op
    two = tmp_path / "two"
    r = torchrun(2, ["train", "--data", str(data), "--out", str(two), *TRAIN, "--set", "batch_size=16"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data parallel over 2 processes: 8 images per process" in r.stderr
    assert "so 2 epochs" in r.stderr  # the ranks planned the time budget together (it holds the whole run)
    a = torch.load(one / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(two / "checkpoint.pt", weights_only=True)["model"]
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    # The same maths; only the order of the gradient sums differs. Adam turns a rounding difference in a
    # near-zero gradient into up to a few percent of one step (lr 1e-3), so the bound is a tenth of a step.
    assert worst < 1e-4, worst
    h1 = [ln.split(",") for ln in (one / "history.csv").read_text().splitlines()]
    h2 = [ln.split(",") for ln in (two / "history.csv").read_text().splitlines()]
    assert len(h1) == len(h2) == 3 and h1[0] == h2[0]
    for r1, r2 in zip(h1[1:], h2[1:]):  # training losses (summed over ranks) and held-out figures agree
        assert [float(v) for v in r1[1:10]] == pytest.approx([float(v) for v in r2[1:10]], rel=1e-5)


@pytest.mark.slow
def test_two_gloo_ranks_train_with_norms_and_deliver_the_plain_network(tmp_path):
    # Each rank normalises its own share of a batch; the running statistics are averaged over the ranks before
    # every evaluation, so the ranks select the same epoch and finish together.
    data = write_gsn_dir(tmp_path / "gsn", n=60)
    r = torchrun(2, ["train", "--data", str(data), "--out", str(tmp_path / "bn"), *TRAIN, "--set", "batch_size=16",
                     "--set", "train_bn=true"])
    assert r.returncode == 0, r.stderr[-3000:]
    state = torch.load(tmp_path / "bn" / "checkpoint.pt", weights_only=True)["model"]
    assert state and not any(k.startswith("norms.") for k in state)
    assert all(bool(torch.isfinite(v).all()) for v in state.values())


@pytest.mark.slow
def test_batch_not_divisible_by_ranks_is_one_line(tmp_path):
    data = write_gsn_dir(tmp_path / "gsn", n=30)
    r = torchrun(2, ["train", "--data", str(data), "--out", str(tmp_path / "x"), *TRAIN, "--set", "batch_size=15"])
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert lines and "batch_size: 15 is not divisible by the 2 processes" in lines[0]
    assert not (tmp_path / "x").exists()


def test_other_commands_refuse_torchrun(monkeypatch, capsys):
    from shapecount.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["labels"]) == 2
    assert "only `train` runs data parallel under torchrun" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["two", "-1", "0", "1.5"])
def test_a_world_size_that_is_not_a_process_count_is_one_line(value, monkeypatch, capsys):
    from shapecount.cli import main

    monkeypatch.setenv("WORLD_SIZE", value)
    assert main(["labels"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: WORLD_SIZE: is {value!r}, not a number of processes") and err.count("\n") == 1
