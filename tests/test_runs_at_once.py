"""Experiments trained at once, one process each: the plan (threads shared out, budget multiplied), the
reproduce folder it writes, and errors from a run's process reported as a single run's are."""

from __future__ import annotations

import json

import pytest

from conftest import write_gsn_dir
from shapecount import data as D
from shapecount.cli import main
from shapecount.config import make_config
from shapecount.errors import TrainingError, UserError
from shapecount.experiments import at_once_plan, started_at_once
from shapecount.runs_at_once import _raise, train_at_once

EXPERIMENTS = ("classification", "regression", "multitask")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_gsn_dir(tmp_path_factory.mktemp("tiny") / "gsn", n=60)


def configs(**overrides):
    return {e: make_config(e, "budget", overrides) for e in EXPERIMENTS}


def test_plan_shares_threads_and_multiplies_the_budget():
    plan = at_once_plan(configs(threads=2), None)
    assert plan is not None and list(plan) == list(EXPERIMENTS)
    for name, cfg in plan.items():
        assert cfg.threads == 1 and cfg.minutes == 3 * configs()[name].minutes
    assert {c.threads for c in at_once_plan(configs(threads=8), None).values()} == {2}
    assert at_once_plan(configs(threads=1), None) is None  # one thread: nothing to gain
    assert at_once_plan(configs(threads=2), False) is None  # --one-at-a-time
    assert at_once_plan({"multitask": configs(threads=2)["multitask"]}, None) is None  # one run
    quick = {e: make_config(e, "quick", {"threads": 2}) for e in EXPERIMENTS}
    assert {c.minutes for c in at_once_plan(quick, None).values()} == {0}  # no budget stays no budget


def begin(out, minutes, name="multitask"):
    """A reproduce folder whose `name` run has begun with the given time budget (only its config.json)."""
    cfg = make_config(name, "budget", {"minutes": minutes})
    (out / name).mkdir(parents=True)
    (out / name / "config.json").write_text(json.dumps(cfg.to_dict()))


def test_a_begun_reproduce_tells_how_it_trains(tmp_path):
    cfgs = configs()
    assert started_at_once(tmp_path, cfgs) is None  # nothing begun
    begin(tmp_path / "at_once", 3 * cfgs["multitask"].minutes)
    assert started_at_once(tmp_path / "at_once", cfgs) is True
    begin(tmp_path / "one", cfgs["multitask"].minutes)
    assert started_at_once(tmp_path / "one", cfgs) is False
    begin(tmp_path / "other", 5.0)  # a budget of neither kind (--set minutes=...) tells nothing
    assert started_at_once(tmp_path / "other", cfgs) is None
    quick = {e: make_config(e, "quick") for e in EXPERIMENTS}
    assert started_at_once(tmp_path / "one", quick) is None  # no budget: both ways give the same configs
    assert started_at_once(tmp_path / "one", {"multitask": cfgs["multitask"]}) is None  # one run: never at once
    (tmp_path / "other" / "runs.json").write_text(json.dumps({"runs": [], "at_once": True}))
    assert started_at_once(tmp_path / "other", cfgs) is True  # runs.json, written before training, says first
    (tmp_path / "at_once" / "multitask" / "config.json").write_text("{not json")
    assert started_at_once(tmp_path / "at_once", cfgs) is None  # a damaged config.json tells nothing


def test_resuming_in_the_other_way_is_a_one_line_error(tiny, tmp_path, capsys):
    out = tmp_path / "rep"
    begin(out, 3 * configs()["multitask"].minutes)
    argv = ["reproduce", "--data", str(tiny), "--out", str(out), "--resume", "--no-progress", "--no-audit"]
    assert main(argv + ["--one-at-a-time"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("was started with its experiments training at once "
                        "(resume without --one-at-a-time, or pass --force instead of --resume to start this run "
                        "again from scratch)")
    assert "\n" not in err and not (out / "eda").exists()  # nothing done before the error


def test_errors_of_a_run_come_back_as_their_kind():
    with pytest.raises(UserError, match=r"^f: bad \(fix it\)$"):
        _raise("multitask", ("user", "f", "bad", "fix it"))
    with pytest.raises(TrainingError, match="diverged"):
        _raise("multitask", ("training", "diverged"))
    with pytest.raises(KeyboardInterrupt):
        _raise("multitask", ("interrupted",))
    with pytest.raises(RuntimeError, match="the multitask run failed:\nTraceback"):
        _raise("multitask", ("crash", "Traceback ..."))
    with pytest.raises(OSError) as e:  # as the CLI would see it from its own process: a path it can name
        _raise("multitask", ("os", 13, "Permission denied", "/runs/mt/history.csv", "Traceback ..."))
    assert (e.value.errno, e.value.filename) == (13, "/runs/mt/history.csv")


@pytest.mark.slow
def test_reproduce_trains_the_three_at_once_and_resumes(tiny, tmp_path, capfd):
    out = tmp_path / "rep"
    argv = ["reproduce", "--quick", "--data", str(tiny), "--out", str(out), "--no-progress", "--epochs", "1",
            "--no-audit", "--threads", "2"]
    assert main(argv) == 0
    err = capfd.readouterr().err
    assert "the 3 experiments train at once, 1 thread each" in err
    assert err.count("[multitask] done in") == 1  # the runs' own lines reach the terminal
    assert "Traceback" not in err  # runs that have answered exit plainly, even when tidied up by SIGTERM
    runs = json.loads((out / "runs.json").read_text())
    assert runs["at_once"] is True and [r["name"] for r in runs["runs"]] == list(EXPERIMENTS)
    for e in EXPERIMENTS:
        assert json.loads((out / e / "config.json").read_text())["threads"] == 1
        assert json.loads((out / e / "metrics.json").read_text())["experiment"] == e
    report = (out / "report.md").read_text()
    assert "The experiments trained at once, one process each" in report
    assert "The runs trained at once, sharing the cores" in report  # the time-to-accuracy section says so too
    assert (out / "report.html").is_file()
    before = (out / "multitask" / "metrics.json").read_text()
    assert main(argv + ["--resume"]) == 0
    assert capfd.readouterr().err.count("already complete") == 3
    assert (out / "multitask" / "metrics.json").read_text() == before


@pytest.mark.slow
def test_a_failing_run_stops_the_others_with_its_one_line_error(tiny, tmp_path):
    data = D.load_gsn(tiny, progress=False)
    cfgs = {e: make_config(e, "quick", {"epochs": 1, "threads": 1}) for e in ("classification", "multitask")}
    (tmp_path / "taken").write_text("a file where a run folder should go")
    with pytest.raises(UserError, match="exists and is not a folder"):
        train_at_once({"classification": (cfgs["classification"], tmp_path / "ok"),
                       "multitask": (cfgs["multitask"], tmp_path / "taken")}, data)


@pytest.mark.slow
def test_a_run_that_dies_without_answering_is_a_one_line_training_error(tiny, tmp_path, monkeypatch):
    from helpers.lost_run import die_without_answering
    from shapecount import runs_at_once

    monkeypatch.setattr(runs_at_once, "_child", die_without_answering)
    cfgs = configs(epochs=1)
    with pytest.raises(TrainingError, match=r"the (classification|regression|multitask) run ended without a "
                                            r"result \(exit code 9.*--resume") as e:
        train_at_once({n: (c, tmp_path / n) for n, c in cfgs.items()}, D.load_gsn(str(tiny), progress=False))
    assert "\n" not in str(e.value)
