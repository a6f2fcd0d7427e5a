"""Counting objects in a binary mask: one definition shared by analyze and the stratified split.

"Objects per image" drives the learning-rate recommendation (seed 004) and the density bins of the
stratified split, so both must count the same way. An object is an 8-connected component of foreground
pixels: two beads that touch, even only at a corner, are one object, which is what a connected-component
count on a union mask can see. Torch-free, so preflight and analyze stay light.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# 8-connectivity: diagonal neighbours belong to the same object.
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _foreground(mask: np.ndarray) -> np.ndarray:
    """Foreground as bool: anything above zero; RGB masks are reduced to gray first (as in images.py)."""
    arr = np.asarray(mask)
    if arr.ndim == 3:
        from hpcseg.images import binarize_mask

        return binarize_mask(arr).astype(bool)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {arr.shape}")
    return arr > 0


def label_objects(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label image (0 background, 1..n objects) and the object count n, 8-connected."""
    labels, n = ndimage.label(_foreground(mask), structure=EIGHT_CONNECTED)
    return labels, int(n)


def count_objects(mask: np.ndarray) -> int:
    """Number of 8-connected foreground components in ``mask``."""
    return label_objects(mask)[1]


def object_areas(mask: np.ndarray) -> np.ndarray:
    """Pixel area of each 8-connected component, in label order (int64; empty when there are none)."""
    labels, n = label_objects(mask)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.int64)
