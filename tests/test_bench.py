"""`shapecount bench` end to end on a tiny synthetic dataset: every figure present, finite and consistent."""

import json
import math

import pytest

from conftest import write_gsn_dir
from shapecount.cli import main


@pytest.mark.slow
def test_bench_writes_every_figure(tmp_path, capsys):
    data = write_gsn_dir(tmp_path / "gsn", n=80)
    out = tmp_path / "bench.json"
    assert main(["bench", "--data", str(data), "--steps", "2", "--batch-size", "8", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["gemm_peak_gflops"]["fp32"] > 0 and res["gemm_peak_gflops"]["bf16"] > 0
    assert set(res["ours"]) >= {"fp32", "bf16"}
    for r in [res["typical"], *res["ours"].values()]:
        assert set(r["ms_per_step"]) == {"data", "forward", "backward", "optimizer"}
        assert r["images_per_s"] > 0 and all(v >= 0 for v in r["ms_per_step"].values())
    for r in res["ours"].values():
        assert r["ratio_vs_typical"] == pytest.approx(r["images_per_s"] / res["typical"]["images_per_s"])
        assert 0 < r["fraction_of_peak"] and math.isfinite(r["gflops"])
    assert all(e["seconds_1000"] > 0 for e in res["eval"].values())
    st = res["startup"]
    assert 0 < st["import_to_first_step_s"] < st["start_to_first_step_s"] < 120, st
    table = capsys.readouterr().out
    assert "typical" in table and "process start to end of first training step" in table


def test_bench_rejects_bad_options(capsys):
    assert main(["bench", "--steps", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SystemExit) as e:
        main(["bench", "--dtype", "fp16"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
