"""Validation metrics from a confusion matrix accumulated on the device over an epoch.

One ``bincount`` per batch and a single host sync per epoch: the metric code never stalls the GPU.
Names and columns are those of history.csv (docs/formats.md), without the ``val_`` prefix:

* binary_segmentation: jaccard (IoU of the positive class), dice, precision, recall
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

from hpcseg.columns import METRICS, columns  # noqa: F401  (their torch-free home; re-exported here)


def predictions(logits: Tensor, task: str) -> Tensor:
    """Class labels from logits (binary: logit > 0, i.e. probability > 0.5)."""
    if task == "binary_segmentation":
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


class ConfusionMeter:
    """A K×K confusion matrix (rows: target, columns: prediction) that lives on the device."""

    def __init__(self, task: str, num_classes: int, device: torch.device | str = "cpu"):
        self.task = task
        self.k = 2 if task == "binary_segmentation" else num_classes
        self.matrix = torch.zeros(self.k * self.k, dtype=torch.long, device=device)

    def update(self, logits: Tensor, target: Tensor) -> None:
        pred = predictions(logits, self.task).reshape(-1)
        target = target.reshape(-1)
        valid = target >= 0
        code = torch.where(valid, target * self.k + pred, torch.full_like(target, self.k * self.k))
        self.matrix += torch.bincount(code, minlength=self.k * self.k + 1)[: self.k * self.k]

    def compute(self) -> dict[str, float]:
        return compute_metrics(self.matrix.view(self.k, self.k).cpu().numpy(), self.task)


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
