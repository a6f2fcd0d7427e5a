"""Checkpoints that survive being killed at any instant.

``checkpoint_last.pt`` is replaced atomically (write a temp file, fsync, rename), and the one it replaces
is kept as ``checkpoint_prev.pt`` (hard-linked before the rename, so at every moment at least one
complete checkpoint exists under its name). A last checkpoint that cannot be read — truncated by a full
disk, corrupted by a dying node — falls back to the previous one with a warning, costing one epoch.
Everything stored is tensors and plain Python values, so loading uses ``weights_only=True``.
A write that runs out of space (full disk, quota, file-size limit) removes its temporary file and raises
:class:`DiskFullError` naming the file: the checkpoint it was to replace is still there, untouched.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpcseg.errors import EXIT_FAILED, HpcsegError

log = logging.getLogger("hpcseg.train")

LAST, PREV, BEST = "checkpoint_last.pt", "checkpoint_prev.pt", "checkpoint_best.pt"
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class DiskFullError(HpcsegError):
    """No room to write a file: a plain message (exit 1), not a traceback from deep inside torch."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=EXIT_FAILED)


def no_space(exc: BaseException) -> OSError | None:
    """The out-of-space OSError behind ``exc``, if any. torch.save reports a failed write as a
    RuntimeError ("unexpected pos ...") whose context holds the real OSError, so the chain is followed."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return e
        e = e.__cause__ or e.__context__
    return None


def save_atomic(obj: Any, path: Path) -> None:
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        full = no_space(exc)
        if full is None:
            raise
        kept = " (the previous one is kept)" if path.exists() else ""
        raise DiskFullError(f"{path}: cannot write the checkpoint{kept}: the disk is full "
                            f"({full.strerror or os.strerror(full.errno or 0)}); free space or raise the quota, "
                            f"then resubmit to resume") from exc


def save_last(task_dir: Path, state: dict[str, Any]) -> None:
    """New checkpoint_last.pt; the old one becomes checkpoint_prev.pt."""
    last, prev = task_dir / LAST, task_dir / PREV
    if last.exists():
        link = task_dir / f".{PREV}.link"
        link.unlink(missing_ok=True)
        try:
            os.link(last, link)
            os.replace(link, prev)
        except OSError:  # no hard links on this file system: a copy does the same, slower
            save_atomic(torch.load(last, map_location="cpu", weights_only=True), prev)
    save_atomic(state, last)
    _fsync_dir(task_dir)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_resume(task_dir: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint (last, else prev), or None for a fresh start."""
    for name in (LAST, PREV):
        path = task_dir / name
        if not path.exists():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
                raise ValueError("not an hpcseg training checkpoint")
        except Exception as exc:  # truncated zip, bad pickle, wrong content: all mean "unusable"
            log.warning("WARNING: %s is unreadable (%s: %s); trying the previous checkpoint", path.name,
                        exc.__class__.__name__, str(exc).splitlines()[0] if str(exc) else "")
            continue
        if name == PREV:
            log.warning("WARNING: resuming from %s (epoch %d); the last checkpoint was lost", name, state["epoch"])
        return state
    return None


def rng_state() -> dict[str, Any]:
    """Every random number generator's state, as checkpoint-safe values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list | tuple) else v
