"""Tiny, deterministic datasets on disk in each layout of docs/formats.md, for tests of any verb.

Every writer takes a root folder, creates it, fills it with a few small files (numpy + Pillow + tifffile
only, no torch) and returns the root. Same arguments → byte-identical files, so a failing test can be
reproduced. The contents are plausible, not realistic: masks hold blobs, labels hold every class.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

HAM_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
HAM_METADATA = "HAM10000_metadata.csv"
MARIDA_SCENE = "S2_1-12-19_48MYU"


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def blob_mask(size: int | tuple[int, int], seed: int = 0, blobs: int = 4) -> np.ndarray:
    """A 0/1 uint8 mask with a few discs: always both levels present, so it is a real binary mask."""
    h, w = _size(size)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros((h, w), dtype=np.uint8)
    for _ in range(blobs):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        r = max(2, min(h, w) // 8)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    mask[0, 0] = 0
    mask[h // 2, w // 2] = 1
    return mask


def gray_image(size: int | tuple[int, int], seed: int = 0, bit_depth: int = 8) -> np.ndarray:
    """Noise plus the blobs of ``blob_mask(size, seed)``, as uint8 or uint16."""
    h, w = _size(size)
    rng = np.random.default_rng(seed + 1000)
    peak = 255 if bit_depth == 8 else 65535
    base = rng.random((h, w)) * 0.4 + blob_mask(size, seed) * 0.5
    return (base * peak).astype(np.uint8 if bit_depth == 8 else np.uint16)


def save_image(path: Path, arr: np.ndarray) -> Path:
    """Write ``arr`` by extension: .tif/.tiff through tifffile (any dtype), else through Pillow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        tifffile.imwrite(path, arr)
    else:
        Image.fromarray(arr).save(path)
    return path


def microbead_names(n: int) -> list[str]:
    """The default stems: bead_000, bead_001, ..."""
    return [f"bead_{i:03d}" for i in range(n)]


def write_microbead(
    root: str | Path,
    n: int = 4,
    size: int | tuple[int, int] = 32,
    *,
    bit_depth: int = 8,
    image_format: str = "png",
    mask_format: str = "png",
    mask_values: tuple[int, int] = (0, 255),
    rgb: bool = False,
    names: Sequence[str] | None = None,
    seed: int = 0,
) -> Path:
    """ROOT/images/<stem>.<image_format> and ROOT/masks/<stem>.<mask_format>, n matching pairs.

    ``bit_depth`` 16 needs a TIFF or PNG image format; ``rgb`` writes 3-channel images (masks stay gray);
    ``names`` gives the stems (spaces and non-ASCII welcome) instead of bead_000...
    """
    root = Path(root)
    stems = list(names) if names is not None else microbead_names(n)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i, stem in enumerate(stems):
        img = gray_image(size, seed + i, bit_depth)
        if rgb:
            img = np.stack([img, img // 2, img // 3], axis=-1)
        mask = np.where(blob_mask(size, seed + i) > 0, mask_values[1], mask_values[0])
        mask = mask.astype(np.uint16 if max(mask_values) > 255 else np.uint8)
        save_image(root / "images" / f"{stem}.{image_format}", img)
        save_image(root / "masks" / f"{stem}.{mask_format}", mask)
    return root


def write_marida(
    root: str | Path,
    n: int = 4,
    size: int = 32,
    *,
    bands: int = 11,
    band_axis: str = "last",
    with_conf: bool = True,
    seed: int = 0,
) -> Path:
    """ROOT/patches/<scene>/<scene>_<i>.tif (float32 tiles) with <id>_cl.tif class codes beside them.

    Class codes follow MARIDA: 0 unlabelled, 1 marine debris, 2..15 other classes; every label holds
    some debris (code 1). ``band_axis`` "first" writes (bands, H, W) tiles, as some exports do.
    """
    root = Path(root)
    folder = root / "patches" / MARIDA_SCENE
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        tile = rng.random((size, size, bands), dtype=np.float32) * 0.2
        if band_axis == "first":
            tile = np.moveaxis(tile, -1, 0)
        codes = np.zeros((size, size), dtype=np.uint8)
        codes[: size // 2] = 7  # marine water
        codes[blob_mask(size, seed + i) > 0] = 1
        stem = f"{MARIDA_SCENE}_{i}"
        tifffile.imwrite(folder / f"{stem}.tif", tile)
        tifffile.imwrite(folder / f"{stem}_cl.tif", codes)
        if with_conf:
            tifffile.imwrite(folder / f"{stem}_conf.tif", np.full((size, size), 2, dtype=np.uint8))
    return root


def write_hyperspectral(
    root: str | Path,
    n: int = 3,
    size: int = 48,
    *,
    bands: int = 16,
    num_classes: int = 8,
    seed: int = 0,
) -> Path:
    """ROOT/cores/core_<i>.npy (H, W, bands) float32 and ROOT/labels/core_<i>.npy (H, W) int16.

    Labels: -1 outside a central disc (no tissue), 0 background, 1..num_classes-1 in bands of rows.
    """
    root = Path(root)
    (root / "cores").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    tissue = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (size / 2) ** 2
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        cube = rng.random((size, size, bands), dtype=np.float32)
        labels = np.full((size, size), -1, dtype=np.int16)
        classes = (yy * num_classes // size).astype(np.int16)
        labels[tissue] = classes[tissue]
        np.save(root / "cores" / f"core_{i:02d}.npy", cube)
        np.save(root / "labels" / f"core_{i:02d}.npy", labels)
    return root


def write_ham10000(
    root: str | Path,
    n: int = 14,
    size: int | tuple[int, int] = 32,
    *,
    class_names: Sequence[str] = HAM_CLASSES,
    metadata: str = HAM_METADATA,
    folder: str = "images",
    seed: int = 0,
) -> Path:
    """ROOT/<metadata> (lesion_id, image_id, dx, ...) and ROOT/<folder>/<image_id>.jpg, RGB.

    Classes cycle through ``class_names`` so each appears; every second image shares its lesion with
    the one before, as HAM10000 has several photos of one lesion.
    """
    root = Path(root)
    (root / folder).mkdir(parents=True, exist_ok=True)
    h, w = _size(size)
    rows = []
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        image_id = f"ISIC_{24306 + i:07d}"
        rgb = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(root / folder / f"{image_id}.jpg", quality=85)
        rows.append({
            "lesion_id": f"HAM_{i // 2:07d}", "image_id": image_id, "dx": class_names[i % len(class_names)],
            "dx_type": "histo", "age": str(30 + i), "sex": "female" if i % 2 else "male",
            "localization": "back",
        })
    with open(root / metadata, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["lesion_id", "image_id", "dx"])
        writer.writeheader()
        writer.writerows(rows)
    return root
