"""The columns of history.csv per task: a torch-free home, so ``hpcseg check`` can tell whether
``collection.metric`` names a column the trainer will write, without importing the trainer.

hpcseg/train/metrics.py computes these metrics (without the ``val_`` prefix) and re-exports both names.
"""

from __future__ import annotations

METRICS: dict[str, tuple[str, ...]] = {
    "binary_segmentation": ("jaccard", "dice", "precision", "recall"),
    "multiclass_segmentation": ("miou", "mdice", "pixel_accuracy"),
    "classification": ("accuracy", "balanced_accuracy", "macro_f1"),
}


def columns(task: str) -> list[str]:
    """history.csv columns for a task, in order."""
    return ["epoch", "train_loss", "val_loss", *(f"val_{m}" for m in METRICS[task]), "lr", "epoch_seconds"]
