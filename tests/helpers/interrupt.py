"""Stop a training run the way Ctrl-C or a crash does: KeyboardInterrupt when a given epoch starts."""

from collections.abc import Callable

import pytest

from shapecount import engine, experiments


def interrupt_at_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int,
                       check: Callable[[tuple, dict], None] | None = None) -> None:
    """engine.train_one_epoch raises KeyboardInterrupt at the start of `epoch` (1-based), after which the real
    one is back in place; `check(args, kwargs)` sees every call that runs."""
    real = engine.train_one_epoch
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == epoch:
            monkeypatch.setattr(engine, "train_one_epoch", real)
            raise KeyboardInterrupt
        if check is not None:
            check(args, kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", flaky)


def run_interrupted(cfg, data, out, monkeypatch: pytest.MonkeyPatch, epoch: int, **check) -> None:
    """run_experiment into `out`, stopped at the start of `epoch`: last.pt holds epoch - 1."""
    interrupt_at_epoch(monkeypatch, epoch, **check)
    with pytest.raises(KeyboardInterrupt):
        experiments.run_experiment(cfg, data, out, progress=False)
