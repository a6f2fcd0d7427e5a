"""TensorBoard event files for a task, in ``<task folder>/tensorboard/`` (seed 000 watched its folds there).

Per epoch: every history.csv column as a scalar (the learning rate included), and for segmentation a
few validation examples as images (input | truth | prediction, side by side). The ``tensorboard``
package is optional (``pip install 'hpcseg[tensorboard]'``): without it training warns once per process
and goes on, since event files are a convenience and history.csv stays the record.

Only the process that writes files (rank 0) writes events. A resumed task opens its writer with
``purge_step`` at the first epoch it trains, so TensorBoard drops whatever a killed attempt had written
for that epoch and later ones: each epoch is shown once, as in history.csv.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("hpcseg.train")

FOLDER = "tensorboard"
MAX_IMAGES = 4  # validation examples per epoch: enough to see the model's habits, small event files
_warned = False


def _writer_class() -> Any | None:
    """torch's SummaryWriter, or None (with one warning per process) when tensorboard is missing."""
    global _warned
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch.utils.tensorboard raises ImportError without the package
        if not _warned:
            _warned = True
            log.warning("TensorBoard: no event files (%s); pip install 'hpcseg[tensorboard]' to get them", exc)
        return None
    return SummaryWriter


def scalar_tag(column: str) -> str:
    """history.csv column -> TensorBoard tag; the group before '/' puts losses, metrics and the schedule
    on their own panels, and the column name after it matches history.csv."""
    if column.endswith("_loss"):
        return f"loss/{column}"
    if column.startswith("val_"):
        return f"val/{column}"
    if column == "lr":
        return "schedule/lr"
    return f"time/{column}"


class TensorBoardLog:
    """One task's event files; a no-op when disabled (another rank, or tensorboard missing)."""

    def __init__(self, task_dir: Path, enabled: bool = True):
        self.dir = Path(task_dir) / FOLDER
        self.enabled = enabled
        self._writer: Any | None = None

    def _open(self, first_step: int) -> Any | None:
        if self._writer is None and self.enabled:
            cls = _writer_class()
            if cls is None:
                self.enabled = False
                return None
            self._writer = cls(log_dir=str(self.dir), purge_step=first_step)
        return self._writer

    def epoch(self, epoch: int, row: dict[str, float]) -> None:
        """Every column of the epoch's history row except the epoch itself."""
        writer = self._open(epoch)
        if writer is None:
            return
        for column, value in row.items():
            if column != "epoch":
                writer.add_scalar(scalar_tag(column), float(value), epoch)

    def examples(self, epoch: int, x: Any, y: Any, logits: Any, task: str) -> None:
        """Up to MAX_IMAGES validation examples as input | truth | prediction panels."""
        writer = self._open(epoch)
        if writer is None or not task.endswith("segmentation"):
            return
        writer.add_images("val/examples", panels(x, y, logits, task), epoch, dataformats="NCHW")

    def flush(self) -> None:
        """After every epoch: a task killed later keeps its events."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def panels(x: Any, y: Any, logits: Any, task: str) -> Any:
    """(N, 3, H, 3W) float images in [0, 1]: the input (RGB when it has 3 channels, else the channel mean,
    contrast-stretched per image), the truth and the prediction in one palette (ignored pixels black)."""
    import torch

    n = min(MAX_IMAGES, x.shape[0])
    x, y, logits = x[:n].detach().float().cpu(), y[:n].detach().cpu(), logits[:n].detach().float().cpu()
    shown = x if x.shape[1] == 3 else x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    low = shown.amin(dim=(1, 2, 3), keepdim=True)
    high = shown.amax(dim=(1, 2, 3), keepdim=True)
    shown = (shown - low) / (high - low).clamp_min(1e-8)
    if y.ndim == 4:
        y = y[:, 0]
    pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)
    classes = max(int(logits.shape[1]), 2)
    return torch.cat([shown, colour(y.long(), classes), colour(pred, classes)], dim=3)


def colour(labels: Any, classes: int) -> Any:
    """(N, H, W) class codes -> (N, 3, H, W) RGB; negative codes (unlabelled) are black. Binary masks are
    black and white; more classes get evenly spaced hues."""
    import torch

    if classes <= 2:
        palette = torch.tensor([[0.15, 0.15, 0.15], [1.0, 1.0, 1.0]])
    else:
        hue = torch.arange(classes, dtype=torch.float32) / classes
        k = (torch.tensor([5.0, 3.0, 1.0])[None, :] + hue[:, None] * 6) % 6  # HSV -> RGB at s = v = 1
        palette = 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)
        palette[0] = torch.tensor([0.3, 0.3, 0.3])  # class 0 (background) grey
    valid = labels >= 0
    rgb = palette[labels.clamp(0, classes - 1)]  # (N, H, W, 3)
    rgb = torch.where(valid[..., None], rgb, torch.zeros(3))
    return rgb.permute(0, 3, 1, 2).contiguous()
