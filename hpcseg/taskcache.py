"""A cache of what ``hpcseg status`` read from task folders, so a status over 3000 tasks stats files
instead of re-reading and re-parsing what has not changed.

Never trusted over the files: each entry is kept with the stamp (mtime in ns, size, inode) of every path
it was built from (the task folder, history.csv, exit_code, events.log) and used only while all of them
are unchanged. A folder's mtime changes whenever a file in it is created, removed or renamed over
(POSIX), so a file that was absent is known to be still absent while its folder's stamp holds: a check
costs one stat of the folder plus one per file that exists, and no failed lookups. Stamps taken
within :data:`RACY_S` of now are not cached (a file rewritten within one mtime tick could keep its
stamp, as git's "racy clean" problem), so such a task is simply read again next time. The cache lives in
the user's cache folder (``$XDG_CACHE_HOME/hpcseg``), never in the shared runs folder, is written
atomically, and any unreadable or foreign cache file is ignored. ``HPCSEG_CACHE=off`` turns it off.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from dataclasses import fields
from pathlib import Path
from typing import Any

from hpcseg.taskfiles import EVENTS, EXIT_CODE, HISTORY, TaskView, read_task_view

VERSION = 1
RACY_S = 2.0
_FIELDS = [f.name for f in fields(TaskView)]
_FILES = ("/" + HISTORY, "/" + EXIT_CODE, "/" + EVENTS)


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino]


def _same(path: str, old: list[int]) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_mtime_ns == old[0] and st.st_size == old[1] and st.st_ino == old[2]


def _valid(task_dir: str, stamps: list[Any]) -> bool:
    """True while the folder and every file that existed when the entry was made are unchanged."""
    h, e, ev = stamps[1], stamps[2], stamps[3]
    return (_same(task_dir, stamps[0]) and (h is None or _same(task_dir + _FILES[0], h))
            and (e is None or _same(task_dir + _FILES[1], e)) and (ev is None or _same(task_dir + _FILES[2], ev)))


def cache_file(root: Path) -> Path | None:
    """The cache for one runs folder, or None when caching is off."""
    if os.environ.get("HPCSEG_CACHE", "").lower() in ("off", "0", "no"):
        return None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hpcseg"
    key = str(root).encode("utf-8", "surrogateescape")
    digest = f"{zlib.crc32(key):08x}{zlib.adler32(key):08x}"
    return base / f"status-{digest}.json"


class TaskCache:
    """Task views by absolute task folder, each valid while its stamps hold."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, list[Any]] = {}
        self.fresh: dict[str, list[Any]] = {}
        self.hits = self.misses = 0
        self.dirty = False  # an entry was added or replaced: worth writing back
        if path is None:
            return
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            if isinstance(data, dict) and data.get("version") == VERSION and isinstance(data.get("tasks"), dict):
                self.entries = data["tasks"]
        except (OSError, ValueError):
            pass

    def view(self, task_dir: str, metric: str, mode: str, label_prefix: str = "", label_dir: str = "") -> TaskView:
        """The task's view; ``label_prefix + label_dir`` names it in messages (built only when read)."""
        entry = self.entries.get(task_dir)
        if entry is not None:
            try:
                stamps = entry[0]
                if entry[1] == metric and entry[2] == mode and stamps[0] is not None and _valid(task_dir, stamps):
                    self.hits += 1
                    self.fresh[task_dir] = entry
                    return TaskView(*entry[3])
            except (TypeError, IndexError, ValueError):
                pass
        self.misses += 1
        stamps = [_stamp(task_dir), *(_stamp(task_dir + name) for name in _FILES)]  # before reading: a
        v = read_task_view(task_dir, metric, mode, (label_prefix + label_dir) or None)  # change shows next time
        newest = max((s[0] for s in stamps if s), default=0)
        if stamps[0] is None:
            newest = 1 << 62  # no folder yet: nothing worth keeping
        if newest < (time.time() - RACY_S) * 1e9:
            self.fresh[task_dir] = [stamps, metric, mode, [getattr(v, f) for f in _FIELDS]]
            self.dirty = True
        return v

    def save(self) -> None:
        """Keep the entries seen in this status (those of runs not shown are kept too, up to a bound)."""
        if self.path is None or not self.dirty:
            return
        keep = dict(self.entries) if len(self.entries) < 200_000 else {}
        keep.update(self.fresh)
        try:
            from hpcseg.fsutil import write_text_atomic

            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, json.dumps({"version": VERSION, "tasks": keep}, separators=(",", ":")),
                              mode=0o600)
        except OSError:
            pass  # a read-only home: status works, just without the cache
