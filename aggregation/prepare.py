"""Preparing a hidden table (``core.hidden_query.prepare_table``) on every core this process may use.

A row costs about 100 µs, most of it one ristretto255 scalar multiplication (libsodium's,
through rbcl): a 1,000,000-row joint table takes about 100 s on one core. The rows are
independent, so a large table is split among worker processes, each sealing its share under
the same key, the same table id (each row's key seals that one row: a table id may seal
one table, and the shares are disjoint parts of one) and the same row bucket (the whole
table's: every sealed row has one length). The workers are spawned, never forked
(the server holds threads), and get the rows over a pipe: the clear joint table is never
written to disk. A small table is prepared in the calling thread, where starting processes
would cost more than it saves.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor

from core import hidden_query as hq

#: a table of at least this many rows is prepared by worker processes (when there are cores)
PARALLEL_FROM = 50_000
#: worker processes at most
MAX_WORKERS = 4


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - Linux has sched_getaffinity


def workers_for(rows: int) -> int:
    """How many worker processes prepare a table of ``rows`` rows (0: none, in this thread)."""
    if rows < PARALLEL_FROM:
        return 0
    n = min(cores(), MAX_WORKERS)
    return n if n >= 2 else 0


def prepare(key: bytes, rows: Mapping[str, bytes], *, workers: int | None = None,
            ) -> hq.HiddenTable:
    """The hidden table of ``rows`` (code -> row bytes) under OPRF ``key``: the same table
    ``prepare_table`` makes, on ``workers`` processes (default ``workers_for``)."""
    hq.check_key(key)
    n = workers_for(len(rows)) if workers is None else workers
    if n < 2:
        return hq.prepare_table(key, rows)
    table_id = os.urandom(hq.TABLE_ID_BYTES)
    bucket = hq.row_bucket(rows.values())
    items = list(rows.items())
    size = -(-len(items) // n)
    shares = [dict(items[i:i + size]) for i in range(0, len(items), size)]
    with ProcessPoolExecutor(len(shares),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(hq.prepare_table, [key] * len(shares), shares,
                              [table_id] * len(shares), [bucket] * len(shares)))
    merged: dict[bytes, bytes] = {}
    for part in parts:
        merged.update(part.rows)
    if len(merged) != len(rows):
        raise hq.HiddenQueryError("two rows under one code")
    return hq.HiddenTable(table_id, merged)
