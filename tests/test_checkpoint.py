"""Checkpoints load without running code, and a foreign or mismatched one gets a clear error."""

import pytest
import torch

from shapecount.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from shapecount.config import make_config
from shapecount.errors import UserError
from shapecount.model import build_model


def _save(path, cfg=None, **changes):
    cfg = cfg or make_config("multitask")
    model = build_model(cfg)
    save_checkpoint(path, model, None, cfg, 3, {"top1_accuracy": 0.5})
    if changes:
        ckpt = torch.load(path, weights_only=True)
        ckpt.update(changes)
        torch.save(ckpt, path)
    return model


def test_round_trip(tmp_path):
    model = _save(tmp_path / "c.pt")
    loaded, cfg, ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["epoch"] == 3 and cfg.lambda_cnt == 5
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert not loaded.training


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_pickle_with_code_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "x": _Evil()}, path)
    with pytest.raises(UserError, match="not a readable shapecount checkpoint"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_missing_or_foreign_format(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="format marker"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(UserError, match="not a readable"):
        load_checkpoint(tmp_path / "trunc.pt")


def test_other_architecture_names_what_differs(tmp_path):
    cfg = make_config("multitask")
    _save(tmp_path / "c.pt")
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    ckpt["model"]["cls_head.1.weight"] = torch.zeros(32, 256)  # a head of another width
    torch.save(ckpt, tmp_path / "c.pt")
    with pytest.raises(UserError, match="cls_head.1.weight") as e:
        load_checkpoint(tmp_path / "c.pt")
    assert "\n" not in str(e.value)
    bad = cfg.to_dict() | {"config_version": 99}
    _save(tmp_path / "v.pt", config=bad)
    with pytest.raises(UserError, match="config version 99"):
        load_checkpoint(tmp_path / "v.pt")
