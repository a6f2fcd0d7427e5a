"""Synthetic MARIDA tiles: Sentinel-2-like band signatures with a little floating debris."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpcseg.errors import HpcsegError
from hpcseg.synth import ensure_empty, save_tiff, smooth_noise

DEFAULTS = (24, 32)  # (tiles, side)

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
    fields = smooth_noise(rng, (water_codes.size, size, size), size / 6)
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
    tile = tile * (1 + 0.04 * smooth_noise(rng, (size, size), size / 8))[..., None]
    tile = tile + rng.normal(0, 0.003, tile.shape)
    unlabelled = (smooth_noise(rng, (size, size), size / 6) > 0.5) & (codes != 1)
    cl = np.where(unlabelled, 0, codes).astype(np.uint8)
    return tile.astype(np.float32), cl


def make_marida(out: Path, n: int = 24, size: int = 32, bands: int = 11, seed: int = 0, splits: bool = True) -> dict:
    """Write ``out/patches/S2_<date>_<tile>/<id>.tif`` (size, size, bands) float32 with ``<id>_cl.tif``
    (uint8 MARIDA codes: 1 debris, 2 Sargassum, 6 clouds, 7 water, 8 sediment, 10 turbid, 0 unlabelled)
    and ``<id>_conf.tif`` (annotation confidence 1 high, 2 moderate, 3 low; 0 where unlabelled), grouped
    four tiles per scene; with ``splits``, MARIDA's ``out/splits/{train,val,test}_X.txt`` too (ids without
    the ``S2_`` prefix, as the real files; every 5th tile to val, the next to test: 60/20/20).
    """
    out = Path(out)
    if n < 1 or size < 8 or bands < 2:
        raise HpcsegError("marida: need n >= 1, size >= 8 and bands >= 2")
    patches = out / "patches"
    ensure_empty(patches)
    seq = np.random.SeedSequence(seed)
    debris_tiles = 0
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i, child in enumerate(seq.spawn(n)):
        rng = np.random.default_rng(child)
        scene = f"S2_{1 + (i // 4) % 28}-{1 + (i // 112) % 12}-19_{MARIDA_TILES[(i // 4) % len(MARIDA_TILES)]}"
        folder = patches / scene
        folder.mkdir(parents=True, exist_ok=True)
        tile, cl = _marida_tile(rng, size, bands)
        conf = np.where(cl > 0, rng.integers(1, 4, size=cl.shape), 0).astype(np.uint8)
        stem = f"{scene}_{i % 4}"
        save_tiff(tile, folder / f"{stem}.tif")
        save_tiff(cl, folder / f"{stem}_cl.tif")
        save_tiff(conf, folder / f"{stem}_conf.tif")
        debris_tiles += int((cl == 1).any())
        parts["val" if i % 5 == 3 else "test" if i % 5 == 4 else "train"].append(stem.removeprefix("S2_"))
    if splits and n >= 5:
        (out / "splits").mkdir(parents=True, exist_ok=True)
        for part, ids in parts.items():
            (out / "splits" / f"{part}_X.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return {"kind": "marida", "path": str(out), "n": n, "size": size, "bands": bands, "seed": seed,
            "tiles_with_debris": debris_tiles}


def synthesise(out: Path, n: int, size: int, seed: int) -> list[str]:
    """``hpcseg synth marida``: write the dataset, return what to print."""
    s = make_marida(out, n=n, size=size, seed=seed)
    return [f"wrote {s['n']} MARIDA tiles {size}x{size}x{s['bands']} to {out}/patches "
            f"({s['tiles_with_debris']} with debris)"]
