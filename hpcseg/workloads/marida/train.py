"""MARIDA marine debris (seeds 001, 003): 11-band Sentinel-2 tiles, debris vs everything else.

``ROOT/patches/**/<id>.tif`` holds an (H, W, bands) or (bands, H, W) float tile (both exports exist;
the orientation is read off the ``<id>_cl.tif`` mask's shape) with MARIDA class codes in ``_cl``. The
task is binary: code 1 (Marine Debris) is the positive class, every other code the negative, and code
0 (unlabelled, most of every MARIDA tile) becomes -1 so the loss and metrics ignore it: calling
unlabelled water "not debris" would teach the model on guesses.

The dataset (1,381 tiles of 256²) fits on the GPU, so this is a :class:`TensorSource`. Bands are
normalised per band with the mean/std of the *training* tiles (:meth:`MaridaSource.prepare`);
non-finite pixels (nodata) become 0 after normalisation. Tiles larger than ``dataset.image_size`` are
centre-cropped to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hpcseg.errors import HpcsegError
from hpcseg.images import read_image
from hpcseg.layouts import index_dataset
from hpcseg.spec import JobSpec
from hpcseg.train.source import IGNORE, TensorSource

log = logging.getLogger("hpcseg.train")

DEBRIS = 1
UNLABELLED = 0


def debris_target(codes: np.ndarray) -> np.ndarray:
    """MARIDA class codes -> int64 target: 1 debris, 0 any other labelled class, -1 unlabelled."""
    codes = np.rint(np.asarray(codes, dtype=np.float64)).astype(np.int64)
    return np.where(codes == UNLABELLED, IGNORE, (codes == DEBRIS).astype(np.int64))


def bands_first(tile: np.ndarray, mask_shape: tuple[int, ...], bands: int, where: Path) -> np.ndarray:
    """A tile as (bands, H, W), accepting (H, W, bands) and (bands, H, W) stores."""
    if tile.ndim == 2 and bands == 1:
        tile = tile[None]
    if tile.ndim != 3:
        raise HpcsegError(f"{where}: expected a multi-band tile, got shape {tile.shape}")
    if tile.shape[:2] == mask_shape and tile.shape[2] == bands:
        return np.moveaxis(tile, -1, 0)
    if tile.shape[1:] == mask_shape and tile.shape[0] == bands:
        return tile
    raise HpcsegError(f"{where}: tile shape {tile.shape} fits neither (H, W, {bands}) nor ({bands}, H, W) "
                      f"for its {mask_shape[0]}x{mask_shape[1]} _cl mask; check dataset.channels")


def center_crop(a: np.ndarray, size: tuple[int, int], where: Path) -> np.ndarray:
    h, w = a.shape[-2:]
    th, tw = size
    if h < th or w < tw:
        raise HpcsegError(f"{where}: tile is {h}x{w}, smaller than image_size {th}x{tw}; lower image_size")
    r, c = (h - th) // 2, (w - tw) // 2
    return a[..., r:r + th, c:c + tw]


def load_tile(tile_path: Path, cl_path: Path, bands: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(bands, H, W) float32 tile and (H, W) int64 target, centre-cropped to ``size``."""
    codes = read_image(cl_path)
    if codes.ndim == 3 and 1 in (codes.shape[0], codes.shape[-1]):
        codes = codes.reshape(codes.shape[1:] if codes.shape[0] == 1 else codes.shape[:2])
    if codes.ndim != 2:
        raise HpcsegError(f"{cl_path}: expected a single-band class map, got shape {codes.shape}")
    tile = bands_first(read_image(tile_path), codes.shape, bands, tile_path).astype(np.float32)
    return center_crop(tile, size, tile_path), center_crop(debris_target(codes), size, cl_path)


class MaridaSource(TensorSource):
    """Raw tiles on the device; normalised in place once the training tiles are known."""

    def __init__(self, spec: JobSpec, names: list[str], x: Tensor, y: Tensor, device: torch.device):
        super().__init__(spec, names, x, y, device)
        self.mean: Tensor | None = None
        self.std: Tensor | None = None
        self._stats_for: bytes | None = None

    def prepare(self, train_indices: np.ndarray) -> None:
        """Per-band mean/std over the finite pixels of the training tiles; x is re-normalised in place."""
        idx = np.unique(np.asarray(train_indices, dtype=np.int64))
        if idx.tobytes() == self._stats_for:
            return
        if self.mean is not None:  # undo the previous normalisation (another index set) before redoing it
            self.x.mul_(self.std).add_(self.mean)
        sel = self.x.index_select(0, torch.as_tensor(idx, device=self.device))
        finite = torch.isfinite(sel)
        vals = torch.where(finite, sel, torch.zeros((), device=sel.device)).double()
        n = finite.sum(dim=(0, 2, 3)).clamp_min(1).double()
        mean = vals.sum(dim=(0, 2, 3)) / n
        var = (vals * vals).sum(dim=(0, 2, 3)) / n - mean * mean
        std = var.clamp_min(0).sqrt()
        self.mean = mean.float().view(1, -1, 1, 1)
        self.std = torch.where(std > 1e-8, std, torch.ones_like(std)).float().view(1, -1, 1, 1)
        self.x.sub_(self.mean).div_(self.std)
        self._stats_for = idx.tobytes()

    def batches(self, indices: np.ndarray, batch_size: int, *, train: bool, epoch: int, seed: int,
                start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        if train:
            self.prepare(indices)
        elif self.mean is None:
            log.warning("marida: validation before any training batch; normalising with all tiles")
            self.prepare(np.arange(len(self._names)))
        for x, y in super().batches(indices, batch_size, train=train, epoch=epoch, seed=seed,
                                    start_batch=start_batch):
            yield torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), y

    def describe(self) -> str:
        labelled = int((self.y >= 0).sum())
        debris = int((self.y == 1).sum())
        return (f"MaridaSource: {len(self._names)} tiles, {self.in_channels} bands, "
                f"{tuple(self.x.shape[-2:])} px; {labelled} labelled pixels, {debris} debris "
                f"({100 * debris / max(labelled, 1):.2f}%)")


def build(spec: JobSpec, device: torch.device) -> MaridaSource:
    ds = spec.workload.dataset
    if spec.workload.task != "binary_segmentation":
        raise HpcsegError(f"marida layout: task must be binary_segmentation (debris vs rest), got {spec.workload.task}")
    index = index_dataset(spec, strata=False)
    if ds.expected_count is not None and len(index) != ds.expected_count:
        raise HpcsegError(f"{ds.root}: {len(index)} tiles, but expected_count is {ds.expected_count}")
    size = tuple(ds.image_size)
    xs, ys = zip(*(load_tile(t, cl, ds.channels, size) for t, cl in index.files), strict=True)
    x = torch.from_numpy(np.stack(xs))
    y = torch.from_numpy(np.stack(ys)).to(torch.int8)  # -1/0/1: int8 keeps 1,381 x 256² small on the GPU
    return MaridaSource(spec, list(index.names), x, y, device)
