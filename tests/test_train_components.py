"""Pieces of the training runtime on tiny inputs: readers, augmentation, models, losses, metrics, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hpcseg.errors import HpcsegError  # noqa: E402
from hpcseg.spec import AugmentationSpec, JobSpec  # noqa: E402
from tests.datasets import save_image, write_microbead  # noqa: E402


def spec_for(root: Path | str = "/nonexistent", task: str = "binary_segmentation", **training) -> JobSpec:
    num_classes = 2 if task == "binary_segmentation" else 3
    return JobSpec.model_validate({
        "name": "t",
        "workload": {"task": task,
                     "dataset": {"root": str(root), "image_size": 32, "channels": 1, "num_classes": num_classes},
                     "models": [{"name": "unet", "arch": "unet", "channels": [4, 8, 16], "dropout": 0.1},
                                {"name": "att", "arch": "attention_unet", "channels": [4, 8, 16]},
                                {"name": "attres", "arch": "attention_res_unet", "channels": [4, 8, 16]}],
                     "split": {"val_fraction": 0.25, "density_bins": 2}},
        "training": {"epochs": 1, "batch_size": 2, "lr": 1e-3, **training},
        "resources": {"walltime": "00:10:00"},
        "container": {"runtime": "none"},
    })


# --------------------------------------------------------------------------------------------- readers


def test_microbead_reader_handles_16bit_tiff_8bit_png_and_rgb(tmp_path):
    from hpcseg.workloads.microbead.train import build

    write_microbead(tmp_path / "d", n=2, size=48, bit_depth=16, image_format="tif", mask_values=(0, 65535),
                    mask_format="tif")
    write_microbead(tmp_path / "d", n=2, size=40, names=["p0", "p1"], image_format="png")
    write_microbead(tmp_path / "d", n=1, size=32, names=["rgb"], rgb=True, mask_values=(0, 1))
    src = build(spec_for(tmp_path / "d"), torch.device("cpu"))
    assert src.names() == ["bead_000", "bead_001", "p0", "p1", "rgb"]
    assert src.x.shape == (5, 1, 32, 32) and src.x.dtype == torch.float32
    assert src.y.shape == (5, 32, 32)
    assert set(torch.unique(src.y).tolist()) == {0, 1}
    means, stds = src.x.mean(dim=(1, 2, 3)), src.x.std(dim=(1, 2, 3))
    assert torch.allclose(means, torch.zeros(5), atol=1e-4) and torch.allclose(stds, torch.ones(5), atol=1e-3)
    # The 16-bit and 8-bit versions of one picture normalise to the same thing (bead_000 vs p0 both seed 0).
    fg_corr = [float(torch.corrcoef(torch.stack([src.x[i].flatten(), src.y[i].flatten().float()]))[0, 1])
               for i in range(5)]
    assert min(fg_corr) > 0.5  # bright blobs are where the mask is


def test_microbead_reader_rejects_mismatched_sizes(tmp_path):
    from hpcseg.workloads.microbead.train import build

    write_microbead(tmp_path / "d", n=1, size=32)
    save_image(tmp_path / "d" / "masks" / "bead_000.png", np.zeros((20, 20), np.uint8))
    with pytest.raises(HpcsegError, match="mask"):
        build(spec_for(tmp_path / "d"), torch.device("cpu"))


# --------------------------------------------------------------------------------------------- augmentation


def test_augment_moves_image_and_mask_together_and_is_a_pure_function():
    from hpcseg.train.source import augment, rng_for

    y = torch.zeros(6, 32, 32, dtype=torch.long)
    y[:, 4:12, 6:20] = 1
    y[:, 20:26, 22:30] = 1
    x = y[:, None].float() * 3.0 - 1.0  # the image is the mask, so any misalignment shows
    for aug in (AugmentationSpec(hflip=True, vflip=True, rot90=True),
                AugmentationSpec(hflip=True, vflip=True, rotate_degrees=30)):
        xa, ya = augment(x, y, aug, rng_for(1, 2, 3, 1))
        xb, yb = augment(x, y, aug, rng_for(1, 2, 3, 1))
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert ya.dtype == torch.long and set(torch.unique(ya).tolist()) <= {0, 1}
        agree = ((xa[:, 0] > 0.5).long() == ya).float().mean()
        assert agree > 0.97, aug
        assert not torch.equal(xa, x)
    _, yc = augment(x, y, AugmentationSpec(rot90=True, hflip=True), rng_for(1, 2, 4, 1))
    assert not torch.equal(yc, augment(x, y, AugmentationSpec(rot90=True, hflip=True), rng_for(1, 2, 3, 1))[1])


@pytest.mark.parametrize("aug", [AugmentationSpec(hflip=True, vflip=True, rot90=True),
                                 AugmentationSpec(hflip=True, vflip=True, rotate_degrees=30)])
def test_pixel_weights_move_exactly_with_the_target(aug):
    """augment_weighted: x and y as augment makes them (same draws), and every weight stays on its label
    (w is a function of the pixel's label and position class, so any slip between the two shows)."""
    from hpcseg.train.source import augment, augment_weighted, rng_for

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (6, 32, 32), generator=g)
    w = torch.tensor([1.0, 0.5, 0.25])[y]                      # weight determined by the label
    x = torch.randn(6, 2, 32, 32, generator=g)
    xa, ya, wa = augment_weighted(x, y, w, aug, rng_for(3, 1, 2, 1))
    xb, yb = augment(x, y, aug, rng_for(3, 1, 2, 1))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(wa, torch.tensor([1.0, 0.5, 0.25])[ya])  # no weight left its label
    assert not torch.equal(wa, w)


def test_tensor_source_yields_weights_beside_the_target():
    from hpcseg.train.source import TensorSource

    spec = spec_for(augmentation={"hflip": True, "rot90": True})
    y = torch.randint(0, 2, (5, 8, 8), dtype=torch.int8)
    w = torch.where(y == 1, 0.5, 1.0).to(torch.float16)
    src = TensorSource(spec, [f"i{i}" for i in range(5)], torch.randn(5, 1, 8, 8), y, torch.device("cpu"), w)
    assert src.has_pixel_weights()
    for train in (True, False):
        for _x, yb, wb in src.weighted_batches(np.arange(5), 2, train=train, epoch=1, seed=3):
            assert wb.dtype == torch.float32 and torch.equal(wb, torch.where(yb == 1, 0.5, 1.0))
    plain = [(x, yb) for x, yb in src.batches(np.arange(5), 2, train=True, epoch=1, seed=3)]
    same = [(x, yb) for x, yb, _ in src.weighted_batches(np.arange(5), 2, train=True, epoch=1, seed=3)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(plain, same, strict=True))
    with pytest.raises(ValueError, match="pixel weights of shape"):
        TensorSource(spec, ["a"], torch.randn(1, 1, 8, 8), y[:1], torch.device("cpu"), w[:1, :4])
    with pytest.raises(TypeError, match="override weighted_batches instead"):
        type("OnlyBatches", (TensorSource,), {"batches": lambda self, *a, **k: iter(())})


def test_color_jitter_changes_rgb_and_leaves_labels():
    from hpcseg.train.source import augment, rng_for

    x = torch.randn(4, 3, 16, 16)
    y = torch.arange(4)
    xa, ya = augment(x, y, AugmentationSpec(color_jitter=0.3), rng_for(0, 1, 0, 1))
    assert torch.equal(ya, y) and not torch.allclose(xa, x)


def test_tensor_source_order_depends_only_on_seed_epoch_and_position(tmp_path):
    from hpcseg.train.source import TensorSource

    spec = spec_for(augmentation={"hflip": True})
    x = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1).expand(10, 1, 4, 4).contiguous()
    src = TensorSource(spec, [str(i) for i in range(10)], x, torch.zeros(10, 4, 4, dtype=torch.long),
                       torch.device("cpu"))
    idx = np.arange(10)
    full = [b[0][:, 0, 0, 0].tolist() for b in src.batches(idx, 3, train=True, epoch=2, seed=5)]
    tail = [b[0][:, 0, 0, 0].tolist() for b in src.batches(idx, 3, train=True, epoch=2, seed=5, start_batch=2)]
    assert tail == full[2:] and sorted(sum(full, [])) == list(range(10))
    assert full != [b[0][:, 0, 0, 0].tolist() for b in src.batches(idx, 3, train=True, epoch=3, seed=5)]
    val = [b[0][:, 0, 0, 0].tolist() for b in src.batches(idx, 4, train=False, epoch=9, seed=1)]
    assert val == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert src.num_batches(idx, 3, train=True) == 4


# --------------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("name", ["unet", "att", "attres"])
@pytest.mark.parametrize("task", ["binary_segmentation", "multiclass_segmentation"])
def test_models_forward_backward(name, task):
    from hpcseg.train.models import build_model

    spec = spec_for(task=task)
    net = build_model(spec, spec.model(name))
    x = torch.randn(2, 1, 32, 32)
    out = net(x)
    assert out.shape == (2, 1 if task == "binary_segmentation" else 3, 32, 32)
    out.mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_model_registry_lists_every_arch_and_checks_sizes():
    from hpcseg.spec import Arch
    from hpcseg.train.models import ARCHS, build_model

    assert set(ARCHS) == set(Arch.__args__)
    spec = spec_for()
    bad = spec.model("unet").model_copy(update={"channels": [4, 8, 16, 32, 64, 128, 256]})
    with pytest.raises(HpcsegError, match="divisible by 64"):
        build_model(spec, bad)


def test_weights_load_non_strictly_from_a_local_file(tmp_path):
    from hpcseg.train.models import build_model

    spec = spec_for()
    src = build_model(spec, spec.model("attres"))
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("head")}
    torch.save({"model": state}, tmp_path / "w.pt")
    net = build_model(spec, spec.model("attres").model_copy(update={"weights": str(tmp_path / "w.pt")}))
    key = next(iter(state))
    assert torch.equal(net.state_dict()[key], state[key])
    with pytest.raises(HpcsegError, match="not found"):
        build_model(spec, spec.model("attres").model_copy(update={"weights": str(tmp_path / "none.pt")}))


# --------------------------------------------------------------------------------------------- losses


def _binary_target() -> torch.Tensor:
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    y[0, 2:5, 2:6] = 1
    y[1, 5:, :3] = 1
    return y


def test_dice_loss_is_zero_for_perfect_and_one_for_inverted_predictions():
    from hpcseg.train.losses import build_loss

    loss = build_loss(spec_for(loss="dice"))
    y = _binary_target()
    perfect = (y[:, None].float() * 2 - 1) * 50
    assert float(loss(perfect, y)) < 1e-4
    assert float(loss(-perfect, y)) > 0.999
    half = torch.zeros_like(perfect)  # p = 0.5 everywhere: dice = 2*0.5*P / (0.5*N + P)
    p, n = float(y.sum()), y.numel()
    assert math.isclose(float(loss(half, y)), 1 - (2 * 0.5 * p) / (0.5 * n + p), rel_tol=1e-4)


def test_ignored_pixels_do_not_count():
    from hpcseg.train.losses import build_loss

    y = _binary_target()
    logits = torch.randn(2, 1, 8, 8)
    y_ign = y.clone()
    y_ign[:, 0] = -1
    wild = logits.clone()
    wild[:, :, 0] = 100.0 * (1 - 2 * y[:, None, 0].float())  # confidently wrong, but ignored
    for name in ("dice", "focal", "ce"):
        loss = build_loss(spec_for(loss=name))
        assert math.isclose(float(loss(logits, y_ign)), float(loss(wild, y_ign)), rel_tol=1e-5), name


def test_focal_and_ce_known_values():
    from hpcseg.train.losses import build_loss

    y = torch.tensor([[[1, 0]]])
    logits = torch.zeros(1, 1, 1, 2)  # p = 0.5 for both pixels
    ce = build_loss(spec_for(loss="ce"))
    assert math.isclose(float(ce(logits, y)), math.log(2), rel_tol=1e-6)
    focal = build_loss(spec_for(loss={"components": {"focal": 1.0}, "focal_alpha": 0.25, "focal_gamma": 2.0}))
    # alpha 0.25 on the positive, 0.75 on the negative; (1-pt)^2 = 0.25
    expect = (0.25 * 0.25 * math.log(2) + 0.75 * 0.25 * math.log(2)) / 2
    assert math.isclose(float(focal(logits, y)), expect, rel_tol=1e-5)
    smooth = build_loss(spec_for(loss={"components": {"ce": 1.0}, "label_smoothing": 0.2}))
    assert math.isclose(float(smooth(logits, y)), math.log(2), rel_tol=1e-6)  # p=0.5 costs log 2 whatever the target
    both = build_loss(spec_for(loss={"dice": 0.5, "ce": 2.0}))
    dice = build_loss(spec_for(loss="dice"))
    assert math.isclose(float(both(logits, y)), 0.5 * float(dice(logits, y)) + 2 * math.log(2), rel_tol=1e-5)


def test_weighted_ce_uses_clipped_inverse_frequency():
    from hpcseg.train.losses import build_loss, class_weights

    np.testing.assert_allclose(class_weights(np.array([90, 10])), [0.2, 1.8])
    np.testing.assert_allclose(class_weights(np.array([90, 10]), (0.5, 1.5)), [0.5, 1.5])
    np.testing.assert_allclose(class_weights(np.array([10, 0, 10])), [1.0, 1.0, 1.0])
    spec = spec_for(task="multiclass_segmentation", loss="weighted_ce")
    loss = build_loss(spec, np.array([80, 10, 10]))
    logits = torch.zeros(1, 3, 1, 2)
    y = torch.tensor([[[0, 1]]])
    assert math.isclose(float(loss(logits, y)), math.log(3), rel_tol=1e-6)  # uniform: log K whatever the weights
    logits[0, 1, 0, 1] = 5.0  # the rare pixel right: the weighted mean leans on it
    w = class_weights(np.array([80, 10, 10]))
    l0 = math.log(3 - 1 + math.exp(0)) - 0  # class 0 logit 0, others 0 -> log 3
    l1 = -5.0 + math.log(math.exp(5.0) + 2)
    assert math.isclose(float(loss(logits, y)), (w[0] * l0 + w[1] * l1) / (w[0] + w[1]), rel_tol=1e-5)
    with pytest.raises(ValueError, match="class counts"):
        build_loss(spec)


@pytest.mark.parametrize("task,name", [("binary_segmentation", "ce"), ("binary_segmentation", "focal"),
                                       ("multiclass_segmentation", "ce"), ("multiclass_segmentation", "focal"),
                                       ("multiclass_segmentation", "weighted_ce"), ("classification", "ce")])
def test_a_pixel_of_weight_half_counts_half(task, name):
    """loss(logits, y, w) == sum(w·l)/sum(w) by hand, l from torch's own per-pixel loss; weight 1 everywhere
    is the unweighted loss; an ignored pixel stays out whatever its weight."""
    import torch.nn.functional as F

    from hpcseg.train.losses import build_loss

    g = torch.Generator().manual_seed(1)
    k = 2 if task == "binary_segmentation" else 3
    shape = (2, 4, 4) if task != "classification" else (6,)
    y = torch.randint(0, k, shape, generator=g)
    y.view(-1)[0] = -1                                            # one ignored pixel
    channels = 1 if task == "binary_segmentation" else k
    logits = torch.randn(shape[0], channels, *shape[1:], generator=g)
    w = torch.ones(shape)
    w.view(-1)[1::3] = 0.5
    w.view(-1)[0] = 7.0                                           # ignored: its weight must not matter
    counts = np.array([5, 3, 2])
    spec = spec_for(task=task, loss={"components": {name: 1.0}, "focal_alpha": None, "focal_gamma": 2.0})
    loss = build_loss(spec, counts if name == "weighted_ce" else None)
    valid = y >= 0
    t = y.clamp_min(0)
    if task == "binary_segmentation":
        bce = F.binary_cross_entropy_with_logits(logits[:, 0], t.float(), reduction="none")
        per = bce if name == "ce" else (1 - torch.exp(-bce)) ** 2 * bce
        cw = torch.ones(2)
    else:
        logp = F.log_softmax(logits, dim=1)
        ce = -logp.gather(1, t[:, None])[:, 0]
        per = ce if name != "focal" else (1 - torch.exp(-ce)) ** 2 * ce
        cw = torch.as_tensor(loss.class_weights, dtype=torch.float32) if name == "weighted_ce" else torch.ones(k)
    ww = valid.float() * w * cw[t]
    expect = float((per * ww).sum() / ww.sum())
    assert math.isclose(float(loss(logits, y, w)), expect, rel_tol=1e-5)
    ones = torch.ones(shape)
    assert math.isclose(float(loss(logits, y, ones)), float(loss(logits, y)), rel_tol=1e-5)
    # one pixel's share: at weight 0.5 exactly half its share at weight 1 (same denominators apart)
    j = int(valid.view(-1).nonzero()[1])
    halves = ones.clone()
    halves.view(-1)[j] = 0.5
    pj, cj = float(per.view(-1)[j]), float(cw[t.view(-1)[j]])
    rest = float((per * valid * cw[t]).sum()) - pj * cj
    den = float((valid * cw[t]).sum())
    assert math.isclose(float(loss(logits, y, halves)), (rest + 0.5 * pj * cj) / (den - 0.5 * cj), rel_tol=1e-5)


def test_dice_ignores_pixel_weights():
    from hpcseg.train.losses import build_loss

    y = _binary_target()
    logits = torch.randn(2, 1, 8, 8)
    dice = build_loss(spec_for(loss="dice"))
    assert float(dice(logits, y, torch.rand(2, 8, 8))) == float(dice(logits, y))


def test_class_weights_from_the_job_or_a_named_scheme():
    from hpcseg.train.losses import build_loss, log_class_weights, needs_class_counts

    counts = np.array([80, 15, 5])
    mc = {"task": "multiclass_segmentation"}
    given = spec_for(**mc, loss={"components": {"weighted_ce": 1.0}, "class_weights": [1.0, 2.0, 4.0]})
    assert not needs_class_counts(given)
    assert build_loss(given).class_weights == [1.0, 2.0, 4.0]     # no counts needed
    marida = spec_for(**mc, loss={"components": {"weighted_ce": 1.0}, "class_weights": "inverse_log_frequency"})
    assert needs_class_counts(marida)
    expect = [1 / math.log(1.03 + f) for f in (0.80, 0.15, 0.05)]
    np.testing.assert_allclose(build_loss(marida, counts).class_weights, expect, rtol=1e-6)
    np.testing.assert_allclose(log_class_weights(counts, 1.5), [1 / math.log(1.5 + f) for f in (0.8, 0.15, 0.05)])
    default = spec_for(**mc, loss="weighted_ce")
    inv = np.array([1 / 0.80, 1 / 0.15, 1 / 0.05])
    np.testing.assert_allclose(build_loss(default, counts).class_weights, inv / inv.mean(), rtol=1e-9)
    logits, y = torch.zeros(1, 3, 1, 2), torch.tensor([[[0, 2]]])
    logits[0, 2, 0, 1] = 3.0
    l0, l2 = math.log(3), -3.0 + math.log(math.exp(3.0) + 2)
    assert math.isclose(float(build_loss(given)(logits, y)), (1 * l0 + 4 * l2) / 5, rel_tol=1e-5)


@pytest.mark.parametrize("loss,needle", [
    ({"components": {"weighted_ce": 1.0}, "class_weights": [1.0, 2.0]},
     "training.loss.class_weights: 2 weight(s) for 3 classes (workload.dataset.num_classes)"),
    ({"components": {"weighted_ce": 1.0}, "class_weights": [1.0, -2.0, 1.0]}, "weight 1 is -2.0"),
    ({"components": {"weighted_ce": 1.0}, "class_weights": [1.0, True, 1.0]}, "weight 1: expected a number, not true"),
    ({"components": {"weighted_ce": 1.0}, "class_weights": "balanced"}, "'balanced' is not one of"),
    ({"components": {"dice": 1.0}, "class_weights": [1.0, 2.0, 3.0]}, "only the weighted_ce component"),
    ({"components": {"weighted_ce": 1.0}, "class_weights": [1.0, 2.0, 3.0], "class_weight_clip": [0.5, 2]},
     "class_weight_clip clips computed weights"),
])
def test_bad_class_weights_are_refused_naming_the_field(loss, needle):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="class_weight") as info:
        spec_for(task="multiclass_segmentation", loss=loss)
    assert needle in str(info.value)


def test_multiclass_dice_perfect_is_zero():
    from hpcseg.train.losses import build_loss

    y = torch.randint(0, 3, (2, 8, 8))
    logits = torch.nn.functional.one_hot(y, 3).permute(0, 3, 1, 2).float() * 50
    assert float(build_loss(spec_for(task="multiclass_segmentation", loss="dice"))(logits, y)) < 1e-4


# --------------------------------------------------------------------------------------------- metrics


def test_binary_metrics_from_known_counts():
    from hpcseg.train.metrics import ConfusionMeter, compute_metrics

    m = compute_metrics(np.array([[50, 10], [5, 35]]), "binary_segmentation")  # tp 35 fp 10 fn 5
    assert m == pytest.approx({"jaccard": 35 / 50, "dice": 70 / 85, "precision": 35 / 45, "recall": 35 / 40})
    assert compute_metrics(np.array([[9, 0], [0, 0]]), "binary_segmentation")["jaccard"] == 1.0
    meter = ConfusionMeter("binary_segmentation", 2)
    y = torch.tensor([[[1, 1, 0, 0, -1]]])
    logits = torch.tensor([[[[3.0, -1.0, 2.0, -4.0, 9.0]]]])  # tp, fn, fp, tn, ignored
    meter.update(logits, y)
    assert meter.matrix.view(2, 2).tolist() == [[1, 1], [1, 1]]
    assert meter.compute()["jaccard"] == pytest.approx(1 / 3)


def test_multiclass_and_classification_metrics_match_sklearn():
    from sklearn.metrics import balanced_accuracy_score, f1_score, jaccard_score

    from hpcseg.train.metrics import ConfusionMeter

    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, 500)
    p = np.where(rng.random(500) < 0.6, t, rng.integers(0, 4, 500))
    p[p == 3] = 2  # a class never predicted
    meter = ConfusionMeter("classification", 4)
    meter.update(torch.nn.functional.one_hot(torch.as_tensor(p), 4).float(), torch.as_tensor(t))
    m = meter.compute()
    assert m["accuracy"] == pytest.approx((t == p).mean())
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(t, p))
    assert m["macro_f1"] == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
    seg = ConfusionMeter("multiclass_segmentation", 4)
    logits = torch.nn.functional.one_hot(torch.as_tensor(p), 4).float().T.reshape(1, 4, 20, 25)
    seg.update(logits, torch.as_tensor(t).reshape(1, 20, 25))
    ms = seg.compute()
    assert ms["miou"] == pytest.approx(jaccard_score(t, p, average="macro", zero_division=0))
    assert ms["pixel_accuracy"] == pytest.approx((t == p).mean())


def test_history_columns_follow_the_contract():
    from hpcseg.train.metrics import columns

    assert columns("binary_segmentation") == ["epoch", "train_loss", "val_loss", "val_jaccard", "val_dice",
                                              "val_precision", "val_recall", "train_jaccard_soft",
                                              "val_jaccard_soft", "lr", "epoch_seconds"]
    assert columns("multiclass_segmentation")[3:6] == ["val_miou", "val_mdice", "val_pixel_accuracy"]
    assert columns("classification")[3:6] == ["val_accuracy", "val_balanced_accuracy", "val_macro_f1"]


# --------------------------------------------------------------------------------------------- schedule, checkpoint


def test_lr_schedule_warmup_then_cosine():
    from hpcseg.train.runner import lr_at

    tr = spec_for(epochs=10, lr=1.0, warmup_epochs=2, warmup_factor=0.1, schedule="cosine").training
    lrs = [lr_at(tr, e) for e in range(1, 11)]
    assert lrs[0] == pytest.approx(0.1) and lrs[1] == pytest.approx(0.55) and lrs[2] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:], strict=False)) and 0 < lrs[-1] < 0.05
    assert lr_at(spec_for(lr=0.3).training, 7) == 0.3


def test_checkpoint_keeps_previous_and_falls_back_when_last_is_corrupt(tmp_path, caplog):
    from hpcseg.train import checkpoint as ckpt

    assert ckpt.load_resume(tmp_path) is None
    ckpt.save_last(tmp_path, {"model": {"w": torch.ones(2)}, "epoch": 1})
    ckpt.save_last(tmp_path, {"model": {"w": torch.ones(2) * 2}, "epoch": 2})
    assert ckpt.load_resume(tmp_path)["epoch"] == 2
    assert torch.load(tmp_path / ckpt.PREV, weights_only=True)["epoch"] == 1
    data = (tmp_path / ckpt.LAST).read_bytes()
    (tmp_path / ckpt.LAST).write_bytes(data[: len(data) // 2])
    assert ckpt.load_resume(tmp_path)["epoch"] == 1
    assert "unreadable" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.LAST, ckpt.PREV]


def test_rng_state_round_trips():
    import random

    from hpcseg.train import checkpoint as ckpt

    state = ckpt.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_deadline_is_the_earlier_of_flag_and_environment(monkeypatch):
    from hpcseg.train.runner import _deadline

    monkeypatch.delenv("HPCSEG_DEADLINE", raising=False)
    assert _deadline(None, 100.0) is None
    assert _deadline(50, 100.0) == 150.0
    monkeypatch.setenv("HPCSEG_DEADLINE", "120")
    assert _deadline(50, 100.0) == 120.0 and _deadline(None, 100.0) == 120.0
    monkeypatch.setenv("HPCSEG_DEADLINE", "soon")
    with pytest.raises(HpcsegError, match="HPCSEG_DEADLINE"):
        _deadline(None, 100.0)
