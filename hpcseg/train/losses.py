"""Losses from ``training.loss``: a weighted sum of dice, focal, ce and weighted_ce.

Logits follow the convention of :mod:`hpcseg.train.models`: binary segmentation has one logit channel
(sigmoid), multiclass K channels (softmax), classification (B, K). Targets are long with -1 = ignore;
ignored pixels contribute nothing to any component. Dice and focal are MONAI's; Dice is computed over
the whole batch (``batch=True``), as the seed's Keras dice did, so an image without beads does not
produce a meaningless per-image ratio.

Weights: weighted_ce's class weights come from the job (a list, or a scheme over the training pixels:
:func:`resolve_class_weights`); a source may add a per-pixel weight map (e.g. a dataset's annotation
confidence), which scales each pixel's term in ce, weighted_ce and focal (:data:`PIXEL_WEIGHTED`).
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
LossFn = Callable[..., Tensor]  # (logits, target, weight=None) -> scalar

#: Components that take a per-pixel (per-sample) weight. Dice is a ratio of sums over the batch, not a mean
#: of per-pixel terms, so a pixel weight has no one meaning there: it counts every labelled pixel once.
PIXEL_WEIGHTED = ("focal", "ce", "weighted_ce")


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


def log_class_weights(counts: np.ndarray, c: float = 1.03, clip: tuple[float, float] | None = None) -> np.ndarray:
    """ENet's ``1 / ln(c + f)``, as the marine-debris benchmark's code weighs (f: the class's share of the
    labelled training pixels): bounded by 1/ln(c) for a vanishing class, so rare classes are lifted far less
    steeply than by 1/f."""
    counts = np.asarray(counts, dtype=np.float64)
    freq = counts / counts.sum() if counts.sum() > 0 else np.zeros_like(counts)
    w = 1.0 / np.log(c + freq)
    return np.clip(w, clip[0], clip[1]) if clip is not None else w


def needs_class_counts(spec: JobSpec) -> bool:
    """Whether :func:`build_loss` needs the training split's class counts (weights computed from pixels)."""
    cfg = spec.training.loss
    return "weighted_ce" in cfg.components and isinstance(cfg.class_weights, str)


def resolve_class_weights(spec: JobSpec, class_counts: np.ndarray | None) -> np.ndarray:
    """weighted_ce's class weights: the job's list, or its scheme over ``class_counts``."""
    cfg = spec.training.loss
    if not isinstance(cfg.class_weights, str):
        return np.asarray(cfg.class_weights, dtype=np.float64)
    if class_counts is None:
        raise ValueError("weighted_ce needs the training split's class counts")
    if cfg.class_weights == "inverse_log_frequency":
        return log_class_weights(class_counts, cfg.class_weight_c, cfg.class_weight_clip)
    return class_weights(class_counts, cfg.class_weight_clip)


class Loss:
    """``loss(logits, target, weight=None) -> scalar``: the job's weighted sum of components.

    ``weight`` (optional, shaped like ``target``) scales each pixel's term in the components of
    :data:`PIXEL_WEIGHTED`: each is a weighted mean, sum(w·l)/sum(w), so a pixel of weight 0.5 counts half
    as much as one of weight 1. ``class_weights`` records what weighted_ce uses (for train.log, result.json)."""

    def __init__(self, parts: list[tuple[str, float, LossFn]], class_weights: np.ndarray | None = None):
        self.parts = parts
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def __call__(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        logits = logits.float()
        if weight is not None:
            weight = weight.float()
        total = None
        for name, factor, fn in self.parts:
            term = factor * (fn(logits, target, weight) if name in PIXEL_WEIGHTED else fn(logits, target))
            total = term if total is None else total + term
        return total


def build_loss(spec: JobSpec, class_counts: np.ndarray | None = None) -> Loss:
    """The job's loss; ``class_counts`` (training split) is needed by weighted_ce when its class weights are
    computed from the pixels (:func:`needs_class_counts`)."""
    cfg = spec.training.loss
    task = spec.workload.task
    parts: list[tuple[str, float, LossFn]] = []
    used_weights = None
    for name, weight in cfg.components.items():
        if name == "dice":
            if task == "classification":
                raise HpcsegError("loss dice needs a segmentation task; use ce or focal for classification")
            parts.append((name, weight, _dice(task)))
        elif name == "focal":
            parts.append((name, weight, _focal(task, cfg.focal_gamma, cfg.focal_alpha)))
        elif name == "ce":
            parts.append((name, weight, _ce(task, None, cfg.label_smoothing)))
        elif name == "weighted_ce":
            used_weights = resolve_class_weights(spec, class_counts)
            w = torch.as_tensor(used_weights, dtype=torch.float32)
            parts.append((name, weight, _ce(task, w, cfg.label_smoothing)))
    return Loss(parts, used_weights)


def _weighted_mean(per_pixel: Tensor, valid: Tensor, weight: Tensor | None) -> Tensor:
    """sum(w·l)/sum(w) over the labelled pixels, w = the pixel weight (1 without one)."""
    w = valid.float() if weight is None else valid.float() * weight
    return (per_pixel * w).sum() / w.sum().clamp_min(1e-12 if weight is not None else 1.0)


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

        def binary(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
            per_pixel = fn(logits, target[:, None].clamp_min(0).float())
            return _weighted_mean(per_pixel, (target >= 0)[:, None], None if weight is None else weight[:, None])

        return binary
    fn = FocalLoss(gamma=gamma, alpha=alpha, use_softmax=True, to_onehot_y=True, reduction="none")

    def multi(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        if logits.ndim == 2:  # classification: add a 1x1 "image"
            logits, target = logits[..., None, None], target[..., None, None]
            weight = None if weight is None else weight[..., None, None]
        per_pixel = fn(logits, target[:, None].clamp_min(0)).sum(dim=1, keepdim=True)
        return _weighted_mean(per_pixel, (target >= 0)[:, None], None if weight is None else weight[:, None])

    return multi


def _ce(task: str, weight: Tensor | None, smoothing: float) -> LossFn:
    """Cross-entropy (BCE for the one-logit binary case); with ``weight`` a weighted mean over pixels,
    sum(w·l)/sum(w), the same normalisation torch uses for weighted multiclass CE. A pixel weight multiplies
    into w."""
    if task == "binary_segmentation":
        def binary(logits: Tensor, target: Tensor, pixel_weight: Tensor | None = None) -> Tensor:
            valid = target >= 0
            t = target.clamp_min(0).float()
            soft = t * (1 - smoothing) + 0.5 * smoothing
            per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], soft, reduction="none")
            w = valid.float()
            if weight is not None:
                w = w * weight.to(logits.device)[target.clamp_min(0)]
            if pixel_weight is not None:
                w = w * pixel_weight
            return (per_pixel * w).sum() / w.sum().clamp_min(1e-12)

        return binary

    def multi(logits: Tensor, target: Tensor, pixel_weight: Tensor | None = None) -> Tensor:
        w = None if weight is None else weight.to(logits.device)
        if pixel_weight is None:
            return F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE, label_smoothing=smoothing)
        # torch's weighted mean, sum(w[t]·l)/sum(w[t]), with the pixel weight in both sums
        per_pixel = F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE, label_smoothing=smoothing,
                                    reduction="none")
        valid = (target >= 0).float()
        denom = valid if w is None else valid * w[target.clamp_min(0)]
        return (per_pixel * pixel_weight).sum() / (denom * pixel_weight).sum().clamp_min(1e-12)

    return multi
