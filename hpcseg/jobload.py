"""The one way verbs turn ``JOB --profile P --set ...`` arguments into a validated, path-resolved spec."""

from __future__ import annotations

import argparse
import re

from hpcseg.errors import HpcsegError
from hpcseg.spec import JobSpec, LoadedJob, find_job, load_job, with_absolute_paths

# The job the running verb loaded. A verb loads one job per process; checks made later (render, submit)
# raise "resources.queue: ..." without knowing where the value came from, and name_origin adds it.
_loaded: LoadedJob | None = None
_FIELD = re.compile(r"([A-Za-z_]\w*(?:\.[^\s:.]+)+): ")


def load_from_args(args: argparse.Namespace) -> LoadedJob:
    global _loaded
    _loaded = None
    loaded = load_job(find_job(args.job), getattr(args, "profile", None), getattr(args, "overrides", []))
    loaded.spec = with_absolute_paths(loaded.spec)
    _loaded = loaded
    return loaded


def name_origin(exc: HpcsegError) -> HpcsegError:
    """Prefix an error about a field of the loaded job with where that field was written (the --set, the
    profile or the file's line), so a value refused after loading is traced like a schema error."""
    m = _FIELD.match(exc.message)
    if _loaded is None or not m or m.group(1).split(".")[0] not in JobSpec.model_fields:
        return exc
    where = _loaded.where(m.group(1))
    if exc.message.startswith(where):
        return exc
    exc.message = f"{where}: {exc.message}"
    exc.args = (exc.message,)
    return exc
