"""Joint decoding: combine the classification posterior with the count head's likelihood over the 135 classes.

score(c) = log p_cls(c) - beta * ||counts_pred - counts(c)||^2, i.e. the class posterior times a Gaussian
likelihood of the predicted counts (beta = 1 / (2 sigma^2)). beta = 0 is the classifier's argmax; a very large
beta is the count head's nearest valid class. beta is chosen on the held-out training images (the honest
protocol), then scored on the official validation images.

`shapecount decode RUN [RUN ...]`: for each run folder (trained with holdout > 0), the held-out and
validation top-1 over a grid of beta, the chosen beta and its validation top-1 against the plain argmax.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from shapecount import labels as L

BETAS: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, float("inf"))


def joint_scores(log_probs: torch.Tensor, counts: torch.Tensor, beta: float) -> torch.Tensor:
    """(N, 135) decoding scores; beta = inf ranks by count distance alone (argmax = labels.decode_counts)."""
    dist2 = L.count_distances(counts) ** 2
    if beta == float("inf"):
        return -dist2
    return log_probs.float() - beta * dist2


def accuracy_by_beta(log_probs: torch.Tensor, counts: torch.Tensor, classes: torch.Tensor,
                     betas: tuple[float, ...] = BETAS) -> list[float]:
    return [float((joint_scores(log_probs, counts, b).argmax(1) == classes).float().mean()) for b in betas]


def choose_beta(holdout_acc: list[float], betas: tuple[float, ...] = BETAS) -> float:
    """The beta with the best held-out accuracy; ties go to the smaller beta (closest to the plain classifier)."""
    return betas[max(range(len(betas)), key=lambda i: (holdout_acc[i], -i))]


def check_run(run: Path, data, device: str = "cpu") -> dict:
    """Held-out and validation accuracy per beta for one run folder (TTA as the run was configured)."""
    from shapecount import evaluation, experiments, runfolder, runtime
    from shapecount.checkpoint import load_checkpoint
    from shapecount.errors import UserError

    model, cfg, _ = load_checkpoint(run / runfolder.CHECKPOINT_FILE, device)
    if not cfg.holdout:
        raise UserError(run, "was trained without a holdout, so beta cannot be chosen honestly",
                        "pass runs trained with --set holdout=N (e.g. --recipe best)")
    _, hold, val = experiments.run_splits(cfg, data)  # the images the run selected on, and its validation images
    out = {"run": str(run), "betas": list(BETAS)}
    for name, ds in (("holdout", hold), ("val", val)):
        lp, cnt = evaluation.predict(model, ds.images, torch.device(device), cfg.eval_batch_size, tta=cfg.tta,
                                 amp=runtime.amp_dtype(cfg.amp, torch.device(device)))
        out[name] = accuracy_by_beta(lp, cnt, ds.classes)
    beta = choose_beta(out["holdout"])
    out["beta"] = beta
    out["val_joint"] = out["val"][BETAS.index(beta)]
    out["val_argmax"] = out["val"][0]
    return out


def report_runs(runs: list[Path], data) -> Iterator[str]:
    """Lines of the `shapecount decode` table, one per run, then the mean change; raises UserError for a run
    that cannot be checked (before printing anything for it)."""
    gains = []
    for run in runs:
        r = check_run(run, data)
        if not gains:  # after the first check, so a refused run prints only its error line
            yield f"top-1 for beta = {' '.join(f'{b:g}' for b in BETAS)}"
        gains.append(r["val_joint"] - r["val_argmax"])
        yield (f"{run}: holdout {' '.join(f'{v:.3f}' for v in r['holdout'])} | val "
               f"{' '.join(f'{v:.3f}' for v in r['val'])} | chosen beta {r['beta']:g}: val {r['val_joint']:.3f} "
               f"vs argmax {r['val_argmax']:.3f}")
    yield f"mean change of validation top-1 over {len(gains)} runs: {sum(gains) / len(gains):+.4f}"
