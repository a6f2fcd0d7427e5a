"""The microbead layout: images/<stem>.* paired with masks/<stem>.*; strata are object-count bins."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpcseg.errors import HpcsegError
from hpcseg.images import IMAGE_EXTENSIONS, read_image
from hpcseg.layouts import MASK_EXTENSIONS, DatasetIndex, by_stem
from hpcseg.spec import JobSpec


def microbead_pairs(root: Path) -> tuple[list[str], list[tuple[Path, Path]]]:
    """images/<stem>.* paired with masks/<stem>.*; any unpaired file is an error naming it."""
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise HpcsegError(f"{root}: no {d.name}/ folder; the microbead layout needs images/ and masks/")
    images, masks = by_stem(img_dir, IMAGE_EXTENSIONS), by_stem(mask_dir, MASK_EXTENSIONS)
    lonely_i, lonely_m = sorted(set(images) - set(masks)), sorted(set(masks) - set(images))
    if lonely_i or lonely_m:
        problems = [f"image without mask: {images[s].name}" for s in lonely_i[:10]]
        problems += [f"mask without image: {masks[s].name}" for s in lonely_m[:10]]
        raise HpcsegError(f"{root}: {len(lonely_i)} image(s) and {len(lonely_m)} mask(s) are unpaired",
                          problems=problems)
    names = sorted(images)
    return names, [(images[s], masks[s]) for s in names]


def density_bins(counts: np.ndarray, bins: int) -> np.ndarray:
    """Quantile bins of object counts (0..bins-1); duplicate edges (many equal counts) merge bins."""
    counts = np.asarray(counts, dtype=float)
    if bins <= 1 or len(counts) == 0:
        return np.zeros(len(counts), dtype=np.int64)
    edges = np.unique(np.quantile(counts, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(edges, counts, side="left").astype(np.int64)


def index(spec: JobSpec, root: Path, strata: bool) -> DatasetIndex:
    names, files = microbead_pairs(root)
    index = DatasetIndex(names=names, files=list(files))
    if strata:
        from hpcseg.objects import count_objects

        counts = np.array([count_objects(read_image(m)) for _, m in files])
        index.strata = density_bins(counts, spec.workload.split.density_bins)
        index.strata_note = f"objects-per-image quantile bins ({spec.workload.split.density_bins})"
    return index
