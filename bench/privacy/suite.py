"""``dataledger bench privacy``: what the privacy controls of issue 15 cost, each beside the
same work without them in the same run.

1. **Masking and watermarking a delivered result** (``bench.privacy.delivered``): a
   ``rows``-row plaintext result (100,000) masked by its columns' grades and kinds and
   watermarked for its delivery, then written, against writing it unmarked. Goal: at most 2x.
2. **Leak trace**: a leaked copy of one of ``deliveries`` deliveries (1,000), shuffled, cut
   to half its rows, saved as CSV, traced back among all of them: in process
   (``bench.privacy.tracing``: ``privacy.trace.trace_file``, a marked column dropped too,
   and as Parquet), and end to end (``bench.privacy.traced``: ``dataledger forensics
   trace-leak`` as its own process, over deliveries made through the routes, on each
   backend). Goal: under 5 s.
3. **Event encryption on the append path** (``bench.privacy.sealing``): the command path of
   ``bench append`` with the personal fields of its events sealed under per-subject keys,
   against the same commands in the clear, on each backend. Goal: under 10% slower.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from bench.privacy import delivered, sealing, traced, tracing
from bench.privacy.workload import QUICK, Sizes
from bench.table import Row, all_met, chosen_sizes


class Absent(Exception):
    """A measurement whose module is not in the tree (another part of issue 15)."""


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _part(name: str, result: dict[str, Any], table: list[dict[str, Any]], backend: str,
          measure: Callable[[], tuple[dict[str, Any], list[Row]]]) -> None:
    """Run one measurement into ``result[name]`` and its rows into ``table``; a missing
    module or a failure becomes a row saying so (the failure also ``result["error"]``)."""
    try:
        result[name], rows = measure()
        table += [r.as_json() for r in rows]
    except ImportError as exc:
        result[name] = {"absent": repr(exc)}
        table.append(Row(backend, f"{name}_absent", f"{name}: not measured, {exc}", "-",
                         met=None).as_json())
    except Exception as exc:  # noqa: BLE001 - reported in the JSON and the exit code
        result["error"] = (result.get("error", "") + f" {name}: {exc!r}").strip()[:3000]
        table.append(Row(backend, f"{name}_error", f"{name} FAILED: {exc!r}"[:200], "-",
                         met=False).as_json())


def run(backends: list[str], quick: bool, sizes: Sizes | None = None) -> dict[str, Any]:
    """The whole suite: measurements 1 and 2 in process, then 3 on each backend."""
    sizes = sizes or (QUICK if quick else Sizes())
    result: dict[str, Any] = {"backend": "-", "load_before": _load()}
    table: list[dict[str, Any]] = []
    t0 = time.monotonic()
    print(f"  masking + watermarking a {sizes.rows:,}-row result vs writing it unmarked, "
          f"{sizes.repetitions} repetitions ...", flush=True)
    _part("delivered", result, table, "-", lambda: delivered.measure(sizes))
    result["load_between"] = _load()
    print(f"  leak trace of a copy of one of {sizes.deliveries:,} deliveries ...", flush=True)
    _part("trace", result, table, "-", lambda: tracing.measure(sizes))
    result["load_after"] = _load()
    result["wall_seconds"] = round(time.monotonic() - t0, 1)
    results = [result]
    for backend in backends:
        print(f"  {backend}: bench append's command path, personal fields sealed vs clear, "
              f"{sealing.ROUNDS_PER_REPETITION * sizes.repetitions} rounds of "
              f"{sizes.seconds:g} s each ...", flush=True)
        one: dict[str, Any] = {"backend": backend, "load_before": _load()}
        t1 = time.monotonic()
        _part("sealing", one, table, backend, lambda b=backend: sealing.measure(b, sizes))
        print(f"  {backend}: {sizes.deliveries:,} deliveries made through the routes, then "
              f"`dataledger forensics trace-leak` on a leaked copy, {sizes.repetitions} "
              "times ...", flush=True)
        _part("trace_command", one, table, backend,
              lambda b=backend: traced.measure(sizes, b))
        one["load_after"] = _load()
        one["wall_seconds"] = round(time.monotonic() - t1, 1)
        results.append(one)
    absent = [r["key"] for r in table if r["key"].endswith("_absent")]
    notes = delivered.NOTES + tracing.NOTES + traced.NOTES + sealing.NOTES
    if absent:
        notes.append("not measured (their module is not in the tree): " + ", ".join(absent))
    return {"suite": "privacy", "quick": quick, "sizes": asdict(sizes), "results": results,
            "table": table, "all_goals_met": all_met(table) and not absent, "notes": notes}


#: option -> (Sizes field, smallest, largest)
LIMITS = {"--rows": ("rows", 10, 10_000_000), "--deliveries": ("deliveries", 2, 100_000),
          "--trace-rows": ("trace_rows", 20, 1_000_000),
          "--repetitions": ("repetitions", 1, 100)}


def sizes_of(args: Any, quick: bool) -> Sizes:
    """The sizes the command line asks for, over the defaults (``QUICK`` with ``--quick``);
    ValueError naming the option when one is out of its bounds."""
    base = QUICK if quick else Sizes()
    chosen = chosen_sizes(args, LIMITS)
    return Sizes(**{**asdict(base), **chosen})


def options(sizes: Sizes) -> str:
    """The command-line options that give ``sizes``."""
    return " ".join(f"{option} {getattr(sizes, name)}"
                    for option, (name, _, _) in LIMITS.items())
