"""Data sources: the one interface the runner trains from, their registry, and shared batch augmentation.

A :class:`Source` holds a workload's data (small datasets as tensors on the training device) and yields
ready batches. Batch order and augmentation are a pure function of ``(seed, epoch, batch position)``,
never of hidden iterator state, so an epoch interrupted after batch ``b`` is resumed exactly by asking
for ``start_batch=b``: that is what makes a requeued task reproduce an uninterrupted one.

:data:`SOURCES` maps ``dataset.layout`` to a lazily imported ``"module:function"`` (each workload's
``train.py``, named by hpcseg.workloads.registry) with the signature
``build(spec: JobSpec, device: torch.device) -> Source``. Items (what the split indexes: images, or
tissue cores) are listed by :meth:`Source.names` in the order of
``hpcseg.layouts.index_dataset(spec).names``.

Batches: ``x`` float (B, C, H, W), normalised; ``y`` long (B, H, W) with -1 = ignore for segmentation,
or (B,) for classification. :meth:`Source.weighted_batches` adds ``w``: a float per-pixel (per-sample) loss
weight shaped like ``y``, moved by augmentation exactly as ``y`` is, or None when every labelled pixel counts
once. The trainer asks for those; everything else (metrics, threshold tuning) reads plain batches.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hpcseg.spec import AugmentationSpec, JobSpec
from hpcseg.workloads import registry

SOURCES: dict[str, str] = registry.sources()

IGNORE = -1


def build(spec: JobSpec, device: torch.device) -> Source:
    """The registered source for ``spec.workload.dataset.layout``."""
    from hpcseg.train.models import resolve

    layout = spec.workload.dataset.layout
    return resolve(SOURCES[layout], f"dataset layout {layout}")(spec, device)


def rng_for(seed: int, epoch: int, batch: int, stream: int) -> np.random.Generator:
    """A generator that depends only on its arguments: the basis of exact mid-epoch resume."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, batch, stream])


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """A torch seed for one training step (dropout), again a pure function of the position."""
    return int(rng_for(seed, epoch, batch, 7).integers(0, 2**62))


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Positions 0..n-1 in this epoch's order."""
    return rng_for(seed, epoch, 0, 0).permutation(n) if shuffle else np.arange(n)


class Source(ABC):
    """What the runner needs from a workload. Subclasses set the four attributes in ``__init__``."""

    task: str  # spec.workload.task
    in_channels: int
    num_classes: int
    device: torch.device

    @abstractmethod
    def names(self) -> list[str]:
        """Item names, in the order of ``hpcseg.layouts.index_dataset(spec).names``."""

    @abstractmethod
    def batches(self, indices: np.ndarray, batch_size: int, *, train: bool, epoch: int, seed: int,
                start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches over the items ``indices`` (positions in :meth:`names`). ``train``: shuffled and
        augmented; otherwise in order, unaugmented. Batches before ``start_batch`` are skipped without work."""

    def weighted_batches(self, indices: np.ndarray, batch_size: int, *, train: bool, epoch: int, seed: int,
                         start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """:meth:`batches` with each batch's loss weights (module docstring); None unless a source has them."""
        for x, y in self.batches(indices, batch_size, train=train, epoch=epoch, seed=seed, start_batch=start_batch):
            yield x, y, None

    def has_pixel_weights(self) -> bool:
        """Whether :meth:`weighted_batches` yields weights (for the log: which loss terms they reach)."""
        return False

    def prepare(self, train_indices: np.ndarray) -> None:
        """Called once by the runner with the fold's training items before any batch: the place for
        statistics that must come from training data only (normalisation). Must be idempotent."""
        return None

    def num_batches(self, indices: np.ndarray, batch_size: int, *, train: bool) -> int:
        """How many batches :meth:`batches` yields (sources that sample patches override this)."""
        return math.ceil(len(indices) / batch_size)

    def class_counts(self, indices: np.ndarray) -> np.ndarray:
        """Labelled pixels (or samples) per class over ``indices``, for inverse-frequency class weights."""
        counts = torch.zeros(max(self.num_classes, 2), dtype=torch.long, device=self.device)
        for _, y in self.batches(indices, 64, train=False, epoch=0, seed=0):
            y = y[y >= 0]
            counts += torch.bincount(y.reshape(-1), minlength=counts.numel())[: counts.numel()]
        return counts.cpu().numpy()

    def describe(self) -> str:
        """One line for the log."""
        return f"{type(self).__name__}: {len(self.names())} items, {self.in_channels} channels"

    def extra_results(self, model: torch.nn.Module, indices: np.ndarray, batch_size: int,
                      out_dir: Path | None = None) -> dict:
        """Anything workload-specific for result.json's ``extra`` (e.g. calibration), computed with the
        best weights on the validation items at the end of training; files (plots) go under ``out_dir``,
        the task folder."""
        return {}


class TensorSource(Source):
    """A source whose whole dataset is two tensors on the device: x (N, C, H, W) float, y (N, H, W) or (N,),
    and optionally w, per-pixel loss weights shaped like y.

    Batches are index_select on the device and augmentation runs on the device, so a step costs no host
    work and no transfers. Workloads with in-memory datasets subclass this; a subclass that changes batches
    overrides :meth:`weighted_batches` (``batches`` is that without the weights).
    """

    def __init_subclass__(cls, **kwargs) -> None:
        # The trainer reads weighted_batches; a subclass that changed only batches would be silently skipped.
        super().__init_subclass__(**kwargs)
        if "batches" in vars(cls) and "weighted_batches" not in vars(cls):
            raise TypeError(f"{cls.__name__} overrides TensorSource.batches; override weighted_batches instead "
                            f"(batches is weighted_batches without the weights)")

    def __init__(self, spec: JobSpec, names: list[str], x: Tensor, y: Tensor, device: torch.device,
                 w: Tensor | None = None):
        if len(names) != x.shape[0] or x.shape[0] != y.shape[0]:
            raise ValueError(f"{len(names)} names, {x.shape[0]} images, {y.shape[0]} labels")
        if w is not None and w.shape != y.shape:
            raise ValueError(f"pixel weights of shape {tuple(w.shape)} for labels of shape {tuple(y.shape)}")
        self.spec = spec
        self.task = spec.workload.task
        self.in_channels = int(x.shape[1])
        self.num_classes = spec.workload.dataset.num_classes
        self.device = device
        self.aug = spec.training.augmentation
        self._names = list(names)
        self.x = x.to(device)
        self.y = y.to(device)
        self.w = None if w is None else w.to(device)

    def names(self) -> list[str]:
        return list(self._names)

    def has_pixel_weights(self) -> bool:
        return self.w is not None

    def batches(self, indices: np.ndarray, batch_size: int, *, train: bool, epoch: int, seed: int,
                start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y, _ in self.weighted_batches(indices, batch_size, train=train, epoch=epoch, seed=seed,
                                             start_batch=start_batch):
            yield x, y

    def weighted_batches(self, indices: np.ndarray, batch_size: int, *, train: bool, epoch: int, seed: int,
                         start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        indices = np.asarray(indices, dtype=np.int64)
        order = indices[epoch_order(len(indices), seed, epoch, shuffle=train)]
        for b in range(start_batch, math.ceil(len(order) / batch_size)):
            sel = torch.from_numpy(order[b * batch_size:(b + 1) * batch_size]).to(self.device, non_blocking=True)
            x = self.x.index_select(0, sel)
            y = self.y.index_select(0, sel).long()
            w = None if self.w is None else self.w.index_select(0, sel).float()
            if train:
                x, y, w = augment_weighted(x, y, w, self.aug, rng_for(seed, epoch, b, 1))
            yield x, y, w

    def class_counts(self, indices: np.ndarray) -> np.ndarray:
        sel = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=self.device)
        y = self.y.index_select(0, sel).long().reshape(-1)
        y = y[y >= 0]
        return torch.bincount(y, minlength=max(self.num_classes, 2)).cpu().numpy()


# --------------------------------------------------------------------------------------------- augmentation


def augment(x: Tensor, y: Tensor, aug: AugmentationSpec, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Random flips, quarter turns, a rotation within ±rotate_degrees and colour jitter, per sample.

    The same geometric transform is applied to image and mask (masks by nearest sampling, so labels
    stay labels); classification targets (y of shape (B,)) pass through. Parameters are drawn on the
    host from ``rng`` (a few numbers per sample), the pixels are transformed on x's device.
    """
    x, y, _ = augment_weighted(x, y, None, aug, rng)
    return x, y


def augment_weighted(x: Tensor, y: Tensor, w: Tensor | None, aug: AugmentationSpec,
                     rng: np.random.Generator) -> tuple[Tensor, Tensor, Tensor | None]:
    """:func:`augment` with per-pixel weights ``w`` (shaped like y) moved exactly as y is: the same draws
    from ``rng``, the same pixel moves (nearest sampling under a free rotation), so a weight stays on its
    pixel's label and x, y come out as :func:`augment` makes them."""
    n = x.shape[0]
    seg = y.ndim == 3
    hflip = rng.random(n) < 0.5 if aug.hflip else np.zeros(n, bool)
    vflip = rng.random(n) < 0.5 if aug.vflip else np.zeros(n, bool)
    square = x.shape[-1] == x.shape[-2]
    k90 = rng.integers(0, 4, n) if aug.rot90 and square else np.zeros(n, np.int64)
    angle = rng.uniform(-aug.rotate_degrees, aug.rotate_degrees, n) if aug.rotate_degrees > 0 else np.zeros(n)
    jitter = rng.uniform(-aug.color_jitter, aug.color_jitter, (n, 3)) if aug.color_jitter > 0 else None

    if aug.rotate_degrees > 0:
        x, y, w = _affine(x, y, w, seg, hflip, vflip, k90, angle)
    else:
        x, y, w = _flip_rot90(x, y, w, hflip, vflip, k90, seg)
    if jitter is not None:
        x = _jitter(x, torch.as_tensor(jitter, dtype=x.dtype, device=x.device))
    return x, y, w


def _select(flags: np.ndarray, device: torch.device) -> Tensor:
    return torch.as_tensor(flags, device=device).view(-1, *([1] * 3))


def _flip_rot90(x: Tensor, y: Tensor, w: Tensor | None, hflip: np.ndarray, vflip: np.ndarray, k90: np.ndarray,
                seg: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Exact pixel moves (no resampling) when there is no free rotation."""
    def apply(t: Tensor, dims_w: int, dims_h: int, four_d: bool) -> Tensor:
        view = (lambda f: _select(f, t.device)) if four_d else (lambda f: _select(f, t.device)[:, 0])
        if hflip.any():
            t = torch.where(view(hflip), t.flip(dims_w), t)
        if vflip.any():
            t = torch.where(view(vflip), t.flip(dims_h), t)
        for k in (1, 2, 3):
            if (k90 == k).any():
                t = torch.where(view(k90 == k), torch.rot90(t, k, (dims_h, dims_w)), t)
        return t

    x = apply(x, 3, 2, True)
    if seg:
        y = apply(y, 2, 1, False)
        w = None if w is None else apply(w, 2, 1, False)
    return x, y, w


def _affine(x: Tensor, y: Tensor, w: Tensor | None, seg: bool, hflip: np.ndarray, vflip: np.ndarray,
            k90: np.ndarray, angle: np.ndarray) -> tuple[Tensor, Tensor, Tensor | None]:
    """Flips, quarter turns and the rotation composed into one sampling grid per sample; reflection
    padding so corners hold plausible pixels (and matching labels) rather than an artificial border."""
    n = x.shape[0]
    theta = np.deg2rad(angle + 90.0 * k90)
    cos, sin = np.cos(theta), np.sin(theta)
    sx = np.where(hflip, -1.0, 1.0)
    sy = np.where(vflip, -1.0, 1.0)
    mats = np.zeros((n, 2, 3))
    mats[:, 0, 0], mats[:, 0, 1] = cos * sx, -sin * sy
    mats[:, 1, 0], mats[:, 1, 1] = sin * sx, cos * sy
    mat = torch.as_tensor(mats, dtype=torch.float32, device=x.device)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    xo = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False).to(x.dtype)
    if not seg:
        return xo, y, w
    yo = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="reflection", align_corners=False)
    if w is not None:  # the same grid and nearest sampling: each weight lands where its label lands
        w = F.grid_sample(w[:, None].float(), grid, mode="nearest", padding_mode="reflection",
                          align_corners=False)[:, 0].to(w.dtype)
    return xo, yo[:, 0].round().to(y.dtype), w


def _jitter(x: Tensor, j: Tensor) -> Tensor:
    """Brightness and contrast per sample, and saturation for RGB, in normalised units."""
    brightness = j[:, 0].view(-1, 1, 1, 1)
    contrast = (1.0 + j[:, 1]).view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + brightness
    if x.shape[1] == 3:
        gray = x.mean(dim=1, keepdim=True)
        x = gray + (x - gray) * (1.0 + j[:, 2]).view(-1, 1, 1, 1)
    return x
