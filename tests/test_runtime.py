import os
import subprocess
import sys

import pytest
import torch

from shapecount import runtime


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_allocator_tuning_applies_once_and_reports_it():
    assert runtime.tune_allocator() is True
    assert runtime.tune_allocator() is True and runtime.allocator_tuned() is True
    # large tensors still allocate, free and reuse correctly with mmap off
    for _ in range(3):
        t = torch.ones(64 * 1024 * 1024 // 4)
        assert float(t.sum()) == t.numel()


def test_configure_cpu_sets_threads_and_restores():
    before = torch.get_num_threads()
    try:
        info = runtime.configure_cpu(threads=1)
        assert info["threads"] == 1 == torch.get_num_threads()
        assert isinstance(info["allocator_tuned"], bool)
    finally:
        torch.set_num_threads(before)


_FLUSH_CHECK = ("import torch; from shapecount import runtime; {before}"
                "print(runtime.flush_denormals(), runtime.every_thread_flushes(), "
                "float(torch.tensor(1e-30) * 1e-3) > 0)")


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="the CPU has no flush-to-zero mode")
@pytest.mark.parametrize("before,expected", [("import shapecount.cli; ", "True True True"),
                                             ("torch.ones(1 << 22).mul_(2); ", "False False True")])
def test_denormals_are_flushed_on_every_thread_only_when_set_first(before, expected):
    """The command line flushes denormals before any parallel operation: every thread flushes, normal floats
    are untouched. Set after the first parallel operation, it reaches only the calling thread, and says so."""
    code = _FLUSH_CHECK.format(before=before)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}  # a parallel loop even on a one-core runner
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split()[-3:] == expected.split()


def test_startup_is_claimed_once_per_process():
    runtime.claim_startup()
    assert runtime.claim_startup() is False


@pytest.mark.parametrize("flags,native", [({"avx512f", "avx512_bf16"}, True), ({"amx_tile", "amx_bf16"}, True),
                                          ({"avx512f", "avx512_vnni"}, False), ({"asimd", "bf16"}, True)])
def test_bf16_only_where_the_cpu_has_it(monkeypatch, flags, native):
    monkeypatch.setattr(runtime, "_native_cpu_bf16", None)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    cpu = torch.device("cpu")
    assert runtime.native_bf16(cpu) is native
    assert runtime.use_bf16(True, cpu) is native and runtime.use_bf16(False, cpu) is False


def test_bf16_measured_where_flags_are_unknown(monkeypatch):
    monkeypatch.setattr(runtime, "_native_cpu_bf16", None)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: None)
    monkeypatch.setattr(runtime, "_bf16_gemm_faster", lambda: False)
    assert runtime.use_bf16(True, torch.device("cpu")) is False


@pytest.mark.parametrize("busy, threads, want", [(0.0, 2, 2), (0.4, 2, 2), (0.6, 2, 1), (1.0, 2, 1), (3.0, 2, 1),
                                                 (1.0, 8, 7), (0.0, 1, 1)])
def test_one_thread_fewer_per_busy_core(busy, threads, want):
    assert runtime.threads_beside(busy, threads) == want


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat (Linux)")
def test_busy_elsewhere_sees_another_busy_process_and_not_itself():
    x = torch.randn(256, 256)
    t = __import__("time").monotonic()
    while __import__("time").monotonic() - t < 0.2:  # this process busy: not counted as elsewhere
        x @ x
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        __import__("time").sleep(0.2)
        assert runtime.busy_elsewhere(0.5) > 0.5
    finally:
        hog.kill()
        hog.wait()
