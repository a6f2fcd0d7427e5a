"""Synthetic dermoscopy images whose diagnosis is decided by the lesion alone (torch-free).

Why: the earlier generator drew all seven classes as brownish discs that differed by a few per cent in
colour, so a small network trained for a few epochs on 32 px images scored near chance and every
downstream number (calibration, thresholds, Grad-CAM) was noise. Here each class has its own caricature
of the dermoscopic cue a clinician looks for, spread far enough apart in hue, darkness, size and pattern
that a ResNet learns it in a few epochs, while the skin around the lesion (tone, lighting, hair-free
vignette) is drawn from ONE distribution for all classes. So the only evidence for the class is inside
the lesion, which is what the Grad-CAM test relies on: a map that looks at the skin cannot be right.

Each lesion keeps its outline, colour and pattern across its images (HAM10000 has several photos of a
lesion); pose, lighting and noise change per photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Look:
    """A diagnosis' appearance: mean RGB (0-1), outline irregularity, radius (fraction of the side),
    and a pattern drawn inside the lesion."""

    colour: tuple[float, float, float]
    irregular: float
    radius: float
    pattern: str  # "plain", "veil", "pale_centre", "dots", "vessels", "scale", "lobules"


# Caricatures of the cues: melanoma black-blue and irregular with a veil; naevus brown, round, plain;
# vascular lesion bright red lobules; BCC pink with branching vessels; actinic keratosis orange-red
# scale; seborrhoeic keratosis (bkl) pale tan with dark dots; dermatofibroma dark ring, white centre.
LOOKS: dict[str, Look] = {
    "akiec": Look((0.85, 0.45, 0.20), 0.10, 0.27, "scale"),
    "bcc": Look((0.93, 0.70, 0.80), 0.06, 0.24, "vessels"),
    "bkl": Look((0.80, 0.72, 0.45), 0.12, 0.30, "dots"),
    "df": Look((0.40, 0.25, 0.15), 0.03, 0.22, "pale_centre"),
    "mel": Look((0.12, 0.08, 0.14), 0.25, 0.33, "veil"),
    "nv": Look((0.50, 0.30, 0.12), 0.02, 0.20, "plain"),
    "vasc": Look((0.75, 0.05, 0.20), 0.07, 0.18, "lobules"),
}
PATTERNS = ("plain", "veil", "pale_centre", "dots", "vessels", "scale", "lobules")


def look_for(name: str, index: int) -> Look:
    """The class' look; an unknown class name gets a distinct made-up one (seeded by its index)."""
    if name in LOOKS:
        return LOOKS[name]
    rng = np.random.default_rng(1000 + index)
    colour = tuple(float(v) for v in rng.uniform(0.1, 0.9, size=3))
    return Look(colour, float(rng.uniform(0.03, 0.2)), float(rng.uniform(0.18, 0.32)),  # type: ignore[arg-type]
                PATTERNS[index % len(PATTERNS)])


def lesion_shape(rng: np.random.Generator, look: Look) -> np.ndarray:
    """A lesion's fixed outline: three harmonics (amplitude, phase), kept across its images."""
    return np.stack([rng.uniform(0, look.irregular, size=3), rng.uniform(0, 2 * np.pi, size=3)], axis=1)


def _noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-12)


def lesion_mask(size: int, centre: tuple[float, float], radius: float, shape: np.ndarray,
                rotation: float) -> np.ndarray:
    """Soft lesion membership in [0, 1] (the outline a few harmonics around a circle)."""
    c = (np.arange(size) + 0.5) / size
    y, x = c[:, None], c[None, :]
    cy, cx = centre
    theta = np.arctan2(y - cy, x - cx) + rotation
    outline = radius * (1 + sum(shape[k, 0] * np.cos((k + 2) * theta + shape[k, 1]) for k in range(shape.shape[0])))
    rho = np.hypot(y - cy, x - cx)
    return 1 / (1 + np.exp((rho - outline) / 0.012))


def lesion_image(rng: np.random.Generator, size: int, look: Look, shape: np.ndarray,
                 centre: tuple[float, float] | None = None, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 (size, size, 3) image and its hard lesion mask (bool), for tests of where a CAM looks.
    ``centre`` (fractions of the side) and ``scale`` (of the radius) move and shrink the lesion; by default
    it sits near the middle as in dermoscopy."""
    if centre is None:
        centre = (float(0.5 + rng.normal(0, 0.06)), float(0.5 + rng.normal(0, 0.06)))
    radius = look.radius * scale * rng.uniform(0.9, 1.1)
    inside = lesion_mask(size, centre, radius, shape, rng.uniform(0, 2 * np.pi))
    c = (np.arange(size) + 0.5) / size
    y, x = c[:, None], c[None, :]
    rho = np.hypot(y - centre[0], x - centre[1]) / radius      # 0 at the centre, 1 at the mean outline
    # Skin: the same distribution for every class (tone, smooth blotches, noise).
    skin = np.array([0.88, 0.70, 0.60]) * rng.uniform(0.85, 1.05) + rng.normal(0, 0.03, size=3)
    img = skin[None, None, :] * (1 + 0.04 * _noise(rng, size, size / 12)[..., None])
    colour = np.asarray(look.colour) * rng.uniform(0.93, 1.07)
    lesion = colour[None, None, :] * (1 + 0.08 * _noise(rng, size, size / 24)[..., None])
    lesion = _pattern(rng, look.pattern, lesion, rho, size)
    img = img * (1 - inside[..., None]) + lesion * inside[..., None]
    vignette = 1 - 0.3 * np.clip(np.hypot(y - 0.5, x - 0.5) / 0.7, 0, 1)[..., None] ** 3
    img = img * vignette + rng.normal(0, 0.015, img.shape)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), inside > 0.5


def _pattern(rng: np.random.Generator, pattern: str, lesion: np.ndarray, rho: np.ndarray, size: int) -> np.ndarray:
    if pattern == "veil":  # blue-white veil over part of a melanoma
        veil = np.clip(_noise(rng, size, size / 10) * 0.5 + 0.2, 0, 0.7)[..., None]
        return (1 - veil) * lesion + veil * np.array([0.35, 0.42, 0.62])
    if pattern == "pale_centre":  # dermatofibroma: white scar-like centre in a dark ring
        return lesion + 0.55 * np.exp(-((rho / 0.45) ** 2))[..., None]
    if pattern == "dots":  # seborrhoeic keratosis: dark comedo-like dots
        dots = (ndimage.gaussian_filter(rng.random((size, size)) < 0.02, 0.7) > 0.08)[..., None]
        return np.where(dots, lesion * 0.3, lesion)
    if pattern == "vessels":  # BCC: branching red vessels
        lines = np.abs(_noise(rng, size, size / 16)) < 0.12
        return np.where(lines[..., None], np.array([0.70, 0.05, 0.10]), lesion)
    if pattern == "scale":  # actinic keratosis: white scale on an orange-red base
        scale = np.clip(_noise(rng, size, 1.0), 0, None)[..., None] * 0.25
        return lesion + scale
    if pattern == "lobules":  # vascular: dark-red lagoons
        lag = np.clip(_noise(rng, size, size / 20), 0.3, None)[..., None] - 0.3
        return lesion * (1 - 0.5 * np.clip(lag, 0, 1))
    return lesion


def off_centre_set(rng: np.random.Generator, n: int, size: int, classes: list[str], offset: tuple[float, float] = (0.2, 0.25),
                   scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` images (n, size, size, 3) uint8, class indices (n,) cycling through ``classes``, and hard lesion
    masks (n, size, size), each lesion in a random quadrant, its centre ``offset`` (fractions of the side)
    from the middle on both axes.

    Why: dermoscopy (and :func:`make_ham10000`) centres the lesion, so a map that merely peaks in the middle
    of the image would seem to find it. Off the middle, only a map that follows the lesion does; the image
    centre lies outside the lesion for all but the largest outlines."""
    images, labels, masks = [], [], []
    for i in range(n):
        c = i % len(classes)
        look = look_for(classes[c], c)
        centre = tuple(float(0.5 + rng.choice((-1, 1)) * rng.uniform(*offset)) for _ in range(2))
        img, mask = lesion_image(rng, size, look, lesion_shape(rng, look), centre=centre, scale=scale)  # type: ignore[arg-type]
        images.append(img)
        labels.append(c)
        masks.append(mask)
    return np.stack(images), np.asarray(labels, dtype=np.int64), np.stack(masks)
