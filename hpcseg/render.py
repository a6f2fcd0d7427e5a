"""Job scripts: a JobSpec rendered through Jinja2 templates into a Slurm or PBS array-job script.

Two rules keep a rendered script safe whatever a job file or ``--set`` puts in it:

* every value that reaches a ``#SBATCH``/``#PBS`` directive line is built and checked by its backend
  (schedulers/slurm.py, schedulers/pbs.py, with the shared rules in schedulers/directives.py), so no
  value can end a directive early, smuggle in another one, or override one hpcseg sets;
* every value that reaches the script body goes through the ``q`` filter (``shlex.quote``), so a name or
  path is always data, never code.

The templates only lay values out; choosing and checking them happens in Python, where it is tested.
A user's own templates (``--templates DIR`` or a ``templates/`` folder beside the job file) are searched
before the shipped ones, so a site can replace one file and keep the rest.
"""

from __future__ import annotations

import argparse
import shlex
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2

from hpcseg import schedulers
from hpcseg.containers import _absolute, container_command, launch_pieces
from hpcseg.errors import HpcsegError
from hpcseg.schedulers.directives import Scheduler
from hpcseg.spec import JobSpec, shipped_dir

# The schedulers with a job script of their own (the backend's `template` in templates/).
SCRIPT_SCHEDULERS = ("slurm", "pbs")


# --------------------------------------------------------------------------------------------- values


def _q(value: Any) -> str:
    """The ``q`` filter: one shell word, whatever the value holds (a NUL cannot live in bash)."""
    text = str(value)
    if "\0" in text:
        raise HpcsegError(f"a value holds a NUL character and cannot go into a shell script: {text!r}")
    return shlex.quote(text)


# --------------------------------------------------------------------------------------------- directives


def _array_indices(spec: JobSpec, task_indices: list[int] | None) -> list[int]:
    known = [t.index for t in spec.tasks()]
    if task_indices is None:
        return known
    chosen = sorted(set(task_indices))
    bad = [i for i in chosen if i not in known]
    if bad or not chosen:
        raise HpcsegError(f"task indices {bad or 'none'}: the job has tasks 0-{len(known) - 1}")
    return chosen


# --------------------------------------------------------------------------------------------- templates


def template_dirs(job_file: Path | None = None, templates: Path | None = None) -> list[Path]:
    """Where templates are looked up, first match wins: ``--templates DIR``, else a ``templates/`` folder
    in the job file's own folder; then the shipped set. Nowhere else: a folder further up (a shared
    /tmp/templates, say) could be anyone's, and a job script runs with the user's rights."""
    shipped = shipped_dir("templates")
    if templates is not None:
        if not Path(templates).is_dir():
            raise HpcsegError(f"--templates {templates}: no such folder")
        return [Path(templates), shipped]
    if job_file is None:
        return [shipped]
    beside = _absolute(job_file).parent / "templates"
    if not beside.is_dir() or beside.resolve() == shipped.resolve():
        return [shipped]
    info = beside.stat()
    if info.st_mode & stat.S_IWOTH:
        raise HpcsegError(f"{beside}: this templates folder beside the job file is writable by every user, "
                          f"so anyone could change the job script; chmod o-w it, or name it with --templates")
    return [beside, shipped]


class _Loader(jinja2.FileSystemLoader):
    """A folder's loader that remembers which templates it served, so render can say when a template
    did not come from the shipped set."""

    def __init__(self, folder: Path) -> None:
        super().__init__(str(folder))
        self.folder = folder
        self.served: list[str] = []

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str | None, Any]:
        found = super().get_source(environment, template)
        if template not in self.served:
            self.served.append(template)
        return found


class _MemoryBytecode(jinja2.BytecodeCache):
    """Compiled templates kept for the life of the process, keyed by file and checked against the source's
    checksum, so an edited template is compiled again. Each render makes a new environment (its loaders
    record what they served); without this every render parsed and compiled the templates anew, which is
    most of a render's time (tests and sweeps render hundreds of scripts in one process)."""

    def __init__(self) -> None:
        self.store: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if bucket.key in self.store:
            bucket.bytecode_from_string(self.store[bucket.key])

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self.store[bucket.key] = bucket.bytecode_to_string()


_BYTECODE = _MemoryBytecode()


def make_environment(dirs: list[Path]) -> jinja2.Environment:
    """StrictUndefined: a misspelt variable is an error, not an empty string in a job script."""
    loader = jinja2.ChoiceLoader([_Loader(d) for d in dirs])
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                             bytecode_cache=_BYTECODE)
    env.filters["q"] = _q
    return env


def not_shipped(env: jinja2.Environment) -> list[Path]:
    """Templates this environment served from a folder other than the shipped one."""
    shipped = shipped_dir("templates").resolve()
    loaders = getattr(env.loader, "loaders", [])
    return [ld.folder / name for ld in loaders if isinstance(ld, _Loader) and ld.folder.resolve() != shipped
            for name in ld.served]


def _template_frame(tb: TracebackType | None) -> str | None:
    """file:line of the innermost template frame in a traceback (Jinja maps frames to template lines)."""
    where = None
    while tb is not None:
        fname = tb.tb_frame.f_code.co_filename
        if fname.endswith(".j2"):
            where = f"{fname}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def _render(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    """Render one template; Jinja's errors become one line naming the template file and line."""
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        where = exc.filename or exc.name or name
        raise HpcsegError(f"{where}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise HpcsegError(f"template {exc.name} not found in {', '.join(map(str, _dirs(env)))}") from None
    except jinja2.UndefinedError as exc:
        where = _template_frame(exc.__traceback__) or name
        raise HpcsegError(f"{where}: undefined template variable: {exc.message}") from None


def _dirs(env: jinja2.Environment) -> list[str]:
    loaders = getattr(env.loader, "loaders", [])
    return [p for ld in loaders for p in getattr(ld, "searchpath", [])]


def render_script(spec: JobSpec, scheduler: Scheduler, run_dir: Path, *, job_file: Path | None = None,
                  templates: Path | None = None, entrypoint: list[str] | None = None,
                  task_indices: list[int] | None = None,
                  on_template: Callable[[list[Path]], None] | None = None) -> str:
    """The job script for ``scheduler``: one array job whose element K trains task K of ``run_dir``.

    ``task_indices`` limits the array to some tasks (e.g. resubmitting interrupted ones); the script's
    task table still maps each index to its own folder. ``on_template`` hears of every template that
    did not come from the shipped set (``hpcseg render`` says so on stderr).
    """
    if scheduler not in SCRIPT_SCHEDULERS:
        raise HpcsegError(f"--scheduler {scheduler}: choose one of {', '.join(SCRIPT_SCHEDULERS)}")
    run_dir = _absolute(run_dir)
    indices = _array_indices(spec, task_indices)
    by_index = {t.index: t for t in spec.tasks()}
    backend = schedulers.get(scheduler)
    directives = backend.directives(spec, indices)
    # A PBS Pro job without -J has no index variable; only then may the script assume its one task.
    single = indices[0] if scheduler == "pbs" and directives["array"] is None else None
    context = {
        "spec": spec,
        "scheduler": scheduler,
        "d": directives,
        "run_dir": str(run_dir),
        "tasks": [(i, by_index[i].relpath) for i in indices],
        "single_index": single,
        "command": container_command(spec, run_dir, entrypoint),
        "launch": launch_pieces(spec, run_dir, entrypoint),  # None: one process, the command above
        "cpus": spec.resources.cpus,
        "max_requeues": spec.training.max_requeues,
    }
    env = make_environment(template_dirs(job_file, templates))
    text = _render(env, backend.template or "", context)
    used = not_shipped(env)
    if used and on_template is not None:
        on_template(used)
    return text


# --------------------------------------------------------------------------------------------- CLI


def default_run_dir(spec: JobSpec) -> Path:
    """Where ``hpcseg render`` points the script when no run exists yet: an obvious placeholder."""
    return Path.cwd() / "runs" / spec.slug / "DRY-RUN"


def _check_output(path: Path, shown: str) -> None:
    """-o replaces only a regular file (or makes a new one): never a symlink (it would replace the link,
    or with another tool, write through it), a FIFO, a device or a folder."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise HpcsegError(f"-o {shown}: cannot write the script ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = ("a symbolic link" if stat.S_ISLNK(info.st_mode) else "a folder" if stat.S_ISDIR(info.st_mode)
                else "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode)
                or stat.S_ISBLK(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "not a file")
        raise HpcsegError(f"-o {shown}: is {kind}, not a regular file; hpcseg replaces only regular files, "
                          f"so choose another path (or remove it first)")


def cli_render(args: argparse.Namespace) -> int:
    """``hpcseg render JOB --scheduler S``: print the script, or write it (0755) with ``-o FILE``."""
    from hpcseg.fsutil import write_text_atomic
    from hpcseg.jobload import load_from_args

    loaded = load_from_args(args)
    run_dir = Path(args.run_dir).expanduser() if getattr(args, "run_dir", None) else default_run_dir(loaded.spec)
    templates = Path(args.templates).expanduser() if getattr(args, "templates", None) else None
    out = Path(args.output).expanduser() if getattr(args, "output", None) else None
    if out is not None:
        _check_output(out, str(args.output))

    def say(used: list[Path]) -> None:
        print(f"hpcseg render: not the shipped template: {', '.join(map(str, used))}", file=sys.stderr)

    text = render_script(loaded.spec, args.scheduler, run_dir, job_file=loaded.path, templates=templates,
                         on_template=say)
    if out is not None:
        _check_output(out, str(args.output))  # again: it may have changed while rendering
        try:
            path = write_text_atomic(out, text, mode=0o755)
        except OSError as exc:
            raise HpcsegError(f"-o {args.output}: cannot write the script ({exc.strerror})") from None
        print(f"wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
