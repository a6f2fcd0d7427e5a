"""Seed 000 (SSMU-Net): the model's size and shape against the seed, the Mamba path, warm-up.

Parameter counts are checked against the seed's own figures; building the full-size model on CPU takes
well under a second (no forward pass at full size).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hpcseg.spec import load_job

JOBS = Path(__file__).resolve().parent.parent / "jobs"


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _job(profile: str | None, *sets: str):
    return load_job(JOBS / "ssmu_net_overnight.yaml", profile, ["workload.dataset.root=/nonexistent", *sets]).spec


def test_overnight_job_builds_the_seeds_model_size():
    """The seed's overnight settings (24 sinc bands, embedding 32, U-Net base 32 over five levels, 2 Mamba
    layers, attention pooling) through the job file: the seed's code gives 7.79M parameters there."""
    from hpcseg.train.models import build_model

    spec = _job(None)
    o = spec.model("ssmu_net").options
    assert (o["sinc_filters"], o["embed_dim"], o["mamba_layers"], o["pooling"]) == (24, 32, 2, "attention")
    assert spec.model("ssmu_net").channels[0] == 32
    net = build_model(spec, spec.model("ssmu_net"))
    assert _count(net) == pytest.approx(7.79e6, rel=0.10)


def test_fast_mode_settings_match_the_seeds_1_9m():
    """The seed's own measured figure: "1.9M fast mode" (16 sinc bands, embedding 16, base 16, 1 Mamba
    layer, mean pooling). The same architecture must land within 10% of it."""
    from hpcseg.workloads.hyperspectral.models_ssmu import SSMUNet

    net = SSMUNet(128, 8, [16, 32, 64, 128, 256], sinc_filters=16, embed_dim=16, mamba_layers=1, pooling="mean")
    assert _count(net) == pytest.approx(1.9e6, rel=0.10)


def test_model_shape_follows_the_seed():
    """sinc -> Mamba over the filters -> pooling -> projection to the embedding -> classic U-Net."""
    from hpcseg.workloads.hyperspectral.models_ssmu import ClassicUNet, SSMUNet

    net = SSMUNet(20, 5, [8, 16, 32], sinc_filters=6, embed_dim=12, mamba_layers=2)
    assert len(net.ssm.layers) == 2 and net.ssm.layers[0].d_model == 6      # Mamba over the sinc responses
    assert net.project.in_features == 6 and net.project.out_features == 12
    assert isinstance(net.unet, ClassicUNet) and len(net.unet.down) == 3 and len(net.unet.up) == 2
    kinds = {type(m).__name__ for m in net.unet.modules()}
    assert {"MaxPool2d", "ConvTranspose2d"} & kinds == {"ConvTranspose2d"} and "BatchNorm2d" in kinds
    x = torch.randn(2, 20, 13, 10)               # sides not divisible by 4: padded, then cropped back
    y = net(x)
    assert y.shape == (2, 5, 13, 10)
    F.cross_entropy(y, torch.randint(0, 5, (2, 13, 10))).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_mamba_path_named_for_the_device():
    from hpcseg.workloads.hyperspectral import models_ssmu as m

    cpu = m.mamba_path(torch.device("cpu"))
    assert cpu.startswith(m.REFERENCE)
    if m._CudaMamba is None:
        assert m.mamba_path(torch.device("cuda")) == f"{m.REFERENCE} (mamba-ssm not installed)"
    else:
        assert m.mamba_path(torch.device("cuda")) == m.KERNELS
    assert m.uses_mamba(m.SSMUNet(8, 2, [4, 8], sinc_filters=2, embed_dim=4, mamba_layers=1))
    assert not m.uses_mamba(m.ClassicUNet(3, 2, [4, 8]))


# --------------------------------------------------------------------------------------------- warm-up


def _training(**kw):
    from hpcseg.spec import TrainingSpec

    return TrainingSpec.model_validate({"epochs": 10, "batch_size": 1, "lr": 1.0, **kw})


def test_constant_warmup_holds_the_factor_then_jumps_to_the_schedule():
    from hpcseg.train.runner import lr_at

    tr = _training(warmup_epochs=2, warmup_factor=0.1, warmup_mode="constant", schedule="cosine")
    lrs = [lr_at(tr, e) for e in range(1, 11)]
    assert lrs[:2] == [pytest.approx(0.1), pytest.approx(0.1)]
    assert lrs[2] == pytest.approx(1.0)                       # cosine starts from the full rate
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    flat = _training(warmup_epochs=3, warmup_factor=0.25, warmup_mode="constant")
    assert [lr_at(flat, e) for e in (1, 2, 3, 4, 10)] == [0.25, 0.25, 0.25, 1.0, 1.0]


def test_linear_warmup_stays_the_default():
    from hpcseg.train.runner import lr_at

    tr = _training(warmup_epochs=2, warmup_factor=0.1)
    assert tr.warmup_mode == "linear"
    assert [lr_at(tr, e) for e in (1, 2, 3)] == [pytest.approx(0.1), pytest.approx(0.55), 1.0]


def test_warmup_mode_refuses_other_values_and_the_seed_job_uses_constant():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="warmup_mode"):
        _training(warmup_mode="cosine")
    tr = _job(None).training
    assert (tr.warmup_epochs, tr.warmup_factor, tr.warmup_mode, tr.lr) == (2, 0.1, "constant", 3.0e-4)


@pytest.mark.parametrize("mode", ["linear", "constant"])
def test_warmup_never_exceeds_the_rate_and_ends_at_it(mode):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from hpcseg.train.runner import lr_at

    @settings(max_examples=60, deadline=None)
    @given(st.integers(0, 8), st.floats(0.01, 1.0), st.integers(1, 20), st.sampled_from(["constant", "cosine"]))
    def check(w, factor, epochs, schedule):
        tr = _training(epochs=epochs, warmup_epochs=w, warmup_factor=factor, warmup_mode=mode, schedule=schedule)
        lrs = [lr_at(tr, e) for e in range(1, epochs + 1)]
        assert all(0 <= v <= 1.0 + 1e-12 for v in lrs)
        assert all(v >= factor - 1e-12 for v in lrs[:min(w, epochs)])
        if mode == "constant":
            assert all(v == pytest.approx(factor) for v in lrs[:min(w, epochs)])
        if w < epochs:
            assert lrs[w] == pytest.approx(1.0)              # the first epoch after warm-up: the full rate
    check()
