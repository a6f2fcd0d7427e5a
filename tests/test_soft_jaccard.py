"""The Keras-compatible soft Jaccard (seed 004's ``jacard_coef``) beside the hard IoU."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from hpcseg.columns import columns  # noqa: E402
from hpcseg.train.metrics import ConfusionMeter, SoftJaccardMean, soft_jaccard  # noqa: E402


def logits(p: list) -> torch.Tensor:
    """(B, 1, H, W) logits whose sigmoid is ``p`` (B, H, W)."""
    t = torch.tensor(p, dtype=torch.float64)
    return torch.log(t / (1 - t)).unsqueeze(1)


# Batch A: one 2x2 image. Σ y·p = 0.8 + 0.6 + 0.5 = 1.9, Σ y = 3, Σ p = 2.1 -> (1.9 + 1) / (3 + 2.1 - 1.9 + 1)
A_P, A_Y = [[[0.8, 0.2], [0.6, 0.5]]], [[[1, 0], [1, 1]]]
A_J = 2.9 / 4.2
# Batch B: two 2x2 images, summed over the whole batch (Keras flattens it): Σ y·p = 0.9 + 0.7 = 1.6,
# Σ y = 2, Σ p = 0.4 + 2.0 = 2.4 -> 2.6 / 3.8. (The mean of per-image scores would be 0.739: not this.)
B_P = [[[0.1, 0.1], [0.1, 0.1]], [[0.9, 0.7], [0.3, 0.1]]]
B_Y = [[[0, 0], [0, 0]], [[1, 1], [0, 0]]]
B_J = 2.6 / 3.8


def test_soft_jaccard_of_a_batch_is_the_keras_formula_over_the_whole_batch() -> None:
    assert soft_jaccard(logits(A_P), torch.tensor(A_Y)).item() == pytest.approx(A_J, abs=1e-6)
    assert soft_jaccard(logits(B_P), torch.tensor(B_Y)).item() == pytest.approx(B_J, abs=1e-6)
    per_image = [soft_jaccard(logits([p]), torch.tensor([y])).item() for p, y in zip(B_P, B_Y, strict=True)]
    assert sum(per_image) / 2 == pytest.approx((1 / 1.4 + 2.6 / 3.4) / 2, abs=1e-6)
    assert abs(sum(per_image) / 2 - B_J) > 0.05


def test_an_empty_target_and_prediction_score_one_and_ignored_pixels_count_nowhere() -> None:
    empty = torch.full((1, 1, 3, 3), -30.0)  # p ~ 0 everywhere, no foreground: (0 + 1) / (0 + 0 - 0 + 1)
    assert soft_jaccard(empty, torch.zeros(1, 3, 3, dtype=torch.long)).item() == pytest.approx(1.0, abs=1e-9)
    y = torch.tensor(A_Y)
    y_ignored = torch.cat((y, torch.full((1, 2, 1), -1)), dim=2)  # a third column of ignore pixels
    p_ignored = torch.cat((logits(A_P), torch.full((1, 1, 2, 1), 5.0, dtype=torch.float64)), dim=3)
    assert soft_jaccard(p_ignored, y_ignored).item() == pytest.approx(A_J, abs=1e-6)


def test_the_epoch_value_is_the_mean_over_batches_as_keras_averages_a_metric() -> None:
    """Keras' MeanMetricWrapper adds each batch's scalar with weight 1: not pooled, not size-weighted."""
    mean = SoftJaccardMean()
    mean.update(logits(A_P), torch.tensor(A_Y))
    mean.update(logits(B_P), torch.tensor(B_Y))
    keras = (A_J + B_J) / 2
    assert mean.compute() == pytest.approx(keras, abs=1e-6)
    pooled = (1.9 + 1.6 + 1) / (5 + 4.5 - 3.5 + 1)
    size_weighted = (A_J + 2 * B_J) / 3
    assert abs(keras - pooled) > 1e-3 and abs(keras - size_weighted) > 1e-4
    assert math.isnan(SoftJaccardMean().compute())  # no batch: no value, not a fake 0 or 1


def test_validation_meter_reports_soft_beside_hard_jaccard() -> None:
    meter = ConfusionMeter("binary_segmentation", 2)
    meter.update(logits(A_P).float(), torch.tensor(A_Y))
    meter.update(logits(B_P).float(), torch.tensor(B_Y))
    m = meter.compute()
    assert m["jaccard_soft"] == pytest.approx((A_J + B_J) / 2, abs=1e-6)
    # hard IoU at p > 0.5 over both batches: predicted {0.8, 0.6, 0.9, 0.7}, target 5 pixels -> 4 / 5
    assert m["jaccard"] == pytest.approx(4 / 5)
    multi = ConfusionMeter("multiclass_segmentation", 3)
    multi.update(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    assert "jaccard_soft" not in multi.compute()


def test_history_has_train_and_val_soft_jaccard_columns_for_binary_tasks_only() -> None:
    binary = columns("binary_segmentation")
    assert binary[-4:] == ["train_jaccard_soft", "val_jaccard_soft", "lr", "epoch_seconds"]
    assert binary.index("val_jaccard") < binary.index("val_jaccard_soft")
    for task in ("multiclass_segmentation", "classification"):
        assert not any("soft" in c for c in columns(task))
