"""`shapecount audit`: exact-decode every image of a split and measure what the pixels allow.

Per image: the feasible classes with a witness each, the exact posterior, whether the label is feasible.
Summary: how many images are uniquely decided, ambiguous, infeasible (label not feasible: a label or rule
problem, listed by name) or unknown (node limit); the Bayes accuracy estimate (mean largest posterior: the best
any classifier can expect on these images), the accuracy of the MAP class against the labels, and the accuracy
of a uniform guess among the feasible classes (a floor for anything that knows the rules).

Results are cached under the data cache folder, keyed by the images' and labels' content and the decoder's
settings, so `reproduce` pays for the audit once.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shapecount import fileio
from shapecount import labels as L
from shapecount.exact.decoder import DEFAULT_NODE_LIMIT, Decoder, Decoding

# Bump when the decoder or the row format changes: old cache entries are then ignored.
AUDIT_VERSION = 1
SPLITS = ("train", "val", "all")
CSV_COLUMNS = ["name", "label", "feasible", "n_feasible", "posterior_label", "map_class", "unknown",
               "label_feasible", "posterior", "label_witness", "nodes", "ms"]


def row_of(name: str, label: int, d: Decoding, ms: float) -> dict:
    """One image's audit record (JSON-friendly; class ids as strings in `feasible`)."""
    return {"name": name, "label": int(label), "unknown": d.unknown, "nodes": d.nodes, "ms": round(ms, 2),
            "feasible": {str(k): {"p": d.posterior.get(k, 0.0), "witness": [str(s) for s in d.feasible[k]]}
                         for k in d.classes}}


def is_decidable(row: dict) -> bool:
    """The label is the only feasible class of an audit record (and the search finished)."""
    return not row["unknown"] and list(row["feasible"]) == [str(row["label"])]


def map_class(row: dict) -> str | None:
    """The most probable feasible class of an audit record (as its string id; ties: lowest id), else None."""
    f = row["feasible"]
    return max(sorted(f, key=int), key=lambda k: f[k]["p"]) if f else None


def map_right(row: dict) -> bool:
    """The record's most probable class is its label (what the exact decoder's MAP guess gets right)."""
    return map_class(row) == str(row["label"])


def split_correct(rows: dict[str, dict], correct: dict[str, bool]) -> dict:
    """Top-1 on the decidable and on the ambiguous images of an audit (rows: {image name: record}), from
    `correct` ({image name: whether the class was right}); images the audit does not cover are left out.
    {"n_dec", "n_amb", "errors_dec", "errors_amb", "acc_dec", "acc_amb"}, an accuracy None where no image."""
    dec = [bool(ok) for n, ok in correct.items() if n in rows and is_decidable(rows[n])]
    amb = [bool(ok) for n, ok in correct.items() if n in rows and not is_decidable(rows[n])]
    return {"n_dec": len(dec), "n_amb": len(amb), "errors_dec": dec.count(False), "errors_amb": amb.count(False),
            "acc_dec": sum(dec) / len(dec) if dec else None, "acc_amb": sum(amb) / len(amb) if amb else None}


def map_correct(rows: dict[str, dict]) -> dict[str, bool]:
    """Whether the exact decoder's MAP class is right, per image of an audit: the ceiling as a run's `correct`."""
    return {name: map_right(row) for name, row in rows.items()}


# ---- worker processes -----------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(images: np.ndarray, node_limit: int, worker_process: bool = True) -> None:
    if worker_process:  # one process per core: the geometry tables need no torch threads of their own
        import torch

        torch.set_num_threads(1)
    _WORKER["images"] = images
    _WORKER["decoder"] = Decoder(node_limit=node_limit)
    _WORKER["decoder"].warm_up()


def _decode_chunk(idx: list[int]) -> list[tuple[int, Decoding, float]]:
    out = []
    for i in idx:
        t = time.perf_counter()
        d = _WORKER["decoder"].decode(_WORKER["images"][i])
        out.append((i, d, (time.perf_counter() - t) * 1e3))
    return out


def decode_images(images: np.ndarray, jobs: int = 1, node_limit: int = DEFAULT_NODE_LIMIT,
                  progress: bool = True, desc: str = "audit") -> list[tuple[Decoding, float]]:
    """Decode uint8/bool images (N, 28, 28) with `jobs` processes; returns (decoding, ms) in input order."""
    from tqdm import tqdm

    n = len(images)
    chunk = max(1, min(25, n // (8 * max(jobs, 1)) or 1))
    chunks = [list(range(i, min(i + chunk, n))) for i in range(0, n, chunk)]
    results: list = [None] * n
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False)
    try:
        if jobs <= 1:
            _init_worker(images, node_limit, worker_process=False)  # leaves the caller's threads alone
            for c in chunks:
                for i, d, ms in _decode_chunk(c):
                    results[i] = (d, ms)
                bar.update(len(c))
        else:
            ctx = mp.get_context("spawn")  # no forked torch/numba state in the workers
            with ctx.Pool(jobs, initializer=_init_worker, initargs=(images, node_limit)) as pool:
                for part in pool.imap_unordered(_decode_chunk, chunks):
                    for i, d, ms in part:
                        results[i] = (d, ms)
                    bar.update(len(part))
    finally:
        bar.close()
    return results


# ---- the audit of a split --------------------------------------------------------------------------------

@dataclass
class Audit:
    rows: list[dict]
    summary: dict

    def decidable(self) -> np.ndarray:
        """Bool per image: the label is the only feasible class (and the search finished)."""
        return np.array([is_decidable(r) for r in self.rows])


def _key(images: np.ndarray, classes: np.ndarray, node_limit: int) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images > 0).tobytes())
    h.update(np.ascontiguousarray(classes.astype(np.int64)).tobytes())
    h.update(f"v{AUDIT_VERSION}-limit{node_limit}".encode())
    return h.hexdigest()[:24]


def nearest_feasible(label: int, feasible: list[int]) -> int | None:
    """The feasible class whose count vector is closest (L1) to the label's; None if nothing is feasible."""
    if not feasible:
        return None
    lc = np.array(L.class_to_counts(label))
    return min(feasible, key=lambda k: (int(np.abs(np.array(L.class_to_counts(k)) - lc).sum()), k))


def _name_or_none(k: int | None) -> str | None:
    return None if k is None else L.class_name(k)


def summarize(rows: list[dict], seconds: float, jobs: int, node_limit: int, split: str) -> dict:
    n = len(rows)
    decided = [r for r in rows if not r["unknown"]]
    nf = [len(r["feasible"]) for r in decided]
    label_ok = [str(r["label"]) in r["feasible"] for r in decided]
    infeasible = [r for r, ok in zip(decided, label_ok) if not ok]
    maxp = [max((v["p"] for v in r["feasible"].values()), default=0.0) for r in decided]
    map_ok = [map_right(r) for r in decided]
    ms = np.array([r["ms"] for r in rows]) if rows else np.zeros(1)
    return {
        "split": split, "n_images": n,
        "n_unique": sum(1 for k, ok in zip(nf, label_ok) if k == 1 and ok),
        "n_ambiguous": sum(1 for k in nf if k > 1),
        "n_infeasible": len(infeasible),
        "n_no_feasible_class": sum(1 for k in nf if k == 0),
        "n_unknown": n - len(decided),
        "bayes_accuracy_estimate": float(np.mean(maxp)) if maxp else float("nan"),
        "map_accuracy": float(np.mean(map_ok)) if map_ok else float("nan"),
        "lower_bound": float(np.mean([ok / k if k else 0.0 for ok, k in zip(label_ok, nf)])) if nf else float("nan"),
        "infeasible": [{"name": r["name"], "label": L.class_name(r["label"]),
                        "nearest_feasible": _name_or_none(nearest_feasible(r["label"], [int(c) for c in r["feasible"]]))}
                       for r in infeasible],
        "unknown": [r["name"] for r in rows if r["unknown"]],
        "seconds": round(seconds, 1), "jobs": jobs, "node_limit": node_limit,
        "ms_median": round(float(np.median(ms)), 1), "ms_max": round(float(ms.max()), 1),
        "max_nodes": max((r["nodes"] for r in rows), default=0),
    }


def run_audit(images: np.ndarray, classes: np.ndarray, names: list[str], split: str = "val", jobs: int = 1,
              node_limit: int = DEFAULT_NODE_LIMIT, cache: Path | None = None, progress: bool = True) -> Audit:
    """Audit the given images (uint8 (N, 28, 28)) against their labels; reuse `cache` folder's entry if any."""
    images = np.asarray(images)
    classes = np.asarray(classes)
    cache_file = None
    if cache is not None:
        cache_file = Path(cache) / f"audit-{_key(images, classes, node_limit)}.json"
        if cache_file.is_file():
            try:
                got = json.loads(cache_file.read_text(encoding="utf-8"))
                if got.get("version") == AUDIT_VERSION and len(got["rows"]) == len(names):
                    rows = [dict(r, name=nm) for r, nm in zip(got["rows"], names)]
                    s = summarize(rows, got["seconds"], got["jobs"], node_limit, split)
                    return Audit(rows, dict(s, cached=True))
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a damaged cache entry is recomputed and replaced
    t = time.perf_counter()
    decoded = decode_images(images, jobs=jobs, node_limit=node_limit, progress=progress, desc=f"audit {split}")
    seconds = time.perf_counter() - t
    rows = [row_of(nm, int(c), d, ms) for nm, c, (d, ms) in zip(names, classes, decoded)]
    if cache_file is not None:
        try:
            fileio.write_json(cache_file, {"version": AUDIT_VERSION, "seconds": seconds, "jobs": jobs, "rows": rows})
        except (OSError, fileio.DiskFullError):
            pass  # no cache (read-only or full) is not an error: the audit is still returned
    return Audit(rows, dict(summarize(rows, seconds, jobs, node_limit, split), cached=False))


def csv_rows(rows: list[dict]):
    for r in rows:
        f = r["feasible"]
        lab = str(r["label"])
        best = map_class(r)
        yield [r["name"], L.class_name(r["label"]), ";".join(L.class_name(int(k)) for k in sorted(f, key=int)),
               len(f), round(f[lab]["p"], 6) if lab in f else 0.0, L.class_name(int(best)) if best else "",
               int(r["unknown"]), int(lab in f),
               ";".join(f"{L.class_name(int(k))}={f[k]['p']:.6f}" for k in sorted(f, key=int)),
               " ".join(f[lab]["witness"]) if lab in f else "", r["nodes"], r["ms"]]


def write_audit(audit: Audit, out: Path) -> None:
    """DIR/audit.csv (one row per image), DIR/witnesses.jsonl (every feasible class with its witness and
    posterior, per image) and DIR/summary.json."""
    out = Path(out)
    fileio.write_csv(out / "audit.csv", CSV_COLUMNS, csv_rows(audit.rows))
    fileio.write_text(out / "witnesses.jsonl", "".join(fileio.dumps(r) + "\n" for r in audit.rows))
    fileio.write_json(out / "summary.json", audit.summary)


def read_audit(folder: Path) -> Audit | None:
    """The audit `write_audit` wrote into folder (summary.json and witnesses.jsonl), or None when the folder
    does not hold a readable one."""
    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        with open(folder / "witnesses.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        if not all(isinstance(r, dict) and "name" in r and "feasible" in r for r in rows):
            return None
    except (OSError, ValueError):
        return None
    return Audit(rows, summary)


def format_summary(s: dict) -> str:
    lines = [
        (f"images {s['n_images']} ({s['split']}): unique {s['n_unique']}, ambiguous {s['n_ambiguous']}, "
         f"label infeasible {s['n_infeasible']}, unknown {s['n_unknown']}"),
        (f"Bayes accuracy estimate {s['bayes_accuracy_estimate']:.4f}   MAP accuracy {s['map_accuracy']:.4f}   "
         f"uniform guess among feasible {s['lower_bound']:.4f}"),
        f"time {s['seconds']:.1f} s with {s['jobs']} job(s)" + (" (cached result)" if s.get("cached") else "")
        + f"; per image median {s['ms_median']} ms, max {s['ms_max']} ms",
    ]
    for r in s["infeasible"][:20]:
        lines.append(f"  label infeasible: {r['name']} label {r['label']}, nearest feasible {r['nearest_feasible']}")
    if s["unknown"]:
        lines.append(f"  unknown (node limit {s['node_limit']}): {', '.join(s['unknown'][:20])}")
    return "\n".join(lines)


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
