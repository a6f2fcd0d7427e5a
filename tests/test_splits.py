"""Dataset indexing per layout and persisted splits (torch-free)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpcseg.errors import HpcsegError
from hpcseg.layouts import DatasetIndex, index_dataset
from hpcseg.spec import JobSpec
from hpcseg.splits import ensure_splits, fold_indices, make_splits
from hpcseg.workloads.microbead.layout import density_bins
from tests.datasets import write_ham10000, write_hyperspectral, write_marida, write_microbead


def _spec(root: Path, layout: str = "microbead", **split) -> JobSpec:
    ds = {"root": str(root), "layout": layout}
    if layout == "ham10000":
        ds.update(metadata="HAM10000_metadata.csv", num_classes=7, channels=3,
                  class_names=["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"])
    return JobSpec.model_validate({
        "name": "t",
        "workload": {"task": "classification" if layout == "ham10000" else "binary_segmentation",
                     "dataset": ds, "models": [{"name": "m", "arch": "unet"}],
                     "split": {"method": "stratified", "val_fraction": 0.25, **split}, "seed": 7},
        "training": {"epochs": 1, "batch_size": 2, "lr": 1e-3},
        "resources": {"walltime": "00:10:00"},
        "container": {"runtime": "none"},
    })


def _index(n: int, strata: list[int] | None = None, groups: list[str] | None = None) -> DatasetIndex:
    return DatasetIndex(names=[f"i{k:03d}" for k in range(n)],
                        strata=None if strata is None else np.array(strata),
                        groups=None if groups is None else np.array(groups))


def test_density_bins_are_quantiles_and_merge_ties():
    counts = np.array([1, 2, 3, 4, 5, 6, 7, 8])
    np.testing.assert_array_equal(density_bins(counts, 4), [0, 0, 1, 1, 2, 2, 3, 3])
    assert set(density_bins(np.array([5, 5, 5, 5, 9]), 4).tolist()) == {0, 1}
    assert density_bins(counts, 1).tolist() == [0] * 8


def test_microbead_index_pairs_by_stem_and_counts_objects(tmp_path):
    root = write_microbead(tmp_path / "d", n=6, size=32, image_format="tif", mask_format="png")
    index = index_dataset(_spec(root, density_bins=2))
    assert index.names == [f"bead_{i:03d}" for i in range(6)]
    assert [f[0].suffix for f in index.files] == [".tif"] * 6
    assert index.strata is not None and set(index.strata.tolist()) <= {0, 1}
    (root / "masks" / "bead_003.png").unlink()
    with pytest.raises(HpcsegError, match="unpaired"):
        index_dataset(_spec(root))


def test_other_layouts_index(tmp_path):
    m = index_dataset(_spec(write_marida(tmp_path / "m"), "marida"))
    assert m.strata is not None and len(m.names) == len(m.files) > 0
    h = index_dataset(_spec(write_hyperspectral(tmp_path / "h"), "hyperspectral"))
    assert h.strata is None and h.names == sorted(h.names)
    ham = index_dataset(_spec(write_ham10000(tmp_path / "ham"), "ham10000"))
    assert ham.groups is not None and ham.strata is not None and len(ham.groups) == len(ham.names)


def test_stratified_holdout_keeps_every_bin_on_both_sides():
    strata = [0] * 10 + [1] * 10 + [2] * 10 + [3] * 10
    splits = make_splits(_spec(Path("/x")), _index(40, strata))
    fold = splits["folds"][0]
    assert splits["method_used"] == "stratified" and splits["fallback_reason"] is None
    assert len(fold["val"]) == 10 and not set(fold["val"]) & set(fold["train"])
    assert all(v in (2, 3) for v in fold["strata"]["val"].values())
    assert set(fold["strata"]["train"]) == set(fold["strata"]["val"]) == {"0", "1", "2", "3"}


def test_stratified_falls_back_to_random_with_a_reason():
    splits = make_splits(_spec(Path("/x")), _index(12, [0] * 11 + [1]))
    assert splits["method_used"] == "random"
    assert "smallest stratum has 1" in splits["fallback_reason"]


def test_kfold_covers_every_item_once_and_groups_never_straddle():
    groups = [f"g{k // 3}" for k in range(30)]
    strata = [k % 2 for k in range(30)]
    splits = make_splits(_spec(Path("/x"), folds=3), _index(30, strata, groups))
    vals = [n for f in splits["folds"] for n in f["val"]]
    assert sorted(vals) == _index(30).names
    gmap = dict(zip(_index(30).names, groups, strict=True))
    for f in splits["folds"]:
        assert not {gmap[n] for n in f["train"]} & {gmap[n] for n in f["val"]}
    hold = make_splits(_spec(Path("/x")), _index(30, strata, groups))["folds"][0]
    assert not {gmap[n] for n in hold["train"]} & {gmap[n] for n in hold["val"]}


def test_splits_are_seeded():
    a = make_splits(_spec(Path("/x")), _index(20, [k % 2 for k in range(20)]))
    b = make_splits(_spec(Path("/x")), _index(20, [k % 2 for k in range(20)]))
    assert a["folds"] == b["folds"]


def test_ensure_splits_persists_and_detects_a_changed_dataset(tmp_path):
    root = write_microbead(tmp_path / "d", n=8, size=32)
    spec = _spec(root, density_bins=2)
    first = ensure_splits(tmp_path / "run", spec)
    stamp = (tmp_path / "run" / "splits.json").stat().st_mtime_ns
    again = ensure_splits(tmp_path / "run", spec)
    assert again == first and (tmp_path / "run" / "splits.json").stat().st_mtime_ns == stamp
    tr, va = fold_indices(first, 0, index_dataset(spec, strata=False).names)
    assert len(tr) + len(va) == 8
    with pytest.raises(HpcsegError, match="fold 3 does not exist"):
        fold_indices(first, 3, index_dataset(spec, strata=False).names)
    gone = first["folds"][0]["val"][0]
    (root / "images" / f"{gone}.png").unlink()
    (root / "masks" / f"{gone}.png").unlink()
    with pytest.raises(HpcsegError, match="dataset changed"):
        ensure_splits(tmp_path / "run", spec)
    other = _spec(root, density_bins=2, folds=2)
    with pytest.raises(HpcsegError, match="other split settings"):
        ensure_splits(tmp_path / "run", other)


_WORKER = """
import json, sys, time
from pathlib import Path
from hpcseg.spec import JobSpec
from hpcseg.splits import ensure_splits
spec = JobSpec.model_validate(json.loads(sys.argv[1]))
until = float(sys.argv[3])
while time.time() < until:
    time.sleep(0.001)
print(json.dumps(ensure_splits(Path(sys.argv[2]), spec)))
"""


def test_concurrent_ensure_splits_write_one_identical_file(tmp_path):
    import time

    root = write_microbead(tmp_path / "d", n=10, size=32)
    spec = _spec(root, density_bins=2)
    start = time.time() + 2.0  # all four import first, then race for the file
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, spec.model_dump_json(), str(tmp_path / "run"),
                               str(start)], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    results = [json.loads(o) for o in outs]
    on_disk = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert all(r == on_disk for r in results)  # each writer stamps its pid: only the winner's survives
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["splits.json"]  # no temp files left


def test_layouts_and_splits_do_not_import_torch():
    code = "import sys, hpcseg.splits, hpcseg.layouts; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
