"""Errors a user can act on.

Anything raised as :class:`HpcsegError` is printed by the CLI as one line per problem, without a
traceback, and ends the command with ``exit_code``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

# Exit codes shared by every verb, so scripts can tell "fix your input" from "the cluster is down".
EXIT_BAD_INPUT = 2
EXIT_SCHEDULER = 3
EXIT_FAILED = 1


class HpcsegError(Exception):
    """A problem with the user's input or environment, with what to do about it."""

    def __init__(self, message: str, *, problems: list[str] | None = None, exit_code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.message = message
        self.problems = list(problems or [])
        self.exit_code = exit_code

    def lines(self) -> list[str]:
        """One printed line per problem: a newline inside a value (a file name, an override) is shown
        escaped, so it cannot split a message or forge a line of its own."""
        return [_one_line(self.message), *(f"  {_one_line(p)}" for p in self.problems)]


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


class SpecError(HpcsegError):
    """A job file, profile or ``--set`` override that does not validate; lists every problem at once."""


class SchedulerError(HpcsegError):
    """The scheduler refused, or could not be reached; carries the scheduler's own message."""

    def __init__(self, message: str, *, problems: list[str] | None = None):
        super().__init__(message, problems=problems, exit_code=EXIT_SCHEDULER)
