"""Text a user (or a damaged file) wrote, made safe to print: it is shown, never obeyed.

Job, model and file names, paths and messages reach the terminal from job files, manifests and task
files. A control character in them (an ANSI escape, a carriage return, a bidi override) would recolour,
overwrite or reorder what status and collect print, and Rich markup (``[bold]``, ``[/]``) would be
interpreted or raise. :func:`printable` escapes the first kind as ``\\x1b``-style text; Rich output takes
user text only as :func:`rich_text` (a ``Text``, which never parses markup).
"""

from __future__ import annotations

import re
from typing import Any

# C0 and C1 controls, DEL, zero-width and bidirectional formatting characters.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group(0))
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: Any) -> str:
    """``text`` as one line of inert characters: controls and invisible formatting shown escaped."""
    s = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_escape, s)


def rich_text(text: Any, style: str = "") -> Any:
    """A Rich ``Text`` of ``text`` made printable: shown literally, whatever brackets it holds."""
    from rich.text import Text

    return Text(printable(text), style=style)
