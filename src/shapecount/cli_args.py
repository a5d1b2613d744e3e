"""The command line's arguments: one parser with a sub-parser per command (`shapecount --help`). A usage error
is one line `error: ...` and exit code EXIT_USAGE, like every other user error of the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shapecount import __version__
from shapecount.config import DEFAULT_RECIPE, EXPERIMENTS, RECIPES, parse_set

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


def _config_args(p: argparse.ArgumentParser, experiment: bool = True) -> None:
    if experiment:
        p.add_argument("--experiment", default="multitask", choices=EXPERIMENTS,
                       help="which heads are trained (default multitask)")
        p.add_argument("--lambda-cnt", type=float, help="weight of the count loss (preset: 0 / 1 / 5)")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, choices=tuple(RECIPES),
                   help="budget (the default: the best recipe's heads and holdout, 45k synthetic images per epoch, 9 "
                        "minutes per run, 3x the convolutions' lr) | fast (40 epochs of the real images, cosine lr peak 2e-3, amp) | "
                        "protocol (the assignment's: constant lr 1e-3, fp32, up to 100 epochs) | best (fast + 160k "
                        "synthetic images per epoch, wider heads without dropout, selection on a holdout) | quick "
                        "(2-epoch demo)")
    p.add_argument("--epochs", type=int, help="cap on epochs (recipe's default: 40 budget/fast/best, 100 protocol, 2 quick)")
    p.add_argument("--minutes", type=float,
                   help="time budget per training run: as many epochs as fit, judged by the first, fewer if "
                        "later ones slow down past it (budget recipe: 9; 0 = none)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 15; quick 2)")
    p.add_argument("--seed", type=int, help="seed for torch.manual_seed and data order (default 1)")
    p.add_argument("--device", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--threads", type=int, help="CPU threads (default: all, or fewer when other processes keep cores busy; a resumed run "
                        "keeps its count)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision where it pays: bf16 where the CPU or GPU has it natively, fp16 on other "
                        "GPUs, else fp32 (on in every recipe but protocol; --no-amp for fp32 everywhere)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field (see `shapecount config`); repeatable")


def config_overrides(args: argparse.Namespace) -> dict:
    """The config overrides the options of a parsed command line ask for (its --set ones last)."""
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
