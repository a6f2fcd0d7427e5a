"""HAM10000 skin-lesion classification (seed 002): metadata CSV + JPEGs, 7 diagnoses.

Labels come from ``ROOT/<dataset.metadata>`` (read with pandas): class index = position of ``dx`` in
``dataset.class_names``. Images are found anywhere under ROOT (``images/`` or the original
``HAM10000_images_part_1/2``), by ``image_id``. Items are listed in :func:`hpcseg.layouts.index_dataset`
order, which also supplies the lesion groups the split keeps on one side.

Memory: 10,015 images at 224² are 1.5 GB as uint8 but 6 GB as float32, so the images are kept as uint8
(N, 3, H, W) on the training device and each batch is converted and normalised (ImageNet mean/std, what
the pretrained backbones expect) on its own. At the end of training :meth:`Ham10000Source.extra_results`
evaluates the best model on the validation images (``hpcseg.workloads.ham10000.evaluation``): temperature
and ECE/NLL before/after measured on held-out halves (cross-fitting), ROC/AUC and 95%-specificity
operating points per class, confusion matrices, and Grad-CAM grids, as files under the task's ``eval/``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor

from hpcseg.errors import HpcsegError
from hpcseg.images import read_image
from hpcseg.layouts import index_dataset
from hpcseg.spec import JobSpec
from hpcseg.train.source import Source, augment, epoch_order, rng_for

HAM10000_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def read_labels(meta: Path, class_names: list[str]) -> dict[str, int]:
    """image_id -> class index from the metadata CSV; unknown dx values are an error naming them."""
    try:
        df = pd.read_csv(meta, dtype=str)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise HpcsegError(f"{meta}: cannot read the metadata table ({exc.__class__.__name__}: {exc})") from None
    missing = {"image_id", "dx"} - set(df.columns)
    if missing:
        raise HpcsegError(f"{meta}: missing column(s) {', '.join(sorted(missing))}")
    unknown = sorted(set(df["dx"]) - set(class_names))
    if unknown:
        raise HpcsegError(f"{meta}: dx values {', '.join(unknown)} are not in dataset.class_names "
                          f"({', '.join(class_names)})")
    lookup = {c: i for i, c in enumerate(class_names)}
    return {str(i): lookup[d] for i, d in zip(df["image_id"], df["dx"], strict=True)}


def load_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    """(3, H, W) uint8 at ``size`` (bilinear, antialiased by Pillow's resize)."""
    arr = read_image(path)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.dtype != np.uint8:
        raise HpcsegError(f"{path}: expected an 8-bit RGB image, got {arr.dtype}")
    h, w = size
    if arr.shape[:2] != (h, w):
        arr = np.asarray(Image.fromarray(arr).resize((w, h), Image.BILINEAR))
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


class Ham10000Source(Source):
    def __init__(self, spec: JobSpec, names: list[str], images: Tensor, labels: Tensor, device: torch.device,
                 groups: np.ndarray | None = None, class_names: list[str] | None = None):
        self.spec, self.device, self.task = spec, device, spec.workload.task
        # Lesion ids: the held-out halves of the evaluation keep a lesion's photos together.
        self.groups = np.asarray(groups if groups is not None else names)
        self.class_names = list(class_names or HAM10000_CLASSES)
        self.in_channels = int(images.shape[1])
        self.num_classes = spec.workload.dataset.num_classes
        self._names = list(names)
        self.images = images.to(device)            # uint8 (N, 3, H, W)
        self.labels = labels.to(device).long()     # (N,)
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def names(self) -> list[str]:
        return list(self._names)

    def describe(self) -> str:
        counts = torch.bincount(self.labels, minlength=self.num_classes).tolist()
        return (f"Ham10000Source: {len(self._names)} images at {tuple(self.images.shape[-2:])}, "
                f"per class {counts}")

    def normalise(self, x: Tensor) -> Tensor:
        return (x.float() / 255.0 - self.mean) / self.std

    def batches(self, indices: np.ndarray, batch_size: int, *, train: bool, epoch: int, seed: int,
                start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        indices = np.asarray(indices, dtype=np.int64)
        order = indices[epoch_order(len(indices), seed, epoch, shuffle=train)]
        for b in range(start_batch, math.ceil(len(order) / batch_size)):
            sel = torch.from_numpy(order[b * batch_size:(b + 1) * batch_size]).to(self.device)
            x = self.normalise(self.images.index_select(0, sel))
            y = self.labels.index_select(0, sel)
            if train:
                x, y = augment(x, y, self.spec.training.augmentation, rng_for(seed, epoch, b, 1))
            yield x, y

    def class_counts(self, indices: np.ndarray) -> np.ndarray:
        sel = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=self.device)
        return torch.bincount(self.labels.index_select(0, sel), minlength=self.num_classes).cpu().numpy()

    @torch.no_grad()
    def logits(self, model: torch.nn.Module, indices: np.ndarray, batch_size: int) -> tuple[Tensor, Tensor]:
        """Model logits and labels over ``indices``, in order, unaugmented."""
        was_training = model.training
        model.eval()
        out, ys = [], []
        try:
            for x, y in self.batches(indices, batch_size, train=False, epoch=0, seed=0):
                out.append(model(x).float().cpu())
                ys.append(y.cpu())
        finally:
            model.train(was_training)
        return torch.cat(out), torch.cat(ys)

    def extra_results(self, model: torch.nn.Module, indices: np.ndarray, batch_size: int,
                      out_dir: Path | None = None) -> dict:
        """Held-out calibration, operating points, confusion matrices ({"calibration", "evaluation"} for
        result.json) and, with ``out_dir``, the files and plots under ``out_dir/eval/`` incl. Grad-CAM."""
        from hpcseg.workloads.ham10000.evaluation import evaluate

        if len(indices) == 0:
            return {}
        indices = np.asarray(indices, dtype=np.int64)
        logits, labels = self.logits(model, indices, batch_size)
        out = evaluate(logits.numpy(), labels.numpy(), self.groups[indices], self.class_names,
                       self.spec.workload.seed, out_dir)
        if out_dir is not None:
            from hpcseg.workloads.ham10000.gradcam import write_gradcam

            out["gradcam"] = write_gradcam(model, self, indices, Path(out_dir))
        return out


def build(spec: JobSpec, device: torch.device) -> Ham10000Source:
    ds = spec.workload.dataset
    if ds.channels != 3:
        raise HpcsegError(f"ham10000 layout: dataset.channels must be 3 (RGB), got {ds.channels}")
    class_names = list(ds.class_names or HAM10000_CLASSES)
    if len(class_names) != ds.num_classes:
        raise HpcsegError(f"ham10000: {len(class_names)} class_names but num_classes is {ds.num_classes}")
    index = index_dataset(spec, strata=False)  # groups (lesion ids) come with it
    if ds.expected_count is not None and len(index) != ds.expected_count:
        raise HpcsegError(f"{ds.root}: {len(index)} images, but expected_count is {ds.expected_count}")
    labels = read_labels(Path(ds.root) / (ds.metadata or "HAM10000_metadata.csv"), class_names)
    size = tuple(ds.image_size)
    # JPEG decoding releases the GIL: threads cut loading 10k images from minutes to seconds.
    workers = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))
    with ThreadPoolExecutor(workers) as pool:
        images = list(pool.map(lambda f: load_rgb(f[0], size), index.files))
    y = torch.tensor([labels[n] for n in index.names], dtype=torch.long)
    return Ham10000Source(spec, list(index.names), torch.from_numpy(np.stack(images)), y, device,
                          groups=index.groups, class_names=class_names)
