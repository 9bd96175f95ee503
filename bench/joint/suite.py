"""``dataledger bench joint``: the joint computation with secure aggregation, and the hidden
query (issue 14), each against the same work done in the clear in the same run.

1. **Joint computation** (``bench.joint.aggregate``): ``providers`` providers (3) with
   ``rows`` rows each (100,000); each provider's product code runs on its table at its
   datasite (pandas, the compute venv) and, in joint mode, its output becomes a masked part
   (layout, vector, ``to_fixed``, ``core.secagg.mask``, the part's bytes); in clear mode its
   output is posted as rows. The aggregation node's sum of the parts against the clear sum
   per key of the outputs; the joint table must equal it. Goal: the datasites' work in joint
   mode, masking included, at most 3x their work in clear mode.
2. **Hidden query** (``bench.joint.hidden``): a query for ``codes`` codes (1,000, half of
   them members) over a ``table_rows``-row joint table (1,000,000) against a plain dict and
   an indexed SQLite lookup of the same codes, step by step in process; then over HTTP
   (``bench.joint.served``) against a real server on each backend (``--backend``), whose
   aggregation node sums the parts the bench posts as the providers' nodes, prepares and
   publishes the table; the bank's query through ``client.hidden_query``. Goal: under 2 s
   end to end. The table's preparation and publication are reported apart (once per joint,
   not per query).

Each timed step is repeated ``repetitions`` times and the median reported.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import Any

from bench.joint import aggregate, hidden, served
from bench.joint.workload import QUICK, Sizes
from bench.table import Row, all_met, chosen_sizes


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(backends: list[str], quick: bool, sizes: Sizes | None = None) -> dict[str, Any]:
    """The whole suite; what run.py prints and writes: the joint computation and the hidden
    query in process, then the hidden query over HTTP against a server on each backend."""
    sizes = sizes or (QUICK if quick else Sizes())
    result: dict[str, Any] = {"backend": "-", "load_before": _load()}
    table: list[dict[str, Any]] = []
    t0 = time.monotonic()
    print(f"  joint computation: {sizes.providers} providers x {sizes.rows:,} rows, "
          f"{sizes.repetitions} repetitions (the datasites in the compute venv) ...",
          flush=True)
    try:
        result["joint"], rows = aggregate.measure(sizes)
        table += [r.as_json() for r in rows]
    except Exception as exc:  # noqa: BLE001 - reported in the JSON and the exit code
        result["error"] = f"joint computation: {exc!r}"[:3000]
        table.append(Row("-", "joint_error", f"joint computation FAILED: {exc!r}"[:200],
                         "-", met=False).as_json())
    result["load_between"] = _load()
    print(f"  hidden query: {sizes.codes:,} codes over {sizes.table_rows:,} rows (the table "
          "is prepared once, then read back from bench-results/joint-tables/) ...", flush=True)
    try:
        result["hidden"] = hidden.measure(sizes)
        table += [r.as_json() for r in hidden.hidden_rows(sizes, result["hidden"])]
    except Exception as exc:  # noqa: BLE001 - reported
        result["error"] = (result.get("error", "") + f" hidden query: {exc!r}")[:3000]
        table.append(Row("-", "hidden_error", f"hidden query FAILED: {exc!r}"[:200], "-",
                         met=False).as_json())
    result["load_after_in_process"] = _load()
    results, notes = [result], _notes(sizes)
    for backend in backends:
        results.append(_served(sizes, backend, table, notes))
    result["wall_seconds"] = round(time.monotonic() - t0, 1)
    return {"suite": "joint", "quick": quick, "sizes": asdict(sizes), "results": results,
            "table": table, "all_goals_met": all_met(table), "notes": notes}


def _served(sizes: Sizes, backend: str, table: list[dict[str, Any]],
            notes: list[str]) -> dict[str, Any]:
    """The hidden query over HTTP against a real server on ``backend``: its result and
    rows."""
    print(f"  {backend}: a server, a joint of {sizes.table_rows:,} rows published by its "
          f"aggregation node, the bank's queries over HTTP ...", flush=True)
    result: dict[str, Any] = {"backend": backend, "load_before": _load()}
    try:
        result["served"] = served.measure(sizes, backend, notes)
        table += [r.as_json() for r in served_rows(sizes, result["served"])]
    except Exception as exc:  # noqa: BLE001 - reported
        result["error"] = f"hidden query over HTTP: {exc!r}"[:3000]
        table.append(Row(backend, "hidden_http_error",
                         f"hidden query over HTTP FAILED: {exc!r}"[:200], "-",
                         met=False).as_json())
    result["load_after"] = _load()
    return result


def served_rows(sizes: Sizes, r: dict[str, Any]) -> list[Row]:
    """The query end to end over HTTP (the goal), and the publication (information)."""
    right = r["answers_right"]
    d = r["download"]
    return [
        Row(r["backend"], "hidden_query_http",
            f"hidden query over HTTP, {r['codes']:,} codes ({r['members']:,} members) over "
            f"{r['rows']:,} rows: the bank's ask() (view, blind, POST, checks, lookup); its "
            f"POST (evaluate + joint.queried recorded) {1000 * r['post_s']:.0f} ms"
            + ("" if right else " [WRONG answers]"),
            f"{r['total_s']:.3f} s", "the clear lookups of the in-process row", "-",
            f"< {hidden.GOAL_S:g} s", r["total_s"] < hidden.GOAL_S and right, r),
        Row(r["backend"], "hidden_publish_http",
            f"publication: last part posted -> joint.published (aggregate, prepare, store: "
            f"the server's aggregation node); the bank's GET of the table "
            f"({d['bytes'] / 1e6:,.1f} MB) and its check; once per joint",
            f"{r['publish_s']:.1f} s",
            f"GET {d['get_s']:.2f} s + read {d['from_bytes_s'] + d['digest_s']:.2f} s",
            "-", "-", None)]


def _notes(sizes: Sizes) -> list[str]:
    return [
        ("datasite (compute venv, one process, the providers one after the other): clear = "
         "the product's function on the provider's table (pandas) + its output as the "
         "ledger takes it (to_json_result) + the result post's bytes (canonical JSON); "
         "joint = the same function and output + the layout (sorted keys at the layout "
         "provider, its sha256 checked at the others) + the vector over the layout + "
         "to_fixed + secagg.mask (2 pairwise masks each) + the part's digest and base64 "
         "body. Median of the repetitions, clear and joint alternating which runs first"),
        ("platform (server venv): clear = the outputs' bytes parsed and summed per key (the "
         "bank's work in the plain mode); joint = secagg.aggregate of the parts and the "
         "joint table over the layout"),
        (f"hidden query: bench-results/joint-tables/ keeps the {sizes.table_rows:,}-row "
         "table and the bench's own OPRF key between runs; its preparation time is the run "
         "that made it"),
    ]


#: option -> (Sizes field, smallest, largest)
LIMITS = {"--rows": ("rows", 10, 10_000_000), "--providers": ("providers", 2, 64),
          "--codes": ("codes", 2, 100_000), "--table-rows": ("table_rows", 10, 10_000_000),
          "--repetitions": ("repetitions", 1, 100)}


def sizes_of(args: Any, quick: bool) -> Sizes:
    """The sizes the command line asks for, over the defaults (``QUICK`` with ``--quick``);
    ValueError naming the option when one is out of its bounds."""
    base = QUICK if quick else Sizes()
    chosen = chosen_sizes(args, LIMITS)
    sizes = Sizes(**{**asdict(base), **chosen})
    if sizes.codes > sizes.table_rows:
        raise ValueError(f"--codes ({sizes.codes:,}) must not exceed --table-rows "
                         f"({sizes.table_rows:,}): half of the codes are rows of the table")
    return sizes


def options(sizes: Sizes) -> str:
    """The command-line options that give ``sizes``."""
    return " ".join(f"{option} {getattr(sizes, name)}"
                    for option, (name, _, _) in LIMITS.items())
