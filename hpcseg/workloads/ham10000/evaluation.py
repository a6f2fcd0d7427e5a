"""Held-out calibration, operating points and error tables for a trained classifier (seed 002).

Why cross-fitting: the validation split already chose the best epoch, and a temperature fitted and scored
on the same images reported an ECE about twice too good. Here the validation images are split in two,
lesion-grouped (all photos of a lesion on one side) and stratified by class where the counts allow;
a temperature (and each 95 %-specificity threshold) is fitted on one half and applied to the other, and
the two out-of-half predictions are pooled. So every "after" number is measured on images that the
temperature and the threshold never saw, while all validation images still count. The temperature and
thresholds to deploy are fitted on the whole validation split and reported beside the held-out figures.

Metrics come from scikit-learn (ROC, AUC, confusion matrix, balanced accuracy, macro-F1) and torchmetrics
(ECE, 15 equal-width bins, L1); the reliability table for the diagram is ``calibration.reliability``.
Everything is written under the task folder's ``eval/`` (JSON, CSV, PNG): the HTML report embeds every
PNG there.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hpcseg.fsutil import write_bytes_atomic, write_text_atomic
from hpcseg.workloads.ham10000.calibration import ECE_BINS, fit_temperature, reliability

SPECIFICITY = 0.95
POSITIVE = "mel"  # the headline: melanoma vs rest
EVAL_DIR = "eval"


# --------------------------------------------------------------------------------------------- pieces


def halves(labels: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Two lesion-grouped halves of the validation items (positions), stratified when every class
    has two lesions; None when there are fewer than two lesions (nothing can be held out)."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    n_groups = len(set(groups.tolist()))
    if n_groups < 2:
        return None
    pos = np.arange(len(labels))
    _, counts = np.unique(labels, return_counts=True)
    if counts.min() >= 2:
        cv: Any = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=seed)
        a, b = next(cv.split(pos, labels, groups))
    else:
        a, b = next(GroupKFold(n_splits=2).split(pos, labels, groups))
    if len(a) == 0 or len(b) == 0:
        return None
    return np.sort(a), np.sort(b)


def threshold_at_specificity(scores: np.ndarray, positive: np.ndarray, specificity: float = SPECIFICITY) -> float | None:
    """The lowest cut t with "positive iff score > t" keeping specificity >= ``specificity`` on these
    scores; None without negatives."""
    neg = np.sort(scores[~positive])[::-1]
    if len(neg) == 0:
        return None
    allowed = int(np.floor((1.0 - specificity) * len(neg) + 1e-9))  # false positives we may keep
    return float(neg[min(allowed, len(neg) - 1)])


def _rates(scores: np.ndarray, positive: np.ndarray, t: float) -> tuple[int, int, int, int]:
    pred = scores > t
    return (int((pred & positive).sum()), int((~pred & positive).sum()), int((~pred & ~positive).sum()),
            int((pred & ~positive).sum()))


def _ece(probs: np.ndarray, labels: np.ndarray) -> float:
    from torchmetrics.functional.classification import multiclass_calibration_error

    return float(multiclass_calibration_error(torch.as_tensor(probs, dtype=torch.float64),
                                              torch.as_tensor(labels, dtype=torch.long), probs.shape[1],
                                              n_bins=ECE_BINS, norm="l1"))


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)
    return float(-np.log(p).mean())


def _softmax(logits: np.ndarray, t: float = 1.0) -> np.ndarray:
    return F.softmax(torch.as_tensor(logits, dtype=torch.float64) / t, dim=1).numpy()


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


# --------------------------------------------------------------------------------------------- evaluate


def evaluate(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray, class_names: list[str], seed: int,
             out_dir: Path | None = None) -> dict[str, Any]:
    """Calibration (held out by cross-fitting), per-class ROC/AUC and 95 %-specificity operating points,
    balanced accuracy, macro-F1, confusion matrices. Returns the JSON-able summary for result.json
    (``extra``: ``calibration`` and ``evaluation``) and writes the files when ``out_dir`` is given."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, roc_auc_score, roc_curve

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    k = logits.shape[1]
    lt, yt = torch.as_tensor(logits), torch.as_tensor(labels)
    t_all = fit_temperature(lt, yt)
    raw = _softmax(logits)
    parts = halves(labels, np.asarray(groups), seed)
    held_out = parts is not None
    cal = np.empty_like(raw)
    fold_t: list[float] = []
    if parts is None:  # too few lesions to hold any out: in-sample, and said so
        cal[:] = _softmax(logits, t_all)
    else:
        for fit, test in (parts, parts[::-1]):
            t = fit_temperature(lt[fit], yt[fit])
            fold_t.append(t)
            cal[test] = _softmax(logits[test], t)

    table_b = reliability(torch.as_tensor(raw), yt)[1]
    table_a = reliability(torch.as_tensor(cal), yt)[1]
    calibration = {
        "temperature": t_all, "temperature_halves": fold_t, "held_out": held_out,
        "method": "cross-fitted over two lesion-grouped halves of the validation split" if held_out
        else "in-sample (fewer than two lesions in the validation split)",
        "ece_before": _ece(raw, labels), "ece_after": _ece(cal, labels),
        "nll_before": _nll(raw, labels), "nll_after": _nll(cal, labels),
        "accuracy": float((raw.argmax(1) == labels).mean()), "n": int(len(labels)), "bins": ECE_BINS,
        "reliability_before": table_b, "reliability_after": table_a,
    }

    pred = raw.argmax(1)
    present = sorted(set(labels.tolist()))
    seen = sorted(set(labels.tolist()) | set(pred.tolist()))
    cm = confusion_matrix(labels, pred, labels=list(range(k)))
    rows = cm.sum(axis=1, keepdims=True)
    cm_norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)

    per_class: list[dict[str, Any]] = []
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for c in range(k):
        name = class_names[c]
        pos = labels == c
        entry: dict[str, Any] = {"class": name, "n_pos": int(pos.sum()), "n_neg": int((~pos).sum()),
                                 "auc": None, "threshold": None, "sensitivity": None, "specificity": None,
                                 "held_out": held_out}
        if 0 < pos.sum() < len(pos):
            entry["auc"] = float(roc_auc_score(pos, raw[:, c]))
            curves[name] = roc_curve(pos, raw[:, c])
        entry["threshold"] = threshold_at_specificity(_softmax(logits, t_all)[:, c], pos)
        tp = fn = tn = fp = 0
        if parts is None:
            if entry["threshold"] is not None:
                tp, fn, tn, fp = _rates(cal[:, c], pos, entry["threshold"])
        else:
            for i, (fit, test) in enumerate((parts, parts[::-1])):
                t = threshold_at_specificity(_softmax(logits[fit], fold_t[i])[:, c], pos[fit])
                if t is None:
                    continue
                a, b_, c_, d = _rates(cal[test, c], pos[test], t)
                tp, fn, tn, fp = tp + a, fn + b_, tn + c_, fp + d
        entry.update(sensitivity=_div(tp, tp + fn), specificity=_div(tn, tn + fp), tp=tp, fn=fn, tn=tn, fp=fp)
        per_class.append(entry)

    headline = next((e for e in per_class if e["class"] == POSITIVE), None)
    evaluation = {
        "n": int(len(labels)),
        "accuracy": float((pred == labels).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(labels, pred)) if present else None,
        "macro_f1": float(f1_score(labels, pred, labels=seen, average="macro", zero_division=0)),
        "specificity_target": SPECIFICITY,
        "melanoma": None if headline is None else {
            "sensitivity_at_95_specificity": headline["sensitivity"], "specificity": headline["specificity"],
            "threshold": headline["threshold"], "auc": headline["auc"], "held_out": held_out},
        "per_class": per_class,
        "class_names": list(class_names),
        "confusion": cm.tolist(),
        "confusion_normalised": cm_norm.tolist(),
        "files": EVAL_DIR if out_dir is not None else None,
    }
    if out_dir is not None:
        write_files(Path(out_dir) / EVAL_DIR, calibration, evaluation, curves)
    return {"calibration": calibration, "evaluation": evaluation}


# --------------------------------------------------------------------------------------------- files


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_files(folder: Path, calibration: dict[str, Any], evaluation: dict[str, Any],
                curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = evaluation["class_names"]
    write_text_atomic(folder / "metrics.json", json.dumps({"calibration": calibration, "evaluation": evaluation},
                                                          indent=1) + "\n")
    write_text_atomic(folder / "confusion_counts.csv",
                      _csv([["true\\pred", *names], *([n, *r] for n, r in zip(names, evaluation["confusion"],
                                                                                 strict=True))]))
    write_text_atomic(folder / "confusion_normalised.csv",
                      _csv([["true\\pred", *names], *([n, *(f"{v:.4f}" for v in r)] for n, r in
                                                       zip(names, evaluation["confusion_normalised"], strict=True))]))
    cols = ["class", "n_pos", "n_neg", "auc", "threshold", "sensitivity", "specificity", "tp", "fn", "tn", "fp",
            "held_out"]
    write_text_atomic(folder / "operating_points.csv",
                      _csv([cols, *([e.get(c) for c in cols] for e in evaluation["per_class"])]))
    roc_rows: list[list[Any]] = [["class", "fpr", "tpr", "threshold"]]
    for name, (fpr, tpr, thr) in curves.items():
        roc_rows += [[name, f"{a:.6f}", f"{b:.6f}", f"{c:.6g}"] for a, b, c in zip(fpr, tpr, thr, strict=True)]
    write_text_atomic(folder / "roc.csv", _csv(roc_rows))
    rel = [["when", "lo", "hi", "count", "confidence", "accuracy"]]
    for when in ("before", "after"):
        rel += [[when, r["lo"], r["hi"], r["count"], r["confidence"], r["accuracy"]]
                for r in calibration[f"reliability_{when}"]]
    write_text_atomic(folder / "reliability.csv", _csv(rel))
    _plots(folder, calibration, evaluation, curves)


def _save(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_bytes_atomic(path, buf.getvalue())


def _plots(folder: Path, calibration: dict[str, Any], evaluation: dict[str, Any],
           curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    aucs = {e["class"]: e["auc"] for e in evaluation["per_class"]}
    for name, (fpr, tpr, _) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {aucs[name]:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.axvline(1 - SPECIFICITY, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="false positive rate (1 - specificity)", ylabel="sensitivity", title="ROC, one vs rest")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    _save(fig, folder / "roc.png")

    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    for when, marker in (("before", "o"), ("after", "s")):
        rows = [r for r in calibration[f"reliability_{when}"] if r["count"]]
        ece = calibration[f"ece_{when}"]
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker=marker,
                label=f"{when} scaling (ECE {ece:.3f})")
    held = "held out" if calibration["held_out"] else "in-sample"
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title=f"reliability, T={calibration['temperature']:.2f} ({held})")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    _save(fig, folder / "reliability.png")

    names = evaluation["class_names"]
    fig = Figure(figsize=(11, 5))
    for i, (key, fmt, title) in enumerate((("confusion", "d", "counts"),
                                           ("confusion_normalised", ".2f", "row-normalised"))):
        ax = fig.add_subplot(1, 2, i + 1)
        m = np.asarray(evaluation[key], dtype=np.float64)
        ax.imshow(m if key != "confusion" else m / max(m.max(), 1), cmap="Blues", vmin=0, vmax=1)
        for (r, c), v in np.ndenumerate(m):
            ax.text(c, r, format(int(v) if fmt == "d" else v, fmt), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=45, fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set(xlabel="predicted", ylabel="true", title=f"confusion ({title})")
    fig.tight_layout()
    _save(fig, folder / "confusion.png")
