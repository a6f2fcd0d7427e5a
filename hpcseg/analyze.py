"""Dataset fingerprint and recommended training settings for a microbead-layout dataset.

Seed 004's lesson: hyper-parameters tuned on one dataset (mitochondria, 2-3 objects per image, LR 1e-3,
batch 8) collapsed on another (microbeads, ~109 objects per image), because the per-image gradient grows
with the number of objects. ``hpcseg analyze`` measures what matters for that decision - objects per
image, positive-pixel ratio, object size, brightness, masks that look partial - writes it to
``summary.json`` with two plots, and turns the density ratio against a reference dataset into settings
to paste as ``--set`` overrides, each with its reason.

Rules (all thresholds are module constants, and are copied into ``summary.json`` under ``"rules"``):

* learning rate: ``ratio = objects_per_image / reference_objects``. Within ``LR_DEAD_BAND`` (ratio
  <= 1.5) or for a sparser dataset the reference LR is kept: the evidence only says to go *down* with
  density. Otherwise ``lr = ref_lr / ratio ** 0.65``, the divisor clamped to [1, 100] and the result
  rounded to one significant digit. In theory the gradient grows linearly with the object count (divide
  by 36 for 36x the objects); in practice Adam's per-parameter normalisation absorbs most of it and the
  seed found that dividing by ~10 was right for 36x. 0.65 = log 10 / log 36 puts that one calibration
  point on the curve: ratio 36 -> 1e-3 / 10.3 -> 1e-4; ratio 4 -> 4e-4; ratio 100 -> 5e-5 (the seed's
  "reduce further to 5e-5" fallback).
* batch size: x4 for ratio >= 10, x2 for ratio >= 3, else the reference; capped at 32 and at the
  training-set size (images minus a 15% validation split). Larger batches average the noisier per-image
  gradients of dense images.
* dropout 0.3 when objects are dense (ratio >= 10) and uniform (object-area p75/p25 <= 3): many
  near-identical shapes are easy to memorise.
* loss: focal when the positive ratio is rare (< 5%), Dice when moderate (5-30%), cross-entropy when
  near balanced (> 30%).
* split: stratified by objects per image when their coefficient of variation is > 0.5, else random.

Masks are flagged as *empty* (no foreground), *border* (more than half of the border pixels are
foreground: cropped, inverted or a partial tile) or *unlabelled blobs*: the image, smoothed (sigma 1)
and Otsu-thresholded on the side where the masked objects lie, has at least 5 blobs of plausible size
(>= a quarter of the dataset's median object area, at least 4 px) that touch no mask pixel, and they are
more than 30% of all such blobs - objects visible in the image but missing from the mask.
"""

from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from hpcseg.errors import HpcsegError
from hpcseg.fsutil import write_bytes_atomic, write_json_atomic
from hpcseg.images import binarize_mask, list_images, read_image, to_gray
from hpcseg.objects import EIGHT_CONNECTED, label_objects

# Default reference: the mitochondria data of seed 004 and the settings that suited it.
DEFAULT_REFERENCE_OBJECTS = 3.0
DEFAULT_REFERENCE_NAME = "mitochondria (seed 004): 3 objects/image"
LR_EXPONENT = 0.65  # log(10) / log(36): seed 004's 36x density needed LR / 10
LR_DEAD_BAND = 1.5  # ratios up to this keep the reference LR
LR_MAX_DIVISOR = 100.0
BATCH_CAP = 32
VAL_FRACTION = 0.15
DENSE_RATIO = 10.0
MODERATE_RATIO = 3.0
UNIFORM_AREA_SPREAD = 3.0  # object-area p75 / p25
DENSE_DROPOUT = 0.3
RARE_POSITIVE = 0.05
BALANCED_POSITIVE = 0.30
STRATIFY_CV = 0.5
BORDER_FRACTION = 0.5
BLOB_MIN_UNLABELLED = 5
BLOB_UNLABELLED_FRACTION = 0.3
SAMPLE_COUNT = 8
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
HIST_BINS = 1024


# ------------------------------------------------------------------------------------------- reading

def _pairs(root: Path) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """(stem, image, mask) pairs by file stem, plus the stems with only an image or only a mask."""
    if not root.is_dir():
        raise HpcsegError(f"{root}: dataset folder not found")
    missing = [sub for sub in ("images", "masks") if not (root / sub).is_dir()]
    if missing:
        raise HpcsegError(f"{root}: no {' or '.join(f'{m}/' for m in missing)} folder; "
                          f"expected the microbead layout ROOT/images and ROOT/masks (docs/formats.md)")
    images = {p.stem: p for p in list_images(root / "images")}
    masks = {p.stem: p for p in list_images(root / "masks")}
    pairs = [(stem, images[stem], masks[stem]) for stem in sorted(images.keys() & masks.keys())]
    if not pairs:
        raise HpcsegError(f"{root}: no image/mask pairs with matching names "
                          f"({len(images)} image(s), {len(masks)} mask(s))")
    return pairs, sorted(images.keys() - masks.keys()), sorted(masks.keys() - images.keys())


def normalise(arr: np.ndarray) -> np.ndarray:
    """Gray intensities in [0, 1] by dtype: integers by their range, floats as-is when already in
    [0, 1] and min-max scaled per image otherwise (float data has no fixed white point)."""
    if arr.dtype == bool:
        out = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        out = (arr.astype(np.float32) - max(info.min, 0)) / float(info.max - max(info.min, 0))
    else:
        out = arr.astype(np.float32)
        lo, hi = float(np.nanmin(out)), float(np.nanmax(out))
        if lo < 0 or hi > 1:
            out = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
    return np.clip(to_gray(out), 0, 1).astype(np.float32)


# --------------------------------------------------------------------------------------- measurements

def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold on values in [0, 1]: the cut that maximises between-class variance."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def _border_fraction(fg: np.ndarray) -> float:
    border = np.concatenate([fg[0, :], fg[-1, :], fg[1:-1, 0], fg[1:-1, -1]])
    return float(border.mean()) if border.size else 0.0


def _unlabelled_blobs(gray: np.ndarray, fg: np.ndarray, min_area: float) -> tuple[int, int]:
    """(blobs, blobs touching no mask pixel) among Otsu blobs of at least ``min_area`` pixels.

    Blobs are taken on the side of the threshold where the masked objects lie (bright beads on a dark
    background, or dark objects on a bright one), so the check works for either contrast.
    """
    smooth = ndimage.gaussian_filter(gray, 1.0)
    t = otsu_threshold(smooth)
    bright_objects = not fg.any() or fg.all() or smooth[fg].mean() >= smooth[~fg].mean()
    blobs = smooth > t if bright_objects else smooth <= t
    labels, n = ndimage.label(blobs, structure=EIGHT_CONNECTED)
    if n == 0:
        return 0, 0
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    hits = np.bincount(labels.ravel(), weights=fg.ravel(), minlength=n + 1)
    big = areas[1:] >= min_area
    return int(big.sum()), int((big & (hits[1:] == 0)).sum())


def _measure(stem: str, img_path: Path, mask_path: Path) -> dict[str, Any]:
    """Everything per image; the gray image and mask are kept for the second pass and the plots."""
    img = read_image(img_path)
    mask = read_image(mask_path)
    gray = normalise(img)
    fg = binarize_mask(mask).astype(bool)
    labels, n = label_objects(fg)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:] if n else np.zeros(0, np.int64)
    return {
        "name": stem, "height": int(gray.shape[0]), "width": int(gray.shape[1]),
        "size_mismatch": fg.shape != gray.shape, "objects": int(n),
        "positive_ratio": float(fg.mean()), "areas": areas, "gray": gray, "fg": fg,
        "brightness_mean": float(gray.mean()),
    }


def _flags(rec: dict[str, Any], min_blob_area: float) -> list[str]:
    """Why a mask looks empty or partial (documented in the module docstring); [] when it looks fine."""
    fg = rec["fg"]
    if rec["size_mismatch"]:
        return [f"mask is {fg.shape[1]}x{fg.shape[0]} but the image is {rec['width']}x{rec['height']}"]
    if not fg.any():
        return ["empty mask"]
    flags = []
    border = _border_fraction(fg)
    if border > BORDER_FRACTION:
        flags.append(f"foreground covers {border:.0%} of the border")
    blobs, unlabelled = _unlabelled_blobs(rec["gray"], fg, min_blob_area)
    rec["otsu_blobs"], rec["unlabelled_blobs"] = blobs, unlabelled
    if unlabelled >= BLOB_MIN_UNLABELLED and unlabelled > BLOB_UNLABELLED_FRACTION * blobs:
        flags.append(f"{unlabelled} of {blobs} bright blobs in the image have no mask pixel")
    return flags


def _stats(values: np.ndarray) -> dict[str, float]:
    """mean, population std (ddof=0), min, max; zeros for no values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}


def _brightness(records: list[dict[str, Any]]) -> tuple[dict[str, Any], np.ndarray]:
    """Intensity statistics over all pixels of all images (normalised to [0, 1]), via one histogram so
    memory does not grow with the dataset; percentiles are exact to 1/1024."""
    hist = np.zeros(HIST_BINS, dtype=np.int64)
    total = total_sq = 0.0
    count = saturated = 0
    for rec in records:
        g = rec["gray"].astype(np.float64)
        hist += np.histogram(g, bins=HIST_BINS, range=(0.0, 1.0))[0]
        total += g.sum()
        total_sq += (g * g).sum()
        count += g.size
        saturated += int((g >= 0.999).sum())
    mean = total / count
    cdf = np.cumsum(hist) / count
    edges = np.linspace(0, 1, HIST_BINS + 1)
    pct = {f"p{p}": float(edges[min(int(np.searchsorted(cdf, p / 100)) + 1, HIST_BINS)]) for p in PERCENTILES}
    per_image = np.array([rec["brightness_mean"] for rec in records])
    return {
        "mean": float(mean), "std": float(math.sqrt(max(total_sq / count - mean * mean, 0.0))),
        "percentiles": pct, "saturated_fraction": saturated / count,
        "per_image_mean": _stats(per_image),
    }, hist


# ------------------------------------------------------------------------------------ recommendations

def reference_objects(reference: float | str | Path | None) -> tuple[float, str]:
    """Objects per image of the reference dataset, and how to name it: a number, a summary.json, or the
    seed-004 mitochondria default."""
    if reference is None:
        return DEFAULT_REFERENCE_OBJECTS, DEFAULT_REFERENCE_NAME
    if isinstance(reference, (int, float)) and not isinstance(reference, bool):
        value, label = float(reference), f"{float(reference):g} objects/image"
    else:
        text = str(reference)
        try:
            value, label = float(text), f"{float(text):g} objects/image"
        except ValueError:
            value, label = _reference_from_summary(Path(text).expanduser())
    if not math.isfinite(value) or value <= 0:
        raise HpcsegError(f"--reference {reference}: objects per image must be a positive number")
    return value, label


def _reference_from_summary(path: Path) -> tuple[float, str]:
    if path.is_dir():
        path = path / "summary.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        value = float(data["objects_per_image"]["mean"])
    except FileNotFoundError:
        raise HpcsegError(f"--reference {path}: not a number and no such summary.json") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HpcsegError(f"--reference {path}: not a summary.json written by hpcseg analyze "
                          f"({exc.__class__.__name__}: {exc})") from None
    name = data.get("dataset", str(path))
    return value, f"{name} ({value:.1f} objects/image, from {path})"


def round_sig(value: float, digits: int = 1) -> float:
    """Round to ``digits`` significant digits: learning rates are chosen on a log scale."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{digits - 1}e}")


def format_value(value: Any) -> str:
    """Values as they read best on a command line: 1e-4 rather than 0.0001 or 1e-04."""
    if isinstance(value, float) and value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
        mantissa, exp = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exp)}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _lr(ratio: float, ref_lr: float) -> tuple[float, str]:
    if ratio <= LR_DEAD_BAND:
        why = ("no denser than the reference" if ratio <= 1 else f"only {ratio:.1f}x the reference density")
        return ref_lr, f"{why}: keep the reference LR"
    divisor = min(max(ratio ** LR_EXPONENT, 1.0), LR_MAX_DIVISOR)
    lr = round_sig(ref_lr / divisor)
    return lr, (f"{ratio:.1f}x the reference's objects per image -> gradients ~{ratio:.0f}x stronger; "
                f"ref LR / ratio^{LR_EXPONENT} = {format_value(ref_lr)} / {divisor:.1f} "
                f"(seed 004: 36x needed /10)")


def _batch(ratio: float, ref_batch: int, n_images: int) -> tuple[int, str]:
    n_train = max(1, n_images - math.ceil(n_images * VAL_FRACTION))
    factor = 4 if ratio >= DENSE_RATIO else 2 if ratio >= MODERATE_RATIO else 1
    wanted = ref_batch * factor
    cap = max(BATCH_CAP, ref_batch)  # never lower a reference that was already above the cap
    batch = max(1, min(wanted, cap, n_train))
    why = (f"x{factor} for {ratio:.1f}x density: averages the noisier gradients of dense images"
           if factor > 1 else "density close to the reference: keep the reference batch")
    if batch < wanted:
        why += f"; capped at {'the ' + str(n_train) + ' training images' if batch == n_train else BATCH_CAP}"
    return batch, why


def _dropout(ratio: float, area_spread: float) -> tuple[float | None, str]:
    if ratio >= DENSE_RATIO and area_spread <= UNIFORM_AREA_SPREAD:
        return DENSE_DROPOUT, (f"dense ({ratio:.0f}x) and uniform objects (area p75/p25 {area_spread:.1f}): "
                               f"many near-identical shapes are easy to memorise")
    if ratio >= DENSE_RATIO:
        return None, f"dense but varied objects (area p75/p25 {area_spread:.1f}): keep the model's dropout"
    return None, "not much denser than the reference: keep the model's dropout"


def _loss(positive: float) -> tuple[str, str]:
    if positive < RARE_POSITIVE:
        return "focal", f"positive pixels are rare ({positive:.1%} < {RARE_POSITIVE:.0%}): focal loss"
    if positive <= BALANCED_POSITIVE:
        return "dice", (f"moderate positive ratio ({positive:.1%}): Dice optimises the overlap "
                        f"that Jaccard measures")
    return "ce", f"classes near balance ({positive:.1%} positive): plain cross-entropy"


def _split(cv: float) -> tuple[str, str]:
    if cv > STRATIFY_CV:
        return "stratified", (f"objects per image vary a lot (CV {cv:.2f} > {STRATIFY_CV}): stratify "
                               f"so validation sees sparse and dense images")
    return "random", f"objects per image fairly even (CV {cv:.2f}): a random split is representative"


def recommend(summary: dict[str, Any], reference: float | str | Path | None = None,
              reference_lr: float = 1e-3, reference_batch: int = 8) -> dict[str, Any]:
    """Recommended settings from a summary (as written to summary.json), each with its reason.

    Returns ``{"reference": {...}, "density_ratio", "items": [{"field", "value", "reference", "reason"}],
    "set_args"}``; ``set_args`` is the ready-to-paste ``--set`` line. Items whose value is ``None`` are
    advice to keep the current setting and are left out of ``set_args``.
    """
    if reference_lr <= 0 or reference_batch < 1:
        raise HpcsegError("--reference-lr must be positive and --reference-batch at least 1")
    ref_objects, ref_label = reference_objects(reference)
    objects = summary["objects_per_image"]
    ratio = objects["mean"] / ref_objects
    lr, lr_why = _lr(ratio, reference_lr)
    batch, batch_why = _batch(ratio, reference_batch, summary["image_count"])
    dropout, dropout_why = _dropout(ratio, summary["object_area"]["spread_p75_p25"])
    loss, loss_why = _loss(summary["positive_ratio"]["mean"])
    split, split_why = _split(objects["cv"])
    items = [
        {"field": "training.lr", "value": lr, "reference": reference_lr, "reason": lr_why},
        {"field": "training.batch_size", "value": batch, "reference": reference_batch, "reason": batch_why},
        {"field": "workload.models.0.dropout", "value": dropout, "reference": None,
         "reason": dropout_why + ("; set it for every model (workload.models.N.dropout)" if dropout else "")},
        {"field": "training.loss", "value": loss, "reference": None, "reason": loss_why},
        {"field": "workload.split.method", "value": split, "reference": None, "reason": split_why},
    ]
    set_args = " ".join(f"--set {it['field']}={format_value(it['value'])}" for it in items if it["value"] is not None)
    return {
        "reference": {"objects_per_image": ref_objects, "name": ref_label, "lr": reference_lr,
                      "batch_size": reference_batch},
        "density_ratio": ratio, "items": items, "set_args": set_args,
    }


def format_table(recs: dict[str, Any]) -> str:
    """The recommendations as a plain-text table with reasons, then the --set line."""
    rows = [("setting", "value", "reason")]
    for it in recs["items"]:
        value = "keep" if it["value"] is None else format_value(it["value"])
        if it["reference"] is not None and it["value"] is not None and it["value"] != it["reference"]:
            value = f"{value} (was {format_value(it['reference'])})"
        rows.append((it["field"], value, it["reason"]))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    lines.insert(1, f"{'-' * w0}  {'-' * w1}  {'-' * 6}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ plots

def _save_figure(fig: Any, path: Path) -> None:
    """PNG written atomically: a half-written plot is never left behind."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_bytes_atomic(path, buf.getvalue())


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_samples(records: list[dict[str, Any]], path: Path) -> None:
    """Up to 8 images spread over the density range (flagged masks first, up to 2), mask outlined in red."""
    plt = _pyplot()
    flagged = [i for i, r in enumerate(records) if r["flags"]][:2]
    order = sorted(range(len(records)), key=lambda i: records[i]["objects"])
    spread = np.linspace(0, len(order) - 1, min(SAMPLE_COUNT - len(flagged), len(order)))
    picks = sorted(set(flagged) | {order[int(round(q))] for q in spread}, key=lambda i: records[i]["objects"])
    cols = min(4, len(picks))
    rows = math.ceil(len(picks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows), squeeze=False, layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), picks, strict=False):
        rec = records[i]
        ax.imshow(rec["gray"], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        fg = rec["fg"]
        if fg.shape == rec["gray"].shape and fg.any():
            overlay = np.zeros((*fg.shape, 4))
            overlay[fg] = (1.0, 0.15, 0.1, 0.35)
            ax.imshow(overlay, interpolation="nearest")
            ax.contour(fg.astype(float), levels=[0.5], colors="red", linewidths=0.6)
        flag = " (!)" if rec["flags"] else ""
        ax.set_title(f"{rec['name']}: {rec['objects']} objects{flag}", fontsize=9)
    fig.suptitle("Sample images with mask overlay (sorted by objects per image)", fontsize=11)
    _save_figure(fig, path)
    plt.close(fig)


def plot_distributions(records: list[dict[str, Any]], summary: dict[str, Any], hist: np.ndarray,
                       ref_objects: float, path: Path) -> None:
    """Histograms of objects per image (with the reference), positive ratio, object area, brightness."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    objects = np.array([r["objects"] for r in records])
    ax = axes[0, 0]
    ax.hist(objects, bins=min(30, max(5, len(objects) // 2)), color="tab:blue", edgecolor="white")
    ax.axvline(objects.mean(), color="black", ls="--", label=f"mean {objects.mean():.1f}")
    ax.axvline(ref_objects, color="tab:red", ls=":", label=f"reference {ref_objects:g}")
    ax.set(title=f"Objects per image ({summary['recommendations']['density_ratio']:.1f}x reference)",
           xlabel="objects (8-connected)", ylabel="images")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    pos = np.array([r["positive_ratio"] for r in records]) * 100
    ax.hist(pos, bins=min(30, max(5, len(pos) // 2)), color="tab:green", edgecolor="white")
    ax.axvline(pos.mean(), color="black", ls="--", label=f"mean {pos.mean():.1f}%")
    ax.set(title="Positive pixel ratio", xlabel="foreground pixels (%)", ylabel="images")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    areas = np.concatenate([r["areas"] for r in records]) if records else np.zeros(0)
    if areas.size:
        top = max(float(np.percentile(areas, 99)), 1.0)
        ax.hist(np.clip(areas, 0, top), bins=40, color="tab:orange", edgecolor="white")
        ax.axvline(areas.mean(), color="black", ls="--", label=f"mean {areas.mean():.1f} px")
        ax.legend(fontsize=8)
    ax.set(title="Object area (clipped at p99)", xlabel="pixels", ylabel="objects")
    ax = axes[1, 1]
    centres = (np.arange(HIST_BINS) + 0.5) / HIST_BINS
    ax.fill_between(centres, hist, step="mid", color="tab:gray")
    ax.set_yscale("log")
    b = summary["brightness"]
    ax.set(title=f"Brightness (mean {b['mean']:.2f}, p1 {b['percentiles']['p1']:.2f}, "
                 f"p99 {b['percentiles']['p99']:.2f})", xlabel="intensity (0-1)", ylabel="pixels")
    fig.suptitle(f"{summary['image_count']} images: {summary['objects_per_image']['mean']:.1f} "
                 f"± {summary['objects_per_image']['std']:.1f} objects/image", fontsize=12)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


# -------------------------------------------------------------------------------------------- analysis

def _summarise(root: Path, records: list[dict[str, Any]], unpaired: tuple[list[str], list[str]],
               brightness: dict[str, Any]) -> dict[str, Any]:
    objects = np.array([r["objects"] for r in records])
    areas = np.concatenate([r["areas"] for r in records])
    sizes: dict[tuple[int, int], int] = {}
    for r in records:
        sizes[(r["height"], r["width"])] = sizes.get((r["height"], r["width"]), 0) + 1
    obj = _stats(objects)
    obj["cv"] = obj["std"] / obj["mean"] if obj["mean"] else 0.0
    obj["per_image"] = objects.tolist()
    p25, p75 = (np.percentile(areas, [25, 75]) if areas.size else (0.0, 0.0))
    return {
        "dataset": str(root),
        "image_count": len(records),
        "image_sizes": [{"height": h, "width": w, "count": c} for (h, w), c in sorted(sizes.items())],
        "objects_per_image": obj,
        "positive_ratio": _stats(np.array([r["positive_ratio"] for r in records])),
        "object_area": {
            "mean": float(areas.mean()) if areas.size else 0.0,
            "median": float(np.median(areas)) if areas.size else 0.0,
            "std": float(areas.std()) if areas.size else 0.0,
            "p25": float(p25), "p75": float(p75),
            "spread_p75_p25": float(p75 / p25) if p25 else 0.0,
            "count": int(areas.size),
        },
        "brightness": brightness,
        "quality": {
            "empty_masks": [r["name"] for r in records if "empty mask" in r["flags"]],
            "partial_masks": [{"name": r["name"], "reasons": r["flags"]} for r in records
                              if r["flags"] and "empty mask" not in r["flags"]],
            "unpaired_images": unpaired[0],
            "unpaired_masks": unpaired[1],
        },
        "images": [
            {"name": r["name"], "height": r["height"], "width": r["width"], "objects": r["objects"],
             "positive_ratio": r["positive_ratio"],
             "mean_object_area": float(r["areas"].mean()) if r["areas"].size else 0.0,
             "brightness_mean": r["brightness_mean"], "otsu_blobs": r.get("otsu_blobs"),
             "unlabelled_blobs": r.get("unlabelled_blobs"), "flags": r["flags"]}
            for r in records
        ],
        "rules": {
            "objects": "8-connected components of mask > 0",
            "std": "population (ddof=0)",
            "brightness": "integers / dtype max; floats as-is in [0,1], else min-max per image",
            "partial_mask": {"border_fraction_over": BORDER_FRACTION, "unlabelled_blobs_at_least": BLOB_MIN_UNLABELLED,
                             "unlabelled_fraction_over": BLOB_UNLABELLED_FRACTION},
            "lr": f"ref_lr / clamp(ratio^{LR_EXPONENT}, 1, {LR_MAX_DIVISOR:g}), 1 significant digit; "
                  f"reference kept for ratio <= {LR_DEAD_BAND}",
            "batch": f"x4 at ratio >= {DENSE_RATIO:g}, x2 at >= {MODERATE_RATIO:g}; cap {BATCH_CAP} and "
                     f"training-set size ({1 - VAL_FRACTION:.0%} of images)",
            "dropout": f"{DENSE_DROPOUT} when ratio >= {DENSE_RATIO:g} and area p75/p25 <= {UNIFORM_AREA_SPREAD:g}",
            "loss": f"focal < {RARE_POSITIVE:.0%} positive, dice up to {BALANCED_POSITIVE:.0%}, ce above",
            "split": f"stratified when objects-per-image CV > {STRATIFY_CV}",
        },
    }


def analyze_dataset(root: Path, out: Path, reference: float | Path | None = None,
                    reference_lr: float = 1e-3, reference_batch: int = 8) -> dict:
    """Measure a microbead-layout dataset, write summary.json and the two plots into ``out``.

    Returns the summary (as written), including ``"recommendations"``. Raises HpcsegError for a missing
    folder, no pairs, or an unreadable image (the error names the file).
    """
    root, out = Path(root).expanduser(), Path(out).expanduser()
    reference_objects(reference)  # a bad --reference fails before the images are read
    pairs, only_images, only_masks = _pairs(root)
    records = [_measure(stem, img, mask) for stem, img, mask in pairs]
    all_areas = np.concatenate([r["areas"] for r in records])
    min_blob = max(4.0, 0.25 * float(np.median(all_areas))) if all_areas.size else 4.0
    for rec in records:
        rec["flags"] = _flags(rec, min_blob)
    brightness, hist = _brightness(records)
    summary = _summarise(root, records, (only_images, only_masks), brightness)
    summary["rules"]["partial_mask"]["min_blob_area"] = min_blob
    summary["recommendations"] = recommend(summary, reference, reference_lr, reference_batch)
    out.mkdir(parents=True, exist_ok=True)
    ref_objects = summary["recommendations"]["reference"]["objects_per_image"]
    plot_samples(records, out / "sample_images.png")
    plot_distributions(records, summary, hist, ref_objects, out / "distribution_analysis.png")
    write_json_atomic(out / "summary.json", summary)
    return summary


def _report(summary: dict[str, Any], out: Path) -> str:
    o, p, a = summary["objects_per_image"], summary["positive_ratio"], summary["object_area"]
    b, q = summary["brightness"], summary["quality"]
    sizes = ", ".join(f"{s['width']}x{s['height']} ({s['count']})" for s in summary["image_sizes"])
    recs = summary["recommendations"]
    lines = [
        f"{summary['image_count']} image/mask pairs in {summary['dataset']}; sizes: {sizes}",
        f"objects per image: {o['mean']:.1f} +- {o['std']:.1f} (range {o['min']:.0f}-{o['max']:.0f}, CV {o['cv']:.2f})",
        f"positive pixels: {p['mean']:.1%} +- {p['std']:.1%}; mean object area {a['mean']:.1f} px",
        f"brightness: mean {b['mean']:.3f}, p1-p99 {b['percentiles']['p1']:.3f}-{b['percentiles']['p99']:.3f}, "
        f"saturated {b['saturated_fraction']:.2%}",
    ]
    if q["empty_masks"]:
        lines.append(f"empty masks ({len(q['empty_masks'])}): {', '.join(q['empty_masks'][:10])}")
    for item in q["partial_masks"][:10]:
        lines.append(f"partial mask? {item['name']}: {'; '.join(item['reasons'])}")
    if q["unpaired_images"] or q["unpaired_masks"]:
        lines.append(f"unpaired: {len(q['unpaired_images'])} image(s) without mask, "
                     f"{len(q['unpaired_masks'])} mask(s) without image")
    lines += [
        "",
        f"reference: {recs['reference']['name']}, LR {format_value(recs['reference']['lr'])}, "
        f"batch {recs['reference']['batch_size']} -> density ratio {recs['density_ratio']:.1f}x",
        format_table(recs),
        "",
        recs["set_args"],
        "",
        f"wrote {out / 'summary.json'}, {out / 'sample_images.png'}, {out / 'distribution_analysis.png'}",
    ]
    return "\n".join(lines)


def cli_analyze(args: argparse.Namespace) -> int:
    """``hpcseg analyze DATASET``: fingerprint, plots, and the settings to paste."""
    root = Path(args.dataset).expanduser()
    out = Path(args.out).expanduser() if args.out else root / "analysis"
    try:
        summary = analyze_dataset(root, out, reference=args.reference, reference_lr=args.reference_lr,
                                  reference_batch=args.reference_batch)
    except OSError as exc:  # e.g. an output folder we may not write: one line, no traceback
        raise HpcsegError(f"{exc.filename or out}: {exc.strerror or exc}") from None
    print(_report(summary, out))
    return 0
