"""Probability-threshold tuning for binary segmentation, on the validation items with the best weights.

Two marine-debris seeds end with "fine-tune the threshold for the precision/recall balance": a rare positive
class (debris is ~2% of labelled pixels) trained with weighted losses is rarely best cut at 0.5. The
sweep costs one pass over the validation items: each pixel's probability goes into one of
:data:`BINS` histogram bins, separately for positive and negative targets (ignored pixels, target -1,
are left out), on the device; cumulative sums then give TP/FP/FN at every threshold ``k / BINS`` at
once. A pixel counts as positive when ``p >= threshold`` (the trainer's own metrics use ``logit > 0``,
which differs only for p exactly 0.5).

The best threshold maximises F1 (ties: the one nearest 0.5). What lands in result.json
``extra.threshold`` and in ``eval/threshold.csv`` / ``eval/threshold.png`` is documented in
docs/formats.md.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hpcseg.fsutil import write_bytes_atomic, write_text_atomic

BINS = 100  # thresholds 0.01 .. 0.99 in steps of 0.01
CSV_NAME, PNG_NAME = "threshold.csv", "threshold.png"


class ProbabilityHistogram:
    """Counts of positive- and negative-target pixels per probability bin, accumulated on the device."""

    def __init__(self, device: torch.device | str = "cpu", bins: int = BINS):
        self.bins = bins
        self.pos = torch.zeros(bins, dtype=torch.long, device=device)
        self.neg = torch.zeros(bins, dtype=torch.long, device=device)

    def update(self, logits: Tensor, target: Tensor) -> None:
        """``logits`` (B, 1, H, W) or (B, H, W); ``target`` (B, H, W) long with -1 = ignore."""
        p = torch.sigmoid(logits.float().reshape(target.shape)).reshape(-1)
        t = target.reshape(-1)
        idx = (p * self.bins).long().clamp_(0, self.bins - 1)
        self.pos += torch.bincount(idx[t == 1], minlength=self.bins)
        self.neg += torch.bincount(idx[t == 0], minlength=self.bins)

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        return self.pos.cpu().numpy().astype(np.int64), self.neg.cpu().numpy().astype(np.int64)


def collect(model: torch.nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device,
            autocast: Any = None) -> ProbabilityHistogram:
    """One pass of ``model`` (already in eval mode) over ``batches``."""
    from contextlib import nullcontext

    hist = ProbabilityHistogram(device)
    with torch.inference_mode():
        for x, y in batches:
            with autocast or nullcontext():
                logits = model(x)
            hist.update(logits, y)
    return hist


def sweep(pos: np.ndarray, neg: np.ndarray) -> list[dict[str, float]]:
    """One row per threshold k/bins (k = 1..bins-1): threshold, tp, fp, fn, precision, recall, f1, iou."""
    bins = len(pos)
    # pixels with p >= k/bins are those in bins k..bins-1: reverse cumulative sums
    tp_all = np.cumsum(pos[::-1])[::-1]
    fp_all = np.cumsum(neg[::-1])[::-1]
    total_pos = int(pos.sum())
    rows = []
    for k in range(1, bins):
        tp, fp = int(tp_all[k]), int(fp_all[k])
        rows.append({"threshold": round(k / bins, 6), "tp": tp, "fp": fp, "fn": total_pos - tp,
                     **scores(tp, fp, total_pos - tp)})
    return rows


def scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall, F1 and IoU of the positive class; 0.0 where a denominator is empty."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    iou = tp / (tp + fp + fn) if tp + fp + fn else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "iou": iou}


def at(pos: np.ndarray, neg: np.ndarray, threshold: float) -> dict[str, float]:
    """Scores with the cut at ``threshold`` (rounded down to the histogram's grid)."""
    k = int(np.clip(np.floor(threshold * len(pos) + 1e-9), 0, len(pos)))
    tp, fp = int(pos[k:].sum()), int(neg[k:].sum())
    return {"threshold": k / len(pos), "tp": tp, "fp": fp, "fn": int(pos.sum()) - tp,
            **scores(tp, fp, int(pos.sum()) - tp)}


def best_row(rows: list[dict[str, float]]) -> dict[str, float]:
    """The row with the highest F1; ties go to the threshold nearest 0.5 (the untuned cut)."""
    return max(rows, key=lambda r: (round(r["f1"], 12), -abs(r["threshold"] - 0.5)))


def summary(pos: np.ndarray, neg: np.ndarray, split: str = "val") -> dict[str, Any]:
    """What result.json's ``extra.threshold`` holds."""
    rows = sweep(pos, neg)
    best = best_row(rows)
    return {
        "split": split,
        "best_threshold": best["threshold"],
        "precision": best["precision"], "recall": best["recall"], "f1": best["f1"], "iou": best["iou"],
        "at_0.5": {k: v for k, v in at(pos, neg, 0.5).items() if k in ("precision", "recall", "f1", "iou")},
        "pixels": int(pos.sum() + neg.sum()), "positive_pixels": int(pos.sum()),
        "grid": 1 / len(pos),
    }


def write_outputs(eval_dir: Path, rows: list[dict[str, float]], best: dict[str, Any], title: str) -> list[Path]:
    """``eval/threshold.csv`` (the whole sweep) and ``eval/threshold.png`` (metrics vs threshold, and the
    precision-recall curve), both written atomically."""
    eval_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    fields = ["threshold", "precision", "recall", "f1", "iou", "tp", "fp", "fn"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in fields})
    out = [write_text_atomic(eval_dir / CSV_NAME, buf.getvalue())]
    out.append(write_bytes_atomic(eval_dir / PNG_NAME, _figure(rows, best, title)))
    return out


def _figure(rows: list[dict[str, float]], best: dict[str, Any], title: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = [r["threshold"] for r in rows]
    fig = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(fig)
    ax, pr = fig.subplots(1, 2)
    for key, style in (("precision", "-"), ("recall", "-"), ("f1", "-"), ("iou", "--")):
        ax.plot(t, [r[key] for r in rows], style, label=key)
    ax.axvline(best["best_threshold"], color="grey", lw=0.8)
    ax.set_xlabel("probability threshold (positive when p >= threshold)")
    ax.set_ylabel("score (positive class, validation pixels)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.set_title(f"best F1 {best['f1']:.3f} at {best['best_threshold']:.2f}", fontsize=9)
    pr.plot([r["recall"] for r in rows], [r["precision"] for r in rows], ".-", ms=3)
    pr.plot([best["recall"]], [best["precision"]], "o", color="red")
    pr.set_xlabel("recall")
    pr.set_ylabel("precision")
    pr.set_xlim(-0.02, 1.02)
    pr.set_ylim(-0.02, 1.02)
    pr.set_title("precision-recall over thresholds", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def tune(trainer: Any) -> dict[str, Any]:
    """The trainer's hook-up: sweep on the validation items, write eval/, return ``extra.threshold``."""
    # every validation item, on this one process (evaluate runs on rank 0 only; val_batches() would be its shard)
    batches = trainer.source.batches(trainer.val_idx, trainer.tr.batch_size, train=False, epoch=0, seed=0)
    hist = collect(trainer.bare_model, batches, trainer.device, trainer.amp)
    pos, neg = hist.counts()
    if pos.sum() == 0:
        return {"split": "val", "skipped": "no positive pixel in the validation items"}
    rows = sweep(pos, neg)
    result = summary(pos, neg)
    write_outputs(trainer.plan.task_dir / "eval", rows, result,
                  f"{trainer.spec.name} / {trainer.mspec.name} fold {trainer.plan.fold}: threshold sweep")
    trainer.tuned = (hist, result)  # for a workload's later test evaluation at the tuned threshold
    return result
