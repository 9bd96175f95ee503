"""Store wiring on the eventsourcing library's recorders (SQLite file or PostgreSQL).

Each stored event gets a global, gap-free sequence number ``seq`` (the library's
notification id). Two small extensions of the library's application recorders,
both inside the same transaction as the events:

* idempotency records (member, key) → the first answer, so that a retried request
  writes nothing new;
* on PostgreSQL, notification ids are assigned as MAX+1 under the library's table
  lock instead of from a sequence, so a rolled-back insert leaves no gap (a
  PostgreSQL sequence is not transactional).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse
from uuid import UUID

from eventsourcing.persistence import (
    IntegrityError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
from psycopg.sql import SQL, Identifier

from events.canonical import canonical_bytes, decode, stored_event_bytes
from events.catalogue import Event, event_class

__all__ = ["AdmissionChanged", "DatabaseURL", "EventStore", "IdempotencyRecord", "IntegrityError",
           "LogEntry", "open_store"]


class AdmissionChanged(IntegrityError):
    """The acting participant's stream moved past the version its admission was read at."""


@dataclass(frozen=True)
class IdempotencyRecord:
    """The first answer to a request carrying an Idempotency-Key."""

    member_id: str
    key: str
    fingerprint: str
    response: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogEntry:
    """One stored event as the log holds it."""

    seq: int
    originator_id: str
    version: int
    type_name: str
    payload_bytes: bytes

    def canonical(self) -> bytes:
        """The canonical bytes of the whole stored event (the Merkle leaf preimage)."""
        return stored_event_bytes(self.seq, self.originator_id, self.version,
                                  self.type_name, self.payload_bytes)

    def payload(self) -> Any:
        """The decoded payload."""
        return decode(self.payload_bytes)

    def event(self) -> Event:
        """The domain event (upcast to its current class version)."""
        return event_class(self.type_name).from_payload(
            self.originator_id, self.version, self.payload())


def to_stored(event: Event) -> StoredEvent:
    """Domain event → the library's StoredEvent: topic is the stable type name."""
    return StoredEvent(originator_id=event.originator_id,
                       originator_version=event.originator_version,
                       topic=event.type_name, state=canonical_bytes(event.payload()))


def from_stored(stored: StoredEvent) -> Event:
    """The library's StoredEvent → domain event."""
    return event_class(stored.topic).from_payload(
        str(stored.originator_id), stored.originator_version, decode(stored.state))


def _check_read(originator_id: str, read: int, current: int | None,
                error: type[IntegrityError] = IntegrityError) -> None:
    """Refuse the append if an aggregate the decision read has changed since."""
    if (current or 0) != read:
        raise error(f"{originator_id} changed since it was read: version {current}, "
                    f"read at {read}")


def _checks(kwargs: dict[str, Any]) -> list[tuple[str, int, type[IntegrityError]]]:
    """The versions an append must find unchanged: the decisions' reads, then the acting
    participants' admissions (read from the command path's cache, see Ledger._prepare)."""
    return [*((i, v, IntegrityError) for i, v in kwargs.get("reads", {}).items()),
            *((i, v, AdmissionChanged) for i, v in kwargs.get("admissions", ()))]


def _response_rows(batches: Sequence[tuple[int, IdempotencyRecord | None]],
                   ids: Sequence[int]) -> list[tuple[str, str, str, bytes]]:
    """Idempotency rows for the batches (n events each) that carry a key."""
    rows, start = [], 0
    for n, record in batches:
        if record is not None:
            response = dict(record.response, seqs=list(ids[start:start + n]))
            rows.append((record.member_id, record.key, record.fingerprint,
                         canonical_bytes(response)))
        start += n
    return rows


#: SQLite caps an expression's depth at 1000: a group with more read and admission checks
#: than this goes the stepwise way (BEGIN, inserts, checks, COMMIT) instead of one statement
MAX_WHERE_CHECKS = 200


class SQLiteLedgerRecorder(SQLiteApplicationRecorder):
    """The library's SQLite application recorder plus the idempotency table."""

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(),
                ("CREATE TABLE IF NOT EXISTS idempotency (member_id TEXT, key TEXT, "
                 "fingerprint TEXT, response BLOB, PRIMARY KEY (member_id, key))")]

    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        # Insert first: the first write takes SQLite's write lock (waiting up to the busy
        # timeout); a read first would make a deferred transaction fail at once with
        # "database is locked" if another connection wrote meanwhile. The reads are then
        # checked under the lock (this command's own inserts never touch them).
        ids = self._insert_rows(c, stored_events)
        for originator_id, version, error in _checks(kwargs):
            c.execute(f"SELECT MAX(originator_version) FROM {self.events_table_name} "
                      "WHERE originator_id=?", (originator_id,))
            _check_read(originator_id, version, c.fetchone()[0], error)
        rows = _response_rows(kwargs.get("batches", ()), ids)
        if rows:
            c.executemany("INSERT INTO idempotency VALUES (?,?,?,?)", rows)
        return ids

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        """Store events (and idempotency rows) atomically; their notification ids.

        The usual group (no idempotency row, at most 500 events) is one INSERT … SELECT
        … WHERE <every check holds> in autocommit mode: one statement is atomic by
        itself, so no BEGIN and no COMMIT, and the committer waits for the GIL once per
        group rather than at each of four statements. Everything else goes the library's
        way: BEGIN, the statements below, COMMIT.
        """
        batches = kwargs.get("batches", ())
        checks = _checks(kwargs)
        if (not stored_events or len(stored_events) > 500 or len(checks) > MAX_WHERE_CHECKS
                or any(record is not None for _, record in batches)):
            return super().insert_events(stored_events, **kwargs)
        rows = ",".join(["(?,?,?,?)"] * len(stored_events))
        check = (f"(SELECT IFNULL(MAX(originator_version), 0) FROM {self.events_table_name} "
                 "WHERE originator_id=?) = ?")
        where = " AND ".join([check] * len(checks)) or "1"
        params = [*self._row_values(stored_events), *(v for i, n, _ in checks for v in (i, n))]
        with self.datastore.get_connection(commit=True) as conn:
            cursor = conn.cursor().sqlite_cursor
            try:
                cursor.execute(f"INSERT INTO {self.events_table_name} (originator_id, "
                               "originator_version, topic, state) SELECT * FROM (VALUES "
                               f"{rows}) WHERE {where}", params)
                if cursor.rowcount != len(stored_events):  # a check failed: which one?
                    for originator_id, version, error in checks:
                        cursor.execute(f"SELECT MAX(originator_version) FROM "
                                       f"{self.events_table_name} WHERE originator_id=?",
                                       (originator_id,))
                        _check_read(originator_id, version, cursor.fetchone()[0], error)
                    raise IntegrityError("the append's checks failed")
                last = int(cursor.lastrowid or 0)
            except sqlite3.IntegrityError as exc:
                raise IntegrityError(exc) from exc
            except sqlite3.OperationalError as exc:
                raise OperationalError(exc) from exc
            except sqlite3.Error as exc:
                raise PersistenceError(exc) from exc
            finally:
                cursor.close()
        return list(range(last - len(stored_events) + 1, last + 1))

    @staticmethod
    def _row_values(stored_events: Sequence[StoredEvent]) -> list[Any]:
        return [v for s in stored_events for v in (
            s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
            s.originator_version, s.topic, s.state)]

    def _insert_rows(self, c: Any, stored_events: Sequence[StoredEvent]) -> list[int]:
        """Insert the events with one multi-row INSERT per 500 (the library runs one
        INSERT per event); their notification ids.

        Each statement releases the GIL once instead of once per event: under load the
        committer thread then waits for the event loop to hand the GIL back a few times
        per group, not once per event. The writer holds SQLite's write lock and rows are
        never deleted, so the rowids of one statement are consecutive (max + 1 each),
        exactly those the library's one-by-one INSERTs would have given.
        """
        ids: list[int] = []
        for start in range(0, len(stored_events), 500):
            chunk = stored_events[start:start + 500]
            rows = ",".join(["(?,?,?,?)"] * len(chunk))
            c.execute(f"INSERT INTO {self.events_table_name} (originator_id, "
                      f"originator_version, topic, state) VALUES {rows}",
                      self._row_values(chunk))
            last = int(c.lastrowid)
            ids += range(last - len(chunk) + 1, last + 1)
        return ids

    def idempotency(self, member_id: str, key: str) -> tuple[str, bytes] | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT fingerprint, response FROM idempotency WHERE member_id=? AND key=?",
                      (member_id, key))
            row = c.fetchone()
        return None if row is None else (row["fingerprint"], bytes(row["response"]))

    def select_events_after(self, originator_id: str, after: int) -> list[StoredEvent]:
        """One stream's events after a version: a single autocommit SELECT.

        The library's ``select_events`` wraps its SELECT in BEGIN … ROLLBACK; one
        statement is atomic by itself, and the command path reads a stream per command.
        """
        with self.datastore.get_connection(commit=False) as conn:
            cur = conn.cursor()
            cur.execute(f"SELECT topic, state, originator_version FROM {self.events_table_name} "
                        "WHERE originator_id=? AND originator_version>? "
                        "ORDER BY originator_version", (originator_id, after))
            return [StoredEvent(originator_id, row["originator_version"], row["topic"],
                                bytes(row["state"])) for row in cur.fetchall()]


class PostgresLedgerRecorder(PostgresApplicationRecorder):
    """The library's PostgreSQL application recorder, gap-free ids, idempotency table."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        schema, table = Identifier(datastore.schema), Identifier(self.events_table_name)
        self.sql_create_statements.append(SQL(
            "CREATE TABLE IF NOT EXISTS {0}.idempotency (member_id text, key text, "
            "fingerprint text, response bytea, PRIMARY KEY (member_id, key))").format(schema))
        self._max_id = SQL("SELECT COALESCE(MAX(notification_id), 0) AS m FROM {0}.{1}").format(
            schema, table)
        self._insert_with_ids = SQL(
            "INSERT INTO {0}.{1} (originator_id, originator_version, topic, state, "
            "notification_id) VALUES (%s, %s, %s, %s, %s)").format(schema, table)
        self._insert_idem = SQL("INSERT INTO {0}.idempotency VALUES (%s, %s, %s, %s)").format(
            schema)
        self._max_version = SQL("SELECT MAX(originator_version) AS v FROM {0}.{1} "
                                "WHERE originator_id = %s").format(schema, table)
        self._select_idem = SQL("SELECT fingerprint, response FROM {0}.idempotency "
                                "WHERE member_id = %s AND key = %s").format(schema)
        self._check_sql = SQL("(SELECT COALESCE(MAX(originator_version), 0) FROM {0}.{1} "
                              "WHERE originator_id = %s::text) = %s::bigint").format(schema, table)

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        batches = kwargs.get("batches", ())
        if (stored_events and len(stored_events) <= 500
                and all(record is None for _, record in batches)):
            return self._insert_pipelined(stored_events, _checks(kwargs))
        return self._insert_stepwise(stored_events, **kwargs)

    def _insert_pipelined(self, stored_events: Sequence[StoredEvent],
                          checks: list[tuple[str, int, type[IntegrityError]]]) -> list[int]:
        """The usual group (no idempotency row, at most 500 events) in one round trip.

        BEGIN, the library's table lock, one INSERT … SELECT that takes the ids MAX+1…
        under that lock, inserts only if every check holds and notifies the channel,
        then COMMIT: sent as one pipeline, so the committer waits for the network (and
        then for the GIL) once per group instead of at each of eight statements.
        """
        n = len(stored_events)
        rows = SQL(",").join([SQL("(%s::text,%s::bigint,%s::text,%s::bytea,%s::bigint)")] * n)
        where = SQL(" AND ").join([self._check_sql] * len(checks)) if checks else SQL("true")
        statement = SQL(
            "WITH ins AS (INSERT INTO {0}.{1} (originator_id, originator_version, topic, state, "
            "notification_id) SELECT v.i, v.ver, v.t, v.s, m.base + v.o FROM (VALUES {2}) AS "
            "v(i, ver, t, s, o) CROSS JOIN (SELECT COALESCE(MAX(notification_id), 0) AS base "
            "FROM {0}.{1}) AS m WHERE {3} RETURNING notification_id) "
            "SELECT notification_id, pg_notify({4}, '') FROM ins").format(
                Identifier(self.datastore.schema), Identifier(self.events_table_name), rows,
                where, self.channel_name)
        params: list[Any] = [v for i, s in enumerate(stored_events, 1) for v in (
            s.originator_id, s.originator_version, s.topic, s.state, i)]
        params += [v for originator_id, version, _ in checks for v in (originator_id, version)]
        with self.datastore.get_connection() as conn:
            with conn.pipeline(), conn.transaction():
                curs = conn.cursor()
                for lock in self.lock_table_statements:
                    conn.execute(lock, prepare=False)
                curs.execute(statement, params, prepare=False)
            ids = sorted(int(row["notification_id"]) for row in curs.fetchall())
        if len(ids) != n:  # a check failed (nothing was inserted): say which
            with self.datastore.transaction(commit=False) as read:
                for originator_id, version, error in checks:
                    read.execute(self._max_version, (originator_id,))
                    row = read.fetchone()
                    _check_read(originator_id, version, row["v"] if row else None, error)
            raise IntegrityError("the append's checks failed")
        return ids

    def _insert_stepwise(self, stored_events: Sequence[StoredEvent],
                         **kwargs: Any) -> Sequence[int] | None:
        rows_only = not stored_events
        with self.datastore.transaction(commit=True) as curs:
            ids: list[int] = []
            if not rows_only:  # a command that wrote no event still keeps its first answer
                for statement in self.lock_table_statements:
                    curs.execute(statement, prepare=False)
                for originator_id, version, error in _checks(kwargs):
                    curs.execute(self._max_version, (originator_id,))
                    row = curs.fetchone()
                    _check_read(originator_id, version, row["v"] if row else None, error)
                curs.execute(self._max_id)
                row = curs.fetchone()
                base = int(row["m"]) if row else 0
                ids = list(range(base + 1, base + 1 + len(stored_events)))
                curs.executemany(self._insert_with_ids, [
                    (s.originator_id, s.originator_version, s.topic, s.state, i)
                    for s, i in zip(stored_events, ids, strict=True)])
            rows = _response_rows(kwargs.get("batches", ()), ids)
            if rows:
                curs.executemany(self._insert_idem, rows)
            if not rows_only:
                self._notify_channel(curs)
        return ids

    def idempotency(self, member_id: str, key: str) -> tuple[str, bytes] | None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_idem, (member_id, key))
            row = curs.fetchone()
        return None if row is None else (row["fingerprint"], bytes(row["response"]))


@dataclass(frozen=True)
class DatabaseURL:
    """``sqlite:///path`` or ``postgresql://user[:pw]@host:port/db[?schema=name]``."""

    kind: str
    path: str = ""
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    dbname: str = ""
    schema: str = "public"

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        parsed = urlparse(url)
        if parsed.scheme == "sqlite":
            return cls("sqlite", path=url.removeprefix("sqlite:///").removeprefix("sqlite://"))
        if parsed.scheme in ("postgresql", "postgres", "postgresql+psycopg"):
            query = parse_qs(parsed.query)
            return cls("postgresql", host=parsed.hostname or "127.0.0.1",
                       port=parsed.port or 5432, user=parsed.username or "postgres",
                       password=parsed.password or "", dbname=parsed.path.lstrip("/") or "postgres",
                       schema=query.get("schema", ["public"])[0])
        raise ValueError(f"DATALEDGER_DATABASE_URL: unsupported scheme {parsed.scheme!r} "
                         "(use sqlite:///path or postgresql://user@host:port/db)")

    def conninfo(self) -> str:
        """A libpq connection string for this PostgreSQL database."""
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"postgresql://{auth}@{self.host}:{self.port}/{self.dbname}"

    def sqlalchemy_url(self) -> str:
        """The same database for SQLAlchemy (read models)."""
        if self.kind == "sqlite":
            return f"sqlite:///{self.path}"
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"postgresql+psycopg://{auth}@{self.host}:{self.port}/{self.dbname}"


class EventStore:
    """The append-only log: load streams, append batches atomically, read in seq order."""

    def __init__(self, recorder: SQLiteLedgerRecorder | PostgresLedgerRecorder,
                 closer: Any) -> None:
        self.recorder = recorder
        self._closer = closer

    def load(self, originator_id: str, after_version: int = 0) -> list[Event]:
        """The events of one aggregate after ``after_version``, in order."""
        if isinstance(self.recorder, SQLiteLedgerRecorder):
            stored = self.recorder.select_events_after(originator_id, after_version)
        else:
            stored = list(self.recorder.select_events(originator_id, gt=after_version or None))
        return [from_stored(s) for s in stored]

    def append(self, events: Sequence[Event],
               batches: Sequence[tuple[int, IdempotencyRecord | None]] = (),
               reads: dict[str, int] | None = None,
               admissions: Sequence[tuple[str, int]] = ()) -> list[int]:
        """Store ``events`` in one transaction; return their seqs.

        Raises the library's IntegrityError if any (originator, version) or
        idempotency key is already taken, or an aggregate in ``reads`` is no longer
        at the version given (AdmissionChanged for one in ``admissions``); then
        nothing is stored.
        """
        ids = self.recorder.insert_events([to_stored(e) for e in events], batches=batches,
                                          reads=reads or {}, admissions=admissions)
        return list(ids or [])

    def read(self, after: int = 0, limit: int = 100) -> list[LogEntry]:
        """Up to ``limit`` stored events with seq > ``after``, in seq order."""
        notes = self.recorder.select_notifications(start=after, limit=limit,
                                                   inclusive_of_start=False)
        return [LogEntry(n.id, str(n.originator_id), n.originator_version, n.topic, n.state)
                for n in notes]

    def max_seq(self) -> int:
        """The seq of the last stored event (0 when empty)."""
        return self.recorder.max_notification_id() or 0

    def idempotency(self, member_id: str, key: str) -> tuple[str, dict[str, Any]] | None:
        """The fingerprint and first answer stored for (member, key), if any."""
        found = self.recorder.idempotency(member_id, key)
        return None if found is None else (found[0], decode(found[1]))

    def close(self) -> None:
        """Release connections."""
        self._closer.close()


def open_store(url: DatabaseURL, *, create: bool = True) -> EventStore:
    """Open (and by default create) the event store named by ``url``."""
    recorder: SQLiteLedgerRecorder | PostgresLedgerRecorder
    if url.kind == "sqlite":
        if url.path not in ("", ":memory:"):
            os.makedirs(os.path.dirname(os.path.abspath(url.path)), exist_ok=True)
        sqlite_store = SQLiteDatastore(url.path or ":memory:", originator_id_type="text",
                                       lock_timeout=30)
        recorder = SQLiteLedgerRecorder(sqlite_store)
        closer: Any = sqlite_store
    else:
        pg_store = PostgresDatastore(url.dbname, url.host, url.port, url.user, url.password,
                                     originator_id_type="text", schema=url.schema,
                                     pool_size=4, max_overflow=8, lock_timeout=30)
        if url.schema != "public":
            with pg_store.transaction(commit=True) as curs:
                curs.execute(SQL("CREATE SCHEMA IF NOT EXISTS {0}").format(Identifier(url.schema)))
        recorder = PostgresLedgerRecorder(pg_store)
        closer = pg_store
    if create:
        recorder.create_table()
    return EventStore(recorder, closer)


class LedgerLog:
    """The EventStore seen as the application's EventLog (conflicts translated)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def load(self, originator_id: str, after_version: int = 0) -> list[Event]:
        return self.store.load(originator_id, after_version)

    def append_batches(self, events: list[Event], batches: list[Any]) -> list[int]:
        from domain.application import AdmissionStale, ConflictError

        records = [(b.count, None if b.idempotency is None else IdempotencyRecord(
            b.idempotency.member_id, b.idempotency.key, b.idempotency.fingerprint, b.response))
            for b in batches]
        reads: dict[str, int] = {}
        admissions: set[tuple[str, int]] = set()
        for b in batches:
            for read_id, version in b.reads.items():
                if reads.setdefault(read_id, version) != version:
                    # two decisions read one aggregate at two versions: one check cannot
                    # hold for both (the older decision may rest on a state since changed);
                    # the committer then writes each commit alone, with its own checks
                    raise ConflictError(f"decisions of one group read {read_id} at versions "
                                        f"{reads[read_id]} and {version}")
            if b.admission is not None:
                admissions.add(b.admission)
        try:
            return self.store.append(events, records, reads, sorted(admissions))
        except AdmissionChanged as exc:
            raise AdmissionStale(str(exc)) from exc
        except IntegrityError as exc:
            raise ConflictError(str(exc)) from exc

    def idempotent_answer(self, member_id: str, key: str) -> tuple[str, dict[str, Any]] | None:
        return self.store.idempotency(member_id, key)
