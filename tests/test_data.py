"""shapecount.data: sources, validation (one test per bad input), cache, download, summary."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import draw, rgba, synthetic_counts, write_gsn_dir, zip_dir
from shapecount import data as D
from shapecount import labels as L
from shapecount.data import downloader as DL
from shapecount.data import validation as V
from shapecount.errors import DataError

REAL_LABELS_SHA = "21ca1d41da521baad1baceb57270e0eb6247df908d1fc70a4f6504891aded83c"


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def load_error(source: Path | str, **kw) -> str:
    with pytest.raises(DataError) as info:
        D.load_gsn(str(source), progress=False, **kw)
    msg = str(info.value)
    assert "\n" not in msg, "the CLI prints one line"
    return msg


def set_row(folder: Path, row: int, text: str) -> None:
    """Replace data row `row` (1-based) of labels.csv."""
    lines = (folder / "labels.csv").read_text().splitlines()
    lines[row] = text
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")


# ---- sources and the loaded data ----

def test_resolve_source_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHAPECOUNT_DATA", raising=False)
    assert D.resolve_source(None) == D.DEFAULT_URL
    monkeypatch.setenv("SHAPECOUNT_DATA", "/some/where.zip")
    assert D.resolve_source(None) == "/some/where.zip"
    assert D.resolve_source("/explicit") == "/explicit"


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHAPECOUNT_CACHE", str(tmp_path / "c"))
    assert D.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SHAPECOUNT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert D.cache_dir() == tmp_path / ".cache" / "shapecount"


def test_load_directory(gsn_dir: Path) -> None:
    d = D.load_gsn(str(gsn_dir), progress=False)
    assert len(d) == 40 and d.names[0] == "img_00000.png"
    assert d.images.shape == (40, 28, 28) and d.images.dtype == torch.uint8
    assert set(d.images.unique().tolist()) == {0, 255}
    assert d.counts.dtype == torch.int64 and d.counts.tolist() == synthetic_counts(40).tolist()
    assert d.classes.tolist() == [L.counts_to_class(c) for c in d.counts.tolist()]
    assert np.array_equal(d.images[3].numpy(), draw(synthetic_counts(40)[3]))
    assert d.warnings == [] and d.source == str(gsn_dir)
    assert d.labels_sha256 == hashlib.sha256((gsn_dir / "labels.csv").read_bytes()).hexdigest()


@pytest.mark.parametrize("prefix", ["data/", "", "gsn_copy/"])
def test_load_zip_layouts(gsn_dir: Path, tmp_path: Path, prefix: str) -> None:
    z = zip_dir(gsn_dir, tmp_path / "x.zip", prefix=prefix)
    d, ref = D.load_gsn(str(z), progress=False), D.load_gsn(str(gsn_dir), progress=False, cache=False)
    assert torch.equal(d.images, ref.images) and torch.equal(d.counts, ref.counts) and d.names == ref.names
    assert d.sha256 == hashlib.sha256(z.read_bytes()).hexdigest()
    assert d.labels_sha256 == ref.labels_sha256


def test_directory_with_data_subfolder_and_labels_path(gsn_dir: Path, tmp_path: Path) -> None:
    outer = tmp_path / "unzipped"
    outer.mkdir()
    gsn_dir.rename(outer / "data")
    assert len(D.load_gsn(str(outer), progress=False)) == 40
    assert len(D.load_gsn(str(outer / "data" / "labels.csv"), progress=False)) == 40


def test_split_and_subset(gsn_dir: Path) -> None:
    tr, va = D.official_split(10_000)
    assert len(tr) == 9000 and len(va) == 1000 and tr[-1] == 8999 and va[0] == 9000
    d = D.load_gsn(str(gsn_dir), progress=False)
    train, val = D.split(d)
    assert (len(train), len(val)) == (36, 4) and val.names == d.names[36:]
    assert torch.equal(val.images, d.images[36:])
    for idx in ([5, 2], torch.tensor([5, 2]), np.array([5, 2])):
        s = d.subset(idx)
        assert s.names == ["img_00005.png", "img_00002.png"] and torch.equal(s.counts, d.counts[[5, 2]])
    assert d.subset(slice(0, 3)).names == d.names[:3]
    assert len(d.subset(d.classes == d.classes[0])) >= 1


# ---- one test per bad input ----

BAD_LABELS: list[tuple[str, Callable[[Path], None], list[str]]] = [
    ("missing labels.csv", lambda f: (f / "labels.csv").unlink(), ["labels.csv", "is missing"]),
    ("empty csv", lambda f: (f / "labels.csv").write_text(""), ["labels.csv", "is empty"]),
    ("header only", lambda f: (f / "labels.csv").write_text("name,squares,circles,up,right,down,left\n"),
     ["labels.csv", "no rows"]),
    ("wrong header", lambda f: set_row(f, 0, "name,squares,circles,up,right,down,hexagons"),
     ["labels.csv", "header", "hexagons"]),
    ("field count", lambda f: set_row(f, 3, "img_00002.png,0,0,5,5,0"),
     ["labels.csv row 3 (line 4)", "6 fields"]),
    ("non-integer", lambda f: set_row(f, 1, "img_00000.png,2.5,7.5,0,0,0,0"),
     ["row 1 (line 2)", "not an integer"]),
    ("negative", lambda f: set_row(f, 2, "img_00001.png,-2,12,0,0,0,0"), ["row 2", "-2 is outside 0..10"]),
    ("over ten", lambda f: set_row(f, 2, "img_00001.png,11,0,0,0,0,0"), ["row 2", "11 is outside 0..10"]),
    ("sum", lambda f: set_row(f, 4, "img_00003.png,3,4,0,0,0,0"), ["row 4", "sum to 7"]),
    ("three types", lambda f: set_row(f, 4, "img_00003.png,2,3,5,0,0,0"), ["row 4", "3 shape types"]),
    ("one type", lambda f: set_row(f, 4, "img_00003.png,0,10,0,0,0,0"), ["row 4", "1 shape type "]),
    ("duplicate", lambda f: set_row(f, 5, "img_00001.png,0,5,5,0,0,0"), ["row 5", "duplicate", "row 2"]),
    ("path as name", lambda f: set_row(f, 1, "../img_00000.png,0,5,5,0,0,0"), ["row 1", "plain file name"]),
]


@pytest.mark.parametrize("mutate,expected", [c[1:] for c in BAD_LABELS], ids=[c[0] for c in BAD_LABELS])
def test_bad_labels(gsn_dir: Path, isolated_cache: Path, mutate, expected: list[str]) -> None:
    mutate(gsn_dir)
    msg = load_error(gsn_dir)
    for part in expected:
        assert part in msg
    assert "(" in msg and msg.endswith(")"), "every error says how to fix it"
    assert files_in(isolated_cache) == []


def test_bad_labels_in_zip_names_member(gsn_dir: Path, tmp_path: Path) -> None:
    set_row(gsn_dir, 3, "img_00002.png,0,0,5,5,0")
    msg = load_error(zip_dir(gsn_dir, tmp_path / "bad.zip"))
    assert "bad.zip:data/labels.csv row 3" in msg


def _write_image(folder: Path, name: str, payload: bytes) -> None:
    (folder / name).write_bytes(payload)


BAD_IMAGES: list[tuple[str, Callable[[bytes], bytes], list[str]]] = [
    ("corrupt", lambda raw: raw[:41] + bytes(b ^ 0x5A for b in raw[41:]), ["img_00007.png", "corrupt"]),
    ("truncated", lambda raw: raw[: len(raw) // 2], ["img_00007.png", "truncated"]),
    ("header only", lambda raw: raw[:20], ["img_00007.png", "truncated or corrupt PNG"]),
    ("not png", lambda raw: b"GIF89a this is not a png", ["img_00007.png", "not a PNG"]),
    ("empty", lambda raw: b"", ["img_00007.png", "empty file"]),
    ("wrong size", lambda raw: png_bytes(rgba(np.zeros((32, 30), np.uint8))),
     ["img_00007.png", "30x32", "28x28"]),
    ("16-bit", lambda raw: png_bytes(Image.fromarray(np.zeros((28, 28), np.uint16))),
     ["img_00007.png", "unsupported image mode"]),
]


@pytest.mark.parametrize("make,expected", [c[1:] for c in BAD_IMAGES], ids=[c[0] for c in BAD_IMAGES])
def test_bad_images(gsn_dir: Path, isolated_cache: Path, make, expected: list[str]) -> None:
    raw = (gsn_dir / "img_00007.png").read_bytes()
    _write_image(gsn_dir, "img_00007.png", make(raw))
    msg = load_error(gsn_dir)
    for part in expected:
        assert part in msg
    assert files_in(isolated_cache) == []
    # predict's single-file reader says the same
    with pytest.raises(DataError, match="img_00007.png"):
        D.read_image(gsn_dir / "img_00007.png")


def test_missing_image(gsn_dir: Path) -> None:
    (gsn_dir / "img_00007.png").unlink()
    msg = load_error(gsn_dir)
    assert "img_00007.png" in msg and "is missing" in msg and "row 8" in msg


def test_unreadable_image(gsn_dir: Path) -> None:
    (gsn_dir / "img_00007.png").unlink()
    (gsn_dir / "img_00007.png").mkdir()
    msg = load_error(gsn_dir)
    assert "img_00007.png" in msg and "cannot be read" in msg


def test_labels_not_utf8(gsn_dir: Path) -> None:
    (gsn_dir / "labels.csv").write_bytes(b"name,squares,circles,up,right,down,left\n\xff\xfe,1\n")
    assert "labels.csv: is not UTF-8" in load_error(gsn_dir)


def test_missing_image_in_zip(gsn_dir: Path, tmp_path: Path) -> None:
    (gsn_dir / "img_00007.png").unlink()
    msg = load_error(zip_dir(gsn_dir, tmp_path / "g.zip"))
    assert "g.zip:data/img_00007.png" in msg and "row 8" in msg


def test_huge_image_refused_before_decoding(gsn_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real 4000x3000 PNG compresses to a few kB; it must be rejected from its header alone.
    _write_image(gsn_dir, "img_00007.png", png_bytes(Image.new("L", (4000, 3000))))

    real_open = Image.open

    def checked_open(*a, **k):
        im = real_open(*a, **k)
        assert im.size == (28, 28), "a huge image got as far as PIL"
        return im

    monkeypatch.setattr(Image, "open", checked_open)
    msg = load_error(gsn_dir, cache=False)
    assert "img_00007.png" in msg and "4000x3000" in msg and "limit" in msg


def test_non_binary_pixels_are_a_warning(gsn_dir: Path) -> None:
    gray = draw(synthetic_counts(40)[9])
    gray[0, 0] = 128
    rgba(gray).save(gsn_dir / "img_00009.png")
    d = D.load_gsn(str(gsn_dir), progress=False)
    assert d.images[9, 0, 0] == 128, "values are kept"
    assert len(d.warnings) == 1 and "1 of 40 images" in d.warnings[0] and "img_00009.png" in d.warnings[0]
    assert d.warnings == D.load_gsn(str(gsn_dir), progress=False).warnings, "the cache keeps the warning"
    assert "img_00009.png" in D.format_summary(D.summary(d))


def test_zip_without_labels(gsn_dir: Path, tmp_path: Path) -> None:
    (gsn_dir / "labels.csv").unlink()
    msg = load_error(zip_dir(gsn_dir, tmp_path / "nolabels.zip"))
    assert "nolabels.zip" in msg and "no labels.csv" in msg


@pytest.mark.parametrize("entry,attr,reason", [
    ("/etc/evil.png", 0, "absolute path"),
    ("data/../../evil.png", 0, "'..'"),
    ("data/link.png", 0o120777 << 16, "symbolic link"),
])
def test_unsafe_zip_entries(gsn_zip: Path, entry: str, attr: int, reason: str) -> None:
    with zipfile.ZipFile(gsn_zip, "a") as zf:
        info = zipfile.ZipInfo(entry)
        info.external_attr = attr
        zf.writestr(info, b"img_00000.png")
    msg = load_error(gsn_zip)
    assert f"gsn.zip:{entry}" in msg and "unsafe zip entry" in msg and reason in msg


@pytest.mark.parametrize("damage", ["encrypted", "bad crc"])
def test_unreadable_zip_member(gsn_dir: Path, tmp_path: Path, damage: str) -> None:
    z = zip_dir(gsn_dir, tmp_path / "m.zip")
    raw = bytearray(z.read_bytes())
    if damage == "encrypted":  # set the "encrypted" flag in the central directory: zipfile wants a password
        central = raw.rindex(b"data/img_00003.png") - 46
        raw[central + 8] |= 0x1
    else:  # flip a byte of the compressed data
        raw[raw.index(b"data/img_00003.png") + 40] ^= 0xFF
    z.write_bytes(bytes(raw))
    msg = load_error(z)
    assert "m.zip:data/img_00003.png" in msg and "cannot be read from the zip" in msg


def test_not_a_zip(tmp_path: Path) -> None:
    fake = tmp_path / "data.zip"
    fake.write_text("<html>not a zip</html>")
    msg = load_error(fake)
    assert "data.zip" in msg and "not a zip" in msg


def test_path_does_not_exist(tmp_path: Path) -> None:
    msg = load_error(tmp_path / "nowhere")
    assert "nowhere" in msg and "does not exist" in msg and "SHAPECOUNT_DATA" in msg


def test_unreachable_url(isolated_cache: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/data_gsn.zip"
    msg = load_error(url, timeout=2, retries=1, backoff=0)
    assert url in msg and "SHAPECOUNT_DATA" in msg and "2 attempts" in msg
    assert files_in(isolated_cache) == []


# ---- read_image (predict) ----

@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "1", "P"])
def test_read_image_modes(tmp_path: Path, mode: str) -> None:
    gray = draw(synthetic_counts(1)[0])
    path = tmp_path / f"x_{mode}.png"
    rgba(gray).convert(mode).save(path)
    assert np.array_equal(D.read_image(path), gray)


def test_read_image_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        D.read_image(tmp_path / "none.png")
    with pytest.raises(DataError, match="is not a file"):
        D.read_image(tmp_path)
    (tmp_path / "t.png").write_text("hello")
    with pytest.raises(DataError, match="t.png: is not a PNG"):
        D.read_image(tmp_path / "t.png")


# ---- cache ----

def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = V.decode_png

    def counting(raw: bytes, where: str) -> np.ndarray:
        calls.append(1)
        return real(raw, where)

    monkeypatch.setattr(V, "decode_png", counting)
    return calls


@pytest.mark.parametrize("kind", ["dir", "zip"])
def test_second_load_from_cache(gsn_dir: Path, gsn_zip: Path, monkeypatch: pytest.MonkeyPatch,
                                kind: str) -> None:
    src = str(gsn_dir if kind == "dir" else gsn_zip)
    first = D.load_gsn(src, progress=False)

    def fail(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(V, "decode_png", fail)
    second = D.load_gsn(src, progress=False)
    assert torch.equal(first.images, second.images) and torch.equal(first.classes, second.classes)
    assert first.names == second.names and first.sha256 == second.sha256
    assert first.labels_sha256 == second.labels_sha256


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong arrays"])
def test_damaged_cache_is_rebuilt(gsn_zip: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                  damage: str) -> None:
    ref = D.load_gsn(str(gsn_zip), progress=False)
    (cache_file,) = isolated_cache.glob("*.npz")
    raw = cache_file.read_bytes()
    if damage == "truncate":
        cache_file.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        cache_file.write_bytes(b"\0" * len(raw))
    else:
        np.savez(cache_file, images=np.zeros(3))
    calls = _count_decodes(monkeypatch)
    again = D.load_gsn(str(gsn_zip), progress=False)
    assert len(calls) == 40 and torch.equal(again.images, ref.images)
    calls.clear()
    D.load_gsn(str(gsn_zip), progress=False)
    assert calls == [], "the rebuilt cache is used"
    assert [p.name for p in isolated_cache.iterdir()] == [cache_file.name], "no temp files left"


def test_cache_false_writes_nothing(gsn_zip: Path, isolated_cache: Path) -> None:
    D.load_gsn(str(gsn_zip), progress=False, cache=False)
    assert files_in(isolated_cache) == []


def test_directory_cache_sees_changed_image(gsn_dir: Path) -> None:
    D.load_gsn(str(gsn_dir), progress=False)
    gray = draw(synthetic_counts(40)[4])
    gray[:3, :3] = 255
    rgba(gray).save(gsn_dir / "img_00004.png")
    assert np.array_equal(D.load_gsn(str(gsn_dir), progress=False).images[4].numpy(), gray)


# ---- download (a local http.server; nothing leaves the machine) ----

@pytest.fixture
def server(gsn_zip: Path) -> Iterator[tuple[str, dict[str, tuple[str, bytes]], list[str]]]:
    routes: dict[str, tuple[str, bytes]] = {"/gsn.zip": ("ok", gsn_zip.read_bytes()),
                                            "/page.zip": ("ok", b"<!DOCTYPE html><html>Sign in</html>"),
                                            "/drop.zip": ("drop", gsn_zip.read_bytes())}
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            if self.path not in routes:
                self.send_error(404)
                return
            kind, body = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # "drop": promise the whole file, send half, hang up.
            self.wfile.write(body[: len(body) // 2] if kind == "drop" else body)
            self.close_connection = True

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", routes, hits
    httpd.shutdown()
    httpd.server_close()


def test_download_once(server, gsn_zip: Path, isolated_cache: Path) -> None:
    base, _, hits = server
    d = D.load_gsn(f"{base}/gsn.zip", progress=False, timeout=5)
    ref = D.load_gsn(str(gsn_zip), progress=False)
    assert torch.equal(d.images, ref.images) and d.source == f"{base}/gsn.zip" and d.sha256 == ref.sha256
    D.load_gsn(f"{base}/gsn.zip", progress=False, cache=False)
    assert hits == ["/gsn.zip"], "downloaded once"
    path = D.download_path(f"{base}/gsn.zip")
    assert path.read_bytes() == gsn_zip.read_bytes()
    assert path.with_name(path.name + ".sha256").read_text().split()[0] == ref.sha256
    assert not [p for p in files_in(isolated_cache) if p.name.startswith(".")], "no temp files"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask, "readable like any file the user makes"


def test_damaged_download_is_fetched_again(server) -> None:
    base, _, hits = server
    D.load_gsn(f"{base}/gsn.zip", progress=False, cache=False)
    D.download_path(f"{base}/gsn.zip").write_bytes(b"PK damaged")
    D.load_gsn(f"{base}/gsn.zip", progress=False, cache=False)
    assert hits == ["/gsn.zip", "/gsn.zip"]


@pytest.mark.parametrize("path,expected,attempts", [
    ("/missing.zip", ["HTTP 404"], 1),
    ("/page.zip", ["did not return a zip", "<!DOCTYPE"], 1),
    ("/drop.zip", ["connection closed after", "2 attempts"], 2),
])
def test_download_failures(server, isolated_cache: Path, path: str, expected: list[str],
                           attempts: int) -> None:
    base, _, hits = server
    msg = load_error(f"{base}{path}", timeout=5, retries=1, backoff=0)
    for part in [f"{base}{path}", "SHAPECOUNT_DATA", *expected]:
        assert part in msg
    assert len(hits) == attempts
    assert files_in(isolated_cache) == [], "nothing half-written"


def test_download_retries_then_succeeds(server, monkeypatch: pytest.MonkeyPatch) -> None:
    base, _, hits = server
    real = DL._fetch
    attempts: list[int] = []

    def flaky(*a, **k):
        attempts.append(1)
        if len(attempts) == 1:
            raise DL._IncompleteDownload("simulated drop")
        return real(*a, **k)

    monkeypatch.setattr(DL, "_fetch", flaky)
    assert len(D.load_gsn(f"{base}/gsn.zip", progress=False, retries=2, backoff=0)) == 40
    assert len(attempts) == 2 and hits == ["/gsn.zip"]


# ---- summary ----

def test_summary(gsn_dir: Path) -> None:
    s = D.summary(D.load_gsn(str(gsn_dir), progress=False))
    assert (s["images"], s["train"], s["val"]) == (40, 36, 4)
    assert s["classes_present"] == len({L.counts_to_class(c) for c in synthetic_counts(40).tolist()})
    assert (s["count_min"], s["count_max"]) == (2, 8) and s["classes_total"] == 135
    assert sum(r["train"] for r in s["pair_balance"]) == 36 and sum(r["val"] for r in s["pair_balance"]) == 4
    text = D.format_summary(s)
    assert "of 135 present" in text and "range 2..8" in text and "squares + circles" in text


def test_conftest_writer_makes_real_like_files(tmp_path: Path) -> None:
    folder = write_gsn_dir(tmp_path / "five", n=5)
    im = Image.open(folder / "img_00000.png")
    assert im.mode == "RGBA" and im.size == (28, 28)
    assert len(D.load_gsn(str(folder), progress=False)) == 5


# ---- the real data ----

@pytest.mark.realdata
def test_real_data(real_gsn) -> None:
    d = real_gsn
    assert len(d) == 10_000 and d.names[0] == "img_00000.png" and d.names[-1] == "img_09999.png"
    train, val = D.split(d)
    assert (len(train), len(val)) == (9000, 1000)
    s = D.summary(d)
    assert s["classes_present"] == 105 and (s["count_min"], s["count_max"]) == (2, 8)
    assert d.labels_sha256 == REAL_LABELS_SHA
    assert set(d.images.unique().tolist()) == {0, 255} and d.warnings == []


@pytest.mark.realdata
def test_real_data_cached_load_is_fast(real_data: Path) -> None:
    D.load_gsn(str(real_data), progress=False)
    start = time.perf_counter()
    d = D.load_gsn(str(real_data), progress=False)
    assert time.perf_counter() - start < 1.0 and len(d) == 10_000


def test_a_full_disk_only_costs_the_cache(gsn_zip: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    # The decoded-array cache and the audit cache are optional: no room for them is a warning, not a failure.
    import errno

    from shapecount import fileio
    from shapecount.exact import audit

    def full(path, *_a, **_k):
        raise fileio.DiskFullError(path, OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr("shapecount.data.cache._save_cache", full)
    d = D.load_gsn(str(gsn_zip), progress=False)
    assert len(d) == 40 and any("could not write the cache" in w for w in d.warnings)
    monkeypatch.setattr(fileio, "write_json", full)
    a = audit.run_audit(d.images[:2].numpy(), d.classes[:2].numpy(), d.names[:2], cache=tmp_path, progress=False,
                        node_limit=200)
    assert len(a.rows) == 2 and not list(tmp_path.glob("audit-*"))
