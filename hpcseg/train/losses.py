"""Losses from ``training.loss``: a weighted sum of dice, focal, ce and weighted_ce.

Logits follow the convention of :mod:`hpcseg.train.models`: binary segmentation has one logit channel
(sigmoid), multiclass K channels (softmax), classification (B, K). Targets are long with -1 = ignore;
ignored pixels contribute nothing to any component. Dice and focal are MONAI's; Dice is computed over
the whole batch (``batch=True``), as the seed's Keras dice did, so an image without beads does not
produce a meaningless per-image ratio.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hpcseg.errors import HpcsegError
from hpcseg.spec import JobSpec

IGNORE = -1
LossFn = Callable[[Tensor, Tensor], Tensor]


def class_weights(counts: np.ndarray, clip: tuple[float, float] | None = None) -> np.ndarray:
    """Inverse-frequency weights normalised to mean 1 over the classes present, then clipped.

    A class absent from the training split gets weight 1 (there is nothing to weigh)."""
    counts = np.asarray(counts, dtype=np.float64)
    w = np.ones_like(counts)
    present = counts > 0
    if present.any():
        freq = counts[present] / counts[present].sum()
        inv = 1.0 / freq
        w[present] = inv / inv.mean()
    if clip is not None:
        w = np.clip(w, clip[0], clip[1])
    return w


def build_loss(spec: JobSpec, class_counts: np.ndarray | None = None) -> LossFn:
    """``loss(logits, target) -> scalar``; ``class_counts`` (training split) is needed by weighted_ce."""
    cfg = spec.training.loss
    task = spec.workload.task
    parts: list[tuple[float, LossFn]] = []
    for name, weight in cfg.components.items():
        if name == "dice":
            if task == "classification":
                raise HpcsegError("loss dice needs a segmentation task; use ce or focal for classification")
            parts.append((weight, _dice(task)))
        elif name == "focal":
            parts.append((weight, _focal(task, cfg.focal_gamma, cfg.focal_alpha)))
        elif name == "ce":
            parts.append((weight, _ce(task, None, cfg.label_smoothing)))
        elif name == "weighted_ce":
            if class_counts is None:
                raise ValueError("weighted_ce needs the training split's class counts")
            w = class_weights(class_counts, cfg.class_weight_clip)
            parts.append((weight, _ce(task, torch.as_tensor(w, dtype=torch.float32), cfg.label_smoothing)))

    def loss(logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()
        total = None
        for weight, fn in parts:
            term = weight * fn(logits, target)
            total = term if total is None else total + term
        return total

    return loss


def _dice(task: str) -> LossFn:
    from monai.losses import DiceLoss

    if task == "binary_segmentation":
        fn = DiceLoss(sigmoid=True, batch=True)
        return lambda logits, target: fn(*_masked_binary(logits, target))
    fn = DiceLoss(softmax=True, to_onehot_y=True, batch=True, ignore_index=IGNORE)
    return lambda logits, target: fn(logits, target[:, None])


def _masked_binary(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Ignored pixels pushed to a certain-negative logit with a negative target: zero in every Dice sum."""
    valid = (target >= 0)[:, None]
    logits = torch.where(valid, logits, torch.full_like(logits, -1e4))
    return logits, (target[:, None].clamp_min(0) * valid).float()


def _focal(task: str, gamma: float, alpha: float | None) -> LossFn:
    from monai.losses import FocalLoss

    if task == "binary_segmentation":
        fn = FocalLoss(gamma=gamma, alpha=alpha, reduction="none")

        def binary(logits: Tensor, target: Tensor) -> Tensor:
            valid = (target >= 0)[:, None].float()
            per_pixel = fn(logits, target[:, None].clamp_min(0).float())
            return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)

        return binary
    fn = FocalLoss(gamma=gamma, alpha=alpha, use_softmax=True, to_onehot_y=True, reduction="none")

    def multi(logits: Tensor, target: Tensor) -> Tensor:
        if logits.ndim == 2:  # classification: add a 1x1 "image"
            logits, target = logits[..., None, None], target[..., None, None]
        valid = (target >= 0)[:, None].float()
        per_pixel = fn(logits, target[:, None].clamp_min(0)).sum(dim=1, keepdim=True)
        return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)

    return multi


def _ce(task: str, weight: Tensor | None, smoothing: float) -> LossFn:
    """Cross-entropy (BCE for the one-logit binary case); with ``weight`` a weighted mean over pixels,
    sum(w·l)/sum(w), the same normalisation torch uses for weighted multiclass CE."""
    if task == "binary_segmentation":
        def binary(logits: Tensor, target: Tensor) -> Tensor:
            valid = target >= 0
            t = target.clamp_min(0).float()
            soft = t * (1 - smoothing) + 0.5 * smoothing
            per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], soft, reduction="none")
            w = valid.float()
            if weight is not None:
                w = w * weight.to(logits.device)[target.clamp_min(0)]
            return (per_pixel * w).sum() / w.sum().clamp_min(1e-12)

        return binary

    def multi(logits: Tensor, target: Tensor) -> Tensor:
        w = None if weight is None else weight.to(logits.device)
        return F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE, label_smoothing=smoothing)

    return multi
