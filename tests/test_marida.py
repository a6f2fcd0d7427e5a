"""MARIDA (seeds 001, 003): the seeds' models at their sizes, threshold tuning, official splits, the
multi-class task and confidence masks. Tiny tiles throughout; one short end-to-end training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpcseg.spec import load_job

JOBS = Path(__file__).resolve().parent.parent / "jobs"


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def quick(job: str, root: Path | str, *sets: str):
    return load_job(JOBS / f"{job}.yaml", "quick", [f"workload.dataset.root={root}", *sets]).spec


def full(job: str, root: Path | str, *sets: str):
    return load_job(JOBS / f"{job}.yaml", None, [f"workload.dataset.root={root}", *sets]).spec


# --------------------------------------------------------------------------------- models at the seeds' sizes


@pytest.mark.parametrize("job,model,seed_params", [
    ("marida_attention_unet", "attention_unet", 15_000_000),  # seed 001: "~15M parameters (estimated)"
    ("marida_se_unet", "se_unet", 31_300_000),                # seed 003: "31.3M Parameters"
])
def test_seed_models_have_the_seeds_parameter_counts(tmp_path, job, model, seed_params):
    from hpcseg.train.models import build_model, count_parameters

    spec = full(job, tmp_path)
    net = build_model(spec, spec.model(model))
    n = count_parameters(net)
    assert abs(n - seed_params) <= 0.10 * seed_params, f"{job}: {n:,} parameters vs the seed's {seed_params:,}"


def test_self_attention_unet_has_the_seeds_blocks(tmp_path):
    from hpcseg.train.models import build_model
    from hpcseg.workloads.marida.models_sa import SelfAttention2d, SelfAttentionUNet

    spec = quick("marida_attention_unet", tmp_path)
    assert spec.model("attention_unet").arch == "attention_unet_sa"
    net = build_model(spec, spec.model("attention_unet"))
    assert isinstance(net, SelfAttentionUNet)
    assert isinstance(net.bottleneck[-1], SelfAttention2d)                        # at the bottleneck
    assert sum(isinstance(m, SelfAttention2d) for m in net.dec_sa) == 2           # and in the decoder
    assert isinstance(net.head[0], torch.nn.Module) and len(net.head) == 2        # extra conv, then 1x1
    for size in (32, 30):                                                         # odd sizes padded/cropped
        y = net(torch.randn(2, 11, size, size))
        assert y.shape == (2, 1, size, size)
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_self_attention_starts_as_identity_and_mixes_distant_pixels():
    from hpcseg.workloads.marida.models_sa import SelfAttention2d

    sa = SelfAttention2d(8)
    x = torch.randn(1, 8, 6, 6)
    torch.testing.assert_close(sa(x), x)          # gamma = 0: the block begins as the identity
    with torch.no_grad():
        sa.gamma.fill_(1.0)
    x2 = x.clone()
    x2[..., 5, 5] += 10.0                         # one far corner changes
    assert not torch.allclose(sa(x)[..., 0, 0], sa(x2)[..., 0, 0])   # the opposite corner sees it
