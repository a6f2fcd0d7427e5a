"""Hyperspectral tissue cores (seed 000): per-core patch sampling with tissue and foreground filters.

Items are cores (``ROOT/cores/<core>.npy|.mat|.hdr`` (H, W, bands) cubes, see ``cubes.py``, +
``ROOT/labels/<core>.npy`` (H, W)
int; -1 no tissue, 0 background, 1..K-1 tissue classes). The seed's finding was that a global patch cap
starved most cores and that patches of empty slide taught nothing, hence:

* training: every epoch draws ``options.patches_per_core`` patches from every training core, only at
  positions whose tissue fraction (label >= 0) is >= ``options.min_tissue`` and whose foreground
  fraction (label >= 1) is >= ``options.min_foreground``; ``training.samples_per_epoch`` caps the
  epoch's total. Positions are a pure function of (seed, epoch, core), so a requeued epoch redraws the
  same patches.
* validation: a fixed grid of non-overlapping patches over each core, kept where tissue >= min_tissue,
  so every epoch scores the same pixels (and most of each core).

Cubes are memory-mapped where the format allows (a compressed .mat is loaded, or read by chunk): a
patch reads only its rows, so hundreds of 128-band cores fit.
Bands are normalised with per-band mean/std over the tissue pixels of the *training* cores only
(:meth:`HyperspectralSource.prepare`), so validation statistics never leak into training.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from hpcseg.errors import HpcsegError
from hpcseg.layouts import index_dataset
from hpcseg.spec import JobSpec
from hpcseg.train.loop import Trainer as _Trainer
from hpcseg.train.source import Source, augment, epoch_order, rng_for
from hpcseg.workloads.hyperspectral.cubes import open_cube

log = logging.getLogger("hpcseg.train")


@dataclass(frozen=True)
class PatchRule:
    """Which patch positions are usable: size and the two minimum fractions."""

    size: int
    min_tissue: float = 0.0
    min_foreground: float = 0.0


def _window_fraction(mask: np.ndarray, size: int) -> np.ndarray:
    """Fraction of True pixels in every size x size window, indexed by the window's top-left corner."""
    ii = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    ii[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    s = ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size]
    return s / float(size * size)


def valid_positions(label: np.ndarray, rule: PatchRule) -> np.ndarray:
    """(n, 2) top-left corners (row, col) of every patch that passes both filters; empty if none."""
    h, w = label.shape
    if h < rule.size or w < rule.size:
        return np.zeros((0, 2), dtype=np.int64)
    ok = (_window_fraction(label >= 0, rule.size) >= rule.min_tissue) & \
         (_window_fraction(label >= 1, rule.size) >= rule.min_foreground)
    return np.argwhere(ok).astype(np.int64)


def patch_passes(label_patch: np.ndarray, rule: PatchRule) -> bool:
    """The filter for one patch (what :func:`valid_positions` computes for all positions at once)."""
    n = label_patch.size
    return bool((label_patch >= 0).sum() / n >= rule.min_tissue and (label_patch >= 1).sum() / n >= rule.min_foreground)


def grid_positions(label: np.ndarray, size: int, min_tissue: float) -> np.ndarray:
    """Non-overlapping tiles covering the core (the last row/column flush with the edge), kept where
    tissue >= min_tissue: the fixed validation set."""
    h, w = label.shape
    if h < size or w < size:
        return np.zeros((0, 2), dtype=np.int64)
    rows = sorted({*range(0, h - size + 1, size), h - size})
    cols = sorted({*range(0, w - size + 1, size), w - size})
    out = [(r, c) for r in rows for c in cols if (label[r:r + size, c:c + size] >= 0).mean() >= min_tissue]
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def band_stats(cubes: list[np.ndarray], masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std over the masked pixels of (H, W, bands) cubes, streamed in float64."""
    bands = cubes[0].shape[-1]
    s, ss, n = np.zeros(bands), np.zeros(bands), 0
    for cube, m in zip(cubes, masks, strict=True):
        for r in range(0, cube.shape[0], 64):  # row blocks: bounded memory on big memory-mapped cores
            px = np.asarray(cube[r:r + 64], dtype=np.float64)[m[r:r + 64]]
            px = px[np.isfinite(px).all(axis=1)]
            s += px.sum(0)
            ss += (px * px).sum(0)
            n += len(px)
    if n == 0:
        return np.zeros(bands, np.float32), np.ones(bands, np.float32)
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0))
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


class HyperspectralSource(Source):
    def __init__(self, spec: JobSpec, device: torch.device):
        ds = spec.workload.dataset
        if ds.image_size[0] != ds.image_size[1]:
            raise HpcsegError(f"hyperspectral patches are square; got image_size {ds.image_size}")
        options = _model_options(spec)
        self.spec, self.device, self.task = spec, device, spec.workload.task
        self.num_classes = ds.num_classes
        self.rule = PatchRule(int(ds.image_size[0]), float(options.get("min_tissue", 0.0)),
                              float(options.get("min_foreground", 0.0)))
        self.patches_per_core = int(options.get("patches_per_core", 8))
        self.cap = spec.training.samples_per_epoch
        index = index_dataset(spec, strata=False)
        self._names = list(index.names)
        self.cubes: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        problems = []
        for name, (cube_path, label_path) in zip(index.names, index.files, strict=True):
            cube = open_cube(cube_path)
            label = np.load(label_path, allow_pickle=False)
            if cube.ndim != 3 or label.shape != cube.shape[:2]:
                problems.append(f"{name}: cube {cube.shape} and label {label.shape} do not match (H, W, bands)")
            elif cube.shape[-1] != ds.channels:
                problems.append(f"{name}: {cube.shape[-1]} bands, but dataset.channels is {ds.channels}")
            elif label.max(initial=-1) >= ds.num_classes or label.min(initial=0) < -1:
                problems.append(f"{name}: labels outside -1..{ds.num_classes - 1}")
            self.cubes.append(cube)
            self.labels.append(label.astype(np.int64))
        if problems:
            raise HpcsegError(f"{ds.root}: {len(problems)} core(s) do not fit the job", problems=problems[:10])
        self.in_channels = ds.channels
        self._valid = [valid_positions(lab, self.rule) for lab in self.labels]
        self._grid = [grid_positions(lab, self.rule.size, self.rule.min_tissue) for lab in self.labels]
        self.mean: Tensor | None = None
        self.std: Tensor | None = None
        self._stats_for: bytes | None = None

    # -------------------------------------------------------------------------------------- protocol

    def names(self) -> list[str]:
        return list(self._names)

    def describe(self) -> str:
        empty = [n for n, v in zip(self._names, self._valid, strict=True) if len(v) == 0]
        note = f"; {len(empty)} core(s) have no patch passing the filters ({', '.join(empty[:3])})" if empty else ""
        return (f"HyperspectralSource: {len(self._names)} cores, {self.in_channels} bands, "
                f"{self.rule.size}px patches, {self.patches_per_core}/core, tissue >= {self.rule.min_tissue}, "
                f"foreground >= {self.rule.min_foreground}{note}")

    def prepare(self, train_indices: np.ndarray) -> None:
        """Per-band normalisation from the training cores' tissue pixels. Idempotent per index set."""
        idx = np.unique(np.asarray(train_indices, dtype=np.int64))
        key = idx.tobytes()
        if key == self._stats_for:
            return
        mean, std = band_stats([self.cubes[i] for i in idx], [self.labels[i] >= 0 for i in idx])
        self.mean = torch.from_numpy(mean).to(self.device).view(1, -1, 1, 1)
        self.std = torch.from_numpy(std).to(self.device).view(1, -1, 1, 1)
        self._stats_for = key

    def patches(self, indices: np.ndarray, *, train: bool, epoch: int, seed: int) -> np.ndarray:
        """(n, 3) rows of (core position, row, col): this epoch's training draw, or the fixed val grid."""
        out = []
        for i in np.asarray(indices, dtype=np.int64):
            if train:
                cand = self._valid[i]
                if len(cand) == 0:
                    continue
                rng = rng_for(seed, epoch, int(i), 11)
                pick = rng.choice(len(cand), self.patches_per_core, replace=len(cand) < self.patches_per_core)
                chosen = cand[pick]
            else:
                chosen = self._grid[i]
            out.append(np.column_stack([np.full(len(chosen), i), chosen]))
        rows = np.concatenate(out) if out else np.zeros((0, 3), dtype=np.int64)
        if train:
            rows = rows[epoch_order(len(rows), seed, epoch, shuffle=True)]
            if self.cap is not None:
                rows = rows[: self.cap]
        return rows

    def num_batches(self, indices: np.ndarray, batch_size: int, *, train: bool) -> int:
        # The count does not depend on the epoch: every core with a valid position gives patches_per_core.
        return math.ceil(len(self.patches(indices, train=train, epoch=0, seed=0)) / batch_size)

    def batches(self, indices: np.ndarray, batch_size: int, *, train: bool, epoch: int, seed: int,
                start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        if train:
            self.prepare(indices)
        elif self.mean is None:
            log.warning("hyperspectral: validation before any training batch; normalising with all cores")
            self.prepare(np.arange(len(self._names)))
        rows = self.patches(indices, train=train, epoch=epoch, seed=seed)
        p = self.rule.size
        for b in range(start_batch, math.ceil(len(rows) / batch_size)):
            chunk = rows[b * batch_size:(b + 1) * batch_size]
            x = np.stack([np.asarray(self.cubes[i][r:r + p, c:c + p], dtype=np.float32) for i, r, c in chunk])
            y = np.stack([self.labels[i][r:r + p, c:c + p] for i, r, c in chunk])
            xt = torch.from_numpy(x).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            xt = torch.nan_to_num((xt - self.mean) / self.std)
            yt = torch.from_numpy(y).to(self.device, non_blocking=True)
            if train:
                xt, yt = augment(xt, yt, self.spec.training.augmentation, rng_for(seed, epoch, b, 1))
            yield xt.contiguous(), yt

    def class_counts(self, indices: np.ndarray) -> np.ndarray:
        """Labelled pixels per class over the whole label maps of ``indices`` (not just patches)."""
        k = max(self.num_classes, 2)
        counts = np.zeros(k, dtype=np.int64)
        for i in np.asarray(indices, dtype=np.int64):
            lab = self.labels[i]
            counts += np.bincount(lab[lab >= 0], minlength=k)[:k]
        return counts


def _model_options(spec: JobSpec) -> dict:
    """Sampling options live in the model's ``options`` (as in the seed job); with several models the
    first model that sets them wins, since the data pipeline is shared by every model of the job."""
    for m in spec.workload.models:
        if any(k in m.options for k in ("patches_per_core", "min_tissue", "min_foreground")):
            return dict(m.options)
    return {}


def build(spec: JobSpec, device: torch.device) -> Source:
    return HyperspectralSource(spec, device)


# ------------------------------------------------------------------------------------------ trainer

class Trainer(_Trainer):
    """The generic loop, plus one line on which Mamba implementation runs: the fused mamba-ssm kernels
    and the pure-PyTorch scan give the same numbers at very different speeds, so a slow run (or a
    container built without mamba-ssm) must be visible in train.log and result.json."""

    def setup(self) -> None:
        super().setup()
        from hpcseg.workloads.hyperspectral.models_ssmu import mamba_path, uses_mamba

        if uses_mamba(self.bare_model):
            path = mamba_path(self.device)
            self.info.setdefault("model_details", {})["mamba"] = path
            log.info("mamba: %s", path)
