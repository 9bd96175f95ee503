"""Small helpers every bench suite shares (standard library only: the compute node's half
of ``bench.compute`` imports this in the compute venv)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (q in (0, 1]) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def aligned(lines: Sequence[Sequence[object]]) -> str:
    """Rows as ``a | b | c`` columns, padded; a ``-+-`` rule under the first (the header)."""
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    out = []
    for n, line in enumerate(lines):
        out.append(" | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)
