"""What a dataset folder holds, per layout (docs/formats.md): the items a split indexes, in a fixed order.

Torch-free, so submit can write splits.json on a login node. Every layout gives the same thing: item
names (sorted, so the order never depends on the file system), the files of each item, and optionally
strata (what a stratified split balances) and groups (what must never straddle train and validation).
The training sources list their items in exactly this order.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpcseg.errors import HpcsegError
from hpcseg.images import IMAGE_EXTENSIONS, read_image
from hpcseg.spec import JobSpec

MASK_EXTENSIONS = (".png", ".tif", ".tiff")


@dataclass
class DatasetIndex:
    names: list[str]
    strata: np.ndarray | None = None
    groups: np.ndarray | None = None
    files: list[tuple[Path, ...]] = field(default_factory=list)  # per item, e.g. (image, mask)
    strata_note: str = ""  # what the strata mean, for splits.json

    def __len__(self) -> int:
        return len(self.names)


def index_dataset(spec: JobSpec, *, strata: bool = True) -> DatasetIndex:
    """The items of ``spec.workload.dataset``; ``strata=False`` skips reading labels (faster checks)."""
    ds = spec.workload.dataset
    root = Path(ds.root)
    if not root.is_dir():
        raise HpcsegError(f"dataset root {root} is not a folder (is it mounted on this node?)")
    index = _LAYOUTS[ds.layout](spec, root, strata)
    if not index.names:
        raise HpcsegError(f"dataset {root} ({ds.layout} layout) holds no items; see docs/formats.md")
    return index


# --------------------------------------------------------------------------------------------- microbead


def _by_stem(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    dupes: list[str] = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions:
            if p.stem in found:
                dupes.append(f"{found[p.stem].name} and {p.name}")
            found[p.stem] = p
    if dupes:
        raise HpcsegError(f"{folder}: two files share a name stem: {'; '.join(dupes[:5])}; keep one")
    return found


def microbead_pairs(root: Path) -> tuple[list[str], list[tuple[Path, Path]]]:
    """images/<stem>.* paired with masks/<stem>.*; any unpaired file is an error naming it."""
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise HpcsegError(f"{root}: no {d.name}/ folder; the microbead layout needs images/ and masks/")
    images, masks = _by_stem(img_dir, IMAGE_EXTENSIONS), _by_stem(mask_dir, MASK_EXTENSIONS)
    lonely_i, lonely_m = sorted(set(images) - set(masks)), sorted(set(masks) - set(images))
    if lonely_i or lonely_m:
        problems = [f"image without mask: {images[s].name}" for s in lonely_i[:10]]
        problems += [f"mask without image: {masks[s].name}" for s in lonely_m[:10]]
        raise HpcsegError(f"{root}: {len(lonely_i)} image(s) and {len(lonely_m)} mask(s) are unpaired",
                          problems=problems)
    names = sorted(images)
    return names, [(images[s], masks[s]) for s in names]


def density_bins(counts: np.ndarray, bins: int) -> np.ndarray:
    """Quantile bins of object counts (0..bins-1); duplicate edges (many equal counts) merge bins."""
    counts = np.asarray(counts, dtype=float)
    if bins <= 1 or len(counts) == 0:
        return np.zeros(len(counts), dtype=np.int64)
    edges = np.unique(np.quantile(counts, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(edges, counts, side="left").astype(np.int64)


def _microbead(spec: JobSpec, root: Path, strata: bool) -> DatasetIndex:
    names, files = microbead_pairs(root)
    index = DatasetIndex(names=names, files=list(files))
    if strata:
        from hpcseg.objects import count_objects

        counts = np.array([count_objects(read_image(m)) for _, m in files])
        index.strata = density_bins(counts, spec.workload.split.density_bins)
        index.strata_note = f"objects-per-image quantile bins ({spec.workload.split.density_bins})"
    return index


# --------------------------------------------------------------------------------------------- marida


def _marida(spec: JobSpec, root: Path, strata: bool) -> DatasetIndex:
    base = root / "patches"
    if not base.is_dir():
        raise HpcsegError(f"{root}: no patches/ folder; the marida layout needs patches/**/<id>.tif")
    tiles = sorted(p for p in base.rglob("*.tif")
                   if not p.stem.endswith(("_cl", "_conf")) and not p.name.startswith("."))
    names, files, missing = [], [], []
    for t in tiles:
        cl = t.with_name(f"{t.stem}_cl.tif")
        if not cl.is_file():
            missing.append(t.name)
            continue
        names.append(t.stem)
        files.append((t, cl))
    if missing:
        raise HpcsegError(f"{base}: {len(missing)} tile(s) have no _cl.tif mask beside them",
                          problems=missing[:10])
    _unique(names, base)
    index = DatasetIndex(names=names, files=files)
    if strata:
        index.strata = np.array([int((read_image(cl) == 1).any()) for _, cl in files], dtype=np.int64)
        index.strata_note = "marine debris (class 1) present"
    return index


# --------------------------------------------------------------------------------------------- hyperspectral


def _hyperspectral(spec: JobSpec, root: Path, strata: bool) -> DatasetIndex:
    cores, labels = root / "cores", root / "labels"
    for d in (cores, labels):
        if not d.is_dir():
            raise HpcsegError(f"{root}: no {d.name}/ folder; the hyperspectral layout needs cores/ and labels/")
    names = sorted(p.stem for p in cores.glob("*.npy") if not p.name.startswith("."))
    missing = [n for n in names if not (labels / f"{n}.npy").is_file()]
    if missing:
        raise HpcsegError(f"{labels}: {len(missing)} core(s) have no label map", problems=missing[:10])
    return DatasetIndex(names=names, files=[(cores / f"{n}.npy", labels / f"{n}.npy") for n in names])


# --------------------------------------------------------------------------------------------- ham10000


def _ham10000(spec: JobSpec, root: Path, strata: bool) -> DatasetIndex:
    ds = spec.workload.dataset
    meta = root / (ds.metadata or "HAM10000_metadata.csv")
    if not meta.is_file():
        raise HpcsegError(f"{meta}: metadata table not found (set dataset.metadata)")
    with open(meta, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    need = {"lesion_id", "image_id", "dx"}
    if not rows or not need <= set(rows[0]):
        raise HpcsegError(f"{meta}: needs the columns {', '.join(sorted(need))}")
    classes = ds.class_names or sorted({r["dx"] for r in rows})
    unknown = sorted({r["dx"] for r in rows} - set(classes))
    if unknown:
        raise HpcsegError(f"{meta}: dx values {', '.join(unknown)} are not in dataset.class_names")
    images = {p.stem: p for p in root.rglob("*.jpg") if not p.name.startswith(".")}
    rows.sort(key=lambda r: r["image_id"])
    missing = [r["image_id"] for r in rows if r["image_id"] not in images]
    if missing:
        raise HpcsegError(f"{root}: {len(missing)} image(s) listed in {meta.name} are missing",
                          problems=[f"{m}.jpg" for m in missing[:10]])
    names = [r["image_id"] for r in rows]
    _unique(names, meta)
    return DatasetIndex(
        names=names,
        strata=np.array([classes.index(r["dx"]) for r in rows], dtype=np.int64),
        groups=np.array([r["lesion_id"] for r in rows]),
        files=[(images[n],) for n in names],
        strata_note="dx class",
    )


def _unique(names: list[str], where: Path) -> None:
    seen: set[str] = set()
    dupes = sorted({n for n in names if n in seen or seen.add(n)})
    if dupes:
        raise HpcsegError(f"{where}: item names repeat: {', '.join(dupes[:10])}; names must be unique")


_LAYOUTS = {"microbead": _microbead, "marida": _marida, "hyperspectral": _hyperspectral, "ham10000": _ham10000}
