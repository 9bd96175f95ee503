"""Small helpers every bench suite shares: statistics, the table rows and their layout, the
loop over backends (standard library only: the compute node's half of ``bench.compute``
imports this in the compute venv)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


def now() -> str:
    """The current UTC time, to the second (``2024-01-02T03:04:05Z``)."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (q in (0, 1]) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    """n / p50 / p95 / p99 / max / mean of a list (empty dict if none)."""
    if not values:
        return {}
    return {"n": len(values), "p50": quantile(values, 0.5), "p95": quantile(values, 0.95),
            "p99": quantile(values, 0.99), "max": max(values), "mean": statistics.fmean(values)}


def aligned(lines: Sequence[Sequence[object]]) -> str:
    """Rows as ``a | b | c`` columns, padded; a ``-+-`` rule under the first (the header)."""
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    out = []
    for n, line in enumerate(lines):
        out.append(" | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


@dataclass
class Row:
    """One line of a table of figures given as text (numbers in ``data``, as they go to the
    JSON): the chain and compute suites."""

    backend: str
    key: str
    measure: str
    value: str
    baseline: str = "-"
    ratio: str = "-"
    goal: str = "-"
    met: bool | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def format_rows(table: list[dict[str, Any]]) -> str:
    """backend | measure | value | baseline | ratio | goal | met? (of :class:`Row` as JSON)"""
    header = ["backend", "measure", "value", "baseline", "ratio", "goal", "met?"]
    lines = [header] + [
        [r["backend"], r["measure"], r["value"], r["baseline"], r["ratio"], r["goal"],
         "-" if r["met"] is None else ("yes" if r["met"] else "NO")] for r in table]
    return aligned(lines)


def run_backends(backends: list[str], run_one: Callable[[str], dict[str, Any]],
                 rows_of: Callable[[dict[str, Any]], list[dict[str, Any]]],
                 failed: Callable[[str, Exception], dict[str, Any]],
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each backend's result (with its wall time) and table rows; a backend that fails is
    reported (``{"backend", "error"}`` and the row ``failed`` makes) and the next one runs.

    ``rows_of(result)`` is called after the wall time is recorded and may rewrite the
    result into its JSON form.
    """
    results: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    for backend in backends:
        t0 = time.monotonic()
        try:
            result = run_one(backend)
        except Exception as exc:  # noqa: BLE001 - one backend failing is reported
            results.append({"backend": backend, "error": repr(exc)})
            table.append(failed(backend, exc))
            continue
        result["wall_seconds"] = round(time.monotonic() - t0, 1)
        table += rows_of(result)
        results.append(result)
    return results, table


def chosen_sizes(args: Any, limits: dict[str, tuple[str, int, int]]) -> dict[str, int]:
    """The sizes a suite's command line sets (``limits``: option -> (field, smallest,
    largest)); ValueError naming the option when one is out of its bounds."""
    chosen: dict[str, int] = {}
    for option, (name, low, high) in limits.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if not low <= value <= high:
            raise ValueError(f"{option} must be {low:,} to {high:,}, not {value:,}")
        chosen[name] = value
    return chosen


def all_met(table: list[dict[str, Any]]) -> bool:
    """Whether the table judges at least one goal and every goal it judges is met."""
    goals = [r["met"] for r in table if r["met"] is not None]
    return bool(goals) and all(goals)
