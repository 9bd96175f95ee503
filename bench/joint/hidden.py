"""The hidden query's part of ``dataledger bench joint`` (server venv), in process.

A joint table of ``table_rows`` rows (credit code -> canonical JSON of its row, as the
aggregation node seals it) is prepared once with the aggregation node's
``aggregation.prepare.prepare`` (``core.hidden_query.prepare_table`` on worker processes) and
kept under ``bench-results/joint-tables/`` (the sealed bytes, the bench's own OPRF key and
the preparation's time), so a second run reads it back. Then, ``repetitions`` times, a query
for ``codes`` codes (half in the table, half not), step by step: ``blind`` (the bank),
``evaluate`` (the aggregation node), the three fields the ledger records, ``lookup`` (the
bank); against a dict lookup and an indexed SQLite lookup of the same codes in the clear.
The table's publication (``to_bytes`` at the node, ``from_bytes`` and the digest check at the
bank) is measured on its own: it is done once per table, not per query.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aggregation import prepare
from bench.joint.workload import Sizes, credit_code, joint_stand_in, points_of, query_codes
from bench.table import Row
from core import hidden_query as hq
from core.files import write_private

CACHE = Path("bench-results/joint-tables")
GOAL_S = 2.0


def table_rows(sizes: Sizes) -> dict[str, bytes]:
    """The joint table's rows as the aggregation node seals them
    (``aggregation.service.sealed_rows``): code -> canonical JSON of its row."""
    from aggregation.service import sealed_rows

    table: dict[str, dict[str, int | float]] = {
        credit_code(i): {"points": points_of(i)} for i in range(sizes.table_rows)}
    return sealed_rows(joint_stand_in(["bench"]), table)


def prepared_table(sizes: Sizes, rows: dict[str, bytes],
                   cache: Path) -> tuple[bytes, hq.HiddenTable, dict[str, Any]]:
    """The OPRF key and sealed table of ``rows``: read back from ``cache`` when a run made
    it already (its bytes must read back as this version's table and hash to the digest kept
    beside them), else prepared now."""
    stem = cache / f"table-{sizes.table_rows}-{sizes.seed}"
    meta_path = stem.with_suffix(".json")
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        t0 = time.perf_counter()
        try:  # a table of an older format is prepared again
            table = hq.HiddenTable.from_bytes(stem.with_suffix(".table").read_bytes())
        except hq.HiddenQueryError:
            table = hq.HiddenTable(bytes(hq.TABLE_ID_BYTES), {})
        if table.digest() == meta["digest"] and len(table.rows) == sizes.table_rows:
            key = stem.with_suffix(".key").read_bytes()
            return key, table, {**meta, "from_cache": True,
                                "read_back_s": time.perf_counter() - t0}
    key = hq.generate_key()
    workers = prepare.workers_for(len(rows))
    t0 = time.perf_counter()
    table = prepare.prepare(key, rows, workers=workers)
    prepare_s = time.perf_counter() - t0
    meta = {"rows": sizes.table_rows, "prepare_s": prepare_s, "digest": table.digest(),
            "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load": [round(x, 2) for x in os.getloadavg()],
            "how": "aggregation.prepare.prepare, "
                   + (f"{workers} worker processes" if workers else "one process")}
    write_private(stem.with_suffix(".table"), table.to_bytes())
    write_private(stem.with_suffix(".key"), key)
    write_private(meta_path, json.dumps(meta).encode())
    return key, table, {**meta, "from_cache": False}


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def one_query(key: bytes, table: hq.HiddenTable, codes: list[str]) -> dict[str, Any]:
    """One hidden query, step by step, with its answers."""
    blind_s, (state, request) = _timed(lambda: hq.blind(codes))
    evaluate_s, response = _timed(lambda: hq.evaluate(key, request))
    record_s, fields = _timed(lambda: (hq.request_commitment(request),
                                       hq.request_size(request), hq.answer_hash(response)))
    lookup_s, found = _timed(lambda: hq.lookup(table, state, response))
    return {"blind_s": blind_s, "evaluate_s": evaluate_s, "record_s": record_s,
            "lookup_s": lookup_s, "total_s": blind_s + evaluate_s + record_s + lookup_s,
            "request_bytes": len(request), "response_bytes": len(response),
            "request_size": fields[1], "found": found}


def sqlite_index(rows: dict[str, bytes]) -> sqlite3.Connection:
    """The clear table in an in-memory SQLite table keyed by code (its primary key)."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE joint (code TEXT PRIMARY KEY, row BLOB NOT NULL) WITHOUT ROWID")
    db.executemany("INSERT INTO joint VALUES (?, ?)", rows.items())
    db.commit()
    return db


def _sqlite_lookup(db: sqlite3.Connection, codes: list[str]) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for code in codes:
        hit = db.execute("SELECT row FROM joint WHERE code = ?", (code,)).fetchone()
        out[code] = None if hit is None else bytes(hit[0])
    return out


def publication(table: hq.HiddenTable) -> dict[str, Any]:
    """The table's publication: the node's bytes, the bank's reading and digest check."""
    to_s, raw = _timed(table.to_bytes)
    back_s, copy = _timed(lambda: hq.HiddenTable.from_bytes(raw))
    digest_s, digest = _timed(copy.digest)
    return {"to_bytes_s": to_s, "from_bytes_s": back_s, "digest_s": digest_s,
            "bytes": len(raw), "same": digest == table.digest()}


def measure(sizes: Sizes, cache: Path | None = None) -> dict[str, Any]:
    """The table (made once, kept under ``cache``, default ``CACHE``), the query's
    repetitions and its baselines."""
    rows = table_rows(sizes)
    key, table, made = prepared_table(sizes, rows, CACHE if cache is None else cache)
    codes = query_codes(sizes)
    queries = [one_query(key, table, codes) for _ in range(sizes.repetitions)]
    right = all(q["found"] == {c: rows.get(c) for c in codes} for q in queries)
    members = sum(1 for c in codes if c in rows)
    dict_s = statistics.median(_timed(lambda: {c: rows.get(c) for c in codes})[0]
                               for _ in range(max(5, sizes.repetitions)))
    db = sqlite_index(rows)
    try:
        sqlite_s = statistics.median(_timed(lambda: _sqlite_lookup(db, codes))[0]
                                     for _ in range(max(5, sizes.repetitions)))
    finally:
        db.close()
    steps = {s: statistics.median(q[s] for q in queries)
             for s in ("blind_s", "evaluate_s", "record_s", "lookup_s", "total_s")}
    for q in queries:
        del q["found"]
    return {"table": made, "codes": len(codes), "members": members, "answers_right": right,
            "queries": queries, "median": steps, "dict_s": dict_s, "sqlite_s": sqlite_s,
            "publication": publication(table)}


def hidden_rows(sizes: Sizes, r: dict[str, Any]) -> list[Row]:
    """The query end to end (the goal) with its steps, and the table's preparation and
    publication (for information)."""
    m = r["median"]
    right = r["answers_right"]
    split = (f"blind {1000 * m['blind_s']:.0f} + evaluate {1000 * m['evaluate_s']:.0f} + "
             f"ledger fields {1000 * m['record_s']:.0f} + lookup {1000 * m['lookup_s']:.0f} ms")
    rows = [Row("in process", "hidden_query",
                f"hidden query, {r['codes']:,} codes ({r['members']:,} members) over "
                f"{sizes.table_rows:,} rows, no HTTP: {split}"
                + ("" if right else " [WRONG answers]"),
                f"{m['total_s']:.3f} s",
                f"{1000 * r['dict_s']:.2f} ms (dict); {1000 * r['sqlite_s']:.1f} ms "
                "(SQLite primary key)",
                f"{m['total_s'] / r['dict_s']:,.0f}x dict", f"< {GOAL_S:g} s",
                m["total_s"] < GOAL_S and right,
                {k: v for k, v in r.items() if k not in ("table", "publication")})]
    t, p = r["table"], r["publication"]
    rows.append(Row("in process", "hidden_table_prepare",
                    f"the table's preparation ({t['rows']:,} rows, {t['how']}; once per "
                    f"joint, not per query){' [read back from the cache]' if t['from_cache'] else ''}",
                    f"{t['prepare_s']:.1f} s", "-", "-", "-", None, t))
    rows.append(Row("in process", "hidden_table_publication",
                    f"the table's publication: to_bytes at the node, from_bytes + digest at "
                    f"the bank ({p['bytes'] / 1e6:,.1f} MB; once per table)",
                    f"{p['to_bytes_s'] + p['from_bytes_s'] + p['digest_s']:.2f} s",
                    "-", "-", "-", None, p))
    return rows
