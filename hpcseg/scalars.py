"""Strict YAML scalars for the job schema and the sweep section (one set of rules and words for both).

YAML 1.1 reads true/yes/on as True, and pydantic's lax mode would take True for 1: one GPU nobody asked
for. NaN and infinity are numbers to Python but never a setting anyone meant, so they are refused too.
"""

from __future__ import annotations

import math
from typing import Any

BOOLEANS = "(YAML reads true/yes/on and false/no/off as booleans)"


def whole_number(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"expected a whole number, not {str(v).lower()} {BOOLEANS}")
    return v


def real_number(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"expected a number, not {str(v).lower()} {BOOLEANS}")
    try:
        finite = math.isfinite(float(v)) if isinstance(v, int | float | str) else True
    except (ValueError, OverflowError):
        finite = True  # not a number at all: pydantic's own message says so
    if not finite:
        raise ValueError("must be a finite number, not NaN or infinity")
    return v
