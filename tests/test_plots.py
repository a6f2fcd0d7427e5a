"""Plots and headlines that do not mislead.

Figures are read back as matplotlib artists (what is drawn, with which markers, ticks and labels) and as
PNG pixels (a one-epoch series must leave coloured pixels); the headline and ratio text are checked on the
numbers of the demo. A hypothesis test throws arbitrary floats (NaN, ±inf, ±1e308, empty, constant) at
both figure builders and draws every example to PNG.
"""

from __future__ import annotations

import io
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hpcseg.taskfiles import History
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hpcseg.collect import TaskResult
from hpcseg.compare import ModelResult, aggregate, compare_results, fmt_ratio, headline
from hpcseg.plots import (
    comparison_figure,
    learning_curves,
    learning_curves_figure,
    metric_definition,
    model_comparison,
)

COLS = ["epoch", "train_loss", "val_loss", "val_jaccard"]


def task(fold: int, jaccard: list[float], model: str = "unet", *, epochs: list[float] | None = None,
         losses: list[float] | None = None) -> TaskResult:
    n = len(jaccard)
    e = epochs if epochs is not None else list(range(1, n + 1))
    lo = losses if losses is not None else [1.0 - j if math.isfinite(j) else 1.0 for j in jaccard]
    data = np.array([e, lo, lo, jaccard], dtype=np.float64).T.reshape(n, 4)
    h = History(Path("h.csv"), list(COLS), data)
    finite = [(i, v) for i, v in enumerate(jaccard) if math.isfinite(v)]
    best = max(finite, key=lambda iv: iv[1]) if finite else None
    return TaskResult(index=fold, model=model, fold=fold, status="completed", history=h,
                      best_epoch=int(e[best[0]]) if best and math.isfinite(e[best[0]]) else None,
                      best=best[1] if best else None, final=jaccard[-1] if n else None, epochs_run=n)


def texts(fig) -> str:
    """Every piece of text on a figure: titles, labels, legends, annotations, footnotes."""
    from matplotlib.text import Text

    return "\n".join(t.get_text() for t in fig.findobj(Text))


def png_pixels(fig) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.int16)


# --------------------------------------------------------------------------------------------- figures


def test_one_epoch_series_is_visible_with_integer_ticks():
    fig = learning_curves_figure("unet", [task(0, [0.4])], "val_jaccard", run="job/run1")
    ax_loss, ax_metric = fig.axes[:2]
    drawn = [ln for ln in ax_metric.get_lines() if len(ln.get_xdata()) == 1 and ln.get_marker() not in ("", "None")]
    assert drawn, "a single epoch must be drawn with a marker"
    for ax in (ax_loss, ax_metric):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    # And the pixels agree: tab:blue (31, 119, 180) is on the metric panel.
    px = png_pixels(fig)
    right = px[:, px.shape[1] // 2:]
    blue = (np.abs(right - np.array([31, 119, 180])).sum(axis=2) < 60).sum()
    assert blue > 10, blue


def test_long_series_ticks_are_integers_too():
    fig = learning_curves_figure("unet", [task(f, list(np.linspace(0.1, 0.6, 7))) for f in range(3)], "val_jaccard")
    for ax in fig.axes[:2]:
        assert all(float(t).is_integer() for t in ax.get_xticks())


def test_every_figure_names_run_units_and_metric_definition():
    fig = learning_curves_figure("unet", [task(0, [0.2, 0.5])], "val_jaccard", run="microbead/20250101-aaaa")
    t = texts(fig)
    assert "microbead/20250101-aaaa" in t and "hard IoU" in t and "thresholded" in t
    assert "val_jaccard (IoU, 0–1)" in t and "loss (unitless)" in t and "epoch" in t
    results = [aggregate("unet", [0.6], [0.6])]
    comp = compare_results(results, [aggregate("unet", [0.5], [0.5])])
    fig = comparison_figure(results, comp, "val_jaccard", "max", baseline_label="old/run0", run="new/run1",
                            baseline_kind="keras")
    t = texts(fig)
    assert "this run: new/run1" in t and "baseline: old/run0" in t
    assert "hard IoU" in t and "soft Jaccard" in t and "0–1; higher is better" in t


def test_metric_definitions_distinguish_hard_iou_and_soft_jaccard():
    assert "hard IoU" in metric_definition("val_jaccard")[1]
    assert "hard IoU" in metric_definition("val_iou")[1]
    assert "soft Jaccard" in metric_definition("val_jacard_coef")[1]
    assert "soft Jaccard" in metric_definition("jacard_coef")[1]
    assert "no known definition" in metric_definition("val_mystery")[1]


def test_no_std_bar_for_one_fold():
    from matplotlib.container import ErrorbarContainer

    one = [aggregate("unet", [0.6], [0.6]), aggregate("segnet", [0.4], [0.4])]
    fig = comparison_figure(one, None, "val_jaccard", "max")
    ax = fig.axes[0]
    assert not [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert "±" not in texts(fig)
    three = [aggregate("unet", [0.6, 0.62, 0.58], [0.6] * 3), aggregate("segnet", [0.4], [0.4])]
    fig = comparison_figure(three, None, "val_jaccard", "max")
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1  # unet only: segnet's single fold has no spread
    segs = bars[0].lines[2][0].get_segments()
    assert len(segs) == 1 and segs[0][1][1] - segs[0][0][1] == pytest.approx(2 * 0.02)
    assert "± 0.020, 3 folds" in texts(fig)


def test_plot_files_are_pngs(tmp_path):
    p = learning_curves(tmp_path / "lc.png", "unet", [task(0, [0.3, 0.5])], "val_jaccard")
    q = model_comparison(tmp_path / "mc.png", [aggregate("unet", [0.5], [0.5])], None, "val_jaccard", "max")
    for f in (p, q):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------- any values

weird = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                  st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, np.nan, np.inf, -np.inf, 1e12, 1e13]))
series = st.lists(weird, min_size=0, max_size=6)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(folds=st.lists(st.tuples(series, st.lists(weird, min_size=0, max_size=6)), min_size=1, max_size=3),
       many=st.booleans(), constant=st.one_of(st.none(), weird))
def test_learning_curves_survive_any_values(folds, many, constant):
    tasks = []
    for i, (vals, eps) in enumerate((folds * 11)[:11] if many else folds):  # many: > MANY_FOLDS, the bundle
        if constant is not None:
            vals = [constant] * len(vals)
        epochs = (eps + list(range(1, len(vals) + 1)))[:len(vals)] if i % 2 else None
        tasks.append(task(i, vals, epochs=epochs, losses=vals))
    with tempfile.TemporaryDirectory() as d:
        out = learning_curves(Path(d) / "lc.png", "unet", tasks, "val_jaccard", run="j/r")
        assert out.stat().st_size > 1000


result_st = st.builds(lambda name, best, std, n, c, dv: ModelResult(name, best, best, std, n, c, dv),
                      st.one_of(st.sampled_from(["a$^$b", "$x$", "<b>", "", "unet"]),
                                st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)), st.one_of(st.none(), weird), st.one_of(st.none(), weird),
                      st.integers(0, 5), st.integers(0, 2), st.integers(0, 2))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(results=st.lists(result_st, min_size=0, max_size=5), base=st.lists(st.one_of(st.none(), weird), max_size=5),
       mode=st.sampled_from(["max", "min"]))
def test_comparison_survives_any_values(results, base, mode):
    comp = None
    if base:
        rows = [{"model": r.model, "baseline_best": b, "baseline_collapsed": False}
                for r, b in zip(results, base, strict=False)]
        comp = {"rows": rows}
    with tempfile.TemporaryDirectory() as d:
        out = model_comparison(Path(d) / "mc.png", results, comp, "val_jaccard", mode, baseline_label="b")
        assert out.stat().st_size > 1000


# --------------------------------------------------------------------------------------------- headline


def test_ratios_below_one_keep_two_significant_digits():
    assert fmt_ratio(0.063) == "0.063×"
    assert fmt_ratio(0.5) == "0.50×"
    assert fmt_ratio(0.94) == "0.94×"
    assert fmt_ratio(0.996) == "0.996×"  # two digits would round a regression up to "1.0×"
    assert fmt_ratio(4.5634) == "4.6×" and fmt_ratio(1.048) == "1.05×" and fmt_ratio(None) == "—"


@given(st.floats(min_value=1e-12, max_value=1.0, exclude_max=True))
def test_ratio_text_below_one_is_close_and_below_one(r):
    s = fmt_ratio(r)
    assert s.endswith("×")
    v = float(s[:-1])
    assert v < 1 and abs(v - r) <= 0.05 * r  # two significant digits: within 5 %


def test_headline_names_every_models_change():
    ours = [aggregate("attention_unet", [0.6512], [0.6489]), aggregate("unet", [0.6], [0.6]),
            aggregate("segnet", [0.3], [0.3]), aggregate("resunet", [0.61], [0.61])]
    base = [aggregate("attention_unet", [0.1427], [0.0], [True]), aggregate("unet", [0.5], [0.5]),
            aggregate("segnet", [0.47], [0.47]), aggregate("resunet", [0.6], [0.6])]
    comp = compare_results(ours, base)
    rows = {r["model"]: r for r in comp["rows"]}
    line = headline(rows["attention_unet"], comp["rows"])
    assert line.startswith("attention_unet: baseline 0.1427 → 0.0 (collapsed); now 0.6512: 4.6× improvement")
    assert "unet 0.5 → 0.6: 1.2× improvement" in line
    assert "segnet 0.47 → 0.3: 0.64× regression" in line
    assert "resunet 0.6 → 0.61: unchanged (1.02×)" in line
    # One model: the seed's line alone.
    assert headline(rows["unet"]) == "unet: baseline 0.5 → 0.5; now 0.6: 1.2× improvement"
