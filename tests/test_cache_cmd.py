"""`shapecount cache list|clean`."""

from shapecount.cli import main


def test_cache_list_and_clean_keep_downloads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHAPECOUNT_CACHE", str(tmp_path / "c"))
    (tmp_path / "c" / "downloads").mkdir(parents=True)
    (tmp_path / "c" / "gsn-v1-abc.npz").write_bytes(b"x" * 10)
    (tmp_path / "c" / "audit-abc.json").write_text("{}")
    (tmp_path / "c" / "downloads" / "1234-data_gsn.zip").write_bytes(b"zip")
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "3 files" in out and "download" in out and "rebuildable" in out
    assert main(["cache", "clean"]) == 0
    assert "removed 2 files" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "c").rglob("*") if p.is_file()] == ["1234-data_gsn.zip"]
    assert main(["cache", "clean", "--all"]) == 0
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]
