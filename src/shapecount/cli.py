"""Command line: `shapecount <command> ...`. Every user error is one line `error: ...` and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from pathlib import Path

from shapecount import __version__
from shapecount.config import DEFAULT_RECIPE, EXPERIMENTS, RECIPES, ConfigError, dumps, make_config, parse_set
from shapecount.errors import TrainingError, UserError
from shapecount.labels import LabelError

EXIT_USAGE = 2
# `reproduce --quick` audits only this many validation images (a demo of the stage, in seconds).
QUICK_AUDIT_IMAGES = 200


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        print(f"error: {self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="PATH|URL",
                   help="dataset folder, .zip or http(s) URL (default: $SHAPECOUNT_DATA, else the official URL)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (download, decoding, training, audit); they are only drawn on a terminal")


def _progress(args) -> bool:
    """Progress bars unless --no-progress, and only when stderr is a terminal: in a log file or a pipe a bar
    is a stream of carriage returns, while the per-epoch lines say the same once each."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def _config_args(p: argparse.ArgumentParser, experiment: bool = True) -> None:
    if experiment:
        p.add_argument("--experiment", default="multitask", choices=EXPERIMENTS,
                       help="which heads are trained (default multitask)")
        p.add_argument("--lambda-cnt", type=float, help="weight of the count loss (preset: 0 / 1 / 5)")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, choices=tuple(RECIPES),
                   help="budget (default: best with 45k synthetic images per epoch in 9 minutes per run, 3x the "
                        "convolutions' lr) | fast (40 epochs of the real images, cosine lr peak 2e-3, amp) | "
                        "protocol (the assignment's: constant lr 1e-3, fp32, up to 100 epochs) | best (fast + 160k "
                        "synthetic images per epoch, wider heads without dropout, selection on a holdout) | quick "
                        "(2-epoch demo)")
    p.add_argument("--epochs", type=int, help="cap on epochs (recipe's default: 40 budget/fast/best, 100 protocol)")
    p.add_argument("--minutes", type=float,
                   help="time budget per training run: as many epochs as fit, judged by the first, fewer if "
                        "later ones slow down past it (budget recipe: 9; 0 = none)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 15)")
    p.add_argument("--seed", type=int, help="seed for torch.manual_seed and data order (default 1)")
    p.add_argument("--device", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--threads", type=int, help="CPU threads (default: all)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision where it pays: bf16 where the CPU or GPU has it natively, fp16 on other "
                        "GPUs, else fp32 (on in every recipe but protocol; --no-amp for fp32 everywhere)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field (see `shapecount config`); repeatable")


def _overrides(args: argparse.Namespace) -> dict:
    ov = {}
    for key in ("lambda_cnt", "epochs", "minutes", "patience", "seed", "device", "threads", "amp", "deterministic"):
        v = getattr(args, key, None)
        if v is not None:
            ov[key] = v
    ov.update(parse_set(args.set))
    return ov


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="shapecount", description="Multitask learning (135-way class + 6 counts) on the GSN shapes "
                "dataset: data checks, EDA, training, evaluation, prediction and reports.",
                epilog="examples:\n  shapecount check --data data_gsn.zip\n"
                       "  shapecount train --experiment multitask --out runs/mt\n"
                       "  shapecount reproduce --quick --out runs/quick\n"
                       "  shapecount predict --checkpoint runs/mt/checkpoint.pt img.png\n"
                       "  shapecount audit --split val --out runs/audit\n"
                       "  shapecount solve img.png\n"
                       "Errors are one line `error: ...` with exit code 2.",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"shapecount {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    chk = sub.add_parser("check", help="validate the dataset and print a summary")
    _data_arg(chk)

    e = sub.add_parser("eda", help="exploratory analysis: figures and tables")
    _data_arg(e)
    e.add_argument("--out", required=True, type=Path)

    sub.add_parser("labels", help="print the 135-class label table (Markdown)")

    ca = sub.add_parser("cache", help="list or clean the cache folder ($SHAPECOUNT_CACHE)")
    csub = ca.add_subparsers(dest="cache_command", required=True, parser_class=_Parser)
    csub.add_parser("list", help="files in the cache, their sizes and kinds")
    cc = csub.add_parser("clean", help="remove decoded arrays and audits (rebuilt on demand); downloads stay")
    cc.add_argument("--all", action="store_true", help="remove downloaded zips too")

    c = sub.add_parser("config", help="print the resolved config as JSON")
    _config_args(c)

    t = sub.add_parser("train", help="train one experiment into a run folder")
    _data_arg(t)
    _config_args(t)
    t.add_argument("--out", required=True, type=Path, help="run folder to write (see docs/run_folder.md)")
    t.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    t.add_argument("--deterministic", action="store_true", default=None,
                   help="CUDA: deterministic kernels (CPU is deterministic already)")

    ev = sub.add_parser("evaluate", help="rebuild metrics, predictions and plots from a checkpoint")
    _data_arg(ev)
    ev.add_argument("--checkpoint", required=True, type=Path)
    ev.add_argument("--out", required=True, type=Path)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--force", action="store_true")

    pr = sub.add_parser("predict", help="predict PNG files or folders of PNGs")
    pr.add_argument("--checkpoint", required=True, type=Path)
    pr.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    pr.add_argument("--format", choices=("csv", "json"), default="csv")
    pr.add_argument("--top-k", type=int, default=3)
    pr.add_argument("--no-tta", action="store_true", help="single view (default: the run's tta setting)")
    pr.add_argument("--device", default="auto")

    b = sub.add_parser("bench", help="throughput: a typical pipeline vs ours, GEMM peak, eval speed")
    _data_arg(b)
    b.add_argument("--steps", type=int, default=30, help="timed training steps per pipeline")
    b.add_argument("--batch-size", type=int, default=64)
    b.add_argument("--threads", type=int, default=0)
    b.add_argument("--compile", action="store_true", help="also time torch.compile (slow first steps)")
    b.add_argument("--dtype", choices=("fp32", "bf16", "both"), default="both", help="training dtypes to time")
    b.add_argument("--skip-typical", action="store_true")
    b.add_argument("--contention", action="store_true",
                   help="also time training beside one busy process, for each OpenMP wait policy (fresh processes)")
    b.add_argument("--json", type=Path, help="write the results here")

    au = sub.add_parser("audit", help="exact decoding of every image: feasible classes, posterior, the ceiling")
    _data_arg(au)
    au.add_argument("--split", choices=("train", "val", "all"), default="val",
                    help="images to audit: the 9,000 training, 1,000 validation (default) or all")
    au.add_argument("--out", type=Path, help="write audit.csv, witnesses.jsonl and summary.json here")
    au.add_argument("--jobs", type=int, help="worker processes (default: one per CPU core)")
    au.add_argument("--node-limit", type=int, default=None,
                    help="search nodes per type pair before an image's pair is UNKNOWN")
    au.add_argument("--no-cache", action="store_true", help="recompute even if a cached audit exists")

    so = sub.add_parser("solve", help="exact decoding of PNG files: feasible classes, posterior, witness")
    so.add_argument("paths", nargs="+", type=Path, metavar="PNG", help="28x28 binary PNGs or folders of them")
    so.add_argument("--format", choices=("text", "json"), default="text")
    so.add_argument("--node-limit", type=int, default=None,
                    help="search nodes per type pair before the pair is reported UNKNOWN")

    ab = sub.add_parser("ablation", help="mean +- std over seeds of every setting under ROOT, and error structure")
    ab.add_argument("root", type=Path, help="folder with ROOT/<setting>/<seed>/ run folders")
    ab.add_argument("--baseline", help="setting (sub-folder) to compare the others with")
    ab.add_argument("--audit", type=Path, metavar="DIR",
                    help="an audit of the validation images (`audit --split val --out DIR`): adds top-1 by overlap")

    de = sub.add_parser("decode", help="joint decoding (class x count likelihood) of runs vs the plain argmax")
    _data_arg(de)
    de.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders trained with a holdout")

    sy = sub.add_parser("synth", help="synthetic GSN images: compare with the real data, or write a dataset")
    _data_arg(sy)
    sy.add_argument("--out", type=Path, help="write N synthetic images here as labels.csv + PNGs (GSN layout)")
    sy.add_argument("-n", type=int, default=1000, help="images to write with --out (default 1000)")
    sy.add_argument("--seed", type=int, default=0)

    rp = sub.add_parser("report", help="rebuild the comparison and report.md/report.html of a reproduce folder")
    rp.add_argument("folder", type=Path, help="the --out folder of `shapecount reproduce`")
    rp.add_argument("--ablation", type=Path, metavar="ROOT",
                    help="also add ROOT/ablation.md (from `shapecount ablation ROOT`) as a section")

    r = sub.add_parser("reproduce", help="EDA + the three experiments + comparison + report")
    _data_arg(r)
    _config_args(r, experiment=False)
    r.add_argument("--out", required=True, type=Path, help="folder for eda/, one run folder per experiment, report")
    r.add_argument("--quick", action="store_true",
                   help="demo of every stage in about two minutes: the same as --recipe quick, with the audit "
                        f"limited to the first {QUICK_AUDIT_IMAGES} validation images")
    r.add_argument("--force", action="store_true", help="overwrite an existing reproduce folder")
    r.add_argument("--resume", action="store_true",
                   help="keep finished experiments, continue an interrupted one, redo comparison and report")
    r.add_argument("--no-audit", action="store_true",
                   help="skip the exact-decoding audit of the validation images (the ceiling in the report)")
    r.add_argument("--one-at-a-time", action="store_true",
                   help="train the experiments one after another with all threads each; by default a CPU with "
                        "two or more threads trains them at once, one process each, the time budget of one run "
                        "multiplied by their number")
    return p


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
        n, size = housekeeping.clean_cache(everything=args.all)
        print(f"removed {n} files ({size / 1e6:.1f} MB) from {housekeeping.cache_dir()}")
    return 0


def cmd_config(args) -> int:
    print(dumps(make_config(args.experiment, args.recipe, _overrides(args))))
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

    overrides = _overrides(args)
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
    print(json.dumps({k: m[k] for k in ("top1_accuracy", "macro_f1", "pair_accuracy", "rmse", "mae",
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
    overrides = _overrides(args)
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


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's pre-emption, `kill`): stops like Ctrl-C, at the same safe points."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _install_signal_handlers() -> dict:
    """SIGTERM stops like Ctrl-C (the last complete epoch is kept); a file-size limit (`ulimit -f`) makes writes
    fail with EFBIG, reported like a full disk, instead of killing the process with SIGXFSZ. Returns the
    previous handlers (restored when main returns). Only the main thread may install handlers."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    wanted = {signal.SIGTERM: _on_sigterm}
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


def _run(handler, args) -> int:
    try:
        if args.command != "train" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
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
    except RuntimeError as e:
        if "CUDA" in str(e) or "--device" in str(e):
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
