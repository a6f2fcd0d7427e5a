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
    overrides = [*set_file_overrides(getattr(args, "set_files", None) or []), *getattr(args, "overrides", [])]
    loaded = load_job(find_job(args.job), getattr(args, "profile", None), overrides)
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


def set_file_overrides(paths: list[str]) -> list[str]:
    """``--set-file FILE``: a YAML mapping {field path: value} (a sweep's best.yaml) as ``--set`` texts,
    so its values are typed and checked exactly as ``--set`` values are."""
    import yaml

    from hpcseg.spec import load_yaml_bounded

    out: list[str] = []
    for path in paths:
        try:
            text = open(path, encoding="utf-8").read()
        except FileNotFoundError:
            raise HpcsegError(f"--set-file {path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise HpcsegError(f"--set-file {path}: cannot read it ({exc})") from None
        try:
            doc = load_yaml_bounded(text)
        except Exception as exc:  # noqa: BLE001 - YAML's many error types: one line, whichever it is
            raise HpcsegError(f"--set-file {path}: malformed YAML ({str(exc).splitlines()[0]})") from None
        if doc is None:
            continue
        if not isinstance(doc, dict) or not all(isinstance(k, str) and k for k in doc):
            raise HpcsegError(f"--set-file {path}: expected a mapping of field paths to values, "
                              f"e.g. 'training.lr: 0.001'")
        for key, value in doc.items():
            flow = yaml.safe_dump([value], default_flow_style=True, width=1 << 30).strip()[1:-1]
            out.append(f"{key}={flow}")
    return out
