"""Containers: one small class per runtime turning image, binds, GPU flag and environment into an argv.

The container wrap is a piece of the rendered command, not a scheduler feature (ReFrame keeps container
platforms apart from schedulers the same way). The job script, the local supervisor and submitit's
``python=`` all build their training command here, so no backend needs the renderer.

Every runtime mounts each path at the same path inside, so the absolute paths in the manifest mean the
same thing on both sides. Adding a runtime is one class and one line in :data:`RUNTIMES`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from hpcseg.errors import HpcsegError

if TYPE_CHECKING:
    from hpcseg.spec import JobSpec

# Inside an image, the image's own ``hpcseg`` (installed there); see default_entrypoint.
IN_CONTAINER_ENTRYPOINT: list[str] = ["hpcseg"]
IN_CONTAINER_TORCHRUN: list[str] = ["torchrun"]


def _absolute(path: str | Path) -> Path:
    """Absolute without expanding ~ or $VARS again (loading did that once; twice would change names)."""
    p = Path(path)
    return p if p.is_absolute() else Path.cwd() / p


@dataclass(frozen=True)
class Bind:
    """One mount: host ``src`` at container ``dst``; ``field`` names where it came from, for errors."""

    src: str
    dst: str
    mode: str  # "ro" | "rw"
    field: str

    def arg(self) -> str:
        """Singularity/Apptainer's ``-B`` form ``src:dst[:ro]``."""
        return f"{self.src}:{self.dst}" + (":ro" if self.mode == "ro" else "")


_Bind = Bind  # the name render.py used


class Runtime:
    """A container runtime. ``prefix`` is everything before the command run inside the image."""

    name: ClassVar[str]
    executable: ClassVar[str | None]  # what must be on PATH on the node; None: nothing
    separators: ClassVar[str] = ":"  # characters a bind path may not hold (the runtime splits on them)

    def prefix(self, image: str, binds: Sequence[Bind], gpu: bool, env: Mapping[str, str]) -> list[str]:
        raise NotImplementedError

    def command(self, image: str, binds: Sequence[Bind], gpu: bool, env: Mapping[str, str],
                argv: Sequence[str]) -> list[str]:
        """The full argv: ``argv`` run inside ``image`` with ``binds`` mounted."""
        return [*self.prefix(image, binds, gpu, env), *argv]

    def entrypoint(self) -> list[str]:
        """How to start hpcseg where the command runs."""
        return list(IN_CONTAINER_ENTRYPOINT)

    def torchrun(self) -> list[str]:
        """How to start torchrun where the command runs (the image's, beside its hpcseg)."""
        return list(IN_CONTAINER_TORCHRUN)


class Singularity(Runtime):
    """``singularity exec [--nv] [--env K=V] -B src:dst[:ro] ... IMAGE cmd``."""

    name = "singularity"
    executable = "singularity"
    separators = ":,"  # -B takes a comma list of src:dst[:opts]

    def prefix(self, image: str, binds: Sequence[Bind], gpu: bool, env: Mapping[str, str]) -> list[str]:
        argv = [self.name, "exec"]
        if gpu:
            argv.append("--nv")  # the node's NVIDIA driver and devices, visible inside
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        for b in binds:
            argv += ["-B", b.arg()]
        return [*argv, image]


class Apptainer(Singularity):
    """Apptainer keeps Singularity's command line."""

    name = "apptainer"
    executable = "apptainer"


class Charliecloud(Runtime):
    """``ch-run`` (Charliecloud >= 0.31): unprivileged, runs an image *directory* such as the one
    singularity/charliecloud/build.sh makes.

    ch-run differs from singularity in four ways this class makes up for:

    * it has no read-only bind, so the command first runs a tiny ``sh`` inside the container that
      remounts each ``ro`` bind read-only (``mount -o remount,bind,ro``), then execs the trainer. That
      needs root *in the container*, hence ``--uid=0 --gid=0``: container root is mapped to the
      submitting user, so files written in the run folder still belong to that user on the host;
    * it binds only onto folders that exist in the image (or under /tmp, which it binds from the host):
      :meth:`prefix` checks this when the image is visible, parents are bound before children, and the
      build recipe creates the usual roots (HPCSEG_CH_MOUNTS);
    * it passes the host's environment through, PATH included, and refuses to start without ``$USER``
      (batch jobs may lack it): the image's own ``/ch/environment`` (PATH to its venv) is applied with
      ``--set-env``, host Python variables that would redirect the image's interpreter are dropped, and
      ``$USER`` is filled in from ``id -un`` when empty;
    * it starts in ``/``, not the current folder: ``--cd`` to the run folder, as singularity would be.

    There is no ``--nv``: GPU libraries are injected into the image beforehand (``ch-fromhost
    --nvidia IMAGE``), so the GPU flag changes nothing on the command line.
    """

    name = "charliecloud"
    executable = "ch-run"
    separators = ":"  # -b SRC[:DST]
    # Runs on the host before ch-run; $0 is a label for error messages.
    SET_USER = '[ -n "${USER:-}" ] || USER=$(id -un); export USER; exec "$@"'
    # Runs inside the container: remount each argument up to "--" read-only, then exec the rest.
    READ_ONLY = ('while [ "$#" -gt 0 ] && [ "$1" != -- ]; do '
                 'mount -o remount,bind,ro "$1" || { echo "hpcseg: cannot make $1 read-only in the container" >&2; '
                 'exit 126; }; shift; done; shift; exec "$@"')
    # Host Python settings that would point the image's interpreter at host files.
    UNSET = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONSTARTUP", "VIRTUAL_ENV")

    def prefix(self, image: str, binds: Sequence[Bind], gpu: bool, env: Mapping[str, str]) -> list[str]:
        # A mount hides what an earlier one put below it: parents first (stable for equal depths).
        ordered = sorted(binds, key=lambda b: b.dst.rstrip("/").count("/"))
        self.check_image(image, ordered)
        argv = ["sh", "-c", self.SET_USER, "hpcseg-ch-run",
                "ch-run", "--uid=0", "--gid=0", "--env-no-expand",
                *(f"--unset-env={name}" for name in self.UNSET),
                "--set-env",  # the image's /ch/environment
                *(f"--set-env={key}={value}" for key, value in env.items())]
        run = [b.dst for b in ordered if b.field == "--run-dir"]
        argv.append(f"--cd={run[0] if run else '/'}")
        for b in ordered:
            argv += ["-b", f"{b.src}:{b.dst}"]
        read_only = [b.dst for b in ordered if b.mode == "ro"]
        return [*argv, image, "--", "/bin/sh", "-c", self.READ_ONLY, "hpcseg-ro", *read_only, "--"]

    @staticmethod
    def check_image(image: str, binds: Sequence[Bind]) -> None:
        """Refuse, at render time, an image ch-run would refuse on the node: no /ch/environment, or a bind
        target that is not a folder in it. Skipped when the image is not visible here (a login node that
        does not mount it; preflight reports a missing image)."""
        root = Path(image)
        if not root.is_dir():
            return
        if not (root / "ch" / "environment").is_file():
            raise HpcsegError(f"container.image: {image} has no /ch/environment (the image's PATH), which "
                              f"ch-run --set-env reads; build the image with singularity/charliecloud/build.sh "
                              f"or write that file (NAME=VALUE lines)")
        bound: list[str] = ["/tmp"]  # ch-run binds the host's /tmp (no --private-tmp here)
        for b in binds:
            dst = b.dst.rstrip("/") or "/"
            inside = any(dst == d or dst.startswith(d.rstrip("/") + "/") for d in bound)
            if not inside and not (root / dst.lstrip("/")).is_dir():
                raise HpcsegError(f"{b.field}: the charliecloud image {image} has no folder {dst} to bind "
                                  f"{b.src} onto (ch-run binds only onto existing folders); create it "
                                  f"(mkdir -p {root / dst.lstrip('/')}), rebuild with HPCSEG_CH_MOUNTS "
                                  f"(docs/containers.md), or bind a parent folder in container.binds")
            bound.append(dst)


class NoContainer(Runtime):
    """``runtime: none``: the command runs on the node directly, with this very interpreter."""

    name = "none"
    executable = None

    def prefix(self, image: str, binds: Sequence[Bind], gpu: bool, env: Mapping[str, str]) -> list[str]:
        return ["env", *(f"{k}={v}" for k, v in env.items())] if env else []

    def entrypoint(self) -> list[str]:
        return [sys.executable, "-m", "hpcseg"]

    def torchrun(self) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run"]


RUNTIMES: dict[str, type[Runtime]] = {
    "singularity": Singularity,
    "apptainer": Apptainer,
    "charliecloud": Charliecloud,
    "none": NoContainer,
}


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name`` (``container.runtime``)."""
    try:
        return RUNTIMES[name]()
    except KeyError:
        raise HpcsegError(f"container.runtime: unknown runtime {name!r}; choose one of "
                          f"{', '.join(RUNTIMES)}") from None


# --------------------------------------------------------------------------------------------- binds


def _bind(src: str | Path, dst: str | Path | None, mode: str, field: str, separators: str = ":,") -> Bind:
    """One mount; the runtimes split bind arguments on ':' (and singularity on ','), so paths holding
    them cannot be bound."""
    s = str(_absolute(src))
    d = s if dst is None else str(dst)
    if not d.startswith("/"):
        raise HpcsegError(f"{field}: the container path {d!r} must be absolute")
    for path in (s, d):
        if any(c in path for c in separators) or "\0" in path:
            shown = " or ".join(repr(c) for c in separators)
            raise HpcsegError(f"{field}: {path!r} holds {shown}, which the container runtime reads as "
                              f"separators; rename the folder or bind a parent folder in container.binds")
    return Bind(s, d, mode, field)


def container_binds(spec: JobSpec, run_dir: Path) -> list[Bind]:
    """The mounts: dataset (ro), run folder (rw), weights folders (ro), then the user's binds.

    A destination bound twice keeps one mount, read-write if any of them asked for it.
    """
    seps = get_runtime(spec.container.runtime).separators
    wanted = [_bind(spec.workload.dataset.root, None, "ro", "workload.dataset.root", seps),
              _bind(run_dir, None, "rw", "--run-dir", seps)]
    for m in spec.workload.models:
        if m.weights:
            wanted.append(_bind(_absolute(m.weights).parent, None, "ro", f"workload.models.{m.name}.weights", seps))
    for i, b in enumerate(spec.container.binds):
        wanted.append(_bind(b.src, b.dst, b.mode, f"container.binds.{i}", seps))
    by_dst: dict[str, Bind] = {}
    for b in wanted:
        have = by_dst.get(b.dst)
        if have is None:
            by_dst[b.dst] = b
        elif have.src != b.src:
            raise HpcsegError(f"{b.field}: binds {b.src} at {b.dst}, where {have.field} already binds "
                              f"{have.src}; choose another container path")
        elif b.mode == "rw":
            by_dst[b.dst] = Bind(have.src, have.dst, "rw", have.field)
    return list(by_dst.values())


# --------------------------------------------------------------------------------------------- commands


def default_entrypoint(spec: JobSpec) -> list[str]:
    """Inside a container the image's own ``hpcseg``; without one, this very interpreter."""
    return get_runtime(spec.container.runtime).entrypoint()


def container_prefix(spec: JobSpec, run_dir: Path, env: Mapping[str, str] | None = None) -> list[str]:
    """Everything before the in-container command (empty for ``runtime: none`` without env).

    submitit's ``python=`` is this prefix plus ``python``."""
    c = spec.container
    rt = get_runtime(c.runtime)
    if isinstance(rt, NoContainer):
        return rt.prefix("", [], False, env or {})
    gpu = bool(c.gpu and spec.resources.gpus > 0)
    return rt.prefix(str(_absolute(c.image or "")), container_binds(spec, _absolute(run_dir)), gpu, env or {})


def container_command(spec: JobSpec, run_dir: Path, entrypoint: list[str] | None = None,
                      env: Mapping[str, str] | None = None) -> list[str]:
    """The argv that trains one task, without the trailing ``--task K`` (the script adds it).

    singularity/apptainer: ``<runtime> exec [--nv] -B ... IMAGE hpcseg train --run RUN_DIR``;
    charliecloud: ``ch-run -b ... IMAGE -- hpcseg train --run RUN_DIR``;
    none: ``<entrypoint> train --run RUN_DIR``.
    """
    run_dir = _absolute(run_dir)
    entry = list(entrypoint) if entrypoint else default_entrypoint(spec)
    return [*container_prefix(spec, run_dir, env), *entry, "train", "--run", str(run_dir)]


def launch_pieces(spec: JobSpec, run_dir: Path, entrypoint: list[str] | None = None) -> dict[str, object] | None:
    """The data-parallel launch's pieces for the job script, or None for one process (the plain command).

    The script builds, on each node, ``PREFIX... TORCHRUN... <rendezvous args> --no-python -- ENTRY... --task K``
    (after ``--`` torchrun's argparse reads nothing as its own: ``--run`` would abbreviate ``--run-path``):
    the container prefix wraps torchrun (so torchrun and the trainers run inside the image), and
    ``--no-python`` lets torchrun start the same entry point the one-process command uses, whatever it is
    (``python -m hpcseg``, the image's ``hpcseg``, a test's stand-in).
    """
    r = spec.resources
    if not r.data_parallel:
        return None
    run_dir = _absolute(run_dir)
    entry = list(entrypoint) if entrypoint else default_entrypoint(spec)
    return {
        "nodes": r.nodes,
        "nproc": r.procs_per_node,
        "prefix": container_prefix(spec, run_dir),
        "torchrun": get_runtime(spec.container.runtime).torchrun(),
        "entry": [*entry, "train", "--run", str(run_dir)],
        "device": "cuda" if r.gpus > 0 else "cpu",
        "run_id": run_dir.name,
    }
