"""Store wiring on the eventsourcing library's recorders (SQLite file or PostgreSQL).

Each stored event gets a global, gap-free sequence number ``seq`` (the library's
notification id). Two small extensions of the library's application recorders,
both inside the same transaction as the events:

* idempotency records (member, key) → the first answer, so that a retried request
  writes nothing new;
* on PostgreSQL, notification ids are assigned as MAX+1 under the library's table
  lock instead of from a sequence, so a rolled-back insert leaves no gap (a
  PostgreSQL sequence is not transactional).

Both backends write the usual group (no idempotency row) as one statement: SQLite one
``INSERT … SELECT … WHERE <checks>`` in autocommit mode, PostgreSQL one call of the
``dataledger_append_v1`` function (made with the tables), which an event loop can also
make over a connection of its own (``EventStore.append_async``).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import parse_qs, quote, unquote, urlparse
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    IntegrityError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier, Literal

from core.canonical import canonical_bytes, decode
from core.event import Event, event_class
from core.record import LogEntry
from domain.application import AdmissionStale, ConflictError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["MAX_SEQ", "AdmissionChanged", "DatabaseURL", "EventStore", "IdempotencyRecord",
           "IntegrityError", "open_store"]


class AdmissionChanged(IntegrityError):
    """The acting participant's stream moved past the version its admission was read at."""


@dataclass(frozen=True)
class IdempotencyRecord:
    """The first answer to a request carrying an Idempotency-Key."""

    member_id: str
    key: str
    fingerprint: str
    response: dict[str, Any] = field(default_factory=dict)


def to_stored(event: Event) -> StoredEvent:
    """Domain event → the library's StoredEvent: topic is the stable type name."""
    return StoredEvent(originator_id=event.originator_id,
                       originator_version=event.originator_version,
                       topic=event.type_name, state=event.canonical_payload())


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


def _raise_failed_check(checks: list[tuple[str, int, type[IntegrityError]]],
                        current: Callable[[str], int | None]) -> NoReturn:
    """A one-statement append inserted nothing because a check failed: raise naming the
    first that fails, ``current`` giving a stream's stored version."""
    for originator_id, version, error in checks:
        _check_read(originator_id, version, current(originator_id), error)
    raise IntegrityError("the append's checks failed")


def _append_params(stored_events: Sequence[StoredEvent],
                   checks: list[tuple[str, int, type[IntegrityError]]]) -> tuple[list[Any], ...]:
    """The append function's six arrays: the events' columns, then the checks'."""
    return ([s.originator_id for s in stored_events],
            [s.originator_version for s in stored_events],
            [s.topic for s in stored_events], [s.state for s in stored_events],
            [originator_id for originator_id, _, _ in checks],
            [version for _, version, _ in checks])


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

#: PostgreSQL: the function that appends a group (versioned: a changed body gets a new name)
APPEND_FUNCTION = "dataledger_append_v1"
#: PostgreSQL: the advisory lock that serializes creating the schema, tables and function
#: (two processes opening a fresh store at once would otherwise race on CREATE … IF NOT EXISTS)
CREATE_LOCK = 7263002


@functools.lru_cache(maxsize=512)
def _sqlite_group_insert(table: str, events: int, checks: int) -> str:
    """SQLite: INSERT ``events`` rows only if each of ``checks`` stream versions holds."""
    rows = ",".join(["(?,?,?,?)"] * events)
    check = f"(SELECT IFNULL(MAX(originator_version), 0) FROM {table} WHERE originator_id=?) = ?"
    where = " AND ".join([check] * checks) or "1"
    return (f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
            f"SELECT * FROM (VALUES {rows}) WHERE {where}")


class SQLiteLedgerRecorder(SQLiteApplicationRecorder):
    """The library's SQLite application recorder plus the idempotency table."""

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(),
                ("CREATE TABLE IF NOT EXISTS idempotency (member_id TEXT, key TEXT, "
                 "fingerprint TEXT, response BLOB, PRIMARY KEY (member_id, key))")]

    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        # Write first: the first write takes SQLite's write lock (waiting up to the busy
        # timeout); a read first would make a deferred transaction fail at once with
        # "database is locked" if another connection wrote meanwhile. The reads are then
        # checked under the lock (this command's own inserts never touch them). Checks guard
        # events: a batch without events (a command that changed nothing) only keeps its
        # answer, as on PostgreSQL.
        ids = self._insert_rows(c, stored_events)
        rows = _response_rows(kwargs.get("batches", ()), ids)
        if rows:
            c.executemany("INSERT INTO idempotency VALUES (?,?,?,?)", rows)
        for originator_id, version, error in _checks(kwargs) if stored_events else ():
            _check_read(originator_id, version, self._max_version(c, originator_id), error)
        return ids

    def _max_version(self, cursor: Any, originator_id: str) -> int | None:
        """The stored version of stream ``originator_id`` (None: no events)."""
        cursor.execute(f"SELECT MAX(originator_version) FROM {self.events_table_name} "
                       "WHERE originator_id=?", (originator_id,))
        version: int | None = cursor.fetchone()[0]
        return version

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
        params = [*self._row_values(stored_events), *(v for i, n, _ in checks for v in (i, n))]
        statement = _sqlite_group_insert(self.events_table_name, len(stored_events), len(checks))
        with self.datastore.get_connection(commit=True) as conn:
            cursor = conn.cursor().sqlite_cursor
            try:
                cursor.execute(statement, params)
                if cursor.rowcount != len(stored_events):  # a check failed: which one?
                    _raise_failed_check(checks, lambda i: self._max_version(cursor, i))
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

    def topics_between(self, after: int, upto: int) -> list[str]:
        with self.datastore.get_connection(commit=False) as conn:
            cur = conn.cursor()
            cur.execute(f"SELECT DISTINCT topic FROM {self.events_table_name} "
                        "WHERE rowid > ? AND rowid <= ?", (after, upto))
            return [row["topic"] for row in cur.fetchall()]

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


def _value(row: Any, key: str | int) -> Any:
    """One column of a fetched row, or None when there is no row."""
    return None if row is None else row[key]


#: an event loop's own connection unused for longer than this is checked before use
IDLE_CHECK_S = 1.0

#: the largest seq (and tree size) a store can hold: a signed 64-bit integer on both backends
MAX_SEQ = 2**63 - 1


@dataclass
class _HeldConnection:
    conn: psycopg.AsyncConnection[Any]
    used: float = 0.0


class PostgresLedgerRecorder(PostgresApplicationRecorder):
    """The library's PostgreSQL application recorder, gap-free ids, idempotency table."""

    def __init__(self, datastore: PostgresDatastore, conninfo: str = "", **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        #: how an event loop connects for its own appends (insert_events_async)
        self.conninfo = conninfo
        self._loop_connections: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, _HeldConnection] = weakref.WeakKeyDictionary()
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
        # the append function (see _insert_by_function), made with the tables
        self.sql_create_statements.append(SQL(
            "CREATE OR REPLACE FUNCTION {0}.{2}(ids text[], versions bigint[], topics text[], "
            "states bytea[], check_ids text[], check_versions bigint[]) RETURNS bigint "
            "LANGUAGE plpgsql SET lock_timeout = {3} AS $$ "
            "DECLARE base bigint; "
            "BEGIN "
            "  LOCK TABLE {0}.{1} IN EXCLUSIVE MODE; "
            "  IF EXISTS (SELECT FROM unnest(check_ids, check_versions) AS c(id, version) "
            "             WHERE COALESCE((SELECT MAX(originator_version) FROM {0}.{1} "
            "                             WHERE originator_id = c.id), 0) <> c.version) THEN "
            "    RETURN 0; "
            "  END IF; "
            "  SELECT COALESCE(MAX(notification_id), 0) INTO base FROM {0}.{1}; "
            "  INSERT INTO {0}.{1} (originator_id, originator_version, topic, state, "
            "                      notification_id) "
            "    SELECT e.id, e.version, e.topic, e.state, base + e.n "
            "    FROM unnest(ids, versions, topics, states) WITH ORDINALITY "
            "         AS e(id, version, topic, state, n); "
            "  PERFORM pg_notify({4}, ''); "
            "  RETURN base + 1; "
            "END $$").format(schema, table, Identifier(APPEND_FUNCTION),
                             Literal(f"{int(datastore.lock_timeout)}s"),
                             Literal(self.channel_name)))
        self._select_log = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {0}.{1} WHERE notification_id > %s::bigint ORDER BY notification_id "
            "LIMIT %s::bigint").format(schema, table)
        self._topics_between = SQL(
            "SELECT DISTINCT topic FROM {0}.{1} WHERE notification_id > %s::bigint "
            "AND notification_id <= %s::bigint").format(schema, table)
        self._call_append = SQL(
            "SELECT {0}.{1}(%b::text[], %b::bigint[], %b::text[], %b::bytea[], %b::text[], "
            "%b::bigint[]) AS first").format(schema, Identifier(APPEND_FUNCTION))

    def create_table(self) -> None:
        """The library's create_table (its types, then the tables, indexes and function)
        under an advisory lock held by a session of its own: two processes opening a
        fresh store at once would otherwise race on CREATE TYPE and CREATE … IF NOT
        EXISTS, and one of them fail."""
        lock = Literal(CREATE_LOCK)
        with self.datastore.get_connection() as conn:
            conn.execute(SQL("SELECT pg_advisory_lock({0})").format(lock))
            try:
                super().create_table()
            finally:
                conn.execute(SQL("SELECT pg_advisory_unlock({0})").format(lock))

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        batches = kwargs.get("batches", ())
        if stored_events and all(record is None for _, record in batches):
            return self._insert_by_function(stored_events, _checks(kwargs))
        return self._insert_stepwise(stored_events, **kwargs)

    def _insert_by_function(self, stored_events: Sequence[StoredEvent],
                            checks: list[tuple[str, int, type[IntegrityError]]]) -> list[int]:
        """The usual group (no idempotency row) as one call of the append function.

        One prepared statement in autocommit mode, so one round trip and one transaction:
        the function takes the library's table lock, returns 0 if a check fails (nothing
        inserted), else inserts the events with the ids MAX+1… and notifies the channel.
        The statement text never changes, so each connection parses and plans it once,
        and psycopg sends the group as six arrays in binary.
        """
        with self.datastore.get_connection() as conn:
            row = conn.execute(self._call_append, _append_params(stored_events, checks),
                               prepare=True).fetchone()
            first = int(row["first"]) if row else 0
            if not first:  # a check failed (nothing was inserted): say which
                _raise_failed_check(checks, lambda i: _value(
                    conn.execute(self._max_version, (i,)).fetchone(), "v"))
        return list(range(first, first + len(stored_events)))

    async def insert_events_async(self, stored_events: Sequence[StoredEvent],
                                  checks: list[tuple[str, int, type[IntegrityError]]]
                                  ) -> list[int]:
        """``_insert_by_function`` over the running event loop's own connection.

        The commits of the HTTP API are written by a task on the server's event loop (see
        events.commit.LoopCommitter): its awaits let the loop serve requests
        meanwhile, with no writer thread to hand the GIL to and back for every group.
        A connection that fails is closed and replaced at the next append.
        """
        conn = await self._loop_connection()
        try:
            cursor = await conn.execute(self._call_append, _append_params(stored_events, checks),
                                        prepare=True)
            row = await cursor.fetchone()
            first = int(row[0]) if row else 0
            if not first:  # a check failed (nothing was inserted): say which
                current = {}
                for originator_id, _, _ in checks:
                    cursor = await conn.execute(self._max_version, (originator_id,))
                    current[originator_id] = _value(await cursor.fetchone(), 0)
                _raise_failed_check(checks, current.get)
        except psycopg.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                self._loop_connections.pop(asyncio.get_running_loop(), None)
                await conn.close()
            if isinstance(exc, psycopg.OperationalError):
                raise OperationalError(str(exc)) from exc
            raise PersistenceError(str(exc)) from exc
        return list(range(first, first + len(stored_events)))

    async def _loop_connection(self) -> psycopg.AsyncConnection[Any]:
        """The running loop's connection. After a pause it is checked with an empty query
        first, so that a connection the server dropped meanwhile (a restart, an idle
        timeout) is replaced before it can fail a command."""
        loop = asyncio.get_running_loop()
        held = self._loop_connections.get(loop)
        if held is not None and not held.conn.closed and loop.time() - held.used > IDLE_CHECK_S:
            try:
                await held.conn.execute("")
            except psycopg.Error:
                await held.conn.close()
        if held is None or held.conn.closed:
            held = _HeldConnection(
                await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True))
            self._loop_connections[loop] = held
        held.used = loop.time()
        return held.conn

    async def aclose(self) -> None:
        """Close the running loop's connection (if it made one)."""
        held = self._loop_connections.pop(asyncio.get_running_loop(), None)
        if held is not None:
            await held.conn.close()

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
                    _check_read(originator_id, version, _value(curs.fetchone(), "v"), error)
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

    def select_log(self, after: int, limit: int) -> list[LogEntry]:
        """The library's ``select_notifications`` (seq > ``after``, in order) as log
        entries: one prepared statement, rows as tuples (the projections and the chain
        read every event this way)."""
        with self.datastore.get_connection() as conn:
            cursor = conn.cursor(row_factory=tuple_row)
            rows = cursor.execute(self._select_log, (after, limit), prepare=True).fetchall()
        return [LogEntry(seq, originator_id, version, topic, bytes(state))
                for seq, originator_id, version, topic, state in rows]

    def topics_between(self, after: int, upto: int) -> list[str]:
        with self.datastore.get_connection() as conn:
            rows = conn.execute(self._topics_between, (after, upto), prepare=True).fetchall()
        return [row["topic"] for row in rows]

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
            # user, password and database name are percent-decoded here (a password may
            # hold "@" or "%") and encoded again wherever a URL is made of them
            return cls("postgresql", host=parsed.hostname or "127.0.0.1",
                       port=parsed.port or 5432, user=unquote(parsed.username or "postgres"),
                       password=unquote(parsed.password or ""),
                       dbname=unquote(parsed.path.lstrip("/")) or "postgres",
                       schema=query.get("schema", ["public"])[0])
        raise ValueError(f"DATALEDGER_DATABASE_URL: unsupported scheme {parsed.scheme!r} "
                         "(use sqlite:///path or postgresql://user@host:port/db)")

    def conninfo(self) -> str:
        """A libpq connection string for this PostgreSQL database."""
        return f"postgresql://{self._netloc()}/{quote(self.dbname, safe='')}"

    def sqlalchemy_url(self) -> URL:
        """The same database for SQLAlchemy (read models), built from its parts (SQLAlchemy
        decodes a URL's user and password but not its database name)."""
        from sqlalchemy.engine import URL

        if self.kind == "sqlite":
            return URL.create("sqlite", database=self.path)
        return URL.create("postgresql+psycopg", username=self.user,
                          password=self.password or None, host=self.host, port=self.port,
                          database=self.dbname)

    def _netloc(self) -> str:
        auth = quote(self.user, safe="") + (
            f":{quote(self.password, safe='')}" if self.password else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{auth}@{host}:{self.port}"


class EventStore:
    """The append-only log: load streams, append batches atomically, read in seq order."""

    def __init__(self, recorder: SQLiteLedgerRecorder | PostgresLedgerRecorder,
                 closer: Any) -> None:
        self.recorder = recorder
        self._closer = closer

    def load(self, originator_id: str, after_version: int = 0) -> list[Event]:
        """The events of one aggregate after ``after_version``, in order.

        An id with a NUL character has none: ids are made by the platform, and PostgreSQL
        text cannot hold one (asking would be a database error, not "no such aggregate").
        """
        if "\x00" in originator_id:
            return []
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

    async def append_async(self, events: Sequence[Event],
                           batches: Sequence[tuple[int, IdempotencyRecord | None]] = (),
                           reads: dict[str, int] | None = None,
                           admissions: Sequence[tuple[str, int]] = ()) -> list[int]:
        """``append`` from an event loop: on PostgreSQL, events without idempotency records
        over the loop's own connection; anything else in a worker thread."""
        if (isinstance(self.recorder, PostgresLedgerRecorder) and events
                and all(record is None for _, record in batches)):
            checks = _checks({"reads": reads or {}, "admissions": admissions})
            return await self.recorder.insert_events_async(
                [to_stored(e) for e in events], checks)
        return await asyncio.to_thread(self.append, events, batches, reads, admissions)

    def read(self, after: int = 0, limit: int = 100) -> list[LogEntry]:
        """Up to ``limit`` stored events with seq > ``after``, in seq order."""
        if isinstance(self.recorder, PostgresLedgerRecorder):
            return self.recorder.select_log(after, limit)
        notes = self.recorder.select_notifications(start=after, limit=limit,
                                                   inclusive_of_start=False)
        return [LogEntry(n.id, str(n.originator_id), n.originator_version, n.topic, n.state)
                for n in notes]

    def types_between(self, after: int, upto: int) -> set[str]:
        """The type names of the stored events with ``after`` < seq <= ``upto``.

        One query that returns only the distinct topics (for followers that need to
        know what kinds of events arrived, not the events themselves).
        """
        if upto <= after:
            return set()
        return set(self.recorder.topics_between(after, upto))

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
                curs.execute(SQL("SELECT pg_advisory_xact_lock({0})").format(Literal(CREATE_LOCK)))
                curs.execute(SQL("CREATE SCHEMA IF NOT EXISTS {0}").format(Identifier(url.schema)))
        recorder = PostgresLedgerRecorder(pg_store, conninfo=url.conninfo())
        closer = pg_store
    if create:
        recorder.create_table()
    return EventStore(recorder, closer)


def _append_arguments(batches: list[Any]) -> tuple[
        list[tuple[int, IdempotencyRecord | None]], dict[str, int], list[tuple[str, int]]]:
    """The application's batches as EventStore.append takes them: idempotency records, the
    versions the decisions read, the callers' admissions."""

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
    return records, reads, sorted(admissions)


def _as_conflict(exc: IntegrityError) -> Exception:
    """The store's integrity error as the application's conflict."""

    if isinstance(exc, AdmissionChanged):
        return AdmissionStale(str(exc))
    return ConflictError(str(exc))


class LedgerLog:
    """The EventStore seen as the application's EventLog (conflicts translated)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def load(self, originator_id: str, after_version: int = 0) -> list[Event]:
        return self.store.load(originator_id, after_version)

    @property
    def appends_async(self) -> bool:
        """Whether ``append_batches_async`` appends without a thread (PostgreSQL)."""
        return isinstance(self.store.recorder, PostgresLedgerRecorder)

    def append_batches(self, events: list[Event], batches: list[Any]) -> list[int]:
        records, reads, admissions = _append_arguments(batches)
        try:
            return self.store.append(events, records, reads, admissions)
        except IntegrityError as exc:
            raise _as_conflict(exc) from exc

    async def append_batches_async(self, events: list[Event], batches: list[Any]) -> list[int]:
        """``append_batches`` from the event loop: batches without an idempotency record on
        PostgreSQL go over the loop's own connection; anything else in a worker thread."""
        records, reads, admissions = _append_arguments(batches)
        try:
            return await self.store.append_async(events, records, reads, admissions)
        except IntegrityError as exc:
            raise _as_conflict(exc) from exc

    async def aclose(self) -> None:
        """Close the running event loop's own connection, if it made one."""
        if isinstance(self.store.recorder, PostgresLedgerRecorder):
            await self.store.recorder.aclose()

    def idempotent_answer(self, member_id: str, key: str) -> tuple[str, dict[str, Any]] | None:
        return self.store.idempotency(member_id, key)
