"""Synthetic HAM10000: a metadata table and RGB lesion images whose look depends on the dx class."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpcseg.errors import HpcsegError
from hpcseg.fsutil import write_bytes_atomic
from hpcseg.synth import ensure_empty, grid, save_pil, smooth_noise

DEFAULTS = (70, 64)  # (images, side)
HAM10000_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
HAM10000_METADATA = "HAM10000_metadata.csv"
HAM10000_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")


# Mean lesion colour (RGB 0-1), boundary irregularity and relative size per diagnosis: a caricature of
# the dermoscopic cues (melanoma dark and irregular, naevi brown and round, vascular lesions red).
HAM10000_LOOKS: dict[str, tuple[tuple[float, float, float], float, float]] = {
    "akiec": ((0.72, 0.42, 0.38), 0.10, 0.28),
    "bcc": ((0.86, 0.62, 0.64), 0.08, 0.25),
    "bkl": ((0.62, 0.48, 0.33), 0.12, 0.32),
    "df": ((0.52, 0.36, 0.27), 0.05, 0.20),
    "mel": ((0.22, 0.14, 0.13), 0.22, 0.34),
    "nv": ((0.45, 0.30, 0.20), 0.04, 0.26),
    "vasc": ((0.62, 0.14, 0.24), 0.07, 0.18),
}


_LOCALIZATIONS = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest", "scalp")


def _lesion_look(name: str, index: int) -> tuple[np.ndarray, float, float]:
    """Colour, irregularity and size for a class; unknown class names get a distinct made-up look."""
    if name in HAM10000_LOOKS:
        colour, irregular, radius = HAM10000_LOOKS[name]
        return np.asarray(colour), irregular, radius
    rng = np.random.default_rng(1000 + index)
    return rng.uniform(0.15, 0.85, size=3), float(rng.uniform(0.03, 0.2)), float(rng.uniform(0.18, 0.34))


def _lesion_image(rng: np.random.Generator, size: int, look: tuple[np.ndarray, float, float],
                  shape: np.ndarray, name: str) -> np.ndarray:
    """One dermoscopy-like RGB uint8 image: skin, a lesion whose outline is a few random harmonics."""
    colour, _, radius = look
    y, x = grid(size)
    cy, cx = 0.5 + rng.normal(0, 0.05, size=2)
    rot = rng.uniform(0, 2 * np.pi)
    theta = np.arctan2(y - cy, x - cx) + rot
    outline = radius * rng.uniform(0.9, 1.1) * (1 + sum(
        shape[k, 0] * np.cos((k + 2) * theta + shape[k, 1]) for k in range(shape.shape[0])))
    rho = np.hypot(y - cy, x - cx)
    inside = 1 / (1 + np.exp((rho - outline) / 0.015))
    skin = np.array([0.86, 0.68, 0.58]) * rng.uniform(0.85, 1.05) + rng.normal(0, 0.02, size=3)
    texture = smooth_noise(rng, (size, size), size / 20)
    lesion = colour[None, None, :] * (1 + 0.12 * texture[..., None])
    if name == "df":  # dermatofibroma: paler centre
        lesion = lesion + 0.25 * np.exp(-((rho / (0.35 * radius)) ** 2))[..., None]
    if name == "mel":  # blue-grey veil in part of the lesion
        veil = np.clip(smooth_noise(rng, (size, size), size / 10) - 0.3, 0, 0.6)[..., None]
        lesion = (1 - veil) * lesion + veil * np.array([0.35, 0.38, 0.48])
    img = skin[None, None, :] * (1 - inside[..., None]) + lesion * inside[..., None]
    vignette = 1 - 0.35 * np.clip(np.hypot(y - 0.5, x - 0.5) / 0.7, 0, 1)[..., None] ** 3
    img = img * vignette + rng.normal(0, 0.015, img.shape)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


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
    lesion-grouped split must keep on one side.
    """
    out = Path(out)
    classes = list(classes)
    if n < 1 or size < 8 or not classes:
        raise HpcsegError("ham10000: need n >= 1, size >= 8 and at least one class")
    images = out / "images"
    ensure_empty(images)
    if (out / HAM10000_METADATA).exists():
        raise HpcsegError(f"{out / HAM10000_METADATA} already exists; choose an empty output folder")
    images.mkdir(parents=True, exist_ok=True)
    seq = np.random.SeedSequence(seed)
    rng = np.random.default_rng(seq.spawn(1)[0])
    rows: list[dict[str, str]] = []
    image_no = 24306  # the real HAM10000 image ids start at ISIC_0024306
    for lesion_no, (ci, k) in enumerate(_lesion_plan(rng, n, classes)):
        name = classes[ci]
        look = _lesion_look(name, ci)
        shape = np.stack([rng.uniform(0, look[1], size=3), rng.uniform(0, 2 * np.pi, size=3)], axis=1)
        meta = {"lesion_id": f"HAM_{lesion_no:07d}", "dx": name,
                "dx_type": str(rng.choice(["histo", "follow_up", "consensus", "confocal"])),
                "age": f"{float(rng.integers(1, 18) * 5):.1f}", "sex": str(rng.choice(["male", "female"])),
                "localization": str(rng.choice(_LOCALIZATIONS))}
        for _ in range(k):
            image_id = f"ISIC_{image_no:07d}"
            image_no += int(rng.integers(1, 40))
            save_pil(_lesion_image(rng, size, look, shape, name), images / f"{image_id}.jpg", "JPEG", quality=92)
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


def synthesise(out: Path, n: int, size: int, seed: int) -> list[str]:
    """``hpcseg synth ham10000``: write the dataset, return what to print."""
    s = make_ham10000(out, n=n, size=size, seed=seed)
    return [f"wrote {s['n']} HAM10000 images {size}x{size} of {s['lesions']} lesions to {out}/images "
            f"and {out}/{HAM10000_METADATA}"]
