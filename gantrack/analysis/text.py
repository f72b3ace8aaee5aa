"""Numbers as a sceptical reader sees them: fixed digits, intervals, signed percentages, dashes for gaps."""

from __future__ import annotations

import numpy as np


def fmt(x, digits=2) -> str:
    return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def ci(row, name) -> str:
    return f"{fmt(row[name])} [{fmt(row[name + '_lo'])}, {fmt(row[name + '_hi'])}]"


def pct(x: float) -> str:
    if not np.isfinite(x):
        return "—"
    return f"{100 * x:+.1f} %" if abs(x) < 0.1 else f"{100 * x:+.0f} %"
