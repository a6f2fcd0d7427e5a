"""Validation metrics from a confusion matrix accumulated on the device over an epoch.

One ``bincount`` per batch and a single host sync per epoch: the metric code never stalls the GPU.
Names and columns are those of history.csv (docs/formats.md), without the ``val_`` prefix:

* binary_segmentation: jaccard (IoU of the positive class), dice, precision, recall, and jaccard_soft:
  the Keras ``jacard_coef`` of the seeds, ``(Σ y·p + 1) / (Σ y + Σ p − Σ y·p + 1)`` on probabilities over
  each whole batch, averaged over the epoch's batches as Keras averages a compiled metric (each batch
  counts once, whatever its size); also logged on the training batches as train_jaccard_soft
* multiclass_segmentation: miou, mdice (means over classes present in target or prediction),
  pixel_accuracy
* classification: accuracy, balanced_accuracy (mean recall over classes present in the target),
  macro_f1 (mean F1 over classes present in target or prediction, as scikit-learn)

Empty cases: jaccard and dice are 1.0 when neither target nor prediction has a positive pixel (a
perfect answer); precision and recall are 0.0 when their denominator is empty.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from hpcseg.columns import METRICS, SOFT_JACCARD, TRAIN_METRICS, columns  # noqa: F401  (torch-free home)


def predictions(logits: Tensor, task: str) -> Tensor:
    """Class labels from logits (binary: logit > 0, i.e. probability > 0.5)."""
    if task == "binary_segmentation":
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def soft_jaccard(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """Keras ``jacard_coef`` of one batch (a 0-d tensor): ``(Σ y·p + 1) / (Σ y + Σ p − Σ y·p + 1)``.

    ``p = sigmoid(logit)`` of the one binary channel, ``y`` the 0/1 target; the sums run over every pixel of
    every item of the batch at once (Keras flattens the batch), so it is not a mean of per-image scores.
    Pixels marked ignore (target < 0) count in neither sum, where Keras has no such pixels.
    """
    p = torch.sigmoid(logits[:, 0].float())
    valid = target >= 0
    y = (target > 0).to(p.dtype)
    p = torch.where(valid, p, torch.zeros_like(p))
    inter = (y * p).sum()
    return (inter + smooth) / (y.sum() + p.sum() - inter + smooth)


class BatchMean:
    """The mean of a per-batch score over an epoch, as Keras reports a compiled metric: on the device, no
    host sync per batch; ``sums`` ([total, batches], float64) is what data-parallel ranks all-reduce."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)

    def add(self, value: Tensor) -> None:
        self.sums += torch.stack((value.detach().double(), torch.ones((), dtype=torch.float64, device=value.device)))

    def compute(self) -> float:
        total, n = self.sums.tolist()
        return total / n if n else float("nan")


class SoftJaccardMean(BatchMean):
    """The epoch's Keras ``jacard_coef``: :func:`soft_jaccard` per batch, averaged over batches."""

    def update(self, logits: Tensor, target: Tensor) -> None:
        self.add(soft_jaccard(logits, target))


class ConfusionMeter:
    """A K×K confusion matrix (rows: target, columns: prediction) that lives on the device, and for a binary
    task the batch mean of :func:`soft_jaccard` beside it."""

    def __init__(self, task: str, num_classes: int, device: torch.device | str = "cpu"):
        self.task = task
        self.k = 2 if task == "binary_segmentation" else num_classes
        self.matrix = torch.zeros(self.k * self.k, dtype=torch.long, device=device)
        self.soft = SoftJaccardMean(device)

    def update(self, logits: Tensor, target: Tensor) -> None:
        if self.task == "binary_segmentation":
            self.soft.update(logits, target)
        pred = predictions(logits, self.task).reshape(-1)
        target = target.reshape(-1)
        valid = target >= 0
        code = torch.where(valid, target * self.k + pred, torch.full_like(target, self.k * self.k))
        self.matrix += torch.bincount(code, minlength=self.k * self.k + 1)[: self.k * self.k]

    def compute(self) -> dict[str, float]:
        out = compute_metrics(self.matrix.view(self.k, self.k).cpu().numpy(), self.task)
        if self.task == "binary_segmentation":
            out[SOFT_JACCARD] = self.soft.compute()
        return out


def _div(a: np.ndarray | float, b: np.ndarray | float, empty: float) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.where(b > 0, a / np.where(b > 0, b, 1.0), empty)


def compute_metrics(cm: np.ndarray, task: str) -> dict[str, float]:
    """Metrics from a confusion matrix ``cm[target, prediction]``."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    if task == "binary_segmentation":
        t, f_p, f_n = tp[1], fp[1], fn[1]
        return {
            "jaccard": float(_div(t, t + f_p + f_n, 1.0)),
            "dice": float(_div(2 * t, 2 * t + f_p + f_n, 1.0)),
            "precision": float(_div(t, t + f_p, 0.0)),
            "recall": float(_div(t, t + f_n, 0.0)),
        }
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    seen = (support + predicted) > 0
    accuracy = float(_div(tp.sum(), cm.sum(), 0.0))
    if task == "multiclass_segmentation":
        iou = _div(tp, tp + fp + fn, 0.0)
        dice = _div(2 * tp, 2 * tp + fp + fn, 0.0)
        return {
            "miou": float(iou[seen].mean()) if seen.any() else 0.0,
            "mdice": float(dice[seen].mean()) if seen.any() else 0.0,
            "pixel_accuracy": accuracy,
        }
    recall = _div(tp, support, 0.0)
    precision = _div(tp, predicted, 0.0)
    f1 = _div(2 * precision * recall, precision + recall, 0.0)
    present = support > 0
    return {
        "accuracy": accuracy,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
    }
