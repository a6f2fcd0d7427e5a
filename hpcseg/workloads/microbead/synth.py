"""Synthetic microbeads that reproduce the *statistics* of the seed-004 microscope data.

73 images of 256x256, 12-254 beads per image with mean ~110, ~69 px per object, ~11% positive pixels:
those statistics are what made the mitochondria hyper-parameters fail, so a demo that trains both
microbead jobs on this data shows the same density effect without the private data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage, stats

from hpcseg.errors import HpcsegError
from hpcseg.objects import count_objects
from hpcseg.synth import ensure_empty, grid, save_pil, smooth_noise

DEFAULTS = (73, 256)  # (images, side): the seed's dataset

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
    y, x = grid(size)
    background = rng.uniform(0.10, 0.22) + 0.025 * smooth_noise(rng, (size, size), size / 24)
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
    ensure_empty(images)
    ensure_empty(masks)
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
        save_pil(image, images / name, "PNG")
        save_pil(mask, masks / name, "PNG")
        objects.append(count_objects(mask))
    return {
        "kind": "microbeads", "path": str(out), "n": n, "size": size, "seed": seed,
        "counts": counts.tolist(), "objects": objects,
        "mean_count": float(counts.mean()), "mean_objects": float(np.mean(objects)),
    }


def synthesise(out: Path, n: int, size: int, seed: int) -> list[str]:
    """``hpcseg synth microbeads``: write the dataset, return what to print."""
    s = make_microbeads(out, n=n, size=size, seed=seed)
    return [f"wrote {s['n']} microbead images {size}x{size} to {out}/images and masks to {out}/masks",
            f"  beads per image: mean {s['mean_count']:.1f} (min {min(s['counts'])}, max {max(s['counts'])}); "
            f"connected objects per image: mean {s['mean_objects']:.1f}"]
