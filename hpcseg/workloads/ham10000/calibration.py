"""Temperature scaling and expected calibration error for classifiers (seed 002).

Networks trained with cross-entropy are usually over-confident; one scalar temperature T, fitted on the
validation logits by minimising the negative log-likelihood of softmax(logits / T), fixes most of it
without changing any prediction (argmax is invariant to T). ECE uses 15 equal-width confidence bins
(Guo et al. 2017). The result is a plain JSON-able dict that the runner stores under
``result.json["extra"]["calibration"]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

ECE_BINS = 15
T_MIN, T_MAX = 0.05, 20.0


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> tuple[float, list[dict]]:
    """ECE and the reliability table: per confidence bin, its range, count, mean confidence and accuracy."""
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).double()
    conf = conf.double()
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    # Bins are (lo, hi]; a confidence of exactly 0 cannot occur with softmax over >= 2 classes.
    idx = torch.bucketize(conf, edges[1:-1], right=False)
    n = max(len(labels), 1)
    ece = 0.0
    table = []
    for b in range(bins):
        sel = idx == b
        count = int(sel.sum())
        row: dict[str, Any] = {"lo": round(float(edges[b]), 6), "hi": round(float(edges[b + 1]), 6), "count": count,
                               "confidence": None, "accuracy": None}
        if count:
            c, a = float(conf[sel].mean()), float(correct[sel].mean())
            row.update(confidence=c, accuracy=a)
            ece += count / n * abs(a - c)
        table.append(row)
    return ece, table


def ece(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, bins: int = ECE_BINS) -> float:
    return reliability(torch.softmax(logits.double() / temperature, dim=1), labels, bins)[0]


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The T minimising NLL of softmax(logits / T), optimised in log T (so T > 0), kept in [T_MIN, T_MAX]."""
    logits, labels = logits.detach().double().cpu(), labels.detach().long().cpu()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t):
        return 1.0
    # A validation set the model gets entirely right drives T towards 0 (and one it gets entirely wrong
    # towards infinity): the NLL has no minimum. Keep T in a range that still means "rescale".
    return min(max(t, T_MIN), T_MAX)


def calibrate(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> dict[str, Any]:
    """Fit T on (validation) logits (N, K) and integer labels (N,); report before/after.

    Keys: temperature, ece_before, ece_after, nll_before, nll_after, accuracy, n, bins,
    reliability_before, reliability_after (lists of {lo, hi, count, confidence, accuracy}).
    """
    logits, labels = logits.detach().double().cpu(), labels.detach().long().cpu()
    if logits.ndim != 2 or labels.shape != logits.shape[:1] or len(labels) == 0:
        raise ValueError(f"calibrate needs logits (N, K) and labels (N,), got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    t = fit_temperature(logits, labels)
    ece_b, table_b = reliability(torch.softmax(logits, dim=1), labels, bins)
    ece_a, table_a = reliability(torch.softmax(logits / t, dim=1), labels, bins)
    return {
        "temperature": t,
        "ece_before": ece_b,
        "ece_after": ece_a,
        "nll_before": float(F.cross_entropy(logits, labels)),
        "nll_after": float(F.cross_entropy(logits / t, labels)),
        "accuracy": float((logits.argmax(1) == labels).double().mean()),
        "n": int(len(labels)),
        "bins": bins,
        "reliability_before": table_b,
        "reliability_after": table_a,
    }
