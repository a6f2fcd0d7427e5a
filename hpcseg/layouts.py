"""What a dataset folder holds, per layout (docs/formats.md): the items a split indexes, in a fixed order.

Torch-free, so submit can write splits.json on a login node. Each workload's ``layout.py`` (found through
hpcseg.workloads.registry) builds the index; this module holds what they share. Every layout gives the
same thing: item names (sorted, so the order never depends on the file system), the files of each item,
and optionally strata (what a stratified split balances) and groups (what must never straddle train and
validation). The training sources list their items in exactly this order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpcseg.errors import HpcsegError
from hpcseg.spec import JobSpec
from hpcseg.workloads import registry

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
    if not os.path.isdir(root):
        raise HpcsegError(f"dataset root {root} is not a folder (is it mounted on this node?)")
    try:
        index = registry.part(ds.layout, "layout").index(spec, root, strata)
    except OSError as exc:  # a name too long, no permission, a loop: the user's to fix, in one line
        raise HpcsegError(f"{exc.filename or root}: {exc.strerror or exc} (dataset {root}, {ds.layout} "
                          f"layout)") from None
    if not index.names:
        raise HpcsegError(f"dataset {root} ({ds.layout} layout) holds no items; see docs/formats.md")
    return index


def by_stem(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    """stem -> file in ``folder``; two files of one stem are ambiguous, so they are an error naming both."""
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


def unique_names(names: list[str], where: Path) -> None:
    """Items are named by file name, so a name seen twice would make two items one."""
    seen: set[str] = set()
    dupes = sorted({n for n in names if n in seen or seen.add(n)})
    if dupes:
        raise HpcsegError(f"{where}: item names repeat: {', '.join(dupes[:10])}; names must be unique")

