"""Command line: `shapecount <command> ...`. Every error is one line `error: ...` without a traceback: exit code 2
for bad input (options, data, files), 1 for a run that fails (diverged, a lost process, a CUDA failure)."""

from __future__ import annotations

import errno
import os
import shlex
import signal
import sys

from shapecount import fileio
from shapecount.cli_args import EXIT_USAGE, QUICK_AUDIT_IMAGES, build_parser, config_overrides
from shapecount.config import ConfigError, dumps, make_config
from shapecount.errors import Terminated, TrainingError, UserError, raise_terminated
from shapecount.labels import LabelError


def _progress(args) -> bool:
    """Progress bars unless --no-progress, and only when stderr is a terminal: in a log file or a pipe a bar
    is a stream of carriage returns, while the per-epoch lines say the same once each."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def cmd_check(args) -> int:
    from shapecount import data

    ds = data.load_gsn(args.data, progress=_progress(args))
    print(data.format_summary(data.summary(ds)))  # warnings are listed in the summary
    return 0


def cmd_eda(args) -> int:
    from shapecount import data, eda

    res = eda.run_eda(data.load_gsn(args.data, progress=_progress(args)), args.out)
    print(f"EDA written to {args.out}")
    for k, v in res.items():
        if not isinstance(v, (list, dict)):
            print(f"  {k}: {v}")
    return 0


def cmd_labels(args) -> int:
    from shapecount import labels

    print("| class | pair | name | " + " | ".join(labels.TYPES) + " |")
    print("|---|---|---|" + "---|" * labels.NUM_TYPES)
    for k in range(labels.NUM_CLASSES):
        c = labels.class_to_counts(k)
        print(f"| {k} | {labels.class_to_pair(k)} | {labels.class_name(k)} | " + " | ".join(map(str, c)) + " |")
    return 0


def cmd_cache(args) -> int:
    from shapecount.data import housekeeping

    if args.cache_command == "list":
        print(housekeeping.list_cache())
    else:
        n, size, foreign = housekeeping.clean_cache(everything=args.all)
        kept = f"; kept {foreign} files shapecount did not write" if foreign else ""
        print(f"removed {n} files ({size / 1e6:.1f} MB) from {housekeeping.cache_dir()}{kept}")
    return 0


def cmd_config(args) -> int:
    print(dumps(make_config(args.experiment, args.recipe, config_overrides(args))))
    return 0


def _threads_beside_others(args, device_name: str) -> dict:
    """Unless the thread count is chosen (--threads, or OMP_NUM_THREADS in the environment) or the run resumes
    (it keeps the count it was started with): if other processes keep cores busy, train with fewer threads, and
    say so. The count goes into config.json."""
    from shapecount import engine, runtime

    if (args.threads is not None or os.environ.get("OMP_NUM_THREADS") or args.resume
            or engine.pick_device(device_name).type != "cpu"):
        return {}
    import torch

    threads = torch.get_num_threads()
    busy = runtime.busy_elsewhere() if threads > 1 else None
    n = threads if busy is None else runtime.threads_beside(busy, threads)
    if n == threads:
        return {}
    print(f"note: other processes keep {busy:.1f} of {threads} cores busy: training with {n} thread"
          f"{'s' if n > 1 else ''}, which keeps more of the speed than {threads} threads that stall beside them "
          f"(--threads N to choose)", file=sys.stderr)
    return {"threads": n}


def cmd_train(args) -> int:
    from shapecount import data, distributed, engine, experiments

    overrides = config_overrides(args)
    cfg = make_config(args.experiment, args.recipe, overrides)
    if not distributed.launched():  # under torchrun each rank's threads are the launcher's choice
        more = _threads_beside_others(args, cfg.device)
        cfg = make_config(args.experiment, args.recipe, {**overrides, **more}) if more else cfg
    # Under torchrun: join the process group; rank 0 logs and writes, every rank trains its share.
    world = distributed.init(engine.pick_device(cfg.device), cfg.batch_size)
    try:
        progress = world.main and _progress(args)
        ds = data.load_gsn(args.data, progress=progress)
        if world.parallel and world.main:
            print(f"[{cfg.experiment}] data parallel over {world.size} processes: {cfg.batch_size // world.size} "
                  f"images per process and step", file=sys.stderr)
        experiments.run_experiment(cfg, ds, args.out, progress=progress,
                                   force=args.force, resume=args.resume, world=world,
                                   **({} if world.main else {"log": lambda msg: None}))
    finally:
        distributed.shutdown()
    return 0


def cmd_evaluate(args) -> int:
    from shapecount import data, experiments

    ds = data.load_gsn(args.data, progress=_progress(args))
    m = experiments.evaluate_checkpoint(args.checkpoint, ds, args.out, args.force, args.device)
    print(fileio.dumps({k: m[k] for k in ("top1_accuracy", "macro_f1", "pair_accuracy", "rmse", "mae",
                                        "count_decoded_accuracy", "live_units")}, indent=2))
    return 0


def cmd_predict(args) -> int:
    from shapecount import predict

    if args.top_k < 1:
        raise UserError("--top-k", f"must be >= 1, got {args.top_k}", "pass e.g. --top-k 3")
    rows = predict.predict_paths(args.checkpoint, args.paths, top_k=args.top_k,
                                 tta=None if not args.no_tta else False, device_name=args.device)
    sys.stdout.write(predict.format_rows(rows, args.format))
    return 0


def cmd_reproduce(args) -> int:
    from shapecount import data, experiments

    recipe = "quick" if args.quick else args.recipe  # --quick is --recipe quick
    overrides = config_overrides(args)
    cfg = make_config("multitask", recipe, overrides)  # fail fast on bad options, before loading data
    overrides.update(_threads_beside_others(args, cfg.device))
    progress = _progress(args)
    ds = data.load_gsn(args.data, progress=progress)
    command = "shapecount " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else ""
    experiments.reproduce(ds, args.out, recipe, overrides, command=command, progress=progress,
                          force=args.force, resume=args.resume, audit=not args.no_audit,
                          audit_images=QUICK_AUDIT_IMAGES if recipe == "quick" else None,
                          at_once=False if args.one_at_a_time else None)
    return 0


def _node_limit(args) -> int:
    from shapecount.exact.decoder import DEFAULT_NODE_LIMIT

    if args.node_limit is None:
        return DEFAULT_NODE_LIMIT
    if args.node_limit < 1:
        raise UserError("--node-limit", f"must be >= 1, got {args.node_limit}", "pass e.g. --node-limit 100000000")
    return args.node_limit


def cmd_audit(args) -> int:
    from shapecount import data
    from shapecount.exact import audit

    limit = _node_limit(args)
    jobs = audit.default_jobs() if args.jobs is None else args.jobs
    if jobs < 1:
        raise UserError("--jobs", f"must be >= 1, got {jobs}", "pass e.g. --jobs 2")
    progress = _progress(args)
    ds = data.load_gsn(args.data, progress=progress)
    if args.split != "all":
        ds = data.split(ds)[0 if args.split == "train" else 1]
    result = audit.run_audit(ds.images.numpy(), ds.classes.numpy(), ds.names, split=args.split, jobs=jobs,
                             node_limit=limit, cache=None if args.no_cache else data.cache_dir(),
                             progress=progress)
    if args.out is not None:
        audit.write_audit(result, args.out)
    print(audit.format_summary(result.summary))
    if args.out is not None:
        print(f"wrote {args.out / 'audit.csv'}, witnesses.jsonl and summary.json")
    return 0


def cmd_solve(args) -> int:
    from shapecount.exact import solve
    from shapecount.predict import collect_pngs

    solve.write_records(solve.solve_paths(collect_pngs(args.paths), _node_limit(args)), args.format, sys.stdout)
    return 0


def cmd_ablation(args) -> int:
    from shapecount import ablation

    sys.stdout.write(ablation.write_summary(args.root, args.baseline, args.audit))
    return 0


def cmd_decode(args) -> int:
    from shapecount import data, decoding

    ds = data.load_gsn(args.data, progress=_progress(args))
    for line in decoding.report_runs(args.runs, ds):
        print(line, flush=True)
    return 0


def cmd_synth(args) -> int:
    import torch

    from shapecount import data, synth

    if args.out is not None:
        if args.n < 1:
            raise UserError("-n", f"must be >= 1, got {args.n}", "pass the number of images to write")
        synth.write_dataset(args.out, args.n, args.seed)
        print(f"wrote {args.n} synthetic images and labels.csv to {args.out}")
        return 0
    ds = data.load_gsn(args.data, progress=_progress(args))
    torch.set_num_threads(1)
    print(f"generate: {synth.speed():,.0f} images/s (1 thread)")
    rep = synth.fidelity_report(ds.images, ds.counts, gen=torch.Generator().manual_seed(args.seed), verbose=False)
    print(synth.format_report(rep))
    return 0


def cmd_report(args) -> int:
    from shapecount import fileio, report

    if not args.folder.is_dir():
        raise UserError(args.folder, "no such folder", "pass the --out folder of `shapecount reproduce`")
    if args.ablation is not None:
        table = args.ablation / report.ABLATION_FILE
        if not table.is_file():
            raise UserError(table, "not found", f"run `shapecount ablation {args.ablation}` first")
        # A copy, so that the report folder stays self-contained and report.py reads only its own files.
        fileio.write_text(args.folder / report.ABLATION_FILE, table.read_text(encoding="utf-8"))
    md, html = report.write_report(args.folder)  # also rebuilds comparison/
    print(f"wrote {md} and {html}")
    return 0


def cmd_bench(args) -> int:
    from shapecount import bench

    if args.steps < 1 or args.batch_size < 1 or args.threads < 0:
        raise UserError("bench", "--steps and --batch-size must be >= 1, --threads >= 0", "fix the option")
    return bench.main(args)


COMMANDS = {"check": cmd_check, "cache": cmd_cache, "audit": cmd_audit, "solve": cmd_solve, "ablation": cmd_ablation,
            "decode": cmd_decode, "synth": cmd_synth, "report": cmd_report, "bench": cmd_bench, "eda": cmd_eda, "labels": cmd_labels, "config": cmd_config,
            "train": cmd_train,
            "evaluate": cmd_evaluate, "predict": cmd_predict, "reproduce": cmd_reproduce}


def _install_signal_handlers() -> dict:
    """SIGTERM stops like Ctrl-C (the last complete epoch is kept); a file-size limit (`ulimit -f`) makes writes
    fail with EFBIG, reported like a full disk, instead of killing the process with SIGXFSZ. Returns the
    previous handlers (restored when main returns). Only the main thread may install handlers."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    wanted = {signal.SIGTERM: raise_terminated}
    if hasattr(signal, "SIGXFSZ"):
        wanted[signal.SIGXFSZ] = signal.SIG_IGN
    return {sig: signal.signal(sig, handler) for sig, handler in wanted.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = COMMANDS[args.command]
    from shapecount import runtime

    runtime.flush_denormals()  # before any parallel operation, so that every CPU thread gets it (see there)
    previous = _install_signal_handlers()
    try:
        return _run(handler, args)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        runtime.keep_denormals()  # a caller that runs main() in its own process gets IEEE floats back


# OSErrors that say a path given on the command line cannot be used: one line, exit 2. Others are not the path's
# fault and keep their traceback.
PATH_ERRNOS = frozenset({errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.EACCES, errno.EPERM,
                         errno.EROFS, errno.ENAMETOOLONG, *fileio.NO_SPACE})


def _launched() -> bool:
    from shapecount import distributed  # imports torch: only when WORLD_SIZE is set

    return distributed.launched()


def _run(handler, args) -> int:
    try:
        if args.command != "train" and os.environ.get("WORLD_SIZE", "1") != "1" and _launched():
            raise UserError(args.command, "runs in one process; only `train` runs data parallel under torchrun",
                            f"run `shapecount {args.command}` without torchrun")
        return handler(args)
    except (UserError, ConfigError, LabelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        hint = (" (the last complete epoch is kept: run the same command with --resume to continue)"
                if args.command in ("train", "reproduce") else "")
        if isinstance(e, Terminated):
            print(f"terminated by SIGTERM{hint}", file=sys.stderr)
            return 128 + signal.SIGTERM
        print(f"interrupted{hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `shapecount predict ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # after BrokenPipeError: a path the user gave that cannot be made or written
        if e.filename is None or e.errno not in PATH_ERRNOS:
            raise
        if e.errno in (errno.EEXIST, errno.ENOTDIR):
            print(f"error: {e.filename}: a file is in the way of a folder to create (move the file away, or "
                  "choose another path)", file=sys.stderr)
        elif fileio.is_no_space(e):
            print(f"error: {fileio.DiskFullError(e.filename, e)}", file=sys.stderr)
        else:
            print(f"error: {e.filename}: {e.strerror} (check the path and its permissions)", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as e:
        # A CUDA failure (out of memory, a lost device) is the machine's, not a bug here: its first line says
        # what happened, and torch's further lines are debugging advice.
        if "CUDA" in str(e):
            print(f"error: {next(line for line in str(e).splitlines() if 'CUDA' in line)}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
