"""Reading images without torch: PNG/JPEG through Pillow, TIFF through tifffile, cubes from .npy.

Preflight, analyze and the trainers all read through here, so "unreadable image" means the same thing
(and names the same file) whether it is found before submission or on the compute node.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpcseg.errors import HpcsegError

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


class ImageReadError(HpcsegError):
    """A file that should be an image and is not (truncated, empty, wrong format)."""


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; hidden files and other types are skipped."""
    folder = Path(folder)
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def read_image(path: str | Path) -> np.ndarray:
    """The pixels as stored: (H, W) for grayscale, (H, W, C) for colour or multi-band; dtype kept."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: empty file (0 bytes); re-copy it from the source")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                    im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
                arr = np.asarray(im)
    except ImageReadError:
        raise
    except Exception as exc:  # every decoder has its own exception types; all mean "not a readable image"
        raise ImageReadError(f"{path}: cannot decode image ({exc.__class__.__name__}: {exc}); "
                             f"re-export or remove it") from None
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]  # alpha carries no signal in microscopy or remote sensing here
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ImageReadError(f"{path}: expected a 2-D image, got an array of shape {arr.shape}")
    return arr


def to_gray(arr: np.ndarray) -> np.ndarray:
    """RGB to luminance (ITU-R 601 weights); grayscale unchanged."""
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return (arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114).astype(np.float32)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        return arr[..., 0]
    return arr


def binarize_mask(arr: np.ndarray) -> np.ndarray:
    """Masks arrive as 0/1, 0/255, 0/65535 or RGB; foreground is anything above zero."""
    return (to_gray(arr) > 0).astype(np.uint8)
