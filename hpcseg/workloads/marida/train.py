"""MARIDA marine debris (seeds 001, 003): 11-band Sentinel-2 tiles, debris vs everything else, or all classes.

``ROOT/patches/**/<id>.tif`` holds an (H, W, bands) or (bands, H, W) float tile (both exports exist;
the orientation is read off the ``<id>_cl.tif`` mask's shape) with MARIDA class codes in ``_cl``.
``binary_segmentation``: code 1 (Marine Debris) is the positive class, every other code the negative.
``multiclass_segmentation``: code c (1..num_classes, MARIDA v1 has 15) is class c-1; class weights come
from the training pixels' frequencies through the ``weighted_ce`` loss component. Either way code 0
(unlabelled, most of every MARIDA tile) becomes -1 so the loss and metrics ignore it: calling
unlabelled water "not debris" would teach the model on guesses.

Confidence: ``model.options.confidence`` (``all``, the default; ``moderate``; ``high``) keeps only the
labelled pixels whose ``<id>_conf.tif`` level (MARIDA: 1 high, 2 moderate, 3 low) is at least that
sure; the others are ignored like unlabelled ones. As a mapping, ``{high: 1.0, moderate: 0.5, low: 0.25}``,
it weighs each labelled pixel's loss by its level instead (a per-pixel weight map beside the target, moved
with it by augmentation; ce, weighted_ce and focal use it, dice does not); weight 0 ignores the level, and
a labelled pixel with no level (0) weighs 1. The official split (``ROOT/splits/*_X.txt``, see
layout.py) holds out a test list: :class:`Trainer` evaluates it once, with the best weights, at the end
(result.json ``extra.test``).

The dataset (1,381 tiles of 256²) fits on the GPU, so this is a :class:`TensorSource`. Bands are
normalised per band with the mean/std of the *training* tiles (:meth:`MaridaSource.prepare`);
non-finite pixels (nodata) become 0 after normalisation. Tiles larger than ``dataset.image_size`` are
centre-cropped to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hpcseg.errors import HpcsegError
from hpcseg.images import read_image
from hpcseg.layouts import index_dataset
from hpcseg.spec import JobSpec
from hpcseg.train.loop import Trainer as BaseTrainer
from hpcseg.train.source import IGNORE, TensorSource
from hpcseg.workloads.marida.layout import CONFIDENCE_CODES, CONFIDENCE_LEVELS, confidence_option

log = logging.getLogger("hpcseg.train")

DEBRIS = 1
UNLABELLED = 0


def class_target(codes: np.ndarray, num_classes: int, where: Path) -> np.ndarray:
    """MARIDA class codes -> int64 target for the multi-class task: code c -> c - 1, unlabelled -> -1."""
    codes = np.rint(np.asarray(codes, dtype=np.float64)).astype(np.int64)
    high = int(codes.max(initial=0))
    if high > num_classes or codes.min(initial=0) < 0:
        raise HpcsegError(f"{where}: class code {high if high > num_classes else int(codes.min())} is outside "
                          f"1..{num_classes} (workload.dataset.num_classes); raise num_classes or fix the mask")
    return np.where(codes == UNLABELLED, IGNORE, codes - 1)


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


def _single_band(path: Path) -> np.ndarray:
    a = read_image(path)
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[-1]):
        a = a.reshape(a.shape[1:] if a.shape[0] == 1 else a.shape[:2])
    if a.ndim != 2:
        raise HpcsegError(f"{path}: expected a single-band map, got shape {a.shape}")
    return a


def load_tile(tile_path: Path, cl_path: Path, bands: int, size: tuple[int, int], *, num_classes: int | None = None,
              confidence: str | dict[int, float] = "all") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(bands, H, W) float32 tile, (H, W) int64 target and (H, W) float32 pixel weights (None unless
    ``confidence`` is a weight mapping), centre-cropped to ``size``. ``num_classes``: the multi-class target
    (else binary debris); ``confidence``: drop or weigh less sure pixels (module docstring)."""
    codes = _single_band(cl_path)
    tile = bands_first(read_image(tile_path), codes.shape, bands, tile_path).astype(np.float32)
    target = debris_target(codes) if num_classes is None else class_target(codes, num_classes, cl_path)
    weight = None
    if confidence != "all":
        conf_path = cl_path.with_name(cl_path.name[: -len("_cl.tif")] + "_conf.tif")
        if not conf_path.is_file():
            shown = confidence if isinstance(confidence, str) else "a weight mapping"
            raise HpcsegError(f"{conf_path}: missing, but options.confidence is {shown!r}; add the _conf.tif "
                              f"masks or drop the option")
        conf = _single_band(conf_path)
        if conf.shape != codes.shape:
            raise HpcsegError(f"{conf_path}: {conf.shape[0]}x{conf.shape[1]}, but its _cl.tif is "
                              f"{codes.shape[0]}x{codes.shape[1]}")
        level = np.rint(np.nan_to_num(conf.astype(np.float64), nan=0.0))
        if isinstance(confidence, str):
            target = np.where(level > CONFIDENCE_LEVELS[confidence], IGNORE, target)
        else:
            weight = confidence_weight_map(level, confidence)
            target = np.where(weight == 0, IGNORE, target)
    crop = center_crop(weight, size, conf_path) if weight is not None else None
    return center_crop(tile, size, tile_path), center_crop(target, size, cl_path), crop


def confidence_weight_map(level: np.ndarray, weights: dict[int, float]) -> np.ndarray:
    """Each pixel's loss weight from its _conf.tif level; a level outside 1..3 (0: none given) weighs 1."""
    out = np.ones(level.shape, dtype=np.float32)
    for code, w in weights.items():
        out[level == code] = w
    return out


class MaridaSource(TensorSource):
    """Raw tiles on the device; normalised in place once the training tiles are known."""

    def __init__(self, spec: JobSpec, names: list[str], x: Tensor, y: Tensor, device: torch.device,
                 w: Tensor | None = None):
        super().__init__(spec, names, x, y, device, w)
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

    def weighted_batches(self, indices: np.ndarray, batch_size: int, *, train: bool, epoch: int, seed: int,
                         start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        if train:
            self.prepare(indices)
        elif self.mean is None:
            log.warning("marida: validation before any training batch; normalising with all tiles")
            self.prepare(np.arange(len(self._names)))
        for x, y, w in super().weighted_batches(indices, batch_size, train=train, epoch=epoch, seed=seed,
                                                start_batch=start_batch):
            yield torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), y, w

    def describe(self) -> str:
        labelled = int((self.y >= 0).sum())
        debris = int((self.y == (1 if self.task == "binary_segmentation" else DEBRIS - 1)).sum())
        return (f"MaridaSource: {len(self._names)} tiles, {self.in_channels} bands, "
                f"{tuple(self.x.shape[-2:])} px; {labelled} labelled pixels, {debris} debris "
                f"({100 * debris / max(labelled, 1):.2f}%)")


def build(spec: JobSpec, device: torch.device) -> MaridaSource:
    ds = spec.workload.dataset
    if spec.workload.task not in ("binary_segmentation", "multiclass_segmentation"):
        raise HpcsegError(f"marida layout: task must be binary_segmentation (debris vs rest) or "
                          f"multiclass_segmentation (MARIDA's classes), got {spec.workload.task}")
    multi = ds.num_classes if spec.workload.task == "multiclass_segmentation" else None
    confidence = confidence_option(spec)
    index = index_dataset(spec, strata=False)
    if ds.expected_count is not None and len(index) != ds.expected_count:
        raise HpcsegError(f"{ds.root}: {len(index)} tiles, but expected_count is {ds.expected_count}")
    size = tuple(ds.image_size)
    xs, ys, ws = zip(*(load_tile(t, cl, ds.channels, size, num_classes=multi, confidence=confidence)
                       for t, cl in index.files), strict=True)
    x = torch.from_numpy(np.stack(xs))
    y = torch.from_numpy(np.stack(ys)).to(torch.int8)  # -1..14: int8 keeps 1,381 x 256² small on the GPU
    w = None
    if isinstance(confidence, dict):
        w = torch.from_numpy(np.stack(ws)).to(torch.float16)  # half the memory of float32; ~3 digits is plenty for a weight
        log.info("marida: options.confidence weighs labelled pixels by _conf.tif level: %s",
                 ", ".join(f"{name} {confidence[code]:g}" for name, code in CONFIDENCE_CODES.items()))
    elif confidence != "all":
        log.info("marida: options.confidence %s: only pixels of _conf.tif level <= %d are labelled", confidence,
                 CONFIDENCE_LEVELS[confidence])
    return MaridaSource(spec, list(index.names), x, y, device, w)


class Trainer(BaseTrainer):
    """The generic trainer plus one evaluation of the official test split (if the split has one) at the end."""

    def wants_evaluation(self) -> bool:
        return True

    def evaluate(self) -> dict[str, Any]:
        extra = super().evaluate()
        test = self.test_indices()
        if test is not None and len(test):
            extra["test"] = self.evaluate_test(test, extra.get("threshold") or {})
            log.info("test split (%d tiles, evaluated once with the best weights): %s", len(test),
                     " ".join(f"{k}={v:.4f}" for k, v in extra["test"]["metrics"].items()))
        return extra

    def test_indices(self) -> np.ndarray | None:
        from hpcseg.splits import SPLITS, read_splits

        path = self.plan.splits_dir / SPLITS
        names = read_splits(path).get("test") if path.exists() else None
        if not names:
            return None
        pos = {n: i for i, n in enumerate(self.source.names())}
        return np.array([pos[n] for n in names if n in pos], dtype=np.int64)

    def evaluate_test(self, test: np.ndarray, tuned: dict[str, Any]) -> dict[str, Any]:
        from hpcseg.train.metrics import ConfusionMeter
        from hpcseg.train.threshold import ProbabilityHistogram, at

        model, binary = self.bare_model, self.task == "binary_segmentation"
        meter = ConfusionMeter(self.task, self.source.num_classes, self.device)
        hist = ProbabilityHistogram(self.device) if binary else None
        with torch.inference_mode():
            for x, y in self.source.batches(test, self.tr.batch_size, train=False, epoch=0, seed=0):
                with self.amp:
                    logits = model(x)
                logits = logits.float()
                meter.update(logits, y)
                if hist is not None:
                    hist.update(logits, y)
        out: dict[str, Any] = {"split": "test", "items": int(len(test)), "metrics": meter.compute()}
        if hist is not None and "best_threshold" in tuned:
            pos, neg = hist.counts()
            out["at_threshold"] = at(pos, neg, float(tuned["best_threshold"]))
        if not binary:
            cm = meter.matrix.view(meter.k, meter.k).cpu().numpy().astype(np.float64)
            tp = np.diag(cm)
            union = cm.sum(0) + cm.sum(1) - tp
            names = self.spec.workload.dataset.class_names or [f"class_{c + 1}" for c in range(meter.k)]
            out["iou_per_class"] = {names[c]: (float(tp[c] / union[c]) if union[c] else None) for c in range(meter.k)}
        return out
