"""The microbead source: images/ and masks/ paired by stem, held on the training device as two tensors.

73 images of 256² are 19 MB as float32, so the whole dataset lives on the GPU (or in RAM) and a training
step never waits for a loader. Each image is resized to ``dataset.image_size`` (bilinear, antialiased;
masks nearest) and normalised on its own (zero mean, unit std), because microscope exposure varies per
image and 8- and 16-bit files must end up on one scale.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hpcseg.errors import HpcsegError
from hpcseg.images import binarize_mask, read_image, to_gray
from hpcseg.layouts import index_dataset
from hpcseg.spec import JobSpec
from hpcseg.train.source import TensorSource


def build(spec: JobSpec, device: torch.device) -> TensorSource:
    ds = spec.workload.dataset
    if ds.channels not in (1, 3):
        raise HpcsegError(f"microbead layout: dataset.channels must be 1 (gray) or 3 (RGB), got {ds.channels}")
    index = index_dataset(spec, strata=False)
    if ds.expected_count is not None and len(index) != ds.expected_count:
        raise HpcsegError(f"{ds.root}: {len(index)} image/mask pairs, but expected_count is {ds.expected_count}")
    xs, ys = zip(*(load_pair(img, mask, tuple(ds.image_size), ds.channels) for img, mask in index.files),
                 strict=True)
    return TensorSource(spec, index.names, torch.stack(xs), torch.stack(ys), device)


def load_pair(image_path, mask_path, size: tuple[int, int], channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, H, W) float32 normalised image and (H, W) uint8 0/1 mask, both at ``size``."""
    img = read_image(image_path)
    mask = binarize_mask(read_image(mask_path))
    if img.shape[:2] != mask.shape[:2]:
        raise HpcsegError(f"{image_path.name}: image is {img.shape[1]}x{img.shape[0]} but its mask "
                          f"{mask_path.name} is {mask.shape[1]}x{mask.shape[0]}")
    if channels == 1 or img.ndim == 2:
        img = to_gray(img)
    arr = np.asarray(img, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise HpcsegError(f"{image_path}: holds NaN or infinite pixels; re-export it")
    x = torch.from_numpy(arr.copy())
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    if x.shape[0] != channels:
        x = x.expand(channels, -1, -1) if x.shape[0] == 1 else x[:channels]
    x = resize(x[None], size, "bilinear")[0]
    x = (x - x.mean()) / x.std().clamp_min(1e-6)
    y = resize(torch.from_numpy(mask)[None, None].float(), size, "nearest")[0, 0]
    return x.contiguous(), y.to(torch.uint8)


def resize(t: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    if mode == "nearest":
        return F.interpolate(t, size=size, mode="nearest-exact")
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
