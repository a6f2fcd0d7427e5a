"""HAM10000 evaluation: held-out calibration, 95 %-specificity operating points, confusion matrices, files;
and Grad-CAM maps that point at the lesion once a network has learnt lesions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcseg.workloads.ham10000.evaluation import evaluate, halves, threshold_at_specificity
from hpcseg.workloads.ham10000.gradcam import cam_maps, centre_of_mass
from hpcseg.workloads.ham10000.synth_looks import LOOKS, lesion_image, lesion_shape

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1, allow_nan=False), st.booleans()), min_size=1, max_size=200))
def test_threshold_keeps_95_percent_specificity_on_its_own_data(pairs: list[tuple[float, bool]]) -> None:
    scores = np.array([p[0] for p in pairs])
    pos = np.array([p[1] for p in pairs])
    t = threshold_at_specificity(scores, pos)
    if (~pos).sum() == 0:
        assert t is None
        return
    spec = ((scores <= t) & ~pos).sum() / (~pos).sum()
    assert spec >= 0.95 - 1e-12


def test_halves_keep_lesions_together() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), rng.integers(1, 4, 60))
    labels = (groups % 7).astype(np.int64)
    a, b = halves(labels, groups, seed=1)
    assert not set(groups[a]) & set(groups[b]) and len(a) + len(b) == len(groups)
    assert halves(labels[:3], np.zeros(3), seed=1) is None  # one lesion: nothing can be held out


def _overconfident(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits of a 75 %-accurate but over-confident classifier on 7 classes, 1-3 images per lesion."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n), rng.integers(1, 4, n))[:n]
    labels = rng.integers(0, 7, len(np.unique(groups)))[groups]
    guess = np.where(rng.random(n) < 0.75, labels, rng.integers(0, 7, n))
    logits = rng.normal(0, 1, (n, 7)) + 8.0 * np.eye(7)[guess]
    return logits, labels, groups


def test_evaluate_held_out_numbers_and_files(tmp_path: Path) -> None:
    logits, labels, groups = _overconfident(400)
    out = evaluate(logits, labels, groups, CLASSES, seed=0, out_dir=tmp_path)
    cal, ev = out["calibration"], out["evaluation"]
    assert cal["held_out"] and len(cal["temperature_halves"]) == 2 and cal["temperature"] > 1.5
    assert cal["ece_after"] < cal["ece_before"] and cal["nll_after"] < cal["nll_before"]
    # balanced accuracy and macro-F1 are scikit-learn's on the argmax
    from sklearn.metrics import balanced_accuracy_score

    assert ev["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, logits.argmax(1)))
    mel = ev["melanoma"]
    assert mel["held_out"] and 0 <= mel["sensitivity_at_95_specificity"] <= 1 and mel["specificity"] > 0.85
    cm = np.array(ev["confusion"])
    assert cm.sum() == len(labels) and np.allclose(np.array(ev["confusion_normalised"]).sum(1), 1.0)
    folder = tmp_path / "eval"
    for name in ("metrics.json", "confusion_counts.csv", "confusion_normalised.csv", "operating_points.csv",
                 "roc.csv", "reliability.csv", "roc.png", "reliability.png", "confusion.png"):
        assert (folder / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(folder / "operating_points.csv")))
    assert [r["class"] for r in rows] == CLASSES
    json.loads((folder / "metrics.json").read_text())


def test_held_out_ece_is_not_the_in_sample_one() -> None:
    """With a temperature fitted on the scored images the 'after' ECE is optimistic; cross-fitted it is not."""
    from hpcseg.workloads.ham10000.calibration import calibrate

    logits, labels, groups = _overconfident(120, seed=3)
    held = evaluate(logits, labels, groups, CLASSES, seed=0)["calibration"]
    in_sample = calibrate(torch.as_tensor(logits), torch.as_tensor(labels))
    assert held["ece_after"] != pytest.approx(in_sample["ece_after"], abs=1e-9)
    assert held["ece_before"] == pytest.approx(in_sample["ece_before"], abs=1e-6)  # torchmetrics == ours


# --------------------------------------------------------------------------------------------- Grad-CAM


def _lesion_set(n: int, size: int, classes: list[str], seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Images with the lesion anywhere (not just the middle), its class decided by its look; masks."""
    rng = np.random.default_rng(seed)
    xs, ys, masks = [], [], []
    for i in range(n):
        c = i % len(classes)
        look = LOOKS[classes[c]]
        centre = tuple(float(v) for v in rng.uniform(0.28, 0.72, 2))
        img, mask = lesion_image(rng, size, look, lesion_shape(rng, look), centre=centre, scale=0.7)
        xs.append(img)
        ys.append(c)
        masks.append(mask)
    x = torch.as_tensor(np.stack(xs)).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return x, torch.as_tensor(ys), np.stack(masks)


def test_cnn_gradcam_through_monai_shape_and_range() -> None:
    """MONAI GradCAM on the last stage of our (narrowed) ResNet-50: one map per image, in [0, 1]."""
    from hpcseg.spec import load_job
    from hpcseg.workloads.ham10000.models import build

    spec = load_job(Path(__file__).resolve().parents[1] / "jobs" / "ham10000_comparison.yaml", "quick",
                    ["workload.dataset.image_size=64", "workload.models.resnet50.options={widen_factor: 0.125}"]).spec
    net = build(spec, spec.model("resnet50"))
    x, _, _ = _lesion_set(4, 64, ["mel", "nv"], seed=0)
    cam = cam_maps(net, "resnet50", x)
    assert cam.shape == (4, 1, 64, 64) and float(cam.min()) >= 0 and float(cam.max()) <= 1
    com = centre_of_mass(cam)
    assert com.shape == (4, 2) and bool(((com >= 0) & (com <= 64)).all())
    # At 32 px the last stage is 1x1: the map is flat and shown as 0, not as stretched rounding noise.
    assert float(cam_maps(net, "resnet50", x[:, :, :32, :32]).abs().max()) == 0.0


def test_vit_maps_shape_and_range() -> None:
    """Rollout (what the grid draws) and token Grad-CAM (the benchmark's comparison): one map per image in
    [0, 1]; rollout never blank (identity plus attention is positive) and leaves the model's mode alone."""
    from hpcseg.workloads.ham10000.models import ViT

    net = ViT(3, (32, 32), 7, patch_size=8, hidden_size=32, mlp_dim=64, num_layers=2, num_heads=4).train()
    x = torch.randn(3, 3, 32, 32)
    for method in ("rollout", "token_gradcam"):
        cam = cam_maps(net, "vit_b_16", x, vit_method=method)
        assert cam.shape == (3, 1, 32, 32) and float(cam.min()) >= 0 and float(cam.max()) <= 1, method
        assert float(cam.max()) > 0, method
    assert net.training and bool(torch.isfinite(centre_of_mass(cam_maps(net, "vit_b_16", x))).all())
    assert bool(torch.isnan(centre_of_mass(torch.zeros(2, 1, 8, 8))).all())  # blank: no centre, not (0, 0)


def test_grouped_stratified_holdout_is_85_15(tmp_path: Path) -> None:
    """val_fraction 0.15 with lesion groups: 15 % as near as the groups allow (one 1/7 fold gave 14.3 %)."""
    from hpcseg.layouts import index_dataset
    from hpcseg.spec import load_job
    from hpcseg.splits import make_splits
    from hpcseg.workloads.ham10000.synth import make_ham10000

    make_ham10000(tmp_path, n=400, size=8, seed=0)
    spec = load_job(Path(__file__).resolve().parents[1] / "jobs" / "ham10000_comparison.yaml", "quick",
                    [f"workload.dataset.root={tmp_path}"]).spec
    index = index_dataset(spec)
    fold = make_splits(spec, index)["folds"][0]
    assert abs(len(fold["val"]) / len(index) - 0.15) < 0.01
    lesion = dict(zip(index.names, index.groups, strict=True))
    assert not {lesion[n] for n in fold["val"]} & {lesion[n] for n in fold["train"]}
