"""Units shown to users, one definition each: every table, report and note formats
figures, durations and memory through these."""

from __future__ import annotations

import math
from typing import Any


def fmt_num(value: Any, spec: str = ".3f", *, missing: str = "-") -> str:
    """A figure as tables show it: `missing` for none or NaN, numbers in `spec`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec) if isinstance(value, int | float) and spec else str(value)


def fmt_mb(mb: float | None) -> str:
    """Memory in binary units (MiB below 1 GiB, else GiB), the same in every view."""
    if not mb:
        return "-"
    return f"{mb / 1024:.2f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def fmt_s(seconds: float | None) -> str:
    """A duration in seconds with its unit (`-` when unknown)."""
    return "-" if seconds is None else f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
