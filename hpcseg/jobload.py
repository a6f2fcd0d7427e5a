"""The one way verbs turn ``JOB --profile P --set ...`` arguments into a validated, path-resolved spec."""

from __future__ import annotations

import argparse

from hpcseg.spec import LoadedJob, find_job, load_job, with_absolute_paths


def load_from_args(args: argparse.Namespace) -> LoadedJob:
    loaded = load_job(find_job(args.job), getattr(args, "profile", None), getattr(args, "overrides", []))
    loaded.spec = with_absolute_paths(loaded.spec)
    return loaded
