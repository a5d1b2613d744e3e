"""Train several experiments at once, one process each, on the cores of one CPU.

On a small CPU, processes of one thread each get more training done than one process of all threads: threads
that wait on each other at every operator lose time at each wait, single-threaded processes never wait.
On a 2-core AMD EPYC (Zen 4), three one-thread runs at once trained 1,090-1,200 images per second in all,
against 770-900 for one two-thread run (docs/performance.md, "Experiments at once"). `reproduce` uses this for
its three experiments.

Each run is a fresh interpreter (spawn: no fork of a process that already holds torch's thread pools) that
trains with `run_experiment`, writes its own run folder as alone, and sends back its metrics or its error.
Errors cross the process boundary as data (kind, text) and are raised again here as the same kind, so the
command line reports them as it reports a single run's: a user error in one line, Ctrl-C with --resume.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import traceback
from multiprocessing.connection import wait
from pathlib import Path

from shapecount.config import Config
from shapecount.data import GSNData
from shapecount.errors import TrainingError, UserError, raise_terminated

# How long stopped runs get to finish writing their last complete epoch before they are killed.
STOP_GRACE_S = 60.0


def _child(conn, cfg: Config, data: GSNData, out: Path, resume: bool) -> None:
    """One run in its own process: train, then send ("ok", metrics) or the error as (kind, ...)."""
    from shapecount import experiments, runtime

    runtime.flush_denormals()  # a fresh process: set as the command line sets it
    signal.signal(signal.SIGTERM, raise_terminated)  # stop like Ctrl-C, keeping the last complete epoch
    try:
        conn.send(("ok", experiments.run_experiment(cfg, data, out, progress=False, force=not resume,
                                                     resume=resume)))
    except UserError as e:
        conn.send(("user", e.where, e.what, e.fix))
    except TrainingError as e:
        conn.send(("training", str(e)))
    except KeyboardInterrupt:
        conn.send(("interrupted",))
    except OSError as e:  # the parent reports it as it would in its own process (a path: one line)
        conn.send(("os", e.errno, e.strerror, e.filename, traceback.format_exc()))
    except Exception:  # noqa: BLE001 - a bug: its traceback reaches the user as from one process
        conn.send(("crash", traceback.format_exc()))
    finally:
        # The answer is sent: a SIGTERM from here on (the parent tidying up) ends the process plainly, not as a
        # KeyboardInterrupt inside the interpreter's exit handlers.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        conn.close()


def _raise(name: str, reply: tuple) -> None:
    kind = reply[0]
    if kind == "user":
        raise UserError(*reply[1:])
    if kind == "training":
        raise TrainingError(reply[1])
    if kind == "interrupted":
        raise KeyboardInterrupt
    if kind == "os":
        err = OSError(reply[1], reply[2]) if reply[3] is None else OSError(reply[1], reply[2], reply[3])
        raise err from RuntimeError(f"the {name} run failed:\n{reply[4]}")
    raise RuntimeError(f"the {name} run failed:\n{reply[1] if len(reply) > 1 else reply}")


def train_at_once(runs: dict[str, tuple[Config, Path]], data: GSNData, resume: bool = False) -> dict[str, dict]:
    """Train every (config, run folder) of `runs` at the same time, one process each; return their metrics by
    name. The first run that fails stops the others (each keeps its last complete epoch for --resume) and its
    error is raised here."""
    ctx = mp.get_context("spawn")
    procs, conns = {}, {}
    try:
        for name, (cfg, out) in runs.items():
            parent, child = ctx.Pipe(duplex=False)
            conns[name] = parent
            try:
                p = ctx.Process(target=_child, args=(child, cfg, data, Path(out), resume),
                                name=f"shapecount-{name}")
                p.start()
                procs[name] = p
            finally:
                child.close()  # the parent keeps only its end: EOF tells it the run is gone
        results: dict[str, dict] = {}
        waiting = {conn: name for name, conn in conns.items()}
        while waiting:
            for conn in wait(list(waiting)):
                name = waiting.pop(conn)
                try:
                    reply = conn.recv()
                except EOFError:  # killed before it could answer (out of memory, SIGKILL)
                    procs[name].join()
                    raise TrainingError(f"the {name} run ended without a result (exit code "
                                        f"{procs[name].exitcode}, e.g. killed for lack of memory); run the same "
                                        "command with --resume to continue from its last complete epoch") from None
                if reply[0] != "ok":
                    _raise(name, reply)
                results[name] = reply[1]
        for p in procs.values():  # every run has answered: let each exit on its own before _stop tidies up
            p.join(STOP_GRACE_S)
        return {name: results[name] for name in runs}  # in the order asked
    finally:
        _stop(procs.values())
        for conn in conns.values():
            conn.close()


def _stop(procs) -> None:
    """Ask runs still going to stop (SIGTERM: they keep their last complete epoch), then make sure they are gone."""
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.terminate()
    for p in alive:
        p.join(STOP_GRACE_S)
        if p.is_alive():
            p.kill()
            p.join()
    for p in procs:
        p.close()
