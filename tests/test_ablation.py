import json

import pytest

from shapecount import ablation


def _run(folder, seed, top1, rmse, **cfg):
    folder.mkdir(parents=True)
    m = {"top1_accuracy": top1, "macro_f1": top1 - 0.01, "pair_accuracy": 0.98, "rmse": rmse, "mae": rmse / 2,
         "epochs": 40, "runtime_s": 600.0, "single_view": {"top1_accuracy": top1 - 0.05, "rmse": rmse + 0.05}}
    (folder / "metrics.json").write_text(json.dumps(m))
    (folder / "config.json").write_text(json.dumps({"seed": seed, "lr": 0.002, "synth_per_epoch": 0, **cfg}))


def test_mean_std_over_seeds_and_config_differences(tmp_path, capsys):
    for seed, t in ((1, 0.5), (2, 0.6), (3, 0.7)):
        _run(tmp_path / "a_real" / f"s{seed}", seed, t, 0.5)
    for seed, t in ((1, 0.8), (2, 0.9)):
        _run(tmp_path / "b_synth" / f"s{seed}", seed, t, 0.3, synth_per_epoch=18000)
    (tmp_path / "c_empty" / "s1").mkdir(parents=True)  # unfinished: ignored
    assert ablation.main([str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "ablation.json").read_text())
    assert [r["setting"] for r in rows] == ["a_real", "b_synth"]
    mean, std = rows[0]["top1_accuracy"]
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1)
    assert rows[0]["sv_top1_accuracy"][0] == pytest.approx(0.55)
    assert rows[1]["changes"] == {"synth_per_epoch": 18000} and rows[0]["changes"] == {}
    out = capsys.readouterr().out
    assert "0.600 ± 0.100" in out and "synth_per_epoch=18000" in out and "(reference)" in out


def test_bad_root_one_line(tmp_path, capsys):
    assert ablation.main([str(tmp_path / "nope")]) == 2
    assert ablation.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: ") for e in err)
