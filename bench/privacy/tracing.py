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

from bench.privacy.workload import GRADES, KEY_COLUMN, Sizes, result_rows
from bench.table import Row

#: the goal: a trace over the deliveries under this many seconds
GOAL_S = 5.0
#: the marked column the leaked copy lacks (three remain: overdue_days, deposits,
#: transactions)
DROPPED = "credit_limit"

NOTES = [
    ("leak trace: the leaked copy is one delivery's marked table shuffled, cut to half its "
     "rows, a marked column dropped and saved as CSV (and as Parquet); timed = privacy.trace over every "
     "delivery (its read, the votes, each candidate's agreement and confidence); baseline = "
     "reading the same file; a never-delivered table must get no match"),
]


def leak_copy(rows: list[dict[str, Any]], path: Path, seed: int, drop: str) -> Path:
    """``rows`` shuffled, half of them, without column ``drop``, written at ``path``: CSV
    (the csv module), or Parquet (pyarrow) for a ``.parquet`` path."""
    rng = random.Random(seed)
    columns = [c for c in rows[0] if c != drop]
    kept = [{c: row[c] for c in columns} for row in rng.sample(rows, len(rows) // 2)]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(kept), path)
        return path
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.DictWriter(f, columns)
        out.writeheader()
        out.writerows(kept)
    return path


def read_back(path: Path) -> list[dict[str, str]]:
    """The baseline: the CSV file's rows as text (what any reading of it costs)."""
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _median(repetitions: int, step: Any) -> tuple[float, list[float], Any]:
    """The median time of ``repetitions`` calls of ``step``, every time, its last answer."""
    times, out = [], None
    for _ in range(repetitions):
        t0 = time.perf_counter()
        out = step()
        times.append(round(time.perf_counter() - t0, 4))
    return statistics.median(times), times, out


def measure(sizes: Sizes) -> tuple[dict[str, Any], list[Row]]:
    """Mask and mark one of ``deliveries`` deliveries, leak it, trace it (and a
    never-delivered table) among all of them ``repetitions`` times; the medians and the
    rows."""
    from bench.privacy.delivered import watermark
    from core.masking import mask_rows
    from privacy.trace import Candidate, codebook, read_table, trace, trace_file

    key, skip = bytes(range(32)), (KEY_COLUMN,)  # the key column casts no vote, as in the CLI
    candidates = [Candidate(f"bench-delivery-{n:06d}", f"bench-contract-{n // 5:06d}",
                            f"bench-demander-{n % 10:02d}") for n in range(sizes.deliveries)]
    leaked = candidates[len(candidates) // 2]
    masked, _ = mask_rows(result_rows(sizes.trace_rows, sizes.seed + 1), GRADES, "plaintext")
    delivered, cells = watermark(masked, leaked.delivery_id, key)
    never, _ = mask_rows(result_rows(sizes.trace_rows, sizes.seed + 2), GRADES, "plaintext")
    with tempfile.TemporaryDirectory(prefix="dataledger-bench-privacy-") as tmp:
        leak = leak_copy(delivered, Path(tmp) / "leak.csv", sizes.seed, DROPPED)
        fresh = leak_copy(never, Path(tmp) / "never.csv", sizes.seed, DROPPED)
        steps = {
            "read_s": _median(sizes.repetitions, lambda: read_table(leak))[0],
            "codebook_s": _median(sizes.repetitions, lambda: codebook(key, candidates))[0],
            "score_s": _median(sizes.repetitions,
                               lambda: trace(read_table(leak), key, candidates,
                                             skip=skip))[0]}
        baseline_s = _median(sizes.repetitions, lambda: read_back(leak))[0]
        trace_s, runs, (found, _) = _median(sizes.repetitions,
                                            lambda: trace_file(leak, key, candidates,
                                                               skip=skip))
        none_s, _, (nothing, _) = _median(sizes.repetitions,
                                          lambda: trace_file(fresh, key, candidates,
                                                               skip=skip))
        parquet = leak_copy(delivered, Path(tmp) / "leak.parquet", sizes.seed, DROPPED)
        parquet_s, _, (in_parquet, _) = _median(sizes.repetitions,
                                                lambda: trace_file(parquet, key, candidates,
                                                                   skip=skip))
    right = found.match == leaked
    data = {"deliveries": sizes.deliveries, "rows": sizes.trace_rows,
            "leak_rows": sizes.trace_rows // 2, "dropped_column": DROPPED,
            "marked_cells": cells, "trace_s": trace_s, "trace_runs_s": runs,
            "steps_s": steps, "read_csv_module_s": baseline_s, "right": right,
            "match": found.record(), "never_delivered_s": none_s,
            "never_delivered": nothing.record(), "no_match": nothing.match is None,
            "parquet_s": parquet_s, "parquet_right": in_parquet.match == leaked}
    return data, [
        Row("-", "trace_leak",
            f"leak trace among {sizes.deliveries:,} deliveries of a copy of one "
            f"({sizes.trace_rows:,} rows masked + marked; shuffled, half kept, "
            f"{DROPPED} dropped, CSV): privacy.trace.trace_file, confidence "
            f"{found.confidence}" + ("" if right else " [WRONG delivery]"),
            f"{trace_s:.3f} s", f"{1000 * baseline_s:.1f} ms (reading the CSV)", "-",
            f"< {GOAL_S:g} s", right and trace_s < GOAL_S, data),
        Row("-", "trace_leak_parquet",
            "the same copy saved as Parquet (pyarrow), traced among the same deliveries"
            + ("" if in_parquet.match == leaked else " [WRONG delivery]"),
            f"{parquet_s:.3f} s", "-", "-", f"< {GOAL_S:g} s",
            in_parquet.match == leaked and parquet_s < GOAL_S, {}),
        Row("-", "trace_no_match",
            "a table never delivered, traced among the same deliveries"
            + ("" if nothing.match is None else " [MATCHED]"),
            f"{none_s:.3f} s", "-", "-", "no match", nothing.match is None, {})]
