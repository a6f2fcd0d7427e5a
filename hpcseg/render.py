"""Job scripts: a JobSpec rendered through Jinja2 templates into a Slurm or PBS array-job script.

Two rules keep a rendered script safe whatever a job file or ``--set`` puts in it:

* every value that reaches a ``#SBATCH``/``#PBS`` directive line is checked here against a small set of
  characters for that field, so no value can end a directive early or smuggle in another one;
* every value that reaches the script body goes through the ``q`` filter (``shlex.quote``), so a name or
  path is always data, never code.

The templates only lay values out; choosing and checking them happens in this module, where it is tested.
A user's own templates (``--templates DIR`` or a ``templates/`` folder beside the job file) are searched
before the shipped ones, so a site can replace one file and keep the rest.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import jinja2

from hpcseg.containers import _absolute, container_command
from hpcseg.errors import HpcsegError
from hpcseg.spec import JobSpec, shipped_dir

Scheduler = Literal["slurm", "pbs"]
TEMPLATE_NAMES: dict[str, str] = {"slurm": "slurm.sh.j2", "pbs": "pbs.sh.j2"}
PBS_NAME_MAX = 15  # PBS Pro refuses longer job names

# Characters allowed in each directive value. No whitespace, quotes, '$', '`', '\\', ';', '#' or
# line breaks anywhere: a directive line is parsed by the scheduler, so it must stay one token.
_SAFE = {
    "queue": r"[A-Za-z0-9_.,@-]+",            # Slurm partitions may be a comma list; PBS queue@server
    "account": r"[A-Za-z0-9_.@+-]+",
    "qos": r"[A-Za-z0-9_.,-]+",
    "constraint": r"[A-Za-z0-9_.,:&|()\[\]*!-]+",  # Slurm feature expressions: a100&ib, [r1|r2]
    "gpu_type": r"[A-Za-z0-9_.-]+",
    "select": r"[A-Za-z0-9_.,:=+-]+",
}
_EXTRA_VALUE = r"[A-Za-z0-9_.,:=@%/+&|()\[\]*!~^-]+"
_SLURM_EXTRA = re.compile(rf"--?[A-Za-z][A-Za-z0-9-]*(?:[= ]{_EXTRA_VALUE})?")
_PBS_EXTRA = re.compile(rf"-[A-Za-z](?: ?{_EXTRA_VALUE})?")
# Options we set ourselves; a second copy in `extra` would clash (e.g. --mem with --mem-per-gpu).
_SLURM_OWNED = {"--mem", "--mem-per-gpu", "--mem-per-cpu", "--array", "-a", "--output", "-o",
                "--error", "-e", "--job-name", "-J"}
_PBS_OWNED = {"-J", "-t", "-o", "-e", "-N"}


# --------------------------------------------------------------------------------------------- values


def check_directive_value(value: str | None, kind: str, field: str) -> str | None:
    """Return value if it is safe on a directive line, else raise naming the field."""
    if value is None:
        return None
    if not re.fullmatch(_SAFE[kind], value):
        raise HpcsegError(f"{field}: {value!r} cannot go on a scheduler directive line; "
                          f"use only the characters {_SAFE[kind]}")
    return value


def _check_extra(lines: list[str], scheduler: Scheduler, field: str) -> list[str]:
    """Extra directive options: one option (and value) each, nothing that ends the line early."""
    pattern, owned = (_SLURM_EXTRA, _SLURM_OWNED) if scheduler == "slurm" else (_PBS_EXTRA, _PBS_OWNED)
    out = []
    for i, line in enumerate(lines):
        if not pattern.fullmatch(line):
            raise HpcsegError(f"{field}.{i}: {line!r} is not one scheduler option such as "
                              f"{'--exclusive or --mail-type=END' if scheduler == 'slurm' else '-m abe'}; "
                              f"no spaces inside values, quotes, '#', '$' or line breaks")
        option = re.split(r"[= ]", line, maxsplit=1)[0]
        if option in owned:
            raise HpcsegError(f"{field}.{i}: {option} is set by hpcseg from resources; "
                              f"change resources instead of adding it to extra")
        out.append(line)
    return out


def _q(value: Any) -> str:
    """The ``q`` filter: one shell word, whatever the value holds (a NUL cannot live in bash)."""
    text = str(value)
    if "\0" in text:
        raise HpcsegError(f"a value holds a NUL character and cannot go into a shell script: {text!r}")
    return shlex.quote(text)


def _mem_pbs(mb: int) -> str:
    return f"{mb // 1024}gb" if mb % 1024 == 0 else f"{mb}mb"


def _ranges(indices: list[int]) -> str:
    """[0,1,2,5,7,8] -> "0-2,5,7-8", the array list syntax Slurm and Torque share."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


def _pbs_pro_range(indices: list[int]) -> str:
    """PBS Pro's -J takes one range with an optional step, not a list."""
    if len({b - a for a, b in zip(indices, indices[1:], strict=False)}) == 1:
        step = indices[1] - indices[0]
        return f"{indices[0]}-{indices[-1]}" + (f":{step}" if step > 1 else "")
    shown = ",".join(map(str, indices))
    raise HpcsegError(f"tasks {shown}: a PBS Pro job array is one range (a-b[:step]); "
                      f"submit these tasks in separate runs")


def pbs_job_name(slug: str) -> str:
    """PBS Pro job names: at most 15 characters, starting with a letter."""
    name = slug if slug[:1].isalpha() else f"j{slug}"
    return name[:PBS_NAME_MAX]


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


def _slurm_directives(spec: JobSpec, indices: list[int]) -> dict[str, Any]:
    r, s = spec.resources, spec.resources.slurm
    gpu_type = check_directive_value(s.gpu_type, "gpu_type", "resources.slurm.gpu_type")
    gpus = None
    if r.gpus > 0:
        gpus = (f"--gres=gpu:{gpu_type}:{r.gpus}" if gpu_type else f"--gres=gpu:{r.gpus}") \
            if s.gpu_flag == "gres" else (f"--gpus={gpu_type}:{r.gpus}" if gpu_type else f"--gpus={r.gpus}")
    array = _ranges(indices) + (f"%{r.array_parallelism}" if r.array_parallelism else "")
    return {
        "job_name": spec.slug,
        "partition": check_directive_value(r.queue, "queue", "resources.queue"),
        "account": check_directive_value(r.account, "account", "resources.account"),
        "qos": check_directive_value(s.qos, "qos", "resources.slurm.qos"),
        "constraint": check_directive_value(s.constraint, "constraint", "resources.slurm.constraint"),
        "time": r.walltime,
        "cpus": r.cpus,
        "memory": f"--mem-per-gpu={r.mem_per_gpu_mb}M" if r.mem_per_gpu_mb else f"--mem={r.memory_mb}M",
        "gpus": gpus,
        "array": array,
        "signal_seconds": s.signal_seconds,
        "extra": _check_extra(s.extra, "slurm", "resources.slurm.extra"),
    }


def _pbs_directives(spec: JobSpec, indices: list[int]) -> dict[str, Any]:
    r, p = spec.resources, spec.resources.pbs
    total_mb = r.memory_mb or (r.mem_per_gpu_mb or 0) * r.gpus
    name = pbs_job_name(spec.slug)
    if p.flavor == "torque":
        nodes = f"nodes=1:ppn={r.cpus}" + (f":gpus={r.gpus}" if r.gpus else "")
        resources = f"{nodes},mem={_mem_pbs(total_mb)}"
        array = _ranges(indices) + (f"%{r.array_parallelism}" if r.array_parallelism else "")
        # A file, not the logs/ folder: Torque appends -<index> per array element itself, and Slurm's
        # Torque emulation fails every task whose -o names a directory.
        out, err = f"logs/{name}.out", f"logs/{name}.err"
    else:
        select = check_directive_value(p.select, "select", "resources.pbs.select")
        if select:
            resources = select if select.startswith("select=") else f"select={select}"
        else:
            resources = f"select=1:ncpus={r.cpus}" + (f":ngpus={r.gpus}" if r.gpus else "") \
                + f":mem={_mem_pbs(total_mb)}"
        array = None
        out, err = f"logs/{name}.o{indices[0]}", f"logs/{name}.e{indices[0]}"
        if len(indices) > 1:
            array = _pbs_pro_range(indices) + (f"%{r.array_parallelism}" if r.array_parallelism else "")
            # PBS Pro puts the subjob's index where ^array_index^ stands (relative to qsub's cwd).
            out, err = f"logs/{name}.o^array_index^", f"logs/{name}.e^array_index^"
    return {
        "flavor": p.flavor,
        "job_name": name,
        "queue": check_directive_value(r.queue, "queue", "resources.queue"),
        "account": check_directive_value(r.account, "account", "resources.account"),
        "account_flag": p.account_flag,
        "resources": resources,
        "walltime": r.walltime,
        "array": array,
        "array_flag": "-t" if p.flavor == "torque" else "-J",
        "output": out,
        "error": err,
        "extra": _check_extra(p.extra, "pbs", "resources.pbs.extra"),
    }


# --------------------------------------------------------------------------------------------- templates


def template_dirs(job_file: Path | None = None, templates: Path | None = None) -> list[Path]:
    """Where templates are looked up, first match wins: the user's folder, then the shipped one."""
    shipped = shipped_dir("templates")
    if templates is not None:
        if not Path(templates).is_dir():
            raise HpcsegError(f"--templates {templates}: no such folder")
        return [Path(templates), shipped]
    dirs: list[Path] = []
    if job_file is not None:
        job_file = _absolute(job_file)
        for cand in (job_file.parent / "templates", job_file.parent.parent / "templates"):
            if cand.is_dir() and cand.resolve() != shipped.resolve() and cand not in dirs:
                dirs.append(cand)
                break
    return dirs + [shipped]


def make_environment(dirs: list[Path]) -> jinja2.Environment:
    """StrictUndefined: a misspelt variable is an error, not an empty string in a job script."""
    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(d)) for d in dirs])
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["q"] = _q
    return env


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
                  task_indices: list[int] | None = None) -> str:
    """The job script for ``scheduler``: one array job whose element K trains task K of ``run_dir``.

    ``task_indices`` limits the array to some tasks (e.g. resubmitting interrupted ones); the script's
    task table still maps each index to its own folder.
    """
    if scheduler not in TEMPLATE_NAMES:
        raise HpcsegError(f"--scheduler {scheduler}: choose one of {', '.join(TEMPLATE_NAMES)}")
    run_dir = _absolute(run_dir)
    indices = _array_indices(spec, task_indices)
    by_index = {t.index: t for t in spec.tasks()}
    directives = _slurm_directives(spec, indices) if scheduler == "slurm" else _pbs_directives(spec, indices)
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
        "cpus": spec.resources.cpus,
        "max_requeues": spec.training.max_requeues,
    }
    return _render(make_environment(template_dirs(job_file, templates)), TEMPLATE_NAMES[scheduler], context)


# --------------------------------------------------------------------------------------------- CLI


def default_run_dir(spec: JobSpec) -> Path:
    """Where ``hpcseg render`` points the script when no run exists yet: an obvious placeholder."""
    return Path.cwd() / "runs" / spec.slug / "DRY-RUN"


def cli_render(args: argparse.Namespace) -> int:
    """``hpcseg render JOB --scheduler S``: print the script, or write it (0755) with ``-o FILE``."""
    from hpcseg.fsutil import write_text_atomic
    from hpcseg.jobload import load_from_args

    loaded = load_from_args(args)
    run_dir = Path(args.run_dir).expanduser() if getattr(args, "run_dir", None) else default_run_dir(loaded.spec)
    templates = Path(args.templates).expanduser() if getattr(args, "templates", None) else None
    text = render_script(loaded.spec, args.scheduler, run_dir, job_file=loaded.path, templates=templates)
    if getattr(args, "output", None):
        try:
            path = write_text_atomic(Path(args.output).expanduser(), text, mode=0o755)
        except OSError as exc:
            raise HpcsegError(f"-o {args.output}: cannot write the script ({exc.strerror})") from None
        print(f"wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
