"""What may reach a ``#SBATCH``/``#PBS`` line: strict values, and extra options parsed as the scheduler would.

A directive line is parsed by sbatch or qsub, not by a shell, so quoting cannot protect it. Two rules
keep every line what hpcseg meant, whatever a job file, a profile or ``--set`` put in the spec:

* every value hpcseg writes is checked against a strict ASCII grammar for its field (no whitespace,
  no control characters, no non-ASCII digits) after profiles and overrides were applied;
* every ``extra`` option is parsed the way sbatch/qsub parse options (getopt: long options by any
  unique prefix, short options bundled or with attached values, PBS ``-l a=b,c=d`` lists), and one
  that sets, overrides or abbreviates an option hpcseg owns is refused by name.

The backends (schedulers/slurm.py, schedulers/pbs.py) hold their own option tables and builders; this
module holds what both share.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from hpcseg.errors import HpcsegError

Scheduler = Literal["slurm", "pbs"]  # which job script: the two template families
PBS_NAME_MAX = 15  # PBS Pro refuses longer job names

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.+-]*"
_HOST = r"[A-Za-z0-9][A-Za-z0-9.-]*"
_PBS_RES = r"[A-Za-z_][A-Za-z0-9_]*=[A-Za-z0-9_.-]+"
_CHUNK = rf"(?:[0-9]+(?::{_PBS_RES})*|{_PBS_RES}(?::{_PBS_RES})*)"
# The grammar of each directive value (whole value, ASCII only). None of them admits whitespace, quotes,
# '$', '`', '\\', ';', '#', a leading '-' (it would read as an option) or a PBS ',' that starts a new resource.
_SAFE = {
    "queue": rf"{_NAME}(?:,{_NAME})*|{_NAME}@{_HOST}",  # Slurm partitions: a comma list; PBS queue@server
    "account": r"[A-Za-z0-9_][A-Za-z0-9_.@+-]*",
    "qos": rf"{_NAME}(?:,{_NAME})*",
    "constraint": r"[A-Za-z0-9_.:&|,()\[\]*!-]+",  # Slurm feature expressions: a100&ib, [r1|r2]; see below
    "gpu_type": r"[A-Za-z0-9_][A-Za-z0-9_.-]*",
    "select": rf"(?:select=)?{_CHUNK}(?:\+{_CHUNK})*",  # PBS Pro chunks; no ',' (that would add resources)
    "job_name": r"[A-Za-z0-9_][A-Za-z0-9_.-]*",
    "walltime": r"[0-9]{1,4}:[0-9]{2}:[0-9]{2}",
    "memory": r"[0-9]+(?:\.[0-9]+)?(?:[KMGTkmgt]i?)?[Bb]?",
}
_EXAMPLES = {"queue": "gpu or gpu,gpu-long or workq@server", "account": "proj123", "qos": "normal",
             "constraint": "a100&ib", "gpu_type": "a100", "select": "1:ncpus=8:ngpus=1:mem=64gb",
             "job_name": "my_job", "walltime": "12:00:00", "memory": "240G or 16000M"}
_FEATURE = re.compile(r"!?[A-Za-z0-9_][A-Za-z0-9_.:-]*(?:\*[0-9]+)?", re.ASCII)
# Characters an extra option may hold: one token (or an option and its value), never a line break.
_EXTRA_VALUE = r"[A-Za-z0-9_.,:=@%/+&|()\[\]*!~^-]+"
_EXTRA_LINE = re.compile(rf"{_EXTRA_VALUE}(?: {_EXTRA_VALUE})?", re.ASCII)


def _bad(value: str, kind: str, field_name: str, why: str = "") -> HpcsegError:
    return HpcsegError(f"{field_name}: {value!r} cannot go on a scheduler directive line"
                       f"{' (' + why + ')' if why else ''}; write it like {_EXAMPLES[kind]}: ASCII letters "
                       f"and digits, no spaces or control characters")


def check_directive_value(value: str | None, kind: str, field_name: str) -> str | None:
    """Return ``value`` if it fits the field's grammar on a directive line, else raise naming the field."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.isascii() or not re.fullmatch(_SAFE[kind], value, re.ASCII):
        raise _bad(str(value), kind, field_name)
    if kind == "constraint":
        _check_constraint(value, field_name)
    return value


def _check_constraint(value: str, field_name: str) -> None:
    """Slurm feature expression: features joined by & | , with balanced [] and () and no empty operand."""
    depth: list[str] = []
    expect_operand = True
    i = 0
    while i < len(value):
        c = value[i]
        if expect_operand:
            if c in "([":
                depth.append(")" if c == "(" else "]")
                i += 1
                continue
            m = _FEATURE.match(value, i)
            if not m:
                raise _bad(value, "constraint", field_name, f"a feature name is missing at position {i + 1}")
            i = m.end()
            expect_operand = False
        else:
            if c in ")]":
                if not depth or depth.pop() != c:
                    raise _bad(value, "constraint", field_name, "unbalanced brackets")
                i += 1
                continue
            if c not in "&|,":
                raise _bad(value, "constraint", field_name, f"unexpected {c!r}")
            expect_operand = True
            i += 1
    if expect_operand or depth:
        raise _bad(value, "constraint", field_name, "the expression is incomplete")


def job_name(slug: str) -> str:
    """The job's name as a directive value: the slug (already file-name safe) with anything outside the
    grammar replaced, and a leading character that could read as an option (``-``) prefixed with ``j``.
    A name is the user's to choose, so it is made safe rather than refused."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", slug, flags=re.ASCII) or "job"
    return name if re.match(r"[A-Za-z0-9_]", name, re.ASCII) else f"j{name}"


def walltime_directive(value: str, field_name: str = "resources.walltime") -> str:
    """The walltime as hpcseg writes it, HH:MM:SS from ASCII digits only (a newline or an Arabic-Indic
    digit would pass a ``\\d`` check and end or corrupt the directive block)."""
    check_directive_value(value, "walltime", field_name)
    h, m, s = (int(x) for x in value.split(":"))
    if m >= 60 or s >= 60 or h * 3600 + m * 60 + s <= 0:
        raise _bad(value, "walltime", field_name, "minutes and seconds below 60, longer than zero")
    return f"{h:02d}:{m:02d}:{s:02d}"


def walltime_seconds(value: str, field_name: str = "resources.walltime") -> int:
    h, m, s = (int(x) for x in walltime_directive(value, field_name).split(":"))
    return h * 3600 + m * 60 + s


_UNITS_MB = {"": Fraction(1), "k": Fraction(1, 1024), "m": Fraction(1), "g": Fraction(1024),
             "t": Fraction(1024 * 1024)}


def memory_mb(value: str | None, field_name: str) -> int | None:
    """MiB for a memory directive, rounded UP: ``1K`` is 1M, never 0 (``--mem=0`` means the whole node
    on Slurm). Exact arithmetic, so ``0.1G`` is 103M on every machine."""
    if value is None:
        return None
    check_directive_value(value, "memory", field_name)
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([KMGTkmgt]?)", re.sub(r"i?[Bb]$|i$", "", value), re.ASCII)
    if not m:
        raise _bad(value, "memory", field_name)
    mb = Fraction(m.group(1)) * _UNITS_MB[m.group(2).lower()]
    if mb <= 0:
        raise _bad(value, "memory", field_name, "more than zero")
    return -(-mb.numerator // mb.denominator)


def _ranges(indices: list[int]) -> str:
    """[0,1,2,5,7,8] -> "0-2,5,7-8", the array list syntax Slurm and Torque share."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


# --------------------------------------------------------------------------------------------- extras

Arg = Literal["none", "required", "optional"]


@dataclass(frozen=True)
class OptionTable:
    """A scheduler's command-line options as getopt sees them, and which ones hpcseg owns.

    ``long``: name -> argument kind; ``short``: letter -> (argument kind, long name or the letter);
    ``owned``: canonical names (long names, or letters without one) -> the resources field that sets it;
    ``owned_keys``: for options taking ``key=value`` lists (PBS -l, -W), the owned keys per option.
    """

    scheduler: str
    long: dict[str, Arg]
    short: dict[str, tuple[Arg, str]]
    owned: dict[str, str]
    owned_keys: dict[str, dict[str, str]] = field(default_factory=dict)
    example: str = ""

    def spelled(self, name: str) -> str:
        return f"--{name}" if len(name) > 1 else f"-{name}"


def _refuse(field_name: str, line: str, message: str) -> HpcsegError:
    return HpcsegError(f"{field_name}: {line!r} {message}")


def parse_options(line: str, table: OptionTable, field_name: str) -> list[tuple[str, str | None]]:
    """The (canonical option, value) pairs sbatch/qsub would read from one extra line; raises on what
    they would read differently from how it looks, or could not read at all."""
    if not line.isascii() or not _EXTRA_LINE.fullmatch(line):
        raise _refuse(field_name, line, f"is not one scheduler option such as {table.example}; no spaces "
                                        f"inside values, quotes, '#', '$', control characters or line breaks")
    words = line.split(" ")
    first, rest = words[0], words[1:]
    if rest and rest[0].startswith("-"):
        raise _refuse(field_name, line, "holds two options; write one option per line, a value after '='")
    out: list[tuple[str, str | None]] = []
    if first.startswith("--") and table.long:
        name, eq, value = first[2:].partition("=")
        canonical, kind = _resolve_long(name, table, field_name, line)
        if kind == "none" and (eq or rest):
            raise _refuse(field_name, line, f"gives a value to --{canonical}, which takes none")
        if kind == "optional" and rest:
            raise _refuse(field_name, line, f"gives --{canonical} a separate value word, which sbatch "
                                            f"would not read as its value; write --{canonical}=VALUE")
        if kind == "required" and not eq and not rest:
            raise _refuse(field_name, line, f"gives --{canonical} no value")
        out.append((canonical, value if eq else (rest[0] if rest else None)))
        rest = []
    elif first.startswith("-") and len(first) > 1 and not first.startswith("--"):
        i = 1
        while i < len(first):
            letter = first[i]
            if letter not in table.short:
                raise _refuse(field_name, line, f"uses -{letter}, which is not a {table.scheduler} option")
            kind, canonical = table.short[letter]
            attached = first[i + 1:]
            if kind == "none":
                out.append((canonical, None))
                i += 1
                continue
            if attached:
                out.append((canonical, attached))
            elif kind == "required":
                if not rest:
                    raise _refuse(field_name, line, f"gives -{letter} no value")
                out.append((canonical, rest[0]))
                rest = []
            else:
                out.append((canonical, None))
            break
    else:
        raise _refuse(field_name, line, f"is not one scheduler option such as {table.example}")
    if rest:
        raise _refuse(field_name, line, "holds more than one option and its value; one option per line")
    return out


def _resolve_long(name: str, table: OptionTable, field_name: str, line: str) -> tuple[str, Arg]:
    """getopt_long: an exact name, else any unique prefix. A prefix of an option hpcseg owns is refused
    even when ambiguous here: a site's sbatch may know fewer options, and then it is not ambiguous."""
    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise _refuse(field_name, line, f"is not one scheduler option such as {table.example}")
    if name in table.long:
        canonical = name
    else:
        owned = sorted(o for o in table.owned if len(o) > 1 and o.startswith(name))
        if owned:
            spelled = ", ".join(f"--{o}" for o in owned)
            raise _refuse(field_name, line, f"abbreviates {spelled}, which hpcseg sets itself from "
                                            f"{table.owned[owned[0]]}; change that instead")
        matches = sorted(o for o in table.long if o.startswith(name))
        if len(matches) > 1:
            raise _refuse(field_name, line, f"is ambiguous for {table.scheduler} "
                                            f"({', '.join('--' + m for m in matches)}); write the option in full")
        if not matches:
            return name, "optional"  # a site plugin's option (SPANK); never one of ours, checked above
        canonical = matches[0]
    return canonical, table.long[canonical]


def check_extra(lines: Iterable[str], table: OptionTable, field_name: str) -> list[str]:
    """Extra directive options, each parsed like the scheduler does; none may touch an owned option."""
    out = []
    for i, line in enumerate(lines):
        where = f"{field_name}.{i}"
        if not isinstance(line, str):
            raise HpcsegError(f"{where}: {line!r} is not text; write one option such as {table.example}")
        for canonical, value in parse_options(line, table, where):
            if canonical in table.owned:
                raise _refuse(where, line, f"sets {table.spelled(canonical)}, which hpcseg sets itself from "
                                           f"{table.owned[canonical]}; change that instead of adding it to extra")
            for key, source in table.owned_keys.get(canonical, {}).items():
                keys = {k.split("=", 1)[0].strip().lower() for k in re.split(r"[,+:]", value or "")}
                if key in keys:
                    raise _refuse(where, line, f"sets {table.spelled(canonical)} {key}, which hpcseg sets "
                                               f"itself from {source}; change that instead of adding it to extra")
        out.append(line)
    return out


_check_extra = check_extra  # the name render.py used
