"""Synthetic HAM10000: a metadata table and RGB lesion images whose look depends on the dx class."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpcseg.errors import HpcsegError
from hpcseg.fsutil import write_bytes_atomic
from hpcseg.synth import ensure_empty, save_pil

DEFAULTS = (70, 64)  # (images, side)
HAM10000_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
HAM10000_METADATA = "HAM10000_metadata.csv"
HAM10000_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")


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
            save_pil(pixels, images / f"{image_id}.jpg", "JPEG", quality=92)
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
