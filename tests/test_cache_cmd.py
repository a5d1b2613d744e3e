"""`shapecount cache list|clean`."""

from shapecount.cli import main


def test_cache_list_and_clean_keep_downloads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHAPECOUNT_CACHE", str(tmp_path / "c"))
    (tmp_path / "c" / "downloads").mkdir(parents=True)
    (tmp_path / "c" / "gsn-v1-abc.npz").write_bytes(b"x" * 10)
    (tmp_path / "c" / "audit-abc.json").write_text("{}")
    (tmp_path / "c" / "downloads" / "0123456789abcdef-data_gsn.zip").write_bytes(b"zip")
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "3 files" in out and "download" in out and "rebuildable" in out
    assert main(["cache", "clean"]) == 0
    assert "removed 2 files" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "c").rglob("*") if p.is_file()] == ["0123456789abcdef-data_gsn.zip"]
    assert main(["cache", "clean", "--all"]) == 0
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]


def test_cache_clean_removes_only_files_shapecount_writes(tmp_path, monkeypatch, capsys):
    # The cache folder may be shared (SHAPECOUNT_CACHE=~/.cache, say): a file we did not write is never removed.
    root = tmp_path / "shared"
    monkeypatch.setenv("SHAPECOUNT_CACHE", str(root))
    (root / "downloads").mkdir(parents=True)
    ours = [root / "gsn-v1-0f6c37d7.npz", root / ".audit-de85.json.x1y2.tmp",
            root / "downloads" / ".download-abc.part"]
    foreign = [root / "notes.txt", root / "gsn-v1-backup.npz", root / "other" / "audit-ab.json",
               root / "downloads" / "mine.zip"]
    for p in ours + foreign:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    assert main(["cache", "list"]) == 0
    assert capsys.readouterr().out.count("not ours") == len(foreign)
    assert main(["cache", "clean", "--all"]) == 0
    assert f"removed {len(ours)} files" in capsys.readouterr().out
    assert sorted(p for p in root.rglob("*") if p.is_file()) == sorted(foreign)
