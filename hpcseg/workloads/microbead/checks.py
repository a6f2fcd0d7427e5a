"""Preflight of the microbead layout: images/ and masks/ paired by name, masks binary, sizes equal."""

from __future__ import annotations

from pathlib import Path

from hpcseg.images import IMAGE_EXTENSIONS, list_images
from hpcseg.layouts import MASK_EXTENSIONS
from hpcseg.preflight import (
    Checks,
    Read,
    Side,
    check_channels,
    check_mixed_sizes,
    check_paired,
    check_same_size,
    is_zero,
    show_values,
    subfolder,
    summarise_image,
    summarise_mask,
    train_fraction,
)


def check(c: Checks, root: Path) -> None:
    images_dir = subfolder(c, root, "images", "the images")
    masks_dir = subfolder(c, root, "masks", "the masks (same file names as the images)")
    images = list_images(images_dir) if images_dir else []
    masks = [p for p in list_images(masks_dir) if p.suffix.lower() in MASK_EXTENSIONS] if masks_dir else []
    paired = check_paired(c, Side(images_dir, images, "images", "image", IMAGE_EXTENSIONS, summarise_image),
                           Side(masks_dir, masks, "masks", "mask", MASK_EXTENSIONS, summarise_mask),
                           "masks/<name>.png or .tif", "image")
    pairs, by_image, by_mask = paired.pairs, paired.by_left, paired.by_right
    image_reads, mask_reads = paired.left_reads, paired.right_reads
    for r in mask_reads:
        _check_binary(c, r)
    img_of = {r.path: r for r in image_reads}
    mask_of = {r.path: r for r in mask_reads}
    for stem in pairs:
        check_same_size(c, img_of[by_image[stem]], mask_of[by_mask[stem]], "mask")
    good = [r for r in image_reads if r.error is None]
    check_channels(c, good, "image")
    if images_dir is not None:
        check_mixed_sizes(c, good, images_dir)
    c.count("training_samples", int(len(pairs) * train_fraction(c.spec)))


def _check_binary(c: Checks, r: Read) -> None:
    """Foreground is "above 0", so the background must be 0 and there must be at most one other level."""
    if r.error is not None or r.levels is None:
        return
    levels = r.levels
    if len(levels) > 2:
        c.error("dataset", r.path, f"mask is not binary: values {show_values(levels)}; expected two levels with "
                                   f"background 0 (0/255 or 0/1); re-export it as a binary mask")
    elif len(levels) == 2 and not is_zero(levels[0]):
        c.error("dataset", r.path, f"mask values {show_values(levels)} have no 0 background, so every pixel "
                                   f"would be foreground; re-export it with background 0")
    elif len(levels) == 1 and not is_zero(levels[0]):
        c.warn("dataset", r.path, f"mask is foreground everywhere (only value {show_values(levels)})")
