"""The append suite: every measurement of one backend, the table rows (each beside its
baseline), the whole run as ``bench.run`` prints and writes it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bench.append.http_suite import measure_http
from bench.append.inprocess import (
    measure_bare,
    measure_commands,
    measure_stock_postgres,
    measure_stock_sqlite,
)
from bench.append.measure import FULL, QUICK, Measure, Sizes, Spec, alternate
from bench.append.workload import CountingLog, Workload
from bench.databases import Scratch
from bench.table import all_met, run_backends

#: the goal: measured rate / baseline rate must reach this
GOAL_RATIO = 0.5

#: the per-actor index may cost the HTTP command at most 10% of its rate
INDEX_GOAL = 0.9
#: ... and add at most 10% to the server's CPU per command
INDEX_CPU_GOAL = 1.1

#: measured key -> its baseline's key
COMPARISONS = {
    "command_1": "bare_1",
    "command_n": "bare_n",
    "http_command": "http_noop",
    "http_command_noindex": "http_noop_noindex",
}

NOTES = [
    ("rates: in-process rows count events/s (commands/s in brackets); HTTP rows "
     "count successful requests/s"),
    ("HTTP load: a minimal asyncio HTTP/1.1 client (keep-alive connections, one "
     "request in flight on each) in this process, on the same machine as the "
     "server: it competes with the server for the CPU (its CPU per request is in "
     "the JSON); one httpx.AsyncClient costs far more CPU per request and caps the "
     "rate itself (see the client-check row), so it is used only for setup"),
    ("the server is `dataledger serve` as shipped: one uvicorn worker, no access "
     "log, projections and the chain integrator in its child process (the "
     "defaults); server CPU includes the child's"),
    ("bare library = store.recorder.insert_events([stored_event]) with events "
     "pre-encoded by events.store.to_stored, one transaction per event, no "
     "grouping"),
]


@dataclass
class _InProcess:
    """The in-process measurements over one store: its recorder (the bare library) and the
    ledger over it; each measurement's arguments come from a block of its own."""

    store: Any
    ledger: Any
    log: CountingLog
    workload: Workload
    sizes: Sizes
    block: int

    def pair(self, threads: int, suffix: str, first: int) -> list[Measure]:
        """The bare library and the command path from ``threads`` threads, alternating in
        rounds; their arguments from blocks ``first`` and ``first + 1``."""
        sizes = self.sizes
        plural = "s" if threads > 1 else ""

        def spec(r: int, key: str, label: str, block: int) -> Spec:
            return Spec(key, label, threads, block * self.block + r * sizes.max_count,
                        sizes.seconds / sizes.rounds)

        return alternate(
            sizes.rounds,
            lambda r: measure_bare(self.store.recorder, self.workload, sizes, spec(
                r, f"bare_{suffix}", f"bare library, {threads} thread{plural}, 1 tx/event",
                first)),
            lambda r: measure_commands(self.ledger, self.log, self.workload, sizes, spec(
                r, f"command_{suffix}", f"command path, {threads} thread{plural}", first + 1)))


def _in_process(url: Any, workload: Workload, sizes: Sizes, block: int) -> list[Measure]:
    """Found the workload's platform in a fresh store, then each baseline and its command
    path alternate: one thread, then N threads."""
    from events.commit import new_ledger
    from events.store import LedgerLog, open_store

    store = open_store(url)
    log = CountingLog(LedgerLog(store))
    ledger = new_ledger(log, group_commit=True)
    try:
        workload.setup(ledger)
        runs = _InProcess(store, ledger, log, workload, sizes, block)
        return runs.pair(1, "1", 1) + runs.pair(sizes.threads, "n", 3)
    finally:
        ledger.close()
        store.close()


def run_backend(backend: str, sizes: Sizes) -> dict[str, Any]:
    """Every measurement of one backend; its databases are removed at the end."""
    from events.url import DatabaseURL

    notes: list[str] = []
    measures: list[Measure] = []
    workload = Workload()
    if workload.fallback_reason:
        notes.append(workload.fallback_reason + "; the workload is register_participant")
    scratch = Scratch(backend, f"dataledger-bench-{backend}-")
    block = 10 * sizes.max_count  # disjoint argument ranges per measurement
    try:
        url = DatabaseURL.parse(scratch.database_url("inproc"))
        measures += _in_process(url, workload, sizes, block)
        if backend == "postgresql":
            measures.append(measure_stock_postgres(url, workload, sizes, 5 * block))
        else:
            measures.append(measure_stock_sqlite(scratch.tmp / "stock" / "ledger.db", workload,
                                                 sizes, 5 * block))
        server_env = {"DATALEDGER_DATA_DIR": str(scratch.tmp / "http")}
        if backend == "postgresql":
            server_env["DATALEDGER_DATABASE_URL"] = scratch.database_url("http")
        (scratch.tmp / "http").mkdir(parents=True, exist_ok=True)
        http, http_notes = measure_http(server_env, scratch.tmp, workload, sizes, 6 * block)
        measures += http
        notes += http_notes
        # the same server without the per-actor index: what the index costs the writes
        quiet = {**server_env, "DATALEDGER_DATA_DIR": str(scratch.tmp / "http-noindex")}
        if backend == "postgresql":
            quiet["DATALEDGER_DATABASE_URL"] = scratch.database_url("noindex")
        (scratch.tmp / "http-noindex").mkdir(parents=True, exist_ok=True)
        http, http_notes = measure_http(quiet, scratch.tmp, workload, sizes, 7 * block,
                                        index=False)
        measures += http
        notes += [n for n in http_notes if n not in notes]
    finally:
        scratch.cleanup(notes)
    return {"backend": backend, "workload": workload.name, "measures": measures, "notes": notes}


def rows(backend: str, measures: list[Measure]) -> list[dict[str, Any]]:
    """Table rows: each measurement beside its baseline, ratio and goal."""
    by_key = {m.key: m for m in measures}
    out = []
    for m in measures:
        row: dict[str, Any] = {"backend": backend, "key": m.key, "measure": m.label,
                               "rate": round(m.rate, 1), "unit": m.unit,
                               "commands_per_s": None if m.command_rate is None
                               else round(m.command_rate, 1),
                               "baseline": None, "baseline_rate": None, "ratio": None,
                               "goal": None, "met": None, "errors": m.errors}
        base = by_key.get(COMPARISONS.get(m.key, ""))
        if base is not None and base.rate > 0:
            row.update(baseline=base.label, baseline_rate=round(base.rate, 1),
                       ratio=round(m.rate / base.rate, 3), goal=f">= {GOAL_RATIO:.2f}x")
            row["met"] = m.errors == 0 and m.rate / base.rate >= GOAL_RATIO
        out.append(row)
    pair = [by_key.get(k) for k in ("http_command", "http_noop", "http_command_noindex",
                                    "http_noop_noindex")]
    if all(m is not None and m.rate > 0 for m in pair):
        out.append(index_row(backend, *pair))  # type: ignore[arg-type]
        out.append(index_cpu_row(backend, pair[0], pair[2]))  # type: ignore[arg-type]
    return out


def index_cpu_row(backend: str, on: Measure, off: Measure) -> dict[str, Any]:
    """The per-actor index's cost in the server's CPU (its background process included) per
    command, counted until a checkpoint covers what the load wrote: with it / without."""
    key = "server_cpu_ms_per_request_settled"
    cpu_on, cpu_off = on.extra.get(key), off.extra.get(key)
    ratio = None if not cpu_on or not cpu_off else cpu_on / cpu_off
    return {"backend": backend, "key": "index_cpu",
            "measure": "server CPU per command until its checkpoint, index kept vs not",
            "rate": None if cpu_on is None else round(1000 * cpu_on),
            "unit": "µs", "commands_per_s": None, "baseline": "no actor index",
            "baseline_rate": None if cpu_off is None else round(1000 * cpu_off),
            "ratio": None if ratio is None else round(ratio, 3),
            "goal": f"<= {INDEX_CPU_GOAL:.2f}x",
            "met": ratio is not None and ratio <= INDEX_CPU_GOAL, "errors": 0}


def index_row(backend: str, on: Measure, on_noop: Measure, off: Measure,
              off_noop: Measure) -> dict[str, Any]:
    """The per-actor index's cost: the HTTP command on a server keeping it (the default)
    against the same command on a server without it, in the same run. The servers run one
    after the other, so each command's rate is taken relative to its own server's no-op
    (measured in alternating rounds): the ratio of the two is what the index leaves of the
    command's rate, with the machine's load over each server's minute divided out."""
    ratio = (on.rate / on_noop.rate) / (off.rate / off_noop.rate)
    cpu = [m.extra.get("server_cpu_ms_per_request") for m in (on, off)]
    settled = [m.extra.get("server_cpu_ms_per_request_settled") for m in (on, off)]
    return {"backend": backend, "key": "index_cost",
            "measure": "per-actor index kept (default) vs not: HTTP command / no-op",
            "rate": round(on.rate, 1), "unit": on.unit, "commands_per_s": None,
            "baseline": off.label, "baseline_rate": round(off.rate, 1),
            "ratio": round(ratio, 3), "goal": f">= {INDEX_GOAL:.2f}x",
            "met": on.errors == 0 and off.errors == 0 and ratio >= INDEX_GOAL,
            "errors": on.errors + off.errors, "raw_ratio": round(on.rate / off.rate, 3),
            "server_cpu_ms_per_request": {"index": cpu[0], "no_index": cpu[1]},
            "server_cpu_ms_per_request_settled": {"index": settled[0], "no_index": settled[1]}}


def _rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A backend's table rows; its measures become their JSON."""
    table = rows(result["backend"], result["measures"])
    result["measures"] = [m.as_json() for m in result["measures"]]
    return table


def _failed(backend: str, exc: Exception) -> dict[str, Any]:
    return {"backend": backend, "key": "error", "measure": f"FAILED: {exc!r}"[:200],
            "rate": None, "unit": "", "baseline": None, "baseline_rate": None,
            "ratio": None, "goal": None, "met": False, "errors": 1}


def run(backends: list[str], quick: bool) -> dict[str, Any]:
    """The whole suite; what run.py prints and writes."""
    sizes = QUICK if quick else FULL
    results, table = run_backends(backends, lambda backend: run_backend(backend, sizes),
                                  _rows_of, _failed)
    return {"suite": "append", "quick": quick, "sizes": asdict(sizes), "results": results,
            "table": table, "all_goals_met": all_met(table), "notes": list(NOTES)}
