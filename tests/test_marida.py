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


# --------------------------------------------------------------------------------- MARIDA's own conventions


def _synth(root: Path, n: int = 10, size: int = 32, seed: int = 0) -> Path:
    from hpcseg.workloads.marida.synth import make_marida

    make_marida(root, n=n, size=size, seed=seed)
    return root


def test_official_split_files_are_used_and_recorded(tmp_path):
    from hpcseg.layouts import index_dataset
    from hpcseg.splits import ensure_splits, make_splits

    root = _synth(tmp_path / "d")
    spec = quick("marida_se_unet", root)
    s = ensure_splits(tmp_path / "run", spec)
    assert s["method_used"] == "official" and "train_X.txt" in s["official_source"]
    fold = s["folds"][0]
    ids = {p: [f"S2_{x}" for x in (root / "splits" / f"{p}_X.txt").read_text().split()] for p in ("train", "val", "test")}
    assert fold["train"] == sorted(ids["train"]) and fold["val"] == sorted(ids["val"]) and s["test"] == sorted(ids["test"])
    assert not set(s["test"]) & set(fold["train"] + fold["val"])
    # k-fold asked: the official hold-out does not fit, the job's own split is made
    assert make_splits(quick("marida_se_unet", root, "workload.split.folds=2"),
                       index_dataset(quick("marida_se_unet", root)))["method_used"] != "official"
    # without the files: the job's split, as before
    for f in (root / "splits").iterdir():
        f.unlink()
    assert ensure_splits(tmp_path / "run2", spec)["method_used"] in ("stratified", "random")


@pytest.mark.parametrize("edit,where,needle", [
    (lambda d: (d / "test_X.txt").write_text((d / "test_X.txt").read_text() + "9-9-99_00XXX_7\n"),
     "test_X.txt", "1 id with no tile"),
    (lambda d: (d / "test_X.txt").write_text((d / "train_X.txt").read_text().splitlines()[0] + "\n"),
     "test_X.txt", "also in train_X.txt"),
    (lambda d: (d / "val_X.txt").write_text(""), "val_X.txt", "lists no patch ids"),
])
def test_preflight_refuses_broken_split_files_in_one_line(tmp_path, edit, where, needle):
    from hpcseg.preflight import run_preflight
    from hpcseg.spec import with_absolute_paths

    root = _synth(tmp_path / "d")
    edit(root / "splits")
    problems = [p for p in run_preflight(with_absolute_paths(quick("marida_se_unet", root))) if p.severity == "error"]
    assert len(problems) == 1, problems
    assert problems[0].where.endswith(where) and needle in problems[0].message and "\n" not in str(problems[0])


def test_split_hook_refuses_unknown_ids_on_the_node(tmp_path):
    from hpcseg.errors import HpcsegError
    from hpcseg.splits import ensure_splits

    root = _synth(tmp_path / "d")
    (root / "splits" / "train_X.txt").write_text("1-1-19_nope_0\n")
    with pytest.raises(HpcsegError, match="train_X.txt: 1 id"):
        ensure_splits(tmp_path / "run", quick("marida_se_unet", root))


MULTI = ("workload.task=multiclass_segmentation", "workload.dataset.num_classes=15",
         "workload.dataset.class_names=null", "collection.metric=val_miou")


def _codes_tile(root: Path, codes: np.ndarray, conf: np.ndarray | None = None, stem: str = "S2_1-1-19_48MYU_0") -> None:
    import tifffile

    folder = root / "patches" / stem.rsplit("_", 1)[0]
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / f"{stem}.tif", np.random.default_rng(0).random((*codes.shape, 11), dtype=np.float32))
    tifffile.imwrite(folder / f"{stem}_cl.tif", codes.astype(np.uint8))
    if conf is not None:
        tifffile.imwrite(folder / f"{stem}_conf.tif", conf.astype(np.uint8))


def test_multiclass_targets_are_marida_codes_minus_one(tmp_path):
    from hpcseg.errors import HpcsegError
    from hpcseg.workloads.marida.train import build

    codes = np.zeros((32, 32), np.uint8)
    codes[:8], codes[8:16], codes[16:24] = 1, 7, 15
    _codes_tile(tmp_path, codes)
    src = build(quick("marida_se_unet", tmp_path, *MULTI), torch.device("cpu"))
    y = src.y[0].long().numpy()
    assert (y[:8] == 0).all() and (y[8:16] == 6).all() and (y[16:24] == 14).all() and (y[24:] == -1).all()
    counts = src.class_counts(np.array([0]))
    assert counts[0] == counts[6] == counts[14] == 8 * 32 and counts.sum() == 3 * 8 * 32
    with pytest.raises(HpcsegError, match="class code 15 is outside 1..10"):
        build(quick("marida_se_unet", tmp_path, *MULTI, "workload.dataset.num_classes=10"), torch.device("cpu"))


@pytest.mark.parametrize("level,kept", [("all", 3), ("moderate", 2), ("high", 1)])
def test_confidence_option_ignores_less_sure_pixels(tmp_path, level, kept):
    from hpcseg.workloads.marida.train import build

    codes = np.ones((32, 32), np.uint8)
    conf = np.repeat(np.array([1, 2, 3, 3]), 8)[:, None].repeat(32, axis=1)  # rows of levels 1, 2, 3, 3
    _codes_tile(tmp_path, codes, conf)
    src = build(quick("marida_se_unet", tmp_path, f"workload.models.se_unet.options={{confidence: {level}}}"),
                torch.device("cpu"))
    y = src.y[0].long().numpy()
    level_of_row = np.repeat(np.array([1, 2, 3, 3]), 8)
    assert ((y[:, 0] >= 0) == (level_of_row <= kept)).all()      # whole rows kept or dropped by level
    assert int((y >= 0).sum()) == int((level_of_row <= kept).sum()) * 32


def test_confidence_option_is_checked(tmp_path):
    from hpcseg.errors import HpcsegError
    from hpcseg.workloads.marida.train import build

    _codes_tile(tmp_path, np.ones((32, 32), np.uint8))  # no _conf.tif
    with pytest.raises(HpcsegError, match="_conf.tif: missing"):
        build(quick("marida_se_unet", tmp_path, "workload.models.se_unet.options={confidence: high}"), torch.device("cpu"))
    with pytest.raises(HpcsegError, match="options.confidence: 'sure' is not one of"):
        build(quick("marida_se_unet", tmp_path, "workload.models.se_unet.options={confidence: sure}"), torch.device("cpu"))


WEIGHTS = "workload.models.se_unet.options={confidence: {high: 1.0, moderate: 0.5, low: 0.25}}"


def test_confidence_weights_weigh_pixels_by_level(tmp_path):
    """A weight mapping keeps every labelled pixel and gives it its level's weight; weight 0 drops a level
    (as the filter does); unlabelled pixels stay ignored."""
    from hpcseg.workloads.marida.train import build

    codes = np.ones((32, 32), np.uint8)
    codes[:, :4] = 0                                                          # an unlabelled strip
    conf = np.repeat(np.array([1, 2, 3, 0]), 8)[:, None].repeat(32, axis=1)   # rows: high, moderate, low, none
    _codes_tile(tmp_path, codes, conf)
    src = build(quick("marida_se_unet", tmp_path, WEIGHTS), torch.device("cpu"))
    assert src.has_pixel_weights() and src.w.shape == src.y.shape
    y, w = src.y[0].long().numpy(), src.w[0].float().numpy()
    assert (y[:, 4:] == 1).all() and (y[:, :4] == -1).all()                   # nothing dropped by the weights
    np.testing.assert_array_equal(w[:, 4], np.repeat([1.0, 0.5, 0.25, 1.0], 8))  # level 0 (none given) weighs 1
    drop_low = build(quick("marida_se_unet", tmp_path, WEIGHTS.replace("low: 0.25", "low: 0")), torch.device("cpu"))
    assert (drop_low.y[0, 16:24].long() == -1).all() and (drop_low.y[0, :16, 4:] == 1).all()
    plain = build(quick("marida_se_unet", tmp_path), torch.device("cpu"))
    assert not plain.has_pixel_weights()


@pytest.mark.parametrize("value,needle", [
    ("{high: 1, moderate: 0.5}", "options.confidence: no weight for low"),
    ("{high: 1, moderate: 0.5, low: 0.2, sure: 2}", "options.confidence: unknown level(s) sure"),
    ("{high: 1, moderate: -0.5, low: 0.2}", "options.confidence.moderate: -0.5 is not a weight"),
    ("{high: 1, moderate: yes, low: 0.2}", "options.confidence.moderate: True is not a weight"),
    ("{high: 0, moderate: 0, low: 0}", "options.confidence: every weight is 0"),
])
def test_preflight_checks_confidence_weights(tmp_path, value, needle):
    from hpcseg.preflight import run_preflight
    from hpcseg.spec import with_absolute_paths

    root = _synth(tmp_path / "d", n=5)
    spec = with_absolute_paths(quick("marida_se_unet", root, f"workload.models.se_unet.options={{confidence: {value}}}"))
    problems = [p for p in run_preflight(spec) if p.severity == "error"]
    assert len(problems) == 1 and "\n" not in str(problems[0]), problems
    assert needle in f"{problems[0].where}: {problems[0].message}", problems   # the field, then what to do
    assert problems[0].where.startswith("workload.models.se_unet.options.confidence")


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from(["high", "moderate", "low", "sure", "none"]),
                       st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1, 3), st.booleans(), st.text(max_size=3)),
                       max_size=5))
def test_confidence_weight_mappings_are_accepted_or_refused_in_one_line(value):
    from hpcseg.errors import HpcsegError
    from hpcseg.workloads.marida.layout import confidence_weights

    field = "workload.models.m.options.confidence"
    good = (set(value) == {"high", "moderate", "low"}
            and all(isinstance(w, float) and np.isfinite(w) and w >= 0 for w in value.values())
            and any(w > 0 for w in value.values()))
    if good:
        assert confidence_weights(value, field) == {1: value["high"], 2: value["moderate"], 3: value["low"]}
        return
    with pytest.raises(HpcsegError) as info:
        confidence_weights(value, field)
    assert info.value.message.startswith(field) and "\n" not in info.value.message


def test_preflight_warns_that_dice_is_not_weighted(tmp_path):
    from hpcseg.preflight import run_preflight
    from hpcseg.spec import with_absolute_paths

    root = _synth(tmp_path / "d", n=5)
    problems = run_preflight(with_absolute_paths(quick("marida_se_unet", root, WEIGHTS)))
    assert [p.severity for p in problems] == ["warning"] and "dice counts every labelled pixel once" in problems[0].message


# --------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("job,model,sets", [
    ("marida_se_unet", "se_unet", ()),
    ("marida_attention_unet", "attention_unet", MULTI),
])
def test_training_tunes_threshold_and_tests_once(tmp_path, job, model, sets):
    """``hpcseg train`` on synthetic MARIDA with its split files: splits.json official, extra.threshold and
    eval/threshold.* for the binary task, extra.test for both."""
    import json

    from hpcseg.cli import main

    root = _synth(tmp_path / "d", n=10)
    out = tmp_path / "task"
    sets = (*sets, "training.epochs=1")
    rc = main(["train", str(JOBS / f"{job}.yaml"), "--profile", "quick", "--model", model, "--out", str(out),
               "--set", f"workload.dataset.root={root}", *(x for s in sets for x in ("--set", s))])
    assert rc == 0, (out / "train.log").read_text()
    res = json.loads((out / "result.json").read_text())
    splits = json.loads((out / "splits.json").read_text())
    assert splits["method_used"] == "official" and len(splits["test"]) == 2
    test = res["extra"]["test"]
    assert test["split"] == "test" and test["items"] == 2
    if "workload.task=multiclass_segmentation" in sets:
        assert "threshold" not in res["extra"] and set(test["metrics"]) == {"miou", "mdice", "pixel_accuracy"}
        assert len(test["iou_per_class"]) == 15
    else:
        thr = res["extra"]["threshold"]
        assert 0 < thr["best_threshold"] < 1 and thr["f1"] >= thr["at_0.5"]["f1"]
        assert thr["at_0.5"]["iou"] == pytest.approx(res["best_value"], abs=1e-9)  # same pixels, same cut
        assert set(test["metrics"]) == {"jaccard", "dice", "precision", "recall", "jaccard_soft"}
        assert test["at_threshold"]["threshold"] == pytest.approx(thr["best_threshold"])
        assert (out / "eval" / "threshold.csv").is_file() and (out / "eval" / "threshold.png").is_file()


def test_multiclass_job_trains_with_class_and_confidence_weights(tmp_path):
    """The shipped multi-class job on synthetic tiles, pixels weighted by confidence: the class weights are
    MARIDA's 1/ln(1.03 + f) of the training pixels, logged and in result.json, as is where the pixel
    weights went; the test split is evaluated over the 15 classes."""
    import json

    from hpcseg.cli import main

    root = _synth(tmp_path / "d", n=10)
    out = tmp_path / "task"
    sets = ["training.epochs=2", WEIGHTS]
    rc = main(["train", str(JOBS / "marida_multiclass.yaml"), "--profile", "quick", "--model", "se_unet", "--out",
               str(out), "--set", f"workload.dataset.root={root}", *(x for s in sets for x in ("--set", s))])
    log = (out / "train.log").read_text()
    assert rc == 0, log
    res = json.loads((out / "result.json").read_text())
    loss = res["loss"]
    assert loss["class_weight_scheme"].startswith("inverse_log_frequency") and len(loss["class_weights"]) == 15
    assert loss["pixel_weights"] == {"applied_to": ["weighted_ce"], "not_applied_to": []}
    # the weights are 1/ln(1.03 + f) over the training split's labelled pixels
    from hpcseg.splits import read_splits
    from hpcseg.workloads.marida.train import build

    src = build(quick("marida_multiclass", root, WEIGHTS), torch.device("cpu"))
    train = read_splits(out / "splits.json")["folds"][0]["train"]
    idx = np.array([src.names().index(n) for n in train])
    counts = src.class_counts(idx).astype(float)
    np.testing.assert_allclose(loss["class_weights"], 1 / np.log(1.03 + counts / counts.sum()), rtol=1e-9)
    assert "loss: weighted_ce class weights (inverse_log_frequency" in log and "marine_debris=" in log
    assert "options.confidence weighs labelled pixels by _conf.tif level: high 1, moderate 0.5, low 0.25" in log
    assert len(res["extra"]["test"]["iou_per_class"]) == 15 and res["metric"] == "val_miou"


@pytest.mark.parametrize("value,needle", [("sure", "'sure' is not one of all, moderate, high"),
                                          ("high", "without <id>_conf.tif")])
def test_preflight_checks_the_confidence_option(tmp_path, value, needle):
    from hpcseg.preflight import run_preflight
    from hpcseg.spec import with_absolute_paths

    root = _synth(tmp_path / "d", n=5)
    if value == "high":
        next((root / "patches").rglob("*_conf.tif")).unlink()
    spec = with_absolute_paths(quick("marida_se_unet", root, f"workload.models.se_unet.options={{confidence: {value}}}"))
    problems = [p for p in run_preflight(spec) if p.severity == "error"]
    assert len(problems) == 1 and needle in problems[0].message, problems
