"""Synthetic datasets in the layouts of docs/formats.md, for tests, demos and quick profiles: the CLI
verb and the helpers every workload's generator shares.

Each workload's generator lives in its own package (``hpcseg/workloads/<name>/synth.py``) and is found
through the registry by its ``hpcseg synth`` kind, so this module never names a workload. Generators are
vectorised numpy, deterministic for a seed, and write every file atomically into an empty folder.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from hpcseg.errors import HpcsegError
from hpcseg.fsutil import write_bytes_atomic
from hpcseg.workloads import registry

# --------------------------------------------------------------------------------------------- helpers

def ensure_empty(folder: Path) -> None:
    """Refuse to mix a new dataset into old files: a half-overwritten dataset is worse than an error."""
    if folder.exists() and not folder.is_dir():
        raise HpcsegError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        raise HpcsegError(f"{folder} already has files; choose an empty output folder or remove it first")


def save_pil(arr: np.ndarray, path: Path, fmt: str, **kw: Any) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    write_bytes_atomic(path, buf.getvalue())


def save_tiff(arr: np.ndarray, path: Path) -> None:
    import tifffile

    buf = io.BytesIO()
    # contig + minisblack keeps (H, W, bands) as one page that reads back as (H, W, bands)
    extra = {"planarconfig": "contig"} if arr.ndim == 3 else {}
    tifffile.imwrite(buf, arr, photometric="minisblack", **extra)
    write_bytes_atomic(path, buf.getvalue())


def save_npy(arr: np.ndarray, path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    write_bytes_atomic(path, buf.getvalue())


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-sd low-frequency noise over the last two axes (textures, illumination, regions)."""
    field = rng.standard_normal(shape)
    sig = (0,) * (len(shape) - 2) + (sigma, sigma)
    field = ndimage.gaussian_filter(field, sig, mode="reflect")
    axes = (-2, -1)
    field -= field.mean(axis=axes, keepdims=True)
    field /= field.std(axis=axes, keepdims=True) + 1e-12
    return field


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1), as (y, x) broadcastable arrays."""
    c = (np.arange(size) + 0.5) / size
    return c[:, None], c[None, :]


# ------------------------------------------------------------------------------------------------- CLI


def cli_synth(args: argparse.Namespace) -> int:
    """``hpcseg synth KIND OUT``: write the dataset and say what was written."""
    out = Path(args.out).expanduser()
    try:
        gen = registry.synth_module(args.kind)
    except KeyError:
        raise HpcsegError(f"unknown kind {args.kind!r}; choose {', '.join(registry.synth_kinds())}") from None
    dn, dsize = gen.DEFAULTS
    n, size = (dn if args.n is None else args.n), (dsize if args.size is None else args.size)
    try:
        lines = gen.synthesise(out, n=n, size=size, seed=args.seed)
    except OSError as exc:  # disk full, permissions: the user's to fix, so one line, no traceback
        raise HpcsegError(f"{exc.filename or out}: {exc.strerror or exc}") from None
    for line in lines:
        print(line)
    return 0
