"""Synthetic datasets: seed-004 statistics, determinism, and the exact layouts of docs/formats.md."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest

from hpcseg.cli import main
from hpcseg.errors import HpcsegError
from hpcseg.images import list_images, read_image
from hpcseg.objects import count_objects, object_areas
from hpcseg.workloads.ham10000.synth import HAM10000_COLUMNS, make_ham10000
from hpcseg.workloads.hyperspectral.synth import make_hyperspectral
from hpcseg.workloads.marida.synth import make_marida
from hpcseg.workloads.microbead.synth import bead_counts, make_microbeads


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------- objects

def _disc(size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_touching_discs_are_one_object_separated_are_two():
    touching = _disc(40, 20, 12, 5) | _disc(40, 20, 22, 5)  # centres 10 apart, radius 5: they share pixels
    separated = _disc(40, 20, 8, 5) | _disc(40, 20, 28, 5)
    assert count_objects(touching) == 1
    assert count_objects(separated) == 2
    assert count_objects(np.zeros((8, 8), np.uint8)) == 0


def test_diagonal_neighbours_are_connected():
    mask = np.zeros((5, 5), np.uint8)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = 255  # a diagonal line: one object with 8-connectivity
    mask[0, 4] = 1
    assert count_objects(mask) == 2
    assert sorted(object_areas(mask).tolist()) == [1, 3]


def test_object_areas_known_and_rgb_masks():
    mask = np.zeros((10, 10), np.uint8)
    mask[1:3, 1:4] = 255  # 2 x 3
    mask[7, 7] = 255
    assert object_areas(mask).tolist() == [6, 1]
    assert object_areas(np.zeros((4, 4))).size == 0
    rgb = np.stack([mask] * 3, axis=-1)
    assert count_objects(rgb) == 2


# ---------------------------------------------------------------------------------------- microbeads

def test_bead_counts_match_seed_004_at_256px():
    counts = bead_counts(48, np.random.default_rng(7), size=256)
    assert counts.min() >= 12 and counts.max() <= 254
    assert 95 <= counts.mean() <= 125  # seed: 109.4; stratified sampling keeps the mean close
    assert counts.std() > 40  # broad, like the seed's +- 80.7
    small = bead_counts(48, np.random.default_rng(7), size=64)
    assert 95 / 16 <= small.mean() <= 125 / 16 and small.min() >= 1  # density scales with area


def test_microbeads_deterministic_and_seed_dependent(tmp_path):
    a = make_microbeads(tmp_path / "a", n=4, size=64, seed=3)
    b = make_microbeads(tmp_path / "b", n=4, size=64, seed=3)
    make_microbeads(tmp_path / "c", n=4, size=64, seed=4)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert a["counts"] == b["counts"]
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_microbeads_layout_binary_masks_aligned_with_bright_beads(tmp_path):
    s = make_microbeads(tmp_path, n=6, size=256, seed=1)
    images, masks = list_images(tmp_path / "images"), list_images(tmp_path / "masks")
    assert [p.name for p in images] == [f"bead_{i:03d}.png" for i in range(6)]
    assert [p.name for p in masks] == [p.name for p in images]
    assert all(12 <= c <= 254 for c in s["counts"])
    areas = []
    for img_path, mask_path, objects in zip(images, masks, s["objects"], strict=True):
        img, mask = read_image(img_path), read_image(mask_path)
        assert img.shape == mask.shape == (256, 256) and img.dtype == mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 255}
        fg = mask > 0
        assert img[fg].mean() > img[~fg].mean() + 40  # beads are bright where the mask says so
        assert count_objects(mask) == objects
        areas.extend(object_areas(mask).tolist())
    assert 50 <= np.mean(areas) <= 95  # seed: ~69 px per object


def test_microbeads_density_scale_and_refuses_non_empty(tmp_path):
    sparse = make_microbeads(tmp_path / "sparse", n=5, size=256, seed=0, density_scale=3 / 110)
    assert max(sparse["counts"]) <= 8
    (tmp_path / "again" / "images").mkdir(parents=True)  # an empty images/ is fine
    make_microbeads(tmp_path / "again", n=1, size=32)
    with pytest.raises(HpcsegError, match="already has files"):
        make_microbeads(tmp_path / "again", n=1, size=32)


def test_microbeads_full_size_is_fast(tmp_path):
    start = time.perf_counter()
    s = make_microbeads(tmp_path, n=73, size=256, seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 20  # ~1.5 s on one core; a per-pixel loop would take minutes
    assert 100 <= s["mean_count"] <= 120 and 12 <= min(s["counts"]) and max(s["counts"]) <= 254


# -------------------------------------------------------------------------------------- other layouts

def test_hyperspectral_layout_and_learnable_spectra(tmp_path):
    s = make_hyperspectral(tmp_path, n_cores=3, size=32, bands=12, classes=5, seed=2)
    cores = sorted((tmp_path / "cores").glob("*.npy"))
    labels = sorted((tmp_path / "labels").glob("*.npy"))
    assert [p.name for p in cores] == [p.name for p in labels] == ["core_000.npy", "core_001.npy", "core_002.npy"]
    cube, label = np.load(cores[0]), np.load(labels[0])
    assert cube.shape == (32, 32, 12) and cube.dtype == np.float32
    assert label.shape == (32, 32) and np.issubdtype(label.dtype, np.integer)
    assert set(s["labels_present"]) == {-1, 0, 1, 2, 3, 4}
    assert label.min() == -1 and label.max() <= 4
    # class mean spectra are further apart than the per-pixel noise
    means = {k: cube[label == k].mean(axis=0) for k in np.unique(label) if (label == k).sum() > 5}
    keys = sorted(means)
    gaps = [np.linalg.norm(means[a] - means[b]) for i, a in enumerate(keys) for b in keys[i + 1:]]
    assert min(gaps) > 0.1
    again = tmp_path / "again"
    make_hyperspectral(again, n_cores=3, size=32, bands=12, classes=5, seed=2)
    assert _files(again / "cores") == _files(tmp_path / "cores")
    assert _files(again / "labels") == _files(tmp_path / "labels")


def test_marida_layout_and_debris_signature(tmp_path):
    s = make_marida(tmp_path, n=8, size=32, seed=0)
    tiles = sorted(p for p in (tmp_path / "patches").rglob("*.tif") if not p.stem.endswith(("_cl", "_conf")))
    assert len(tiles) == 8 and s["tiles_with_debris"] >= 4
    debris, water = [], []
    for tile_path in tiles:
        tile = read_image(tile_path)
        cl = read_image(tile_path.with_name(f"{tile_path.stem}_cl.tif"))
        assert tile.shape == (32, 32, 11) and tile.dtype == np.float32
        assert cl.shape == (32, 32) and cl.dtype == np.uint8
        assert set(np.unique(cl).tolist()) <= {0, 1, 2, 6, 7, 8, 10}
        assert tile_path.with_name(f"{tile_path.stem}_conf.tif").is_file()
        debris.append(tile[cl == 1])
        water.append(tile[cl == 7])
    nir = 7  # B8: debris floats and reflects, water absorbs
    assert np.concatenate(debris)[:, nir].mean() > 3 * np.concatenate(water)[:, nir].mean()
    make_marida(tmp_path / "again", n=8, size=32, seed=0)
    assert _files(tmp_path / "again" / "patches") == _files(tmp_path / "patches")


def test_ham10000_layout_metadata_and_lesion_groups(tmp_path):
    s = make_ham10000(tmp_path, n=30, size=48, seed=5)
    with open(tmp_path / "HAM10000_metadata.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == HAM10000_COLUMNS
        rows = list(reader)
    assert len(rows) == s["n"] == 30
    assert {r["dx"] for r in rows} == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    by_lesion: dict[str, set[str]] = {}
    for r in rows:
        by_lesion.setdefault(r["lesion_id"], set()).add(r["dx"])
        img = read_image(tmp_path / "images" / f"{r['image_id']}.jpg")
        assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    assert all(len(dx) == 1 for dx in by_lesion.values())  # one diagnosis per lesion
    assert len(by_lesion) < len(rows)  # some lesions have several images
    assert len({r["image_id"] for r in rows}) == len(rows)
    make_ham10000(tmp_path / "again", n=30, size=48, seed=5)
    assert (tmp_path / "again" / "HAM10000_metadata.csv").read_bytes() == (tmp_path / "HAM10000_metadata.csv").read_bytes()


# ------------------------------------------------------------------------------------------------ CLI

def test_cli_synth_microbeads_and_clean_error(tmp_path, capsys):
    out = tmp_path / "beads"
    assert main(["synth", "microbeads", str(out), "--n", "3", "--size", "64", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 microbead images" in printed and "mean" in printed
    assert len(list_images(out / "images")) == 3
    assert main(["synth", "microbeads", str(out), "--n", "3", "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert "already has files" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_synth_small_kinds_use_their_own_defaults(tmp_path, capsys):
    assert main(["synth", "hyperspectral", str(tmp_path / "hs")]) == 0
    assert len(list((tmp_path / "hs" / "cores").glob("*.npy"))) == 6
    assert np.load(tmp_path / "hs" / "cores" / "core_000.npy").shape == (64, 64, 16)
    assert main(["synth", "marida", str(tmp_path / "ma"), "--n", "2", "--size", "16"]) == 0
    assert main(["synth", "ham10000", str(tmp_path / "ham"), "--n", "9", "--size", "32"]) == 0
    printed = capsys.readouterr().out
    (tmp_path / "file").write_text("x")
    assert main(["synth", "marida", str(tmp_path / "file" / "sub")]) == 2  # OSError -> one clean line
    assert "Traceback" not in capsys.readouterr().err
    assert "6 hyperspectral cores" in printed and "2 MARIDA tiles" in printed and "9 HAM10000 images" in printed
