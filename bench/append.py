"""`dataledger bench append`: commands/s on the write path, each beside its baseline.

For each backend (a SQLite file in a fresh temporary directory; PostgreSQL in a
fresh schema ``bench_<random>`` that is dropped at the end) it measures, within
the same process and the same minute or so:

1. **bare library** – the store's recorder (``store.recorder.insert_events``: the
   library's recorder class with dataledger's faster single-statement insert) saving
   pre-encoded events (``events.store.to_stored`` of the very domain events the
   command path produces), one transaction per event; once from one thread, once from
   N threads (the library's own concurrency, no grouping). The goal is judged against
   this, the stricter baseline. Also, for information, the library's stock recorder
   unmodified (``SQLiteApplicationRecorder``: BEGIN, INSERT, COMMIT per event;
   ``PostgresApplicationRecorder``: sequence-assigned ids), on a table of its own;
2. **command path, 1 thread** – ``Ledger.execute`` of a real use case (a provider
   registering datasets; the platform registering participants if
   ``domain.dataset`` is absent), group commit on;
3. **command path, N threads** – the same from N threads (group commit groups them);
4. **HTTP** – ``dataledger serve`` in a subprocess on a free loopback port, loaded
   over C keep-alive connections (one request in flight on each) by a minimal
   asyncio HTTP/1.1 client: ``GET /noop`` (the baseline) and the command
   (``POST /datasets`` as an admitted provider if the route exists, else
   ``POST /participants``) for the same duration, one after the other. httpx is used
   for setup, and for one informational "client check" row: a single
   ``httpx.AsyncClient`` with C requests in flight spends milliseconds of CPU per
   request, so it measures itself rather than the server.

Goals (from the issue): the command path costs at most 2x the bare library per
event (ratio of events/s >= 0.5); concurrent HTTP commands reach at least half the
no-op endpoint's rate. Every loop is bounded both in count and in time; all
traffic stays on the loopback interface.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: where PostgreSQL is looked for (a fresh schema is made in this database)
PG_URL = os.environ.get("DATALEDGER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
#: the goal: measured rate / baseline rate must reach this
GOAL_RATIO = 0.5


@dataclass(frozen=True)
class Sizes:
    """How long and how much each measurement runs (it stops at whichever comes first)."""

    seconds: float          # per in-process measurement (split over the rounds)
    http_seconds: float     # per HTTP measurement
    max_count: int          # operations per measurement
    pool_rate: int          # pre-encoded events per second of a bare-library measurement
    warmup: int             # untimed operations before each in-process measurement
    http_warmup: float      # untimed seconds of each HTTP request kind
    rounds: int             # a measurement and its baseline alternate in this many rounds
    threads: int = 16
    http_concurrency: int = 64
    server_start_timeout: float = 60.0


FULL = Sizes(seconds=6.0, http_seconds=6.0, max_count=100_000, pool_rate=6_000, warmup=50,
             http_warmup=1.0, rounds=3)
QUICK = Sizes(seconds=0.4, http_seconds=0.6, max_count=3_000, pool_rate=6_000, warmup=5,
              http_warmup=0.2, rounds=1)


@dataclass
class Measure:
    """One timed run."""

    key: str
    label: str
    unit: str                     # "events/s" or "requests/s"
    count: int                    # events (in process) or successful requests (HTTP)
    seconds: float
    started_at: str
    commands: int | None = None
    errors: int = 0
    first_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def command_rate(self) -> float | None:
        if self.commands is None or self.seconds <= 0:
            return None
        return self.commands / self.seconds

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["rate"] = round(self.rate, 1)
        if self.command_rate is not None:
            out["commands_per_s"] = round(self.command_rate, 1)
        out["seconds"] = round(self.seconds, 4)
        return out


def merge(parts: list[Measure]) -> Measure:
    """One measurement from its rounds (counts and times summed; each round's rate kept)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    commands = [p.commands for p in parts if p.commands is not None]
    extra = dict(first.extra)
    extra["rounds"] = len(parts)
    extra["round_rates"] = [round(p.rate) for p in parts]
    for key in ("transactions", "pool", "events", "client_cpu_s", "server_cpu_s"):
        if key in first.extra:
            extra[key] = round(sum(p.extra.get(key, 0) for p in parts), 3)
    if "pool_exhausted" in first.extra:
        extra["pool_exhausted"] = any(p.extra["pool_exhausted"] for p in parts)
    if "statuses" in first.extra:
        statuses: dict[str, int] = {}
        for p in parts:
            for code, n in p.extra["statuses"].items():
                statuses[code] = statuses.get(code, 0) + n
        extra["statuses"] = statuses
    count = sum(p.count for p in parts)
    if extra.get("transactions"):
        extra["events_per_transaction"] = round(extra["events"] / extra["transactions"], 2)
    for cpu in ("client", "server"):
        if f"{cpu}_cpu_s" in extra and count:
            extra[f"{cpu}_cpu_ms_per_request"] = round(1000 * extra[f"{cpu}_cpu_s"] / count, 3)
    return Measure(first.key, first.label, first.unit, count, sum(p.seconds for p in parts),
                   first.started_at, commands=sum(commands) if commands else None,
                   errors=sum(p.errors for p in parts),
                   first_error=next((p.first_error for p in parts if p.first_error), None),
                   extra=extra)


def alternate(rounds: int, *runs: Callable[[int], Measure]) -> list[Measure]:
    """Run each of ``runs`` once per round, in turn (baseline, measured, baseline, ...)."""
    parts: list[list[Measure]] = [[] for _ in runs]
    for r in range(rounds):
        for n, run_one in enumerate(runs):
            parts[n].append(run_one(r))
    return [merge(p) for p in parts]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- the workload: a real use case, and its domain events pre-encoded ------------------------
class Workload:
    """The use case the command path runs, as which actor, with which arguments."""

    def __init__(self) -> None:
        from api.deps import hash_token
        from domain.base import Actor
        from runtime.build import PLATFORM_ADMIN_ID, PLATFORM_ID

        self._hash_token = hash_token
        self.platform = Actor(PLATFORM_ID, PLATFORM_ADMIN_ID, "platform", ("admin",))
        try:
            from domain import dataset
        except Exception as exc:  # noqa: BLE001 - being written by someone else
            self.name = "platform registers participants (register_participant)"
            self.handler: Callable[..., dict[str, Any]] = _participant_handler()
            self.kwargs = self._participant_kwargs
            self.actor = self.platform
            self.fallback_reason: str | None = f"domain.dataset unusable: {exc!r}"
        else:
            self.name = "provider registers datasets (register_dataset)"
            self.handler = dataset.register_dataset
            self.kwargs = self._dataset_kwargs
            self.actor = self.platform  # replaced by the provider in setup()
            self.fallback_reason = None

    @property
    def uses_datasets(self) -> bool:
        return self.fallback_reason is None

    def _dataset_kwargs(self, i: int) -> dict[str, Any]:
        return {"name": f"bench dataset {i}", "description": "benchmark dataset",
                "source_system": "bench", "classification": "L2",
                "fields": [{"name": "id", "type": "string", "sensitivity": "internal"},
                           {"name": "amount", "type": "decimal", "sensitivity": "sensitive"}]}

    def _participant_kwargs(self, i: int) -> dict[str, Any]:
        return {"name": f"bench org {i}", "role": "provider", "credit_code": f"91{i:016d}",
                "admin_name": f"admin {i}", "admin_token_hash": self._hash_token(f"bench-{i}")}

    def setup(self, ledger: Any) -> None:
        """Found the platform; for datasets also an admitted provider to act as."""
        from domain import participant as uc
        from domain.base import Actor, Context
        from domain.participant import found_platform

        ctx = Context(self.platform, ledger.clock())
        platform = found_platform(self.platform.participant_id, ctx, name="bench platform")
        platform.add_member(ctx, member_id=self.platform.member_id, name="platform admin",
                            member_roles=["admin"], token_hash=self._hash_token(uuid.uuid4().hex))
        ledger.log.append_batches(platform.collect(), [])
        if self.uses_datasets:
            made = ledger.execute(uc.register_participant, self.platform, **self._participant_kwargs(0))
            pid = made.body["participant_id"]
            ledger.execute(uc.decide_admission, self.platform, pid, approve=True, comment="bench")
            self.actor = Actor(pid, made.body["member_id"], "provider", ("admin",))

    def events(self, n: int, start: int) -> list[Any]:
        """The domain events of ``n`` commands, decided in memory (nothing saved)."""
        from domain.application import utc_now
        from domain.base import Context
        from domain.unit_of_work import UnitOfWork

        class _Fresh(UnitOfWork):
            def _load(self, cls: Any, id: str) -> Any:
                return None

        out: list[Any] = []
        for i in range(start, start + n):
            uow = _Fresh()
            self.handler(uow, Context(self.actor, utc_now()), **self.kwargs(i))
            out += [e for agg in uow.pending() for e in agg.collect()]
        return out


def _participant_handler() -> Callable[..., dict[str, Any]]:
    from domain.participant import register_participant

    return register_participant


class _CountingLog:
    """The application's LedgerLog, counting the transactions the committer makes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.transactions = 0
        self.events = 0

    def load(self, originator_id: str, after_version: int = 0) -> list[Any]:
        return self.inner.load(originator_id, after_version)  # type: ignore[no-any-return]

    def append_batches(self, events: list[Any], batches: list[Any]) -> list[int]:
        seqs: list[int] = self.inner.append_batches(events, batches)
        self.transactions += 1
        self.events += len(events)
        return seqs

    def idempotent_answer(self, member_id: str, key: str) -> Any:
        return self.inner.idempotent_answer(member_id, key)


# -- in-process measurements ----------------------------------------------------------------
def _run_threads(threads: int, seconds: float, max_count: int,
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


def measure_bare(recorder: Any, workload: Workload, sizes: Sizes, threads: int, key: str,
                 label: str, offset: int, seconds: float | None = None) -> Measure:
    """The bare library: ``recorder.insert_events([stored])``, one transaction per event."""
    from events.store import to_stored

    seconds = sizes.seconds if seconds is None else seconds
    wanted = min(sizes.max_count, max(sizes.warmup + 10, int(seconds * sizes.pool_rate)))
    per_command = max(1, len(workload.events(1, offset)))
    commands = wanted // per_command + 1
    pool = [to_stored(e) for e in workload.events(commands, offset + 1)][:wanted]
    for stored in pool[:sizes.warmup]:
        recorder.insert_events([stored])
    timed = pool[sizes.warmup:]
    started = _now()
    ops, events, errors, elapsed, first = _run_threads(
        threads, seconds, len(timed), lambda i: (recorder.insert_events([timed[i]]), 1)[1])
    return Measure(key, label, "events/s", events, elapsed, started, errors=errors,
                   first_error=first,
                   extra={"threads": threads, "pool": len(timed),
                          "pool_exhausted": ops + errors >= len(timed)})


def measure_commands(ledger: Any, log: _CountingLog, workload: Workload, sizes: Sizes,
                     threads: int, key: str, label: str, offset: int,
                     seconds: float | None = None) -> Measure:
    """``Ledger.execute`` of the workload's use case from ``threads`` threads."""
    def op(i: int) -> int:
        return len(ledger.execute(workload.handler, workload.actor,
                                  **workload.kwargs(offset + i)).seqs)

    for i in range(sizes.warmup):
        op(sizes.max_count + i)
    tx0, ev0 = log.transactions, log.events
    started = _now()
    seconds = sizes.seconds if seconds is None else seconds
    ops, events, errors, elapsed, first = _run_threads(threads, seconds, sizes.max_count, op)
    tx = log.transactions - tx0
    return Measure(key, label, "events/s", events, elapsed, started, commands=ops,
                   errors=errors, first_error=first,
                   extra={"threads": threads, "transactions": tx, "events": log.events - ev0,
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
        return measure_bare(recorder, workload, sizes, 1, "stock_pg_1",
                            "bare library, stock PG recorder, 1 thread", offset)
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
        return measure_bare(recorder, workload, sizes, 1, "stock_sqlite_1",
                            "bare library, stock SQLite recorder, 1 thread", offset)
    finally:
        datastore.close()


# -- HTTP ------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_command() -> list[str]:
    exe = Path(sys.executable).with_name("dataledger")
    if exe.exists():
        return [str(exe), "serve"]
    found = shutil.which("dataledger")
    return [found, "serve"] if found else [sys.executable, "-m", "cli", "serve"]


def _cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of a process and its live descendants (Linux /proc), or None.

    ``serve`` runs its projections and chain in a child process by default: its CPU is
    the server's too.
    """
    def stat(p: int) -> list[str]:
        return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()

    try:
        own = stat(pid)
    except (OSError, IndexError, ValueError):
        return None
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents.setdefault(int(stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    ticks = int(own[11]) + int(own[12])
    todo = list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        try:
            fields = stat(child)
        except (OSError, IndexError, ValueError):
            continue
        ticks += int(fields[11]) + int(fields[12])
        todo += parents.get(child, [])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def running_server(env_extra: dict[str, str], workdir: Path,
                   timeout: float) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``dataledger serve`` on a free loopback port, up (``/health`` answers) until exit."""
    import httpx

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATALEDGER_")}
    env.update(env_extra)
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen([*_server_command(), "--host", "127.0.0.1", "--port", str(port)],
                            env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dataledger serve exited with {proc.returncode}; see "
                                   f"{workdir / 'server.log'}: {_tail(workdir / 'server.log')}")
            try:
                if httpx.get(base + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"dataledger serve not healthy after {timeout:.0f} s")
            time.sleep(0.1)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


def _tail(path: Path, n: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Callable[[int], dict[str, Any]] | None = None

    def encode(self, i: int) -> bytes:
        """The HTTP/1.1 request bytes (keep-alive) of the ``i``-th request."""
        payload = b"" if self.body is None else json.dumps(self.body(i)).encode()
        head = [f"{self.method} {self.path} HTTP/1.1", "Host: 127.0.0.1",
                *(f"{k}: {v}" for k, v in self.headers.items())]
        if self.body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    data: bytes) -> tuple[int, bytes, bool]:
    """Send one request, read its response: (status, body, server closes)."""
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:] if line)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection", "").lower() == "close"


async def _raw_load(port: int, request: _Request, seconds: float, max_count: int,
                    concurrency: int) -> tuple[int, int, float, dict[int, int], str | None]:
    """``concurrency`` keep-alive connections, one request in flight on each, for ``seconds``.

    A minimal HTTP/1.1 client on asyncio streams (about 0.03 ms of CPU per request),
    so that the server, not the client, is what is measured.
    """
    counter = itertools.count()
    ok = errors = 0
    statuses: dict[int, int] = {}
    first_error: list[str] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal ok, errors
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while time.perf_counter() < deadline:
                i = next(counter)
                if i >= max_count:
                    return
                try:
                    if conn is None:
                        conn = await asyncio.wait_for(
                            asyncio.open_connection("127.0.0.1", port), 10)
                    status, body, close = await asyncio.wait_for(
                        _exchange(*conn, request.encode(i)), 30)
                except (TimeoutError, OSError, EOFError, ValueError, IndexError,
                        asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    errors += 1
                    if not first_error:
                        first_error.append(repr(exc))
                    if conn is not None:
                        conn[1].close()
                    conn = None
                    continue
                statuses[status] = statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    ok += 1
                else:
                    errors += 1
                    if not first_error:
                        first_error.append(f"{status} {body[:300]!r}")
                if close:
                    conn[1].close()
                    conn = None
        finally:
            if conn is not None:
                conn[1].close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, errors, time.perf_counter() - start, statuses, \
        first_error[0] if first_error else None


async def _httpx_load(client: Any, request: _Request, seconds: float, max_count: int,
                      concurrency: int) -> tuple[int, int, float, dict[int, int], str | None]:
    """The same through one ``httpx.AsyncClient`` (``concurrency`` requests in flight)."""
    counter = itertools.count()
    ok = errors = 0
    statuses: dict[int, int] = {}
    first_error: list[str] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal ok, errors
        while time.perf_counter() < deadline:
            i = next(counter)
            if i >= max_count:
                return
            try:
                response = await client.request(
                    request.method, request.path, headers=request.headers,
                    json=None if request.body is None else request.body(i))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors += 1
                if not first_error:
                    first_error.append(repr(exc))
                continue
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if 200 <= response.status_code < 300:
                ok += 1
            else:
                errors += 1
                if not first_error:
                    first_error.append(f"{response.status_code} {response.text[:300]}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, errors, time.perf_counter() - start, statuses, \
        first_error[0] if first_error else None


async def _timed(key: str, label: str, pid: int, load: Any, commands: bool) -> Measure:
    """Run one load, with the CPU the server and this client spent on it."""
    started = _now()
    server0, client0 = _cpu_seconds(pid), time.process_time()
    ok, errors, elapsed, statuses, first = await load
    server1, client1 = _cpu_seconds(pid), time.process_time()
    extra: dict[str, Any] = {"statuses": {str(k): v for k, v in statuses.items()},
                             "client_cpu_s": round(client1 - client0, 3)}
    if server0 is not None and server1 is not None:
        extra["server_cpu_s"] = round(server1 - server0, 3)
        if ok:
            extra["server_cpu_ms_per_request"] = round(1000 * (server1 - server0) / ok, 3)
    if ok:
        extra["client_cpu_ms_per_request"] = round(1000 * (client1 - client0) / ok, 3)
    return Measure(key, label, "requests/s", ok, elapsed, started,
                   commands=ok if commands else None, errors=errors, first_error=first,
                   extra=extra)


async def _http_suite(base: str, pid: int, admin_token: str, workload: Workload,
                      sizes: Sizes, offset: int) -> tuple[list[Measure], list[str]]:
    import httpx

    notes: list[str] = []
    port = int(base.rsplit(":", 1)[1])
    admin = {"Authorization": f"Bearer {admin_token}"}
    c = sizes.http_concurrency
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30.0) as client:
        command = await _command_request(client, admin, workload, offset, notes)
        noop = _Request("GET", "/noop", {})
        for request in (noop, command):  # warm the connections and the code paths
            await _raw_load(port, request, sizes.http_warmup, sizes.max_count, c)
        secs = sizes.http_seconds / sizes.rounds
        noops, commands = [], []
        for _ in range(sizes.rounds):  # the baseline and the command alternate
            noops.append(await _timed(
                "http_noop", f"HTTP GET /noop, {c} connections", pid,
                _raw_load(port, noop, secs, sizes.max_count, c), False))
            commands.append(await _timed(
                "http_command", f"HTTP {command.method} {command.path}, {c} connections", pid,
                _raw_load(port, command, secs, sizes.max_count, c), True))
        out = [merge(noops), merge(commands)]
        # for information: the same no-op load through one httpx.AsyncClient
        await _httpx_load(client, noop, sizes.http_warmup, sizes.max_count, c)
        out.append(await _timed(
            "http_noop_httpx", f"(client check) GET /noop via one httpx.AsyncClient, {c} in flight",
            pid, _httpx_load(client, noop, sizes.http_seconds / 2, sizes.max_count, c), False))
    for m in out:
        m.extra["concurrency"] = c
    return out, notes


async def _command_request(client: Any, admin: dict[str, str], workload: Workload, offset: int,
                           notes: list[str]) -> _Request:
    """POST /datasets as an admitted provider if the route exists, else POST /participants."""
    participants = _Request("POST", "/participants", admin,
                            lambda i: {k: v for k, v in workload._participant_kwargs(offset + i)
                                       .items() if k != "admin_token_hash"})
    try:
        paths = (await client.get("/openapi.json")).json().get("paths", {})
    except Exception as exc:  # noqa: BLE001
        notes.append(f"openapi.json unreadable ({exc!r}); POST /participants used")
        return participants
    if not workload.uses_datasets or "post" not in paths.get("/datasets", {}):
        notes.append("no POST /datasets route (or no domain.dataset): the HTTP command is "
                     "POST /participants (the platform onboards an organization, 2 events)")
        return participants
    made = await client.post("/participants", headers=admin,
                             json=participants.body(10_000_000) if participants.body else {})
    if made.status_code != 201:
        notes.append(f"provider setup failed ({made.status_code}); POST /participants used")
        return participants
    pid, token = made.json()["participant_id"], made.json()["token"]
    admitted = await client.post(f"/participants/{pid}/admission", headers=admin,
                                 json={"approve": True, "comment": "bench"})
    datasets = _Request("POST", "/datasets", {"Authorization": f"Bearer {token}"},
                        lambda i: workload._dataset_kwargs(offset + i))
    probe = await client.post("/datasets", headers=datasets.headers,
                              json=workload._dataset_kwargs(offset - 1))
    if admitted.status_code >= 300 or probe.status_code >= 300:
        notes.append(f"POST /datasets refused ({admitted.status_code}/{probe.status_code}: "
                     f"{probe.text[:200]}); POST /participants used")
        return participants
    return datasets


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the client if installed (as uvicorn uses it for the server)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


# -- one backend -----------------------------------------------------------------------------
def _drop_schemas(url: Any, schemas: list[str]) -> None:
    import psycopg
    from psycopg.sql import SQL, Identifier

    with psycopg.connect(host=url.host, port=url.port, user=url.user,
                         password=url.password or None, dbname=url.dbname,
                         autocommit=True, connect_timeout=10) as conn:
        for schema in schemas:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {0} CASCADE").format(Identifier(schema)))


def _check_postgres(url: Any) -> None:
    import psycopg

    with psycopg.connect(host=url.host, port=url.port, user=url.user,
                         password=url.password or None, dbname=url.dbname,
                         connect_timeout=5) as conn:
        conn.execute("SELECT 1")


def run_backend(backend: str, sizes: Sizes) -> dict[str, Any]:
    """Every measurement of one backend; the temporary database is removed at the end."""
    from events.commit import new_ledger
    from events.store import DatabaseURL, LedgerLog, open_store

    tag = secrets.token_hex(4)
    tmp = Path(tempfile.mkdtemp(prefix=f"dataledger-bench-{backend}-"))
    notes: list[str] = []
    measures: list[Measure] = []
    schemas: list[str] = []
    workload = Workload()
    if workload.fallback_reason:
        notes.append(workload.fallback_reason + "; the workload is register_participant")
    try:
        if backend == "sqlite":
            url = DatabaseURL.parse(f"sqlite:///{tmp / 'inproc' / 'ledger.db'}")
            server_env = {"DATALEDGER_DATA_DIR": str(tmp / "http")}
        else:
            base = DatabaseURL.parse(PG_URL)
            _check_postgres(base)
            schemas = [f"bench_{tag}", f"bench_{tag}_http"]
            url = DatabaseURL.parse(f"{PG_URL}?schema={schemas[0]}")
            server_env = {"DATALEDGER_DATA_DIR": str(tmp / "http"),
                          "DATALEDGER_DATABASE_URL": f"{PG_URL}?schema={schemas[1]}"}
        store = open_store(url)
        log = _CountingLog(LedgerLog(store))
        ledger = new_ledger(log, group_commit=True)
        try:
            workload.setup(ledger)
            n = sizes.threads
            block = 10 * sizes.max_count  # disjoint argument ranges per measurement
            # each baseline and its command path alternate, one thread then N threads
            secs = sizes.seconds / sizes.rounds
            for threads, suffix, first in ((1, "1", 1), (n, "n", 3)):
                plural = "s" if threads > 1 else ""

                def bare(r: int, t: int = threads, k: str = f"bare_{suffix}",
                         o: int = first * block, p: str = plural) -> Measure:
                    return measure_bare(store.recorder, workload, sizes, t, k,
                                        f"bare library, {t} thread{p}, 1 tx/event",
                                        o + r * sizes.max_count, secs)

                def command(r: int, t: int = threads, k: str = f"command_{suffix}",
                            o: int = (first + 1) * block, p: str = plural) -> Measure:
                    return measure_commands(ledger, log, workload, sizes, t, k,
                                            f"command path, {t} thread{p}",
                                            o + r * sizes.max_count, secs)

                measures += alternate(sizes.rounds, bare, command)
        finally:
            ledger.close()
            store.close()
        if backend == "postgresql":
            measures.append(measure_stock_postgres(url, workload, sizes, 5 * block))
        else:
            measures.append(measure_stock_sqlite(tmp / "stock" / "ledger.db", workload, sizes,
                                                 5 * block))
        admin_token = "bench" + secrets.token_hex(16)[:27]  # 32 characters
        (tmp / "http").mkdir(parents=True, exist_ok=True)
        with (running_server({**server_env, "DATALEDGER_ADMIN_TOKEN": admin_token}, tmp,
                             sizes.server_start_timeout) as (proc, base_url),
              asyncio.Runner(loop_factory=_loop_factory()) as runner):
            http, http_notes = runner.run(_http_suite(base_url, proc.pid, admin_token,
                                                      workload, sizes, 6 * block))
        measures += http
        notes += http_notes
    finally:
        if schemas:
            try:
                _drop_schemas(DatabaseURL.parse(PG_URL), schemas)
            except Exception as exc:  # noqa: BLE001 - reported, not fatal
                notes.append(f"could not drop schemas {schemas}: {exc!r}")
        shutil.rmtree(tmp, ignore_errors=True)
    return {"backend": backend, "workload": workload.name, "measures": measures, "notes": notes}


# -- the table rows ----------------------------------------------------------------------------
#: measured key -> (baseline key, what the ratio means)
COMPARISONS = {
    "command_1": "bare_1",
    "command_n": "bare_n",
    "http_command": "http_noop",
}


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
    return out


def run(backends: list[str], quick: bool) -> dict[str, Any]:
    """The whole suite; what run.py prints and writes."""
    sizes = QUICK if quick else FULL
    results: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    for backend in backends:
        t0 = time.monotonic()
        try:
            result = run_backend(backend, sizes)
        except Exception as exc:  # noqa: BLE001 - one backend failing is reported
            results.append({"backend": backend, "error": repr(exc)})
            table.append({"backend": backend, "key": "error", "measure": f"FAILED: {exc!r}"[:200],
                          "rate": None, "unit": "", "baseline": None, "baseline_rate": None,
                          "ratio": None, "goal": None, "met": False, "errors": 1})
            continue
        result["wall_seconds"] = round(time.monotonic() - t0, 1)
        table += rows(backend, result["measures"])
        result["measures"] = [m.as_json() for m in result["measures"]]
        results.append(result)
    goals = [r["met"] for r in table if r["met"] is not None]
    return {"suite": "append", "quick": quick, "sizes": asdict(sizes), "results": results,
            "table": table, "all_goals_met": bool(goals) and all(goals),
            "notes": [
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
            ]}
