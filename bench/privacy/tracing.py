"""Measurement 2: the leak trace. ``deliveries`` deliveries of the same result (each its
own watermark, as ``privacy.watermark`` marks a delivery), a leaked copy of one of them
(shuffled, cut to half its rows, one marked column dropped, saved as CSV), traced back among
all of them with ``privacy.trace``; and a file that was never delivered, which must get no
match. Baseline: reading the leaked file alone."""

from __future__ import annotations

import csv
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.privacy.workload import Sizes, result_rows
from bench.table import Row

#: the goal: a trace over the deliveries under this many seconds
GOAL_S = 5.0

NOTES = [
    ("leak trace: the leaked copy is one delivery's marked table shuffled, cut to half its "
     "rows, a marked column dropped and saved as CSV; timed = privacy.trace over every "
     "delivery (its read, the votes, each candidate's agreement and confidence); baseline = "
     "reading the same file; a never-delivered table must get no match"),
]


def leak_copy(rows: list[dict[str, Any]], path: Path, seed: int, drop: str) -> Path:
    """``rows`` shuffled, half of them, without column ``drop``, written as CSV at ``path``."""
    rng = random.Random(seed)
    kept = rng.sample(rows, len(rows) // 2)
    columns = [c for c in rows[0] if c != drop]
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.DictWriter(f, columns, extrasaction="ignore")
        out.writeheader()
        out.writerows(kept)
    return path


def read_back(path: Path) -> list[dict[str, str]]:
    """The baseline: the CSV file's rows as text (what any reading of it costs)."""
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _median_time(repetitions: int, step: Any) -> tuple[float, list[float], Any]:
    times, out = [], None
    for _ in range(repetitions):
        t0 = time.perf_counter()
        out = step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def measure(sizes: Sizes) -> tuple[dict[str, Any], list[Row]]:
    """Mark ``deliveries`` copies, leak one, trace it (and a never-delivered table) among
    all of them ``repetitions`` times; the medians and the rows."""
    from privacy.trace import trace_file

    from bench.privacy.delivered import watermark

    key = bytes(range(32))
    rows = result_rows(sizes.trace_rows, sizes.seed + 1)
    ids = [f"bench-delivery-{n:06d}" for n in range(sizes.deliveries)]
    t0 = time.perf_counter()
    leaked_id = ids[len(ids) // 2]
    leaked_rows, cells = watermark(rows, leaked_id, key)
    mark_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="dataledger-bench-privacy-") as tmp:
        leak = leak_copy(leaked_rows, Path(tmp) / "leak.csv", sizes.seed, "credit_limit")
        fresh = leak_copy(result_rows(sizes.trace_rows, sizes.seed + 2),
                          Path(tmp) / "never.csv", sizes.seed, "credit_limit")
        read_s, _, _ = _median_time(sizes.repetitions, lambda: read_back(leak))
        trace_s, runs, found = _median_time(sizes.repetitions,
                                            lambda: trace_file(leak, key, ids))
        none_s, _, nothing = _median_time(sizes.repetitions, lambda: trace_file(fresh, key, ids))
    right = isinstance(found, dict) and found.get("delivery_id") == leaked_id
    data = {"deliveries": sizes.deliveries, "rows": sizes.trace_rows,
            "leak_rows": sizes.trace_rows // 2, "marked_cells": cells, "mark_s": mark_s,
            "trace_s": trace_s, "trace_runs_s": runs, "read_s": read_s,
            "never_delivered_s": none_s, "match": found, "right": right,
            "never_delivered": nothing, "no_match": nothing is None}
    rows_out = [
        Row("-", "trace_leak",
            f"leak trace among {sizes.deliveries:,} deliveries: a copy of one ({sizes.trace_rows:,}"
            f" rows, shuffled, half kept, a column dropped, CSV)"
            + ("" if right else " [WRONG delivery]"),
            f"{trace_s:.3f} s", f"{1000 * read_s:.1f} ms (reading the file)", "-",
            f"< {GOAL_S:g} s", right and trace_s < GOAL_S, data),
        Row("-", "trace_no_match",
            "a table never delivered, traced among the same deliveries"
            + ("" if nothing is None else " [MATCHED]"),
            f"{none_s:.3f} s", "-", "-", "no match", nothing is None, {})]
    return data, rows_out
