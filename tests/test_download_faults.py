"""Network faults while downloading a URL source, against a local HTTP server (127.0.0.1, port 0; nothing
leaves the machine).

For every fault: the outcome through the CLI (exit 0, or exit 2 with one line naming the URL and
SHAPECOUNT_DATA), the number of attempts the server saw, nothing partial or temporary left in the cache
dir, and a later download of the same URL still working. Timeouts, retries and backoff are small
(load_gsn's parameters), so the file runs in seconds. tests/test_data.py covers the basic 404 / HTML / drop
messages; this file adds attempt counts, stalls, 5xx/429 retries, backoff timing, recovery and the CLI.
"""

from __future__ import annotations

import errno
import functools
import io
import itertools
import os
import struct
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import write_gsn_dir, zip_dir
from shapecount import data as D
from shapecount.cli import main
from shapecount.data import downloader as DL
from shapecount.errors import DataError

TIMEOUT = 5.0  # the client's socket timeout: generous, so a busy machine does not cause retries
STALL_TIMEOUT = 0.5  # the timeout where the server stalls on purpose
RETRIES = 2  # so 3 attempts at most
BACKOFF = 0.01
DEADLINE = 1.0  # one attempt's overall deadline here; the trickling handler would take far longer
STALL_S = 10.0  # how long a stalling handler waits: far past STALL_TIMEOUT
N_IMAGES = 40


@pytest.fixture(scope="module")
def zip_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("src")
    return zip_dir(write_gsn_dir(root / "gsn", n=N_IMAGES), root / "gsn.zip").read_bytes()


class FaultServer:
    """A threaded HTTP server whose behaviour is chosen per path: `routes[path] = kind`.

    kinds: ok, drop (Content-Length promised, a third sent, connection closed), nolength-drop (no
    Content-Length, half sent), chunked-drop (one chunk, then closed), stall-body (headers, then silence),
    stall-headers (no response at all), garbage (random bytes), html, multidisk (a zip64 end record of a
    multi-disk archive), redirect (302 to /gsn.zip), and
    status:N. `fail_first[path] = (n, kind)` serves `kind` for the first n requests of path, then its route.
    """

    def __init__(self, zip_bytes: bytes) -> None:
        self.zip = zip_bytes
        self.routes: dict[str, str] = {}
        self.fail_first: dict[str, tuple[int, str]] = {}
        self.hits: list[tuple[str, float]] = []
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # for chunked responses

            def do_GET(self) -> None:
                server.hits.append((self.path, time.monotonic()))
                kind = server.routes.get(self.path, "status:404")
                n, first = server.fail_first.get(self.path, (0, ""))
                if sum(p == self.path for p, _ in server.hits) <= n:
                    kind = first
                server.respond(self, kind)

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                pass  # the client hanging up on a stalled or dropping handler is expected

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def respond(self, h: BaseHTTPRequestHandler, kind: str) -> None:
        body = self.zip
        if kind.startswith("status:"):
            h.send_error(int(kind.split(":")[1]))
            return
        if kind == "stall-headers":
            self.stop.wait(STALL_S)
            h.close_connection = True
            return
        if kind == "redirect":
            h.send_response(302)
            h.send_header("Location", "/gsn.zip")
            h.send_header("Content-Length", "0")
            h.send_header("Connection", "close")
            h.end_headers()
            return
        if kind == "garbage":
            body = bytes((i * 7919 + 13) % 251 for i in range(5000))
        elif kind == "html":
            body = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
        elif kind == "multidisk":  # zipfile.is_zipfile raises on this one instead of saying no
            body = struct.pack("<4sIQI", b"PK\x06\x07", 1, 0, 2) + b"PK\x05\x06" + bytes(18)
        h.send_response(200)
        h.send_header("Connection", "close")
        if kind == "chunked-drop":
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            part = body[:1000]
            h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            h.wfile.flush()
        elif kind == "nolength-drop":
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
        else:
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            if kind == "stall-body":
                h.wfile.write(body[:100])
                h.wfile.flush()
                self.stop.wait(STALL_S)
            elif kind == "trickle":  # a byte at a time, each well within the socket timeout
                for i in range(len(body)):
                    if self.stop.wait(0.02):
                        break
                    h.wfile.write(body[i:i + 1])
                    h.wfile.flush()
            elif kind == "drop":
                h.wfile.write(body[: len(body) // 3])
            else:  # ok, garbage, html
                h.wfile.write(body)
        h.close_connection = True

    def attempts(self, path: str) -> int:
        return sum(p == path for p, _ in self.hits)

    def times(self, path: str) -> list[float]:
        return [t for p, t in self.hits if p == path]


@pytest.fixture
def fault_server(zip_bytes: bytes) -> Iterator[FaultServer]:
    s = FaultServer(zip_bytes)
    s.routes["/gsn.zip"] = "ok"
    s.thread.start()
    yield s
    s.stop.set()
    s.httpd.shutdown()
    s.httpd.server_close()


def fast_cli(monkeypatch: pytest.MonkeyPatch, timeout: float) -> None:
    """The CLI's load_gsn with this file's small timeout, retries and backoff."""
    monkeypatch.setattr(D, "load_gsn", functools.partial(D.load_gsn, timeout=timeout, retries=RETRIES,
                                                         backoff=BACKOFF, deadline=DEADLINE))


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def temp_files(folder: Path) -> list[Path]:
    return [p for p in files_in(folder) if p.name.startswith(".") or p.suffix in (".part", ".tmp")]


def data_check(url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["check", "--data", url])
    out, err = capsys.readouterr()
    return rc, out, err


def error_line(err: str) -> str:
    """The one stderr line (after the progress bar's `\\r` frames, which a terminal overwrites)."""
    assert err.count("\n") == 1 and err.endswith("\n"), repr(err)
    line = err[:-1].rsplit("\r", 1)[-1]
    assert line.startswith("error: ") and "Traceback" not in err
    return line


def assert_downloaded(url: str, cache: Path, zip_bytes: bytes) -> None:
    path = D.download_path(url)
    assert path.read_bytes() == zip_bytes
    assert DL._sidecar(path).is_file()
    assert temp_files(cache) == [], "no temp files"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, path.name + ".sha256"])


# (path, route, expected: "ok" or parts of the error line, attempts)
FAULTS = [
    ("/gsn.zip", "ok", "ok", 1),
    ("/moved.zip", "redirect", "ok", 1),
    ("/drop.zip", "drop", ["connection closed after", f"after {RETRIES + 1} attempts"], RETRIES + 1),
    ("/chunked.zip", "chunked-drop", ["IncompleteRead", f"after {RETRIES + 1} attempts"], RETRIES + 1),
    ("/stall-body.zip", "stall-body", ["timed out", f"after {RETRIES + 1} attempts"], RETRIES + 1),
    ("/stall-headers.zip", "stall-headers", ["timed out", f"after {RETRIES + 1} attempts"], RETRIES + 1),
    ("/trickle.zip", "trickle", ["too slow", f"after {RETRIES + 1} attempts"], RETRIES + 1),
    ("/garbage.zip", "garbage", ["did not return a zip file"], 1),
    ("/page.html", "html", ["did not return a zip file", "<!DOCTYPE html>"], 1),
    ("/multidisk.zip", "multidisk", ["did not return a zip file", "PK"], 1),
    ("/cut.zip", "nolength-drop", ["did not return a zip file", "PK"], 1),
    ("/missing.zip", "status:404", ["HTTP 404"], 1),
    ("/forbidden.zip", "status:403", ["HTTP 403"], 1),
    ("/error.zip", "status:500", ["HTTP 500", f"after {RETRIES + 1} attempts"], RETRIES + 1),
    ("/unavailable.zip", "status:503", ["HTTP 503", f"after {RETRIES + 1} attempts"], RETRIES + 1),
    ("/busy.zip", "status:429", ["HTTP 429", f"after {RETRIES + 1} attempts"], RETRIES + 1),
]


@pytest.mark.parametrize("path,route,expected,attempts", FAULTS, ids=[f[1] for f in FAULTS])
def test_download_fault(fault_server: FaultServer, isolated_cache: Path, zip_bytes: bytes,
                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], path: str,
                        route: str, expected, attempts: int) -> None:
    url = fault_server.base + path
    fault_server.routes[path] = route
    timeout = STALL_TIMEOUT if route.startswith("stall") else TIMEOUT
    fast_cli(monkeypatch, timeout)
    t0 = time.monotonic()
    rc, out, err = data_check(url, capsys)
    elapsed = time.monotonic() - t0
    assert fault_server.attempts(path) == attempts
    # a stall costs one timeout per attempt, never more: the run does not hang
    assert elapsed < (attempts * STALL_TIMEOUT + 3.0 if route.startswith("stall") else 10.0)
    if expected == "ok":
        assert rc == 0 and f"images:   {N_IMAGES} " in out and f"source:   {url}" in out, err
        assert_downloaded(url, isolated_cache, zip_bytes)
        return
    assert rc == 2 and out == ""
    line = error_line(err)
    for part in [f"error: {url}: ", "SHAPECOUNT_DATA", *expected]:
        assert part in line, (part, line)
    assert files_in(isolated_cache) == [], "nothing partial or temporary left"
    # the same URL, now served properly, downloads
    fault_server.routes[path] = "ok"
    rc, out, err = data_check(url, capsys)
    assert rc == 0 and f"images:   {N_IMAGES} " in out, err
    assert fault_server.attempts(path) == attempts + 1
    assert_downloaded(url, isolated_cache, zip_bytes)


@pytest.mark.parametrize("first", ["status:503", "status:500", "drop", "stall-body", "chunked-drop"])
def test_retries_then_succeed(fault_server: FaultServer, isolated_cache: Path, zip_bytes: bytes,
                              first: str) -> None:
    """The first RETRIES requests fail, the next one succeeds: the download succeeds, once."""
    fault_server.routes["/flaky.zip"] = "ok"
    fault_server.fail_first["/flaky.zip"] = (RETRIES, first)
    url = fault_server.base + "/flaky.zip"
    timeout = STALL_TIMEOUT if first.startswith("stall") else TIMEOUT
    d = D.load_gsn(url, progress=False, timeout=timeout, retries=RETRIES, backoff=BACKOFF)
    assert len(d) == N_IMAGES and d.source == url
    assert fault_server.attempts("/flaky.zip") == RETRIES + 1
    assert_downloaded(url, isolated_cache, zip_bytes)
    D.load_gsn(url, progress=False, cache=False)
    assert fault_server.attempts("/flaky.zip") == RETRIES + 1, "the cached download is reused"


def test_backoff_doubles(fault_server: FaultServer, isolated_cache: Path, zip_bytes: bytes) -> None:
    """Waits between attempts are backoff * 1, 2, 4: measured from the server's request times."""
    backoff, retries = 0.1, 3
    fault_server.routes["/slow-start.zip"] = "ok"
    fault_server.fail_first["/slow-start.zip"] = (retries, "status:503")
    url = fault_server.base + "/slow-start.zip"
    assert len(D.download(url, timeout=TIMEOUT, retries=retries, backoff=backoff, progress=False).read_bytes())
    times = fault_server.times("/slow-start.zip")
    assert len(times) == retries + 1
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for i, gap in enumerate(gaps):
        assert gap >= 0.9 * backoff * 2 ** i, gaps
    assert gaps[2] > gaps[0], gaps
    assert_downloaded(url, isolated_cache, zip_bytes)


def test_retries_exhausted_then_later_success(fault_server: FaultServer, isolated_cache: Path,
                                              zip_bytes: bytes) -> None:
    """More failures than retries: a DataError after RETRIES + 1 attempts; the next call succeeds."""
    fault_server.routes["/later.zip"] = "ok"
    fault_server.fail_first["/later.zip"] = (RETRIES + 1, "status:502")
    url = fault_server.base + "/later.zip"
    with pytest.raises(DataError, match=f"after {RETRIES + 1} attempts: HTTP 502") as info:
        D.load_gsn(url, progress=False, timeout=TIMEOUT, retries=RETRIES, backoff=BACKOFF)
    assert url in str(info.value) and "\n" not in str(info.value)
    assert files_in(isolated_cache) == []
    assert len(D.load_gsn(url, progress=False, timeout=TIMEOUT, retries=RETRIES, backoff=BACKOFF)) == N_IMAGES
    assert fault_server.attempts("/later.zip") == RETRIES + 2
    assert_downloaded(url, isolated_cache, zip_bytes)


def test_retries_zero_means_one_attempt(fault_server: FaultServer, isolated_cache: Path) -> None:
    fault_server.routes["/once.zip"] = "status:503"
    url = fault_server.base + "/once.zip"
    with pytest.raises(DataError, match="HTTP 503") as info:
        D.download(url, timeout=TIMEOUT, retries=0, backoff=BACKOFF, progress=False)
    assert "attempts" not in str(info.value)
    assert fault_server.attempts("/once.zip") == 1 and files_in(isolated_cache) == []


class _InterruptingBar(DL.tqdm):
    def update(self, n: float | None = 1) -> bool | None:
        raise KeyboardInterrupt


def test_ctrl_c_mid_download(fault_server: FaultServer, isolated_cache: Path, zip_bytes: bytes,
                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while the body streams: exit 130, no retry, the temp file deleted; the next run downloads."""
    url = fault_server.base + "/gsn.zip"
    with monkeypatch.context() as mp:
        mp.setattr(DL, "tqdm", _InterruptingBar)
        rc = main(["check", "--data", url])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert fault_server.attempts("/gsn.zip") == 1 and files_in(isolated_cache) == []
    assert main(["check", "--data", url]) == 0
    assert_downloaded(url, isolated_cache, zip_bytes)


@pytest.mark.parametrize("damage", ["truncated", "other zip", "sidecar missing", "sidecar garbage"])
def test_damaged_cached_download_is_replaced(fault_server: FaultServer, isolated_cache: Path,
                                             zip_bytes: bytes, damage: str) -> None:
    """A cached download that no longer matches its sha256 sidecar is fetched again (never trusted)."""
    url = fault_server.base + "/gsn.zip"
    path = D.download(url, timeout=TIMEOUT, progress=False)
    if damage == "truncated":
        path.write_bytes(zip_bytes[: len(zip_bytes) // 2])
    elif damage == "other zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("labels.csv", "name\n")
        path.write_bytes(buf.getvalue())
    elif damage == "sidecar missing":
        DL._sidecar(path).unlink()
    else:
        DL._sidecar(path).write_bytes(b"\xff\xfe not a hash\n")
    assert D.download(url, timeout=TIMEOUT, progress=False) == path
    assert fault_server.attempts("/gsn.zip") == 2
    assert_downloaded(url, isolated_cache, zip_bytes)


class _FullDisk:
    """A file whose writes fail like a full disk."""

    def __init__(self, f) -> None:
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where,attempts", [("cache is a file", 0), ("downloads is a file", 0),
                                            ("mkstemp fails", 0), ("disk full mid-download", 1),
                                            ("disk full writing the sidecar", 1)])
def test_unusable_cache_dir(fault_server: FaultServer, isolated_cache: Path, zip_bytes: bytes,
                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], where: str,
                            attempts: int) -> None:
    """A cache dir the download cannot be written to: exit 2 with one line naming the folder and
    SHAPECOUNT_CACHE, no retries (not a network error), nothing left behind; once there is room, it works."""
    url = fault_server.base + "/gsn.zip"
    with monkeypatch.context() as mp:
        if where == "cache is a file":
            bad = isolated_cache / "not-a-dir"
            bad.write_text("x")
            mp.setenv("SHAPECOUNT_CACHE", str(bad))
        elif where == "downloads is a file":
            (isolated_cache / "downloads").write_text("x")
        elif where == "mkstemp fails":
            def no_space(*a, **k):
                raise OSError(errno.ENOSPC, "No space left on device")

            mp.setattr(DL.tempfile, "mkstemp", no_space)
        elif where == "disk full mid-download":
            real_fdopen = os.fdopen
            mp.setattr(DL.os, "fdopen", lambda *a, **k: _FullDisk(real_fdopen(*a, **k)))
        else:  # the real fileio.atomic_write runs; its temp file must go too
            def full(self: Path, *a, **k) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

            mp.setattr(Path, "write_text", full)
        rc = main(["check", "--data", url])
        line = error_line(capsys.readouterr().err)
    assert rc == 2 and "cannot hold the download" in line and "SHAPECOUNT_CACHE" in line, line
    assert fault_server.attempts("/gsn.zip") == attempts
    if where.startswith(("cache is", "downloads is")):
        return
    assert files_in(isolated_cache) == [], "nothing partial or temporary left"
    assert main(["check", "--data", url]) == 0
    assert_downloaded(url, isolated_cache, zip_bytes)
