"""The columns of history.csv per task: a torch-free home, so ``hpcseg check`` can tell whether
``collection.metric`` names a column the trainer will write, without importing the trainer.

hpcseg/train/metrics.py computes these metrics (without the ``val_`` / ``train_`` prefix) and re-exports
both names. ``jaccard`` is the hard IoU of thresholded predictions over the whole validation set;
``jaccard_soft`` is the Keras ``jacard_coef`` the seeds logged, on probabilities, per batch, averaged over
the epoch's batches (train and validation), so a Keras history compares like with like.
"""

from __future__ import annotations

METRICS: dict[str, tuple[str, ...]] = {
    "binary_segmentation": ("jaccard", "dice", "precision", "recall", "jaccard_soft"),
    "multiclass_segmentation": ("miou", "mdice", "pixel_accuracy"),
    "classification": ("accuracy", "balanced_accuracy", "macro_f1"),
}
# Metrics also logged on the training batches (as Keras does for every compiled metric), as train_<name>;
# each is one of the task's METRICS too.
TRAIN_METRICS: dict[str, tuple[str, ...]] = {
    "binary_segmentation": ("jaccard_soft",),
}
SOFT_JACCARD = "jaccard_soft"  # Keras `jacard_coef` / `jaccard_coef` (hpcseg.train.metrics.soft_jaccard)


def columns(task: str) -> list[str]:
    """history.csv columns for a task, in order: the validation-only metrics first (their places predate
    the soft Jaccard), then each train_/val_ pair of a metric logged on both."""
    both = TRAIN_METRICS.get(task, ())
    return ["epoch", "train_loss", "val_loss", *(f"val_{m}" for m in METRICS[task] if m not in both),
            *(c for m in both for c in (f"train_{m}", f"val_{m}")), "lr", "epoch_seconds"]
