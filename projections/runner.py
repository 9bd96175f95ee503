"""Runs projections: follow the log in order, write read models and positions atomically."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Engine, create_engine, event, inspect, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.pool import QueuePool

from core.record import LogEntry
from events.store import EventStore, follow_on
from events.url import DatabaseURL
from projections.base import METADATA, BufferedConnection, Projection, tracking

log = logging.getLogger(__name__)


def views_engine(url: DatabaseURL, sqlite_path: str | None = None) -> Engine:
    """The engine of the read models: a SQLite file of its own, or the same PostgreSQL."""
    if url.kind == "sqlite":
        engine = create_engine(f"sqlite:///{sqlite_path or ':memory:'}",
                               connect_args={"check_same_thread": False, "timeout": 30},
                               poolclass=QueuePool, pool_size=48, max_overflow=16)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")

        return engine
    options = f"-csearch_path={url.schema}"
    return create_engine(url.sqlalchemy_url(), connect_args={"options": options},
                         pool_size=16, max_overflow=32)


def _positions(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(tracking.c.projection, tracking.c.seq)).all()
    return {str(name): int(seq) for name, seq in rows}


def _upsert_tracking(conn: Connection, names: list[str], seq: int) -> None:
    """Record ``seq`` as the position of every projection in ``names`` (one statement)."""
    if not names:
        return
    if conn.dialect.name == "postgresql":  # one statement, not an executemany of one per name
        conn.exec_driver_sql(
            f"INSERT INTO {tracking.name} (projection, seq) SELECT unnest(%b::varchar[]), %s "
            "ON CONFLICT (projection) DO UPDATE SET seq = excluded.seq "
            f"WHERE {tracking.name}.seq < excluded.seq", (names, seq))
        return
    stmt = sqlite.insert(tracking)
    conn.execute(stmt.on_conflict_do_update(index_elements=["projection"],
                                            set_={"seq": stmt.excluded.seq},
                                            where=tracking.c.seq < stmt.excluded.seq),
                 [{"projection": name, "seq": seq} for name in names])


#: PostgreSQL: the advisory lock that one applier (or a rebuild) holds at a time, across
#: processes, for the length of its transaction
APPLY_LOCK = 7263001


def _lock_appliers(conn: Connection) -> None:
    """Take APPLY_LOCK for ``conn``'s transaction (PostgreSQL; on SQLite its one writer at
    a time serializes the appliers)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SELECT pg_advisory_xact_lock({APPLY_LOCK})"))


class ProjectionRunner:
    """Catches every projection up with the log; safe to repeat after a crash."""

    def __init__(self, store: EventStore, engine: Engine, projections: Sequence[Projection],
                 batch_size: int = 500) -> None:
        self.store = store
        self.engine = engine
        self.projections = list(projections)
        self.batch_size = batch_size
        self.position = 0
        self._lock = threading.Lock()
        self._advanced = threading.Condition()
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: called after each committed batch with the event type names it held
        self.on_applied: list[Callable[[set[str]], None]] = []
        #: when another process applies the projections (see ``follow``): asks it to hurry
        self._hurry: Callable[[], None] | None = None
        self._follow_lock = threading.Lock()

    def create_tables(self) -> None:
        """Create every read-model table that does not exist; if a table lacks a column this
        version declares (read models made by an older version), drop them all: the catch-up
        rebuilds them from seq 1 (they are projections of the log; nothing is lost)."""
        missing = self._missing_columns()
        if missing:
            log.warning("read models lack columns %s: rebuilding them from the log",
                        ", ".join(missing))
            METADATA.drop_all(self.engine)
        METADATA.create_all(self.engine)
        self.position = self._min_position()

    def _missing_columns(self) -> list[str]:
        found = inspect(self.engine)
        missing: list[str] = []
        for table in METADATA.sorted_tables:
            if found.has_table(table.name):
                have = {c["name"] for c in found.get_columns(table.name)}
                missing += [f"{table.name}.{c.name}" for c in table.columns
                            if c.name not in have]
        return missing

    def _min_position(self) -> int:
        with self.engine.connect() as conn:
            return self.committed_position(conn)

    def committed_position(self, conn: Connection) -> int:
        """The seq up to which every projection's writes (and acl grants) are committed, as
        ``conn`` reads them (any process's applier may have advanced them)."""
        return self._lowest(_positions(conn))

    def _lowest(self, positions: dict[str, int]) -> int:
        return min((positions.get(p.name, 0) for p in self.projections), default=0)

    def catch_up(self) -> int:
        """Apply every stored event not yet applied; return the new position. Raises
        LogGapError at a seq missing from the log, having applied the events before it (a
        read model never goes past an event it did not see)."""
        with self._lock:
            while True:
                entries = self.store.read(self.position, self.batch_size)
                if not entries:
                    return self.position
                follow_on(self.position, entries)
                behind = self._apply(entries)
                if behind is not None:  # the read models were rebuilt meanwhile: from there
                    log.warning("read models at seq %d, not %d (rebuilt by another process): "
                                "applying from there", behind, self.position)
                    with self._advanced:
                        self.position = behind
                    continue
                with self._advanced:
                    self.position = entries[-1].seq
                    self._advanced.notify_all()
                types = {e.type_name for e in entries}
                for hook in self.on_applied:
                    hook(types)

    def _apply(self, entries: list[LogEntry]) -> int | None:
        """Apply ``entries`` and record the positions, in one transaction; or, if some
        projection's committed position is short of the event before them (another process
        dropped and rebuilt the read models since this one read its position), nothing, and
        return the committed position to read from."""
        payloads = [entry.payload() for entry in entries]
        with self.engine.begin() as raw:
            _lock_appliers(raw)
            positions = _positions(raw)
            committed = self._lowest(positions)
            if committed < entries[0].seq - 1:
                return committed
            conn = BufferedConnection(raw)
            advanced = []
            for projection in self.projections:
                done = positions.get(projection.name, 0)
                handlers = projection.handlers()
                for entry, payload in zip(entries, payloads, strict=True):
                    handler = handlers.get(entry.type_name)
                    if entry.seq > done and handler is not None:
                        handler(conn, entry, payload)  # type: ignore[arg-type]
                if entries[-1].seq > done:
                    advanced.append(projection.name)
            conn.flush()
            _upsert_tracking(raw, advanced, entries[-1].seq)
        return None

    def rebuild(self) -> int:
        """Drop every read model and build it again from seq 1.

        Refused (LogGapError, nothing dropped) over a log with a missing seq. Safe beside a
        live applier (``serve``): on PostgreSQL the drop waits for the batch
        it is applying; on either backend it then finds its position gone and applies from
        seq 1 again, as this catch-up does (each event once: positions are per projection).
        """
        self.store.check_gap_free()
        with self._lock:
            with self.engine.begin() as conn:
                _lock_appliers(conn)
                METADATA.drop_all(conn)
                METADATA.create_all(conn)
            self.position = 0
        return self.catch_up()

    def digests(self) -> dict[str, str]:
        """Each projection's state digest (equal states, equal digests)."""
        with self.engine.connect() as conn:
            return {p.name: p.digest(conn) for p in self.projections}

    # -- background ------------------------------------------------------------------
    def start(self, poll_interval: float = 0.5) -> None:
        """Follow the log in a thread: on ``notify`` or every ``poll_interval`` seconds."""
        self._thread = threading.Thread(target=self._loop, args=(poll_interval,),
                                        name="projections", daemon=True)
        self._thread.start()

    def follow(self, hurry: Callable[[], None], poll_interval: float = 0.05) -> None:
        """Another process applies the projections (same store, same read models): follow
        its position in the tracking table instead of applying here.

        A thread reads the position every ``poll_interval`` seconds and calls the
        ``on_applied`` hooks with the types of the events newly projected; ``wait_for``
        asks the other process to ``hurry`` and reads the position until it is reached.
        """
        self._hurry = hurry
        self._thread = threading.Thread(target=self._follow_loop, args=(poll_interval,),
                                        name="projections-follower", daemon=True)
        self._thread.start()

    def _follow_loop(self, poll_interval: float) -> None:
        while not self._stop.wait(poll_interval):
            try:
                self._refresh()
            except Exception:  # keep following; the next round retries
                log.exception("reading the projections' position failed")

    def _refresh(self) -> int:
        """Read the position the other process reached; run the hooks for what it applied."""
        with self._follow_lock:
            old, new = self.position, self._min_position()
            if new <= old:
                return old
            types = self.store.types_between(old, new)
            with self._advanced:
                self.position = new
                self._advanced.notify_all()
            for hook in self.on_applied:
                hook(types)
            return new

    def hurry(self) -> None:
        """A reader waits: catch up now, not at the end of the current batching window."""
        self._urgent.set()
        self._wake.set()

    def notify(self) -> None:
        """New events were stored: catch up soon."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._urgent.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self, poll_interval: float) -> None:
        while not self._stop.is_set():
            self._wake.wait(poll_interval)
            self._wake.clear()
            try:
                self.catch_up()
            except Exception:  # keep following; the next round retries from the position
                log.exception("projection catch-up failed")
                time.sleep(poll_interval)
            # Under load, take the events of up to 50 ms in one batch, unless a reader waits.
            self._urgent.wait(0.05)
            self._urgent.clear()

    def wait_for(self, seq: int, timeout: float = 5.0) -> bool:
        """Block until every event up to ``seq`` is projected (False on timeout)."""
        if self.position >= seq:
            return True
        if self._hurry is not None:  # another process applies them
            deadline = time.monotonic() + timeout
            self._hurry()
            while self._refresh() < seq:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.002)
            return True
        if self._thread is None:
            return self.catch_up() >= seq
        self._urgent.set()
        self.notify()
        deadline = time.monotonic() + timeout
        with self._advanced:
            while self.position < seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._advanced.wait(left)
        return True
