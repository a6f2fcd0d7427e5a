"""Synthetic hyperspectral tissue cores: small and quick, with enough spectral signal to learn from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpcseg.errors import HpcsegError
from hpcseg.synth import ensure_empty, grid, save_npy, smooth_noise
from hpcseg.workloads.hyperspectral.cubes import FORMATS, save_cube

DEFAULTS = (6, 64)  # (cores, side)


def _class_spectra(rng: np.random.Generator, classes: int, bands: int) -> np.ndarray:
    """One smooth reflectance curve per class: a baseline plus two absorption/emission bumps."""
    t = np.linspace(0, 1, bands)[None, :]
    centres = rng.uniform(0, 1, size=(classes, 2))
    heights = rng.uniform(-0.25, 0.35, size=(classes, 2))
    base = rng.uniform(0.25, 0.55, size=(classes, 1)) + rng.uniform(-0.15, 0.15, size=(classes, 1)) * t
    bumps = sum(heights[:, k:k + 1] * np.exp(-((t - centres[:, k:k + 1]) / 0.12) ** 2) for k in range(2))
    spectra = base + bumps
    spectra[0] = 0.15 + 0.05 * t[0]  # class 0 (background inside the core) is dull and flat
    return np.clip(spectra, 0.02, None)


def make_hyperspectral(out: Path, n_cores: int = 6, size: int = 64, bands: int = 16, classes: int = 8,
                       seed: int = 0, cube_format: str = "npy") -> dict:
    """Write ``out/cores/core_NNN.npy`` (size, size, bands) float32 and ``out/labels/core_NNN.npy`` (size, size) int64.

    Labels: -1 outside the round tissue core, 0 background, 1..classes-1 tissue classes in smooth
    regions. Every class has its own spectrum (shared by all cores), so per-pixel spectra are enough to
    learn the segmentation; core-to-core gain and noise keep it from being trivial.
    ``cube_format`` writes the cubes as instruments export them instead (mat: MATLAB v5, mat73: MATLAB
    v7.3, envi: .hdr + .img), to exercise those readers end to end.
    """
    out = Path(out)
    if cube_format not in FORMATS:
        raise HpcsegError(f"hyperspectral: cube_format {cube_format!r}; use one of {', '.join(FORMATS)}")
    if n_cores < 1 or size < 8 or bands < 2 or classes < 2:
        raise HpcsegError("hyperspectral: need n_cores >= 1, size >= 8, bands >= 2 and classes >= 2")
    cores, labels = out / "cores", out / "labels"
    ensure_empty(cores)
    ensure_empty(labels)
    cores.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    seq = np.random.SeedSequence(seed)
    spectra = _class_spectra(np.random.default_rng(seq.spawn(1)[0]), classes, bands)
    y, x = grid(size)
    present: set[int] = set()
    for i, child in enumerate(seq.spawn(n_cores)):
        rng = np.random.default_rng(child)
        theta = np.arctan2(y - 0.5, x - 0.5)
        wobble = 1 + 0.06 * np.cos(3 * theta + rng.uniform(0, 6.3)) + 0.04 * np.cos(5 * theta + rng.uniform(0, 6.3))
        tissue = np.hypot(y - 0.5, x - 0.5) < rng.uniform(0.40, 0.47) * wobble
        fields = smooth_noise(rng, (classes, size, size), size / 10)
        fields[0] += 0.3  # some background inside every core
        fields[1 + i % (classes - 1)] += 0.5  # each core favours one class, so all classes appear
        label = np.where(tissue, fields.argmax(axis=0), -1).astype(np.int64)
        gain = rng.uniform(0.85, 1.15) * (1 + 0.05 * smooth_noise(rng, (size, size), size / 8))
        cube = spectra[np.clip(label, 0, None)] * gain[..., None]
        cube = np.where(tissue[..., None], cube, 0.02)
        cube = cube + rng.normal(0, 0.02, cube.shape)
        if cube_format == "npy":
            save_npy(cube.astype(np.float32), cores / f"core_{i:03d}.npy")
        else:
            save_cube(cores / f"core_{i:03d}", cube.astype(np.float32), cube_format)
        save_npy(label, labels / f"core_{i:03d}.npy")
        present.update(int(v) for v in np.unique(label))
    return {"kind": "hyperspectral", "path": str(out), "n": n_cores, "size": size, "bands": bands,
            "classes": classes, "seed": seed, "cube_format": cube_format, "labels_present": sorted(present)}


def synthesise(out: Path, n: int, size: int, seed: int) -> list[str]:
    """``hpcseg synth hyperspectral``: write the dataset, return what to print."""
    s = make_hyperspectral(out, n_cores=n, size=size, seed=seed)
    return [f"wrote {s['n']} hyperspectral cores {size}x{size}x{s['bands']} to {out}/cores "
            f"and label maps to {out}/labels ({s['classes']} classes, -1 outside tissue)"]
