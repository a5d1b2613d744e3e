"""`shapecount bench` end to end on a tiny synthetic dataset: every figure present, finite and consistent; and
the typical pipeline's Dataset it times."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import write_gsn_dir
from shapecount import bench
from shapecount import data as D
from shapecount import labels as L
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


def test_dataset_directory_and_tensor_paths_agree(gsn_dir: Path) -> None:
    d = D.load_gsn(str(gsn_dir), progress=False)
    slow, fast = bench.GSNDataset(gsn_dir), bench.GSNDataset(d)
    assert len(slow) == len(fast) == 40
    for i in (0, 17, 39):
        (xs, cs, ns), (xf, cf, nf) = slow[i], fast[i]
        assert xs.shape == (1, 28, 28) and xs.dtype == torch.float32 and torch.equal(xs, xf)
        assert cs == cf == int(d.classes[i]) and isinstance(cs, int)
        assert ns.dtype == torch.float32 and torch.equal(ns, nf) and ns.shape == (6,)
        assert xs.min() >= 0 and xs.max() <= 1
    x, c, n = next(iter(DataLoader(fast, batch_size=8)))
    assert x.shape == (8, 1, 28, 28) and c.shape == (8,) and n.shape == (8, 6)


def test_dataset_transform_recomputes_class(gsn_dir: Path) -> None:
    d = D.load_gsn(str(gsn_dir), progress=False)

    def hflip(image: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return image.flip(-1), L.permute_counts(counts, L.HFLIP)

    ds = bench.GSNDataset(d, transform=hflip)
    for i in range(40):
        x, c, n = ds[i]
        assert torch.equal(x, d.images[i].float().div(255).flip(-1).unsqueeze(0))
        assert c == L.counts_to_class(L.permute_counts(d.counts[i], L.HFLIP).tolist())
        assert n.tolist() == L.permute_counts(d.counts[i], L.HFLIP).float().tolist()


def test_contention_rows_compare_each_setting_with_its_own_and_the_defaults_quiet_speed(monkeypatch):
    calls = []

    def fake_child(source, steps, batch, bf16, policy):  # quiet first, then beside the busy process
        calls.append(policy)
        quiet = len(calls) % 2 == 1
        one = policy.get("OMP_NUM_THREADS") == "1"
        return (800.0 if one else 1200.0) if quiet else (760.0 if one else 400.0)

    monkeypatch.setattr(bench, "_throughput_child", fake_child)
    res = bench.bench_contention("data", 5, 8, bf16=False)
    assert len(calls) == 2 * len(bench.WAIT_POLICIES) and set(res) == set(bench.WAIT_POLICIES)
    one = next(c for name, c in res.items() if name.startswith("1 thread"))
    assert one["share"] == pytest.approx(760 / 800) and one["share_of_default_quiet"] == pytest.approx(760 / 1200)
    assert res[bench.DEFAULT_POLICY]["share_of_default_quiet"] == pytest.approx(400 / 1200)
    table = bench.format_table({"ours": {}, "eval": {}, "contention": res, "dataset_load_s": 0.1, "threads": 2,
                                "torch": "x", "steps": 5, "batch": 8, "kernels": {}, "gemm_peak_gflops": {"fp32": 1, "bf16": 1},
                                "flops_per_image": {"train": 1}})
    assert "63% of the default's" in table


def test_typical_pipeline_reads_every_kind_of_source(gsn_dir: Path, gsn_zip: Path, tmp_path: Path,
                                                     monkeypatch) -> None:
    # A URL source is read from its downloaded copy; the download itself is stood in for (no network in tests).
    monkeypatch.setattr("shapecount.data.cache.download", lambda url, **_: gsn_zip)
    for i, source in enumerate((str(gsn_dir), str(gsn_dir / "labels.csv"), str(gsn_zip),
                                "https://example.org/data_gsn.zip")):
        folder = bench._extract(source, tmp_path / f"unpacked{i}")
        assert (folder / "labels.csv").is_file() and len(bench.GSNDataset(folder)) == 40


def test_bench_batch_larger_than_the_data_is_one_line(gsn_dir: Path, capsys) -> None:
    assert main(["bench", "--data", str(gsn_dir), "--batch-size", "41", "--steps", "1", "--skip-typical"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --batch-size: 41 is more than the 40 images") and err.count("\n") == 1


def test_a_whole_dataset_batch_is_timed(gsn_dir: Path) -> None:
    d = D.load_gsn(str(gsn_dir), progress=False)
    assert bench.bench_ours(d, 2, len(d), False, False)["images_per_s"] > 0
