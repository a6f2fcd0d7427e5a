"""hpcseg analyze: exact statistics on constructed data, the seed-004 recommendations, clean CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpcseg.analyze import analyze_dataset, format_value, normalise, recommend, reference_objects, round_sig
from hpcseg.cli import main
from hpcseg.errors import HpcsegError
from hpcseg.workloads.microbead.synth import make_microbeads

SIZE = 48


def _disc(cy: int, cx: int, r: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _write_pair(root: Path, stem: str, mask: np.ndarray, mask_ext: str = ".png") -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    image = np.where(mask, 200, 30).astype(np.uint8)
    Image.fromarray(image).save(root / "images" / f"{stem}.png")
    Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"{stem}{mask_ext}")


def _dataset(root: Path, counts: list[int]) -> list[np.ndarray]:
    """Image k has counts[k] separated discs of radius 3 on a 4 x 4 grid (12 px apart)."""
    masks = []
    centres = [(6 + 12 * (i // 4), 6 + 12 * (i % 4)) for i in range(16)]
    for k, n in enumerate(counts):
        mask = np.zeros((SIZE, SIZE), bool)
        for cy, cx in centres[:n]:
            mask |= _disc(cy, cx)
        _write_pair(root, f"img_{k}", mask, ".tif" if k == 0 else ".png")
        masks.append(mask)
    return masks


def test_exact_statistics_on_constructed_dataset(tmp_path):
    counts = [1, 2, 3, 4, 10]
    masks = _dataset(tmp_path / "ds", counts)
    s = analyze_dataset(tmp_path / "ds", tmp_path / "out")
    assert s["image_count"] == 5
    assert s["image_sizes"] == [{"height": SIZE, "width": SIZE, "count": 5}]
    o = s["objects_per_image"]
    assert o["per_image"] == counts
    assert o["mean"] == pytest.approx(4.0) and o["std"] == pytest.approx(np.std(counts))
    assert (o["min"], o["max"]) == (1, 10)
    ratios = [m.mean() for m in masks]
    assert s["positive_ratio"]["mean"] == pytest.approx(np.mean(ratios))
    assert s["positive_ratio"]["std"] == pytest.approx(np.std(ratios))
    assert s["object_area"]["mean"] == pytest.approx(int(_disc(6, 6).sum()))  # every object is one disc
    assert s["object_area"]["count"] == sum(counts)
    assert s["brightness"]["percentiles"]["p1"] == pytest.approx(30 / 255, abs=2e-3)
    assert s["brightness"]["percentiles"]["p99"] == pytest.approx(200 / 255, abs=2e-3)
    assert s["quality"] == {"empty_masks": [], "partial_masks": [], "unpaired_images": [], "unpaired_masks": []}
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["objects_per_image"]["per_image"] == counts
    assert written["recommendations"]["set_args"].startswith("--set training.lr=")
    for name in ("sample_images.png", "distribution_analysis.png"):
        with Image.open(tmp_path / "out" / name) as im:
            assert im.format == "PNG" and im.size[0] > 300


def test_quality_flags_empty_border_unlabelled_and_unpaired(tmp_path):
    root = tmp_path / "ds"
    _dataset(root, [4, 4])
    _write_pair(root, "empty", np.zeros((SIZE, SIZE), bool))
    full = np.ones((SIZE, SIZE), bool)
    full[20:28, 20:28] = False
    _write_pair(root, "border", full)
    # image shows 12 bright discs, the mask has only 2 of them
    centres = [(6 + 12 * (i // 4), 6 + 12 * (i % 4)) for i in range(12)]
    shown = np.zeros((SIZE, SIZE), bool)
    for c in centres:
        shown |= _disc(*c)
    Image.fromarray(np.where(shown, 200, 30).astype(np.uint8)).save(root / "images" / "partial.png")
    Image.fromarray(((_disc(*centres[0]) | _disc(*centres[1])) * 255).astype(np.uint8)).save(root / "masks" / "partial.png")
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(root / "images" / "lonely.png")
    q = analyze_dataset(root, tmp_path / "out")["quality"]
    assert q["empty_masks"] == ["empty"]
    flagged = {item["name"]: " ".join(item["reasons"]) for item in q["partial_masks"]}
    assert set(flagged) == {"border", "partial"}
    assert "border" in flagged["border"] and "10 of 12" in flagged["partial"]
    assert q["unpaired_images"] == ["lonely"] and q["unpaired_masks"] == []


def _summary(objects: float, n_images: int = 73, positive: float = 0.115, cv: float = 0.74,
             spread: float = 1.6) -> dict:
    return {"image_count": n_images, "objects_per_image": {"mean": objects, "cv": cv},
            "positive_ratio": {"mean": positive}, "object_area": {"spread_p75_p25": spread}}


def _values(recs: dict) -> dict:
    return {it["field"]: it["value"] for it in recs["items"]}


def test_seed_004_ratio_36_gives_lr_1e4_batch_32():
    recs = recommend(_summary(109.4), reference=3, reference_lr=1e-3, reference_batch=8)
    v = _values(recs)
    assert recs["density_ratio"] == pytest.approx(36.47, abs=0.01)
    assert v["training.lr"] == pytest.approx(1e-4)
    assert v["training.batch_size"] == 32
    assert v["workload.models.0.dropout"] == 0.3
    assert v["training.loss"] == "dice"
    assert v["workload.split.method"] == "stratified"
    assert recs["set_args"] == ("--set training.lr=1e-4 --set training.batch_size=32 "
                                "--set workload.models.0.dropout=0.3 --set training.loss=dice "
                                "--set workload.split.method=stratified")
    assert recommend(_summary(109.4))["density_ratio"] == pytest.approx(109.4 / 3)  # default reference


def test_ratio_near_one_keeps_reference_and_other_rules():
    v = _values(recommend(_summary(3.3, positive=0.02, cv=0.2, spread=5.0), reference=3))
    assert v["training.lr"] == 1e-3 and v["training.batch_size"] == 8
    assert v["workload.models.0.dropout"] is None
    assert v["training.loss"] == "focal" and v["workload.split.method"] == "random"
    assert _values(recommend(_summary(1.0), reference=3))["training.lr"] == 1e-3  # sparser: never raise LR
    assert _values(recommend(_summary(12.0, positive=0.5), reference=3))["training.lr"] == 4e-4
    assert _values(recommend(_summary(12.0, positive=0.5), reference=3))["training.loss"] == "ce"
    assert _values(recommend(_summary(300.0), reference=3))["training.lr"] == 5e-5
    assert _values(recommend(_summary(1e6), reference=1))["training.lr"] == 1e-5  # clamped at ref / 100
    small = _values(recommend(_summary(109.4, n_images=20), reference=3))
    assert small["training.batch_size"] == 17  # capped at the training-set size (20 - 15%)
    assert _values(recommend(_summary(109.4), reference=3, reference_batch=48))["training.batch_size"] == 48


def test_helpers():
    assert round_sig(9.66e-5) == 1e-4 and round_sig(1.66e-4) == 2e-4
    assert format_value(1e-4) == "1e-4" and format_value(5e-5) == "5e-5" and format_value(32) == "32"
    assert format_value(0.3) == "0.3"
    assert normalise(np.array([[0, 65535]], np.uint16)).tolist() == [[0.0, 1.0]]
    assert normalise(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    assert normalise(np.array([[-2.0, 2.0]], np.float32)).tolist() == [[0.0, 1.0]]  # floats outside [0,1]: min-max
    assert normalise(np.full((2, 2, 3), 255, np.uint8)).shape == (2, 2)  # RGB -> gray
    assert reference_objects(None)[0] == 3.0 and reference_objects("2.5")[0] == 2.5
    with pytest.raises(HpcsegError):
        reference_objects(0)
    with pytest.raises(HpcsegError, match="no such summary.json"):
        reference_objects(Path("/nonexistent/summary.json"))


def test_reference_as_summary_json(tmp_path):
    sparse = analyze_dataset(_ds(tmp_path / "sparse", [2, 2, 2]), tmp_path / "sparse_out")
    dense_root = _ds(tmp_path / "dense", [16, 16, 16])
    s = analyze_dataset(dense_root, tmp_path / "dense_out", reference=tmp_path / "sparse_out" / "summary.json")
    recs = s["recommendations"]
    assert sparse["objects_per_image"]["mean"] == 2
    assert recs["reference"]["objects_per_image"] == 2 and recs["density_ratio"] == pytest.approx(8)
    assert "sparse" in recs["reference"]["name"]
    folder = analyze_dataset(dense_root, tmp_path / "o2", reference=tmp_path / "sparse_out")  # folder works too
    assert folder["recommendations"]["density_ratio"] == pytest.approx(8)


def _ds(root: Path, counts: list[int]) -> Path:
    _dataset(root, counts)
    return root


def test_synthetic_microbeads_reproduce_seed_004(tmp_path):
    make_microbeads(tmp_path / "beads", n=40, size=256, seed=0)
    s = analyze_dataset(tmp_path / "beads", tmp_path / "out")
    assert 80 <= s["objects_per_image"]["mean"] <= 125
    assert 0.07 <= s["positive_ratio"]["mean"] <= 0.16
    assert not s["quality"]["partial_masks"] and not s["quality"]["empty_masks"]
    v = _values(s["recommendations"])
    assert v["training.lr"] == 1e-4 and v["training.batch_size"] == 32 and v["training.loss"] == "dice"


# ------------------------------------------------------------------------------------------------ CLI

def test_cli_analyze_prints_table_and_set_line(tmp_path, capsys):
    root = _ds(tmp_path / "ds", [1, 3, 5])
    assert main(["analyze", str(root), "--reference", "1", "--reference-lr", "1e-3", "--reference-batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "objects per image: 3.0" in out and "training.lr" in out and "reason" in out
    assert "--set training.lr=5e-4 --set training.batch_size=2" in out  # 3x: LR / 3^0.65; batch capped at 2 images
    assert (root / "analysis" / "summary.json").is_file()


def test_cli_analyze_errors_are_clean(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "dataset folder not found" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

    (tmp_path / "noimages").mkdir()
    assert main(["analyze", str(tmp_path / "noimages")]) == 2
    assert "images/" in capsys.readouterr().err

    root = _ds(tmp_path / "ds", [1, 2])
    (root / "images" / "img_1.png").write_bytes(b"not a png at all")
    assert main(["analyze", str(root)]) == 2
    err = capsys.readouterr().err
    assert "img_1.png" in err and "Traceback" not in err

    good = _ds(tmp_path / "good", [1])
    assert main(["analyze", str(good), "--reference", str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err
