"""Synthetic datasets in the layouts of docs/formats.md, for tests, demos and quick profiles.

The microbead generator is the important one: it reproduces the *statistics* of the seed-004 microscope
data (73 images of 256x256, 12-254 beads per image with mean ~110, ~69 px per object, ~11% positive
pixels), because those statistics are what made the mitochondria hyper-parameters fail. A demo that
trains both microbead jobs on it therefore shows the same density effect without the private data.
The other generators are small and quick: enough signal for a model to learn in a few epochs, and the
exact on-disk layout the loaders expect. Everything is vectorised numpy and deterministic for a seed.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, stats

from hpcseg.errors import HpcsegError
from hpcseg.fsutil import write_bytes_atomic
from hpcseg.objects import count_objects

REFERENCE_SIZE = 256  # the seed's image size; counts scale with area, radii with side length
COUNT_RANGE = (12, 254)  # beads per image at 256 px (seed 004)
# Truncated gamma over COUNT_RANGE: mean ~110 and sd ~67, a broad right-skewed spread like the seed's
# 109.4 +- 80.7 without the pile-up at 254 that clipping would create.
COUNT_GAMMA_SHAPE = 1.1
COUNT_GAMMA_SCALE = 170.0
# Bead radius at 256 px: single beads of ~60 px; touching beads merge into larger objects, which brings
# the mean connected-component area to roughly the seed's 69 px.
RADIUS_MEAN = 4.6
RADIUS_SD = 0.6
CLUMP_FRACTION = 0.05  # beads placed against a previous one: clumps a connected-component count merges

HAM10000_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
HAM10000_METADATA = "HAM10000_metadata.csv"
HAM10000_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")


# --------------------------------------------------------------------------------------------- helpers

def _ensure_empty(folder: Path) -> None:
    """Refuse to mix a new dataset into old files: a half-overwritten dataset is worse than an error."""
    if folder.exists() and not folder.is_dir():
        raise HpcsegError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        raise HpcsegError(f"{folder} already has files; choose an empty output folder or remove it first")


def _save_pil(arr: np.ndarray, path: Path, fmt: str, **kw: Any) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    write_bytes_atomic(path, buf.getvalue())


def _save_tiff(arr: np.ndarray, path: Path) -> None:
    import tifffile

    buf = io.BytesIO()
    # contig + minisblack keeps (H, W, bands) as one page that reads back as (H, W, bands)
    extra = {"planarconfig": "contig"} if arr.ndim == 3 else {}
    tifffile.imwrite(buf, arr, photometric="minisblack", **extra)
    write_bytes_atomic(path, buf.getvalue())


def _save_npy(arr: np.ndarray, path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    write_bytes_atomic(path, buf.getvalue())


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-sd low-frequency noise over the last two axes (textures, illumination, regions)."""
    field = rng.standard_normal(shape)
    sig = (0,) * (len(shape) - 2) + (sigma, sigma)
    field = ndimage.gaussian_filter(field, sig, mode="reflect")
    axes = (-2, -1)
    field -= field.mean(axis=axes, keepdims=True)
    field /= field.std(axis=axes, keepdims=True) + 1e-12
    return field


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1), as (y, x) broadcastable arrays."""
    c = (np.arange(size) + 0.5) / size
    return c[:, None], c[None, :]


# ------------------------------------------------------------------------------------------ microbeads

def bead_counts(n: int, rng: np.random.Generator, size: int = REFERENCE_SIZE, density_scale: float = 1.0) -> np.ndarray:
    """Beads per image: a truncated gamma over 12-254 (at 256 px), sampled by stratified quantiles.

    Stratifying (one draw from each of n equal-probability slices, in random order) keeps the dataset
    mean close to the distribution's ~110 even for a few dozen images, so a synthetic dataset has the
    density the seed describes rather than whatever one unlucky draw gives. Counts scale with the image
    area relative to 256 x 256 (and with ``density_scale``), at least one bead per image.
    """
    dist = stats.gamma(COUNT_GAMMA_SHAPE, scale=COUNT_GAMMA_SCALE)
    lo, hi = dist.cdf(COUNT_RANGE[0]), dist.cdf(COUNT_RANGE[1])
    u = (rng.permutation(n) + rng.uniform(size=n)) / n
    counts = dist.ppf(lo + u * (hi - lo))
    counts = counts * (size / REFERENCE_SIZE) ** 2 * density_scale
    return np.maximum(1, np.rint(counts)).astype(np.int64)


def _free_positions(rng: np.random.Generator, radii: np.ndarray, size: int, gap: float) -> np.ndarray:
    """Centres for beads that should not touch: random sequential placement, vectorised per round.

    Each round draws a candidate for every unplaced bead and keeps those clear (by ``gap`` px) of the
    beads already placed and of earlier candidates in the same round. Beads still unplaced after the
    last round go anywhere: at the densest images a few overlaps are realistic anyway.
    """
    count = radii.size
    centres = np.full((count, 2), np.nan)
    todo = np.arange(count)
    for _ in range(12):
        if todo.size == 0:
            break
        cand = rng.uniform(0, size, size=(todo.size, 2))
        need = radii[todo][:, None] + gap
        placed = np.flatnonzero(~np.isnan(centres[:, 0]))
        clear = np.ones(todo.size, dtype=bool)
        if placed.size:
            d = np.linalg.norm(cand[:, None, :] - centres[placed][None, :, :], axis=2)
            clear = (d >= need + radii[placed][None, :]).all(axis=1)
        d_self = np.linalg.norm(cand[:, None, :] - cand[None, :, :], axis=2)
        conflict = (d_self < need + radii[todo][None, :]) & np.tri(todo.size, k=-1, dtype=bool)
        clear &= ~(conflict & clear[None, :]).any(axis=1)
        centres[todo[clear]] = cand[clear]
        todo = todo[~clear]
    if todo.size:
        centres[todo] = rng.uniform(0, size, size=(todo.size, 2))
    return centres


def _bead_positions(rng: np.random.Generator, count: int, size: int, radii: np.ndarray) -> np.ndarray:
    """Centres (count, 2): mostly separate beads, a few placed against an earlier bead as clumps."""
    gap = 1.5 * max(1.0, size / REFERENCE_SIZE)  # a clear pixel between beads keeps them 8-separate
    centres = _free_positions(rng, radii, size, gap)
    clumped = np.flatnonzero(rng.uniform(size=count) < CLUMP_FRACTION)
    clumped = clumped[clumped > 0]
    if clumped.size:
        anchors = rng.integers(0, clumped, endpoint=False)  # an earlier bead for each clumped one
        angle = rng.uniform(0, 2 * np.pi, size=clumped.size)
        dist = (radii[clumped] + radii[anchors]) * rng.uniform(0.75, 1.05, size=clumped.size)
        offset = np.stack([np.sin(angle), np.cos(angle)], axis=1) * dist[:, None]
        centres[clumped] = np.clip(centres[anchors] + offset, 0, size - 1e-6)
    return centres


def _render_beads(rng: np.random.Generator, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Bead signal in [0, ~1] and the union mask, rasterised for all beads at once.

    Each bead is a bright disc with a soft edge, either domed (brighter centre, like a fluorescent bead)
    or with a darker rim just outside it (like beads under brightfield), chosen per image. Overlapping
    bodies take the maximum, so a clump reads as one bright blob, as the mask union does.
    """
    scale = size / REFERENCE_SIZE
    radii = np.clip(rng.normal(RADIUS_MEAN, RADIUS_SD, size=count), 2.5, 7.5) * scale
    radii = np.maximum(radii, 1.0)
    centres = _bead_positions(rng, count, size, radii)
    amp = rng.uniform(0.85, 1.15, size=count)
    rim_strength = rng.uniform(0.15, 0.35) if rng.uniform() < 0.5 else 0.0
    edge = max(0.35, 0.6 * scale)

    reach = int(np.ceil(radii.max() + 3 * edge + 2))
    off = np.arange(-reach, reach + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    py = np.floor(centres[:, 0])[:, None] + oy.ravel()[None, :]  # (count, P) pixel rows
    px = np.floor(centres[:, 1])[:, None] + ox.ravel()[None, :]
    d = np.hypot(py + 0.5 - centres[:, :1], px + 0.5 - centres[:, 1:])
    inside = (py >= 0) & (py < size) & (px >= 0) & (px < size)
    r = radii[:, None]
    rel = d / r
    body = amp[:, None] * (0.8 + 0.2 * np.clip(1 - rel**2, 0, 1)) / (1 + np.exp((d - r) / edge))
    rim = -rim_strength * amp[:, None] * np.exp(-(((d - r - edge) / (1.2 * edge)) ** 2))

    idx = (py * size + px).astype(np.int64)[inside]
    signal = np.zeros(size * size)
    np.maximum.at(signal, idx, body[inside])
    if rim_strength:
        darker = np.zeros(size * size)
        np.minimum.at(darker, idx, rim[inside])
        signal = np.where(signal > 0.5, signal, signal + darker)
    mask = np.zeros(size * size, dtype=np.uint8)
    mask[idx[(d <= r)[inside]]] = 255
    return signal.reshape(size, size), mask.reshape(size, size)


def _microscope(rng: np.random.Generator, signal: np.ndarray) -> np.ndarray:
    """Optics and camera: background texture, uneven illumination, blur, shot and read noise -> uint8."""
    size = signal.shape[0]
    y, x = _grid(size)
    background = rng.uniform(0.10, 0.22) + 0.025 * _smooth_noise(rng, (size, size), size / 24)
    gy, gx = rng.uniform(-0.35, 0.35, size=2)
    vignette = rng.uniform(0.1, 0.5)
    cy, cx = rng.uniform(0.35, 0.65, size=2)
    illumination = 1 + gy * (y - 0.5) + gx * (x - 0.5) - vignette * ((y - cy) ** 2 + (x - cx) ** 2) * 2
    brightness = rng.uniform(0.45, 0.7)
    img = (background + brightness * signal) * np.clip(illumination, 0.3, None)
    img = ndimage.gaussian_filter(img, max(0.5, 0.7 * size / REFERENCE_SIZE))
    photons = rng.uniform(150, 600)
    img = rng.poisson(np.clip(img, 0, None) * photons) / photons + rng.normal(0, 0.01, img.shape)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def make_microbeads(out: Path, n: int = 73, size: int = 256, seed: int = 0, density_scale: float = 1.0) -> dict:
    """Write ``out/images/bead_NNN.png`` (8-bit gray) and ``out/masks/bead_NNN.png`` (0/255).

    Returns ``{"kind", "path", "n", "size", "seed", "counts", "objects", "mean_count", "mean_objects"}``:
    ``counts`` are beads drawn per image, ``objects`` what an 8-connected count of each mask finds
    (lower where beads touch). ``density_scale`` multiplies the bead counts, e.g. ``3 / 110`` for a
    sparse, mitochondria-like reference dataset.
    """
    out = Path(out)
    if n < 1 or size < 8:
        raise HpcsegError(f"microbeads: need n >= 1 and size >= 8, got n={n} size={size}")
    if density_scale <= 0:
        raise HpcsegError(f"microbeads: density_scale must be positive, got {density_scale}")
    images, masks = out / "images", out / "masks"
    _ensure_empty(images)
    _ensure_empty(masks)
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)

    seq = np.random.SeedSequence(seed)
    counts = bead_counts(n, np.random.default_rng(seq.spawn(1)[0]), size, density_scale)
    objects = []
    width = max(3, len(str(n - 1)))
    for i, child in enumerate(seq.spawn(n)):
        rng = np.random.default_rng(child)
        signal, mask = _render_beads(rng, int(counts[i]), size)
        image = _microscope(rng, signal)
        name = f"bead_{i:0{width}d}.png"
        _save_pil(image, images / name, "PNG")
        _save_pil(mask, masks / name, "PNG")
        objects.append(count_objects(mask))
    return {
        "kind": "microbeads", "path": str(out), "n": n, "size": size, "seed": seed,
        "counts": counts.tolist(), "objects": objects,
        "mean_count": float(counts.mean()), "mean_objects": float(np.mean(objects)),
    }


# --------------------------------------------------------------------------------------- hyperspectral

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
                       seed: int = 0) -> dict:
    """Write ``out/cores/core_NNN.npy`` (size, size, bands) float32 and ``out/labels/core_NNN.npy`` (size, size) int64.

    Labels: -1 outside the round tissue core, 0 background, 1..classes-1 tissue classes in smooth
    regions. Every class has its own spectrum (shared by all cores), so per-pixel spectra are enough to
    learn the segmentation; core-to-core gain and noise keep it from being trivial.
    """
    out = Path(out)
    if n_cores < 1 or size < 8 or bands < 2 or classes < 2:
        raise HpcsegError("hyperspectral: need n_cores >= 1, size >= 8, bands >= 2 and classes >= 2")
    cores, labels = out / "cores", out / "labels"
    _ensure_empty(cores)
    _ensure_empty(labels)
    cores.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    seq = np.random.SeedSequence(seed)
    spectra = _class_spectra(np.random.default_rng(seq.spawn(1)[0]), classes, bands)
    y, x = _grid(size)
    present: set[int] = set()
    for i, child in enumerate(seq.spawn(n_cores)):
        rng = np.random.default_rng(child)
        theta = np.arctan2(y - 0.5, x - 0.5)
        wobble = 1 + 0.06 * np.cos(3 * theta + rng.uniform(0, 6.3)) + 0.04 * np.cos(5 * theta + rng.uniform(0, 6.3))
        tissue = np.hypot(y - 0.5, x - 0.5) < rng.uniform(0.40, 0.47) * wobble
        fields = _smooth_noise(rng, (classes, size, size), size / 10)
        fields[0] += 0.3  # some background inside every core
        fields[1 + i % (classes - 1)] += 0.5  # each core favours one class, so all classes appear
        label = np.where(tissue, fields.argmax(axis=0), -1).astype(np.int64)
        gain = rng.uniform(0.85, 1.15) * (1 + 0.05 * _smooth_noise(rng, (size, size), size / 8))
        cube = spectra[np.clip(label, 0, None)] * gain[..., None]
        cube = np.where(tissue[..., None], cube, 0.02)
        cube = cube + rng.normal(0, 0.02, cube.shape)
        _save_npy(cube.astype(np.float32), cores / f"core_{i:03d}.npy")
        _save_npy(label, labels / f"core_{i:03d}.npy")
        present.update(int(v) for v in np.unique(label))
    return {"kind": "hyperspectral", "path": str(out), "n": n_cores, "size": size, "bands": bands,
            "classes": classes, "seed": seed, "labels_present": sorted(present)}


# ---------------------------------------------------------------------------------------------- MARIDA

# Sentinel-2 reflectance signatures over the 11 MARIDA bands (B1..B8A, B11, B12), roughly after the
# MARIDA paper's spectral plots. Debris (code 1) is brighter than water and flat into the NIR, which is
# the cue the models learn; Sargassum has a vegetation red edge; clouds are bright and flat.
MARIDA_SIGNATURES: dict[int, tuple[float, ...]] = {
    1: (0.070, 0.072, 0.075, 0.074, 0.080, 0.090, 0.098, 0.105, 0.100, 0.075, 0.055),  # Marine Debris
    2: (0.040, 0.042, 0.050, 0.035, 0.065, 0.120, 0.145, 0.155, 0.150, 0.060, 0.030),  # Dense Sargassum
    6: (0.350, 0.360, 0.370, 0.380, 0.385, 0.390, 0.395, 0.400, 0.400, 0.330, 0.260),  # Clouds
    7: (0.060, 0.052, 0.040, 0.024, 0.018, 0.014, 0.013, 0.012, 0.011, 0.005, 0.003),  # Marine Water
    8: (0.085, 0.090, 0.110, 0.105, 0.080, 0.050, 0.040, 0.035, 0.030, 0.012, 0.008),  # Sediment-Laden Water
    10: (0.070, 0.068, 0.070, 0.055, 0.040, 0.025, 0.020, 0.018, 0.016, 0.007, 0.004),  # Turbid Water
}
MARIDA_TILES = ("48MYU", "16PCC", "18QYF", "36JUN", "50LLR", "57VWH")


def _signature(code: int, bands: int) -> np.ndarray:
    sig = np.asarray(MARIDA_SIGNATURES[code])
    if bands == sig.size:
        return sig
    return np.interp(np.linspace(0, 1, bands), np.linspace(0, 1, sig.size), sig)


def _debris_mask(rng: np.random.Generator, size: int, pieces: int) -> np.ndarray:
    """Small elongated blobs: thick short line segments, like floating debris lines at 10 m resolution."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    mask = np.zeros((size, size), dtype=bool)
    for _ in range(pieces):
        p0 = rng.uniform(0.15 * size, 0.85 * size, size=2)
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.12, 0.3) * size
        p1 = p0 + length * np.array([np.sin(angle), np.cos(angle)])
        seg = p1 - p0
        t = np.clip(((yy - p0[0]) * seg[0] + (xx - p0[1]) * seg[1]) / (seg @ seg), 0, 1)
        dist = np.hypot(yy - (p0[0] + t * seg[0]), xx - (p0[1] + t * seg[1]))
        mask |= dist <= rng.uniform(0.7, 1.4) * max(1.0, size / 48)
    return mask


def _marida_tile(rng: np.random.Generator, size: int, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size, bands) float32 tile and its uint8 class-code map."""
    # water types as smooth regions; ~30% of them left unlabelled (code 0), as in MARIDA's sparse labels
    water_codes = np.array([7, 7, 7, 10, 8] + ([6] if rng.uniform() < 0.25 else []))
    fields = _smooth_noise(rng, (water_codes.size, size, size), size / 6)
    surface = water_codes[fields.argmax(axis=0)]
    signatures = {c: _signature(c, bands) for c in MARIDA_SIGNATURES}
    codes = surface.copy()
    if rng.uniform() < 0.3:
        codes[_debris_mask(rng, size, 1)] = 2  # a Sargassum slick: the look-alike negative
    has_debris = rng.uniform() < 0.85
    debris = _debris_mask(rng, size, int(rng.integers(1, 4))) if has_debris else np.zeros((size, size), bool)
    codes[debris] = 1
    lut = np.zeros((max(MARIDA_SIGNATURES) + 1, bands))
    for c, sig in signatures.items():
        lut[c] = sig
    fraction = np.where(codes == surface, 1.0, rng.uniform(0.6, 1.0, size=(size, size)))  # sub-pixel mixing
    tile = fraction[..., None] * lut[codes] + (1 - fraction[..., None]) * lut[surface]
    tile = tile * (1 + 0.04 * _smooth_noise(rng, (size, size), size / 8))[..., None]
    tile = tile + rng.normal(0, 0.003, tile.shape)
    unlabelled = (_smooth_noise(rng, (size, size), size / 6) > 0.5) & (codes != 1)
    cl = np.where(unlabelled, 0, codes).astype(np.uint8)
    return tile.astype(np.float32), cl


def make_marida(out: Path, n: int = 24, size: int = 32, bands: int = 11, seed: int = 0) -> dict:
    """Write ``out/patches/S2_<date>_<tile>/<id>.tif`` (size, size, bands) float32 with ``<id>_cl.tif``
    (uint8 MARIDA codes: 1 debris, 2 Sargassum, 6 clouds, 7 water, 8 sediment, 10 turbid, 0 unlabelled)
    and ``<id>_conf.tif`` (annotation confidence, ignored by the loaders), grouped four tiles per scene.
    """
    out = Path(out)
    if n < 1 or size < 8 or bands < 2:
        raise HpcsegError("marida: need n >= 1, size >= 8 and bands >= 2")
    patches = out / "patches"
    _ensure_empty(patches)
    seq = np.random.SeedSequence(seed)
    debris_tiles = 0
    for i, child in enumerate(seq.spawn(n)):
        rng = np.random.default_rng(child)
        scene = f"S2_{1 + (i // 4) % 28}-{1 + (i // 112) % 12}-19_{MARIDA_TILES[(i // 4) % len(MARIDA_TILES)]}"
        folder = patches / scene
        folder.mkdir(parents=True, exist_ok=True)
        tile, cl = _marida_tile(rng, size, bands)
        conf = np.where(cl > 0, rng.integers(1, 4, size=cl.shape), 0).astype(np.uint8)
        stem = f"{scene}_{i % 4}"
        _save_tiff(tile, folder / f"{stem}.tif")
        _save_tiff(cl, folder / f"{stem}_cl.tif")
        _save_tiff(conf, folder / f"{stem}_conf.tif")
        debris_tiles += int((cl == 1).any())
    return {"kind": "marida", "path": str(out), "n": n, "size": size, "bands": bands, "seed": seed,
            "tiles_with_debris": debris_tiles}


# -------------------------------------------------------------------------------------------- HAM10000

# The looks (what decides each diagnosis) live in hpcseg.workloads.ham10000.synth_looks: every class is
# told apart by its lesion only, the skin around it is drawn alike for all classes.
_LOCALIZATIONS = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest", "scalp")


def _lesion_plan(rng: np.random.Generator, n: int, classes: Sequence[str]) -> list[tuple[int, int]]:
    """(class index, images of this lesion) per lesion until n images; classes cycled so all appear."""
    plan: list[tuple[int, int]] = []
    order = rng.permutation(len(classes))
    total = 0
    while total < n:
        k = min(n - total, int(rng.choice([1, 1, 1, 2, 2, 3])))
        plan.append((int(order[len(plan) % len(classes)]), k))
        total += k
    return plan


def make_ham10000(out: Path, n: int = 70, size: int = 64, classes: Sequence[str] = HAM10000_CLASSES,
                  seed: int = 0) -> dict:
    """Write ``out/HAM10000_metadata.csv`` and ``out/images/<image_id>.jpg`` (RGB JPEG).

    Columns as in the real file: lesion_id, image_id, dx, dx_type, age, sex, localization. Some lesions
    have two or three images (same outline and colour, different pose and lighting), which is what the
    lesion-grouped split must keep on one side. The diagnosis is decided by the lesion's look alone
    (:mod:`hpcseg.workloads.ham10000.synth_looks`), so a small network can learn it.
    """
    from hpcseg.workloads.ham10000 import synth_looks as looks

    out = Path(out)
    classes = list(classes)
    if n < 1 or size < 8 or not classes:
        raise HpcsegError("ham10000: need n >= 1, size >= 8 and at least one class")
    images = out / "images"
    _ensure_empty(images)
    if (out / HAM10000_METADATA).exists():
        raise HpcsegError(f"{out / HAM10000_METADATA} already exists; choose an empty output folder")
    images.mkdir(parents=True, exist_ok=True)
    seq = np.random.SeedSequence(seed)
    rng = np.random.default_rng(seq.spawn(1)[0])
    rows: list[dict[str, str]] = []
    image_no = 24306  # the real HAM10000 image ids start at ISIC_0024306
    for lesion_no, (ci, k) in enumerate(_lesion_plan(rng, n, classes)):
        name = classes[ci]
        look = looks.look_for(name, ci)
        shape = looks.lesion_shape(rng, look)
        meta = {"lesion_id": f"HAM_{lesion_no:07d}", "dx": name,
                "dx_type": str(rng.choice(["histo", "follow_up", "consensus", "confocal"])),
                "age": f"{float(rng.integers(1, 18) * 5):.1f}", "sex": str(rng.choice(["male", "female"])),
                "localization": str(rng.choice(_LOCALIZATIONS))}
        for _ in range(k):
            image_id = f"ISIC_{image_no:07d}"
            image_no += int(rng.integers(1, 40))
            pixels, _ = looks.lesion_image(rng, size, look, shape)
            _save_pil(pixels, images / f"{image_id}.jpg", "JPEG", quality=92)
            rows.append({**meta, "image_id": image_id})
    rows = [rows[i] for i in rng.permutation(len(rows))]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HAM10000_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(out / HAM10000_METADATA, buf.getvalue().encode())
    per_class = {c: sum(r["dx"] == c for r in rows) for c in classes}
    return {"kind": "ham10000", "path": str(out), "n": len(rows), "size": size, "seed": seed,
            "lesions": len({r["lesion_id"] for r in rows}), "per_class": per_class}


# ------------------------------------------------------------------------------------------------- CLI

# Each kind's own default (count, size): 73 x 256 is the microbead seed; the others are quick test sets.
KIND_DEFAULTS: dict[str, tuple[int, int]] = {
    "microbeads": (73, 256), "hyperspectral": (6, 64), "marida": (24, 32), "ham10000": (70, 64)}


def _n_and_size(args: argparse.Namespace) -> tuple[int, int]:
    dn, dsize = KIND_DEFAULTS[args.kind]
    return (dn if args.n is None else args.n), (dsize if args.size is None else args.size)


def cli_synth(args: argparse.Namespace) -> int:
    """``hpcseg synth KIND OUT``: write the dataset and say what was written."""
    out = Path(args.out).expanduser()
    n, size = _n_and_size(args)
    try:
        return _synth(args.kind, out, n, size, args.seed)
    except OSError as exc:  # disk full, permissions: the user's to fix, so one line, no traceback
        raise HpcsegError(f"{exc.filename or out}: {exc.strerror or exc}") from None


def _synth(kind: str, out: Path, n: int, size: int, seed: int) -> int:
    """Dispatch to the generator for ``kind`` and print a one-line account of what it wrote."""
    if kind == "microbeads":
        s = make_microbeads(out, n=n, size=size, seed=seed)
        print(f"wrote {s['n']} microbead images {size}x{size} to {out}/images and masks to {out}/masks")
        print(f"  beads per image: mean {s['mean_count']:.1f} (min {min(s['counts'])}, max {max(s['counts'])}); "
              f"connected objects per image: mean {s['mean_objects']:.1f}")
    elif kind == "hyperspectral":
        s = make_hyperspectral(out, n_cores=n, size=size, seed=seed)
        print(f"wrote {s['n']} hyperspectral cores {size}x{size}x{s['bands']} to {out}/cores "
              f"and label maps to {out}/labels ({s['classes']} classes, -1 outside tissue)")
    elif kind == "marida":
        s = make_marida(out, n=n, size=size, seed=seed)
        print(f"wrote {s['n']} MARIDA tiles {size}x{size}x{s['bands']} to {out}/patches "
              f"({s['tiles_with_debris']} with debris)")
    elif kind == "ham10000":
        s = make_ham10000(out, n=n, size=size, seed=seed)
        print(f"wrote {s['n']} HAM10000 images {size}x{size} of {s['lesions']} lesions to {out}/images "
              f"and {out}/{HAM10000_METADATA}")
    else:
        raise HpcsegError(f"unknown kind {kind!r}; choose microbeads, hyperspectral, marida or ham10000")
    return 0
