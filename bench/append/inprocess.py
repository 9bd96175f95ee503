"""The in-process measurements: the bare library's recorder (dataledger's and the stock
ones) and the command path (``Ledger.execute``), from one thread or many."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.append.measure import Measure, Sizes, Spec
from bench.append.workload import CountingLog, Workload
from bench.table import now


def run_threads(threads: int, seconds: float, max_count: int,
                op: Callable[[int], int]) -> tuple[int, int, int, float, str | None]:
    """Run ``op(i)`` from ``threads`` threads until the time or the count runs out.

    ``op`` returns how many events it saved. Returns (ops, events, errors, seconds,
    first error).
    """
    counter = itertools.count()
    lock = threading.Lock()
    totals = {"ops": 0, "events": 0, "errors": 0}
    first_error: list[str] = []
    barrier = threading.Barrier(threads + 1)
    deadline = [0.0]

    def work() -> None:
        ops = events = errors = 0
        barrier.wait()
        while time.perf_counter() < deadline[0]:
            i = next(counter)
            if i >= max_count:
                break
            try:
                events += op(i)
                ops += 1
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors += 1
                if not first_error:
                    first_error.append(repr(exc))
                if errors > 100:
                    break
        with lock:
            totals["ops"] += ops
            totals["events"] += events
            totals["errors"] += errors

    workers = [threading.Thread(target=work, name=f"bench-{n}", daemon=True)
               for n in range(threads)]
    for w in workers:
        w.start()
    start = time.perf_counter()
    deadline[0] = start + seconds
    barrier.wait()
    for w in workers:
        w.join(timeout=seconds + 120)
    elapsed = time.perf_counter() - start
    return totals["ops"], totals["events"], totals["errors"], elapsed, \
        first_error[0] if first_error else None


def measure_bare(recorder: Any, workload: Workload, sizes: Sizes, spec: Spec) -> Measure:
    """The bare library: ``recorder.insert_events([stored])``, one transaction per event."""
    from events.store import to_stored

    seconds = sizes.seconds if spec.seconds is None else spec.seconds
    wanted = min(sizes.max_count, max(sizes.warmup + 10, int(seconds * sizes.pool_rate)))
    per_command = max(1, len(workload.events(1, spec.offset)))
    commands = wanted // per_command + 1
    pool = [to_stored(e) for e in workload.events(commands, spec.offset + 1)][:wanted]
    for stored in pool[:sizes.warmup]:
        recorder.insert_events([stored])
    timed = pool[sizes.warmup:]
    started = now()
    ops, events, errors, elapsed, first = run_threads(
        spec.threads, seconds, len(timed), lambda i: (recorder.insert_events([timed[i]]), 1)[1])
    return Measure(spec.key, spec.label, "events/s", events, elapsed, started, errors=errors,
                   first_error=first,
                   extra={"threads": spec.threads, "pool": len(timed),
                          "pool_exhausted": ops + errors >= len(timed)})


def measure_commands(ledger: Any, log: CountingLog, workload: Workload, sizes: Sizes,
                     spec: Spec) -> Measure:
    """``Ledger.execute`` of the workload's use case from ``spec.threads`` threads."""
    def op(i: int) -> int:
        return len(ledger.execute(workload.handler, workload.actor,
                                  **workload.kwargs(spec.offset + i)).seqs)

    for i in range(sizes.warmup):
        op(sizes.max_count + i)
    tx0, ev0 = log.transactions, log.events
    started = now()
    seconds = sizes.seconds if spec.seconds is None else spec.seconds
    ops, events, errors, elapsed, first = run_threads(spec.threads, seconds, sizes.max_count, op)
    tx = log.transactions - tx0
    return Measure(spec.key, spec.label, "events/s", events, elapsed, started, commands=ops,
                   errors=errors, first_error=first,
                   extra={"threads": spec.threads, "transactions": tx, "events": log.events - ev0,
                          "events_per_transaction": round((log.events - ev0) / tx, 2) if tx else 0})


def measure_stock_postgres(url: Any, workload: Workload, sizes: Sizes, offset: int) -> Measure:
    """For information: the library's unmodified PostgresApplicationRecorder, own table."""
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

    datastore = PostgresDatastore(url.dbname, url.host, url.port, url.user, url.password,
                                  originator_id_type="text", schema=url.schema,
                                  pool_size=4, max_overflow=8, lock_timeout=30)
    try:
        recorder = PostgresApplicationRecorder(datastore, events_table_name="bare_stored_events")
        recorder.create_table()
        return measure_bare(recorder, workload, sizes, Spec(
            "stock_pg_1", "bare library, stock PG recorder, 1 thread", 1, offset))
    finally:
        datastore.close()


def measure_stock_sqlite(path: Path, workload: Workload, sizes: Sizes, offset: int) -> Measure:
    """For information: the library's unmodified SQLiteApplicationRecorder (BEGIN, INSERT,
    COMMIT per event), a database file of its own."""
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

    path.parent.mkdir(parents=True, exist_ok=True)
    datastore = SQLiteDatastore(str(path), originator_id_type="text", lock_timeout=30)
    try:
        recorder = SQLiteApplicationRecorder(datastore)
        recorder.create_table()
        return measure_bare(recorder, workload, sizes, Spec(
            "stock_sqlite_1", "bare library, stock SQLite recorder, 1 thread", 1, offset))
    finally:
        datastore.close()
