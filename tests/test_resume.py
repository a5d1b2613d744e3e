"""Resume after a crash gives the same result as never stopping; a diverging loss stops cleanly."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import write_gsn_dir
from helpers.interrupt import run_interrupted
from shapecount import experiments, schedule
from shapecount.cli import main
from shapecount.config import make_config
from shapecount.data import load_gsn
from shapecount.errors import UserError

# Timing, and how the process was set up (the allocator and denormal flushing are set by the command line, not
# by a direct call; neither changes these tiny runs' results).
TIMING = {"runtime_s", "eval_seconds", "seconds", "train_seconds", "startup_s", "first_step_unix", "allocator_tuned",
          "flush_denormal"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_gsn_dir(tmp_path_factory.mktemp("tiny") / "gsn", n=60)


def cfg(**kw):
    return make_config("multitask", "protocol",
                       overrides={"epochs": 4, "patience": 10, "batch_size": 16, "tta": False, **kw})


def strip(obj):
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k not in TIMING}
    return obj


def history(run: Path) -> list[dict]:
    with open(run / "history.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def same_run(a: Path, b: Path) -> None:
    assert strip(json.loads((a / "metrics.json").read_text())) == strip(json.loads((b / "metrics.json").read_text()))
    assert history(a) == history(b)
    assert (a / "predictions.csv").read_text() == (b / "predictions.csv").read_text()


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("a") / "run"
    experiments.run_experiment(cfg(), load_gsn(str(tiny), progress=False), out, progress=False)
    return out


def test_same_command_twice_is_identical(tiny, uninterrupted, tmp_path):
    experiments.run_experiment(cfg(), load_gsn(str(tiny), progress=False), tmp_path / "b", progress=False)
    same_run(uninterrupted, tmp_path / "b")
    assert not (uninterrupted / "last.pt").exists()  # removed once the run is complete


def test_interrupt_then_resume_matches(tiny, uninterrupted, tmp_path, monkeypatch):
    data = load_gsn(str(tiny), progress=False)
    run_interrupted(cfg(), data, tmp_path / "r", monkeypatch, epoch=3)  # dies in epoch 3, like Ctrl-C or a crash
    saved = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert saved["state"]["epoch"] == 2 and len(history(tmp_path / "r")) == 2
    with pytest.raises(UserError, match="already holds a run"):
        experiments.run_experiment(cfg(), data, tmp_path / "r", progress=False)
    experiments.run_experiment(cfg(), data, tmp_path / "r", progress=False, resume=True)
    same_run(uninterrupted, tmp_path / "r")


def test_synthetic_data_is_deterministic_and_resumable(tiny, tmp_path, monkeypatch):
    # fresh synthetic images each epoch come from the run's generator, whose state last.pt keeps
    data = load_gsn(str(tiny), progress=False)
    conf = cfg(synth_per_epoch=24, epochs=3)
    experiments.run_experiment(conf, data, tmp_path / "a", progress=False)

    def check(args, kwargs):
        assert len(args[4]) == 54 + 24  # real training images + synthetic ones

    run_interrupted(conf, data, tmp_path / "r", monkeypatch, epoch=2, check=check)
    experiments.run_experiment(conf, data, tmp_path / "r", progress=False, resume=True)
    same_run(tmp_path / "a", tmp_path / "r")
    experiments.run_experiment(cfg(epochs=3), data, tmp_path / "plain", progress=False)
    assert history(tmp_path / "plain") != history(tmp_path / "a")  # the synthetic images were trained on


def test_resume_rejects_other_config_and_broken_state(tiny, tmp_path, monkeypatch):
    data = load_gsn(str(tiny), progress=False)
    run_interrupted(cfg(), data, tmp_path / "r", monkeypatch, epoch=2)
    with pytest.raises(UserError, match=r"different config or data \(lr: 0.001 -> 0.002"):
        experiments.run_experiment(cfg(lr=0.002), data, tmp_path / "r", progress=False, resume=True)
    last = tmp_path / "r" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated: never trusted
    with pytest.raises(UserError, match="not a complete resume checkpoint"):
        experiments.run_experiment(cfg(), data, tmp_path / "r", progress=False, resume=True)


def test_non_finite_loss_stops_with_message(tiny, tmp_path, monkeypatch, capsys):
    import shapecount.engine as eng

    real = eng.multitask_loss
    state = {"calls": 0}

    def poisoned(*a, **kw):
        out = real(*a, **kw)
        state["calls"] += 1
        if state["calls"] > 6:  # epoch 1 has 4 steps of 16 (+ 1 eval), so this hits epoch 2
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(eng, "multitask_loss", poisoned)
    rc = main(["train", "--data", str(tiny), "--out", str(tmp_path / "n"), "--recipe", "fast", "--epochs", "4",
               "--no-progress", "--set", "batch_size=16"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1 and err.startswith("error:") and "non-finite loss" in err and "epoch 2/4" in err
    assert "last.pt" in err
    assert torch.load(tmp_path / "n" / "last.pt", weights_only=True)["state"]["epoch"] == 1


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches(tiny, uninterrupted, tmp_path):
    """A real process killed with SIGKILL mid-epoch, then resumed from the command line."""
    out = tmp_path / "k"
    argv = [sys.executable, "-m", "shapecount", "train", "--data", str(tiny), "--recipe", "protocol", "--out", str(out), "--epochs", "4",
            "--patience", "10", "--no-progress", "--set", "batch_size=16", "--set", "tta=false"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stderr.readline()
        if "epoch   2 " in line:  # epoch 2 is saved; kill during epoch 3
            break
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()
    r = subprocess.run(argv + ["--resume"], check=False, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resuming after epoch" in r.stderr
    same_run(uninterrupted, out)


def test_data_init_lr_groups_and_relu_leak_resume_exactly(tiny, uninterrupted, tmp_path, monkeypatch):
    data = load_gsn(str(tiny), progress=False)
    # relu_leak_until=1: the slope is still falling when the run is resumed (it follows the step count)
    conf = cfg(init="lsuv", fc_lr_scale=0.1, fc_share=0.5, conv_lr_scale=3.0, relu_leak=0.2, relu_leak_until=1.0,
               epochs=3)
    experiments.run_experiment(conf, data, tmp_path / "a", progress=False)
    run_interrupted(conf, data, tmp_path / "r", monkeypatch, epoch=2)
    experiments.run_experiment(conf, data, tmp_path / "r", progress=False, resume=True)
    same_run(tmp_path / "a", tmp_path / "r")  # four lr groups, the sharing hook, the leak and the initialised weights come back exactly
    assert history(tmp_path / "a")[0] != history(uninterrupted)[0]  # the init and the lr changed training


def test_training_norms_resume_exactly_and_are_folded_into_the_checkpoint(tiny, uninterrupted, tmp_path,
                                                                           monkeypatch):
    from shapecount.checkpoint import load_checkpoint
    from shapecount.model import ShapeCountNet

    data = load_gsn(str(tiny), progress=False)
    conf = cfg(train_bn=True, epochs=3)
    experiments.run_experiment(conf, data, tmp_path / "a", progress=False)
    run_interrupted(conf, data, tmp_path / "r", monkeypatch, epoch=2)
    saved = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert any(k.startswith("norms.") for k in saved["state"]["model"])  # training state keeps the norms
    experiments.run_experiment(conf, data, tmp_path / "r", progress=False, resume=True)
    same_run(tmp_path / "a", tmp_path / "r")
    assert history(tmp_path / "a")[0] != history(uninterrupted)[0]  # the norms changed training
    # The delivered network is the plain one, and it gives the predictions the run selected on.
    model, _, _ = load_checkpoint(tmp_path / "a" / "checkpoint.pt", torch.device("cpu"))
    assert model.norms is None and set(model.state_dict()) == set(ShapeCountNet().state_dict())
    rc = main(["evaluate", "--checkpoint", str(tmp_path / "a" / "checkpoint.pt"), "--data", str(tiny),
               "--out", str(tmp_path / "ev")])
    assert rc == 0
    assert (tmp_path / "ev" / "predictions.csv").read_text() == (tmp_path / "a" / "predictions.csv").read_text()


def test_resume_without_threads_keeps_the_thread_count_the_run_started_with(tiny, tmp_path, monkeypatch):
    data = load_gsn(str(tiny), progress=False)
    before = torch.get_num_threads()
    try:
        run_interrupted(cfg(threads=1, epochs=2), data, tmp_path / "r", monkeypatch, epoch=2)
        experiments.run_experiment(cfg(threads=0, epochs=2), data, tmp_path / "r", progress=False, resume=True)
    finally:
        torch.set_num_threads(before)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["threads"] == 1


def test_a_budgeted_run_that_slows_down_is_cut_short_and_says_so(tiny, tmp_path, monkeypatch):
    data = load_gsn(str(tiny), progress=False)
    monkeypatch.setattr(schedule, "plan_epochs", lambda c, first_s: 5)
    # after the second epoch the machine "slows down": only 3 epochs fit
    monkeypatch.setattr(schedule, "replan_epochs", lambda c, planned, seconds: 3 if len(seconds) >= 2 else planned)
    lines = []
    budget = cfg(epochs=6, minutes=1.0, schedule="cosine", warmup_epochs=1)
    m = experiments.run_experiment(budget, data, tmp_path / "a", log=lines.append, progress=False)
    assert m["epochs"] == 3 and m["epochs_planned"] == 3
    assert sum("so 5 epochs" in line for line in lines) == 1
    assert sum("so 3 epochs in all, the lr schedule laid out again" in line for line in lines) == 1
    with open(tmp_path / "a" / "history.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    assert len(lrs) == 3 and lrs[2] < lrs[1]  # the schedule decays over the 3 epochs it has


def test_time_budget_run_equals_the_run_of_the_epochs_it_chose_and_resumes(tiny, tmp_path, monkeypatch):
    # cosine with a warmup: the schedule is laid out again after the first epoch, so the lr of every step
    # after it must match a plain run of the chosen length; the count survives an interruption
    data = load_gsn(str(tiny), progress=False)
    sched = {"schedule": "cosine", "warmup_epochs": 1}
    experiments.run_experiment(cfg(epochs=3, **sched), data, tmp_path / "plain", progress=False)
    monkeypatch.setattr(schedule, "plan_epochs", lambda c, first_s: 3)  # 3 of up to 6 fit in the budget
    budget = cfg(epochs=6, minutes=1.0, **sched)
    experiments.run_experiment(budget, data, tmp_path / "a", progress=False)
    same_run(tmp_path / "plain", tmp_path / "a")
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["epochs_planned"] == 3
    run_interrupted(budget, data, tmp_path / "r", monkeypatch, epoch=3)
    monkeypatch.setattr(schedule, "plan_epochs", lambda c, first_s: pytest.fail("planned again on resume"))
    experiments.run_experiment(budget, data, tmp_path / "r", progress=False, resume=True)
    same_run(tmp_path / "plain", tmp_path / "r")
