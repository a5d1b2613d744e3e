import json

import numpy as np
import pytest

from shapecount import ablation
from shapecount.cli import main


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
    assert main(["ablation", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "ablation.json").read_text())
    assert [r["setting"] for r in rows] == ["a_real", "b_synth"]
    mean, std = rows[0]["top1_accuracy"]
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1)
    assert rows[0]["sv_top1_accuracy"][0] == pytest.approx(0.55)
    assert rows[1]["changes"] == {"synth_per_epoch": 18000} and rows[0]["changes"] == {}
    out = capsys.readouterr().out
    assert "0.600 ± 0.100" in out and "synth_per_epoch=18000" in out and "(reference)" in out


def test_a_damaged_run_is_left_out_with_a_warning(tmp_path, capsys):
    for seed in (1, 2):
        _run(tmp_path / "a" / f"s{seed}", seed, 0.5 + seed / 10, 0.5)
    (tmp_path / "a" / "s2" / "metrics.json").write_text('{"top1_accuracy": 0.7')  # cut short
    assert main(["ablation", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "ablation.json").read_text())
    assert rows[0]["n"] == 1 and rows[0]["seeds"] == [1] and rows[0]["top1_accuracy"][0] == pytest.approx(0.6)
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "s2/metrics.json: cannot be read as JSON" in err and "left out" in err


def test_bad_root_one_line(tmp_path, capsys):
    assert main(["ablation", str(tmp_path / "nope")]) == 2
    assert main(["ablation", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: ") for e in err)


def _preds(folder, rows):
    """rows: (true counts, predicted class, predicted counts)."""
    from shapecount import labels as L
    head = ["name", *L.TYPES, "true_class", "pred_class", *(f"pred_{t}" for t in L.TYPES), "pred_class_from_counts",
            "confidence"]
    lines = [",".join(head)]
    for i, (tc, pc, cnt) in enumerate(rows):
        lines.append(",".join(map(str, [f"img_{i}.png", *tc, L.counts_to_class(tc), pc, *cnt, pc, 0.5])))
    (folder / "predictions.csv").write_text("\n".join(lines) + "\n")


def test_error_structure_from_predictions(tmp_path):
    from shapecount import labels as L
    run = tmp_path / "a" / "s1"
    _run(run, 1, 0.25, 0.5)
    t = [5, 5, 0, 0, 0, 0]
    _preds(run, [
        (t, L.counts_to_class(t), [5, 5, 0, 0, 0, 0]),                         # right
        (t, L.counts_to_class([4, 6, 0, 0, 0, 0]), [4.5, 5.5, 0, 0, 0, 0]),   # right pair, split off by 1
        (t, L.counts_to_class([2, 8, 0, 0, 0, 0]), [5, 5, 0, 0, 0, 1.0]),     # right pair, off by 3
        (t, L.counts_to_class([5, 0, 5, 0, 0, 0]), [5, 5, 0, 0, 0, 0]),       # wrong pair
    ])
    e = ablation.error_structure(run)
    assert e["err_pair"] == pytest.approx(0.25) and e["err_split1"] == pytest.approx(0.25)
    assert e["err_split2"] == pytest.approx(0.25)
    assert e["mae_squares"] == pytest.approx(0.5 / 4) and e["mae_left"] == pytest.approx(1 / 4)
    assert e["mae_up"] == 0
    assert main(["ablation", str(tmp_path)]) == 0
    md = (tmp_path / "ablation.md").read_text()
    assert "Where the errors are" in md and "| a | 0.250 | 0.250 | 0.250 | 0.125 |" in md
    (run / "predictions.csv").write_text("garbage\n1,2\n")  # unreadable: n/a, no failure
    assert ablation.error_structure(run) == {}


def test_top1_by_group_with_an_audit(tmp_path, capsys):
    import torch

    from shapecount import labels as L
    from shapecount import synth
    from shapecount.exact import overlap

    g = torch.Generator().manual_seed(5)
    counts = synth.sample_labels(10, g)
    types, centres = synth.sample_shapes(counts, g)
    audit, rows = tmp_path / "audit", []
    for i in range(10):
        witness = [f"{L.TYPE_SINGULAR[int(t)]}@{int(r)},{int(c)}" for t, (r, c) in zip(types[i], centres[i])]
        label = L.counts_to_class(counts[i].tolist())
        rows.append({"name": f"img_{i}.png", "label": label, "unknown": False, "nodes": 1, "ms": 0.1,
                     "feasible": {str(label): {"p": 1.0, "witness": witness}}})
    audit.mkdir()
    (audit / "witnesses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (audit / "summary.json").write_text(json.dumps({"n_images": 10}))
    shares = overlap.decidable_measure({r["name"]: r for r in rows})
    least = sorted(shares, key=shares.get)[:2]  # the first group of 5: right there, wrong everywhere else
    root = tmp_path / "root"
    run = root / "a" / "s1"
    _run(run, 1, 0.2, 0.5)
    wrong = [0, 0, 0, 0, 0, 0]
    _preds(run, [(c.tolist(), L.counts_to_class(c.tolist()) if f"img_{i}.png" in least else 0, wrong)
                 for i, c in enumerate(counts)])
    assert main(["ablation", str(root), "--audit", str(audit)]) == 0
    md = (root / "ablation.md").read_text()
    assert md.splitlines()[2].startswith("| exact decoding, MAP (ceiling) |  | 1.000 | n/a |")
    assert "top-1 decidable (10) | top-1 ambiguous (0)" in md
    assert "| exact decoding, MAP (ceiling) | 1.000 | n/a | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 |" in md
    assert "| a | 0.200 | n/a | 1.000 | 0.000 | 0.000 | 0.000 | 0.000 |" in md
    visible = overlap.decidable_measure({r["name"]: r for r in rows}, "visible")
    edges = overlap.bin_edges(visible, 5)
    group = {n: overlap.bin_of(v, edges) for n, v in visible.items()}  # the same right images, regrouped
    expect = [np.mean([n in least for n in group if group[n] == i]) for i in range(5)]
    assert "| top-1, least visible 0." in md
    assert "| a | " + " | ".join(f"{v:.3f}" for v in expect) + " |" in md
    capsys.readouterr()
    assert main(["ablation", str(root), "--audit", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no audit" in err[0] and "shapecount audit --split val" in err[0]


def test_configs_written_before_a_key_existed_show_no_false_difference(tmp_path):
    from shapecount.config import make_config

    full = {k: v for k, v in make_config("multitask", "best").to_dict().items() if k != "seed"}
    old = {k: v for k, v in full.items() if k not in ("init", "fc_share", "amp")} | {"bf16": full["amp"]}
    _run(tmp_path / "a_new" / "s1", 1, 0.8, 0.3, **full)
    _run(tmp_path / "b_old" / "s1", 1, 0.8, 0.3, **old)
    _run(tmp_path / "c_changed" / "s1", 1, 0.8, 0.3, **(old | {"lambda_cnt": 10.0}))
    rows = {r["setting"]: r for r in ablation.summarize(tmp_path)}
    assert rows["b_old"]["changes"] == {} and rows["c_changed"]["changes"] == {"lambda_cnt": 10.0}
