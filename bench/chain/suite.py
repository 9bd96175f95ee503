"""The chain suite: every measurement of one backend in turn, the whole run as ``bench.run``
prints and writes it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from bench.chain.e2e import measure_e2e
from bench.chain.latency import measure_anchoring
from bench.chain.place import FULL, QUICK, Place, Sizes
from bench.chain.proofs import measure_proofs
from bench.chain.tree import measure_tree
from bench.table import Row, all_met, run_backends
from chain import merkle

NOTES = [
    ("tree alone: leaves are given as bytes to append_leaf_data; the tree hashes "
     "each (SHA-256 of 0x00 || leaf) and the interior nodes it completes (about "
     "one more per leaf) in its hashing core, and stores the leaf hashes in tiles "
     "of 256 and the nodes of level >= 8 (levels 1-7 are recomputed from the "
     "tiles when read); the baseline only hashes the leaves"),
    ("end to end: the baseline is the library's read alone "
     "(recorder.select_notifications, same batch size), without canonical bytes "
     "or hashing; the fill (insert_events in big batches) is not measured"),
    ("proofs: each from the database at the full tree size (size query + one "
     "query for the upper nodes and the leaf tiles, the nodes below level 8 "
     "recomputed from the tiles), random leaf index / old size; judged on p95; "
     "verification needs the roots, which are read beforehand, untimed"),
    ("anchoring: time from Ledger.execute returning to the watcher (own "
     "connection, polling every 10 ms) seeing an anchored checkpoint whose size "
     "covers the command's last seq; projections and the chain service run in "
     "the same process, as in `dataledger serve`; judged on the maximum"),
    ("ratios: for rates, measured / baseline; for times (proofs), p50 measured / "
     "p50 baseline; for anchoring, max latency / cut interval"),
]


def run_backend(backend: str, sizes: Sizes, progress: Callable[[str], None]) -> dict[str, Any]:
    """Every measurement of one backend; its databases are removed at the end."""
    notes: list[str] = []
    rows: list[Row] = []
    timings: dict[str, float] = {}
    place = Place(backend)

    def step(name: str, measure: Callable[[], list[Row]]) -> None:
        progress(f"{backend}: {name} ...")
        t0 = time.monotonic()
        rows.extend(measure())
        timings[name] = round(time.monotonic() - t0, 1)

    try:
        step("tree alone", lambda: measure_tree(place, sizes))
        step("end to end", lambda: measure_e2e(place, sizes))
        step(f"proofs at {sizes.proof_leaves:,} leaves", lambda: measure_proofs(place, sizes))
        for interval in sizes.anchor_intervals:
            step(f"anchoring, T = {interval:g} s", _anchoring(place, sizes, interval))
    finally:
        place.cleanup(notes)
    return {"backend": backend, "rows": rows, "notes": notes, "step_seconds": timings}


def _anchoring(place: Place, sizes: Sizes, interval: float) -> Callable[[], list[Row]]:
    return lambda: [measure_anchoring(place, sizes, interval)]


def _progress(message: str) -> None:
    print(f"  {message}", flush=True)


def _rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A backend's table rows, kept in its result as ``measures``."""
    rows = [r.as_json() for r in result.pop("rows")]
    result["measures"] = rows
    return rows


def _failed(backend: str, exc: Exception) -> dict[str, Any]:
    return Row(backend, "error", f"FAILED: {exc!r}"[:200], "-", met=False).as_json()


def run(backends: list[str], quick: bool) -> dict[str, Any]:
    """The whole suite; what run.py prints and writes."""
    sizes = QUICK if quick else FULL
    _progress(f"tree hashing core: {merkle.IMPLEMENTATION}")
    results, table = run_backends(backends, lambda b: run_backend(b, sizes, _progress),
                                  _rows_of, _failed)
    core = f"tree hashing core: {merkle.IMPLEMENTATION}" + (
        " (chain/_merkle.c was not built: no C compiler or OpenSSL headers at "
        "install time; the pure-Python fallback ran)"
        if "c" not in merkle.IMPLEMENTATIONS else "")
    return {"suite": "chain", "quick": quick, "sizes": asdict(sizes), "results": results,
            "table": table, "all_goals_met": all_met(table),
            "merkle_core": merkle.IMPLEMENTATION, "notes": [core, *NOTES]}
