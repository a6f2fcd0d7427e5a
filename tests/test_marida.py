"""MARIDA (seeds 001, 003): the seeds' models at their sizes, threshold tuning, official splits, the
multi-class task and confidence masks. Tiny tiles throughout; one short end-to-end training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --------------------------------------------------------------------------------- threshold tuning


def _brute(p: np.ndarray, t: np.ndarray, thr: float) -> tuple[int, int, int]:
    keep = t >= 0
    pred = p[keep] >= thr
    y = t[keep] == 1
    return int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 400), st.floats(0.0, 1.0))
def test_threshold_sweep_matches_counting_pixels(seed, n, pos_rate):
    from hpcseg.train.threshold import ProbabilityHistogram, at, best_row, sweep

    rng = np.random.default_rng(seed)
    logits = torch.as_tensor(rng.normal(0, 3, (1, 1, 1, n)), dtype=torch.float32)
    target = torch.as_tensor(np.where(rng.random(n) < 0.1, -1, rng.random(n) < pos_rate), dtype=torch.long)[None, None]
    target = target.reshape(1, 1, n)
    hist = ProbabilityHistogram()
    hist.update(logits, target)
    pos, neg = hist.counts()
    p = torch.sigmoid(logits).reshape(-1).numpy()
    t = target.reshape(-1).numpy()
    # bins are p*100 floored: compare at thresholds away from the float edge of a bin
    rows = sweep(pos, neg)
    assert len(rows) == 99 and rows[0]["threshold"] == 0.01 and rows[-1]["threshold"] == 0.99
    for r in rows[::7]:
        near_edge = np.abs(p * 100 - round(r["threshold"] * 100)) < 1e-4
        if near_edge.any():
            continue
        assert (r["tp"], r["fp"], r["fn"]) == _brute(p, t, r["threshold"])
    best = best_row(rows)
    assert best["f1"] == max(r["f1"] for r in rows)
    assert at(pos, neg, best["threshold"])["f1"] == pytest.approx(best["f1"])


def test_threshold_summary_and_outputs(tmp_path):
    from hpcseg.train.threshold import summary, sweep, write_outputs

    # positives at p in [0.3, 0.4), negatives below 0.2 and a few at 0.6: the best cut sits in 0.21..0.30
    pos = np.zeros(100, np.int64)
    neg = np.zeros(100, np.int64)
    pos[30:40] = 5
    neg[:20] = 50
    neg[60] = 3
    s = summary(pos, neg)
    assert 0.2 < s["best_threshold"] <= 0.3
    assert s["recall"] == 1.0 and s["precision"] == pytest.approx(50 / 53)
    assert s["at_0.5"]["recall"] == 0.0 and s["at_0.5"]["f1"] == 0.0
    assert s["iou"] == pytest.approx(50 / 53) and s["positive_pixels"] == 50
    files = write_outputs(tmp_path / "eval", sweep(pos, neg), s, "test")
    assert [f.name for f in files] == ["threshold.csv", "threshold.png"]
    lines = (tmp_path / "eval" / "threshold.csv").read_text().splitlines()
    assert lines[0] == "threshold,precision,recall,f1,iou,tp,fp,fn" and len(lines) == 100
    assert (tmp_path / "eval" / "threshold.png").read_bytes()[:4] == b"\x89PNG"
