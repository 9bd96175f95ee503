"""The PostgreSQL recorder: the library's PostgreSQL application recorder with gap-free
ids, idempotency rows, and the append function.

Notification ids (``seq``) are assigned as MAX+1 under the library's table lock instead of
from a sequence, so a rolled-back insert leaves no gap (a PostgreSQL sequence is not
transactional). The usual group (no idempotency row) is one call of the
``dataledger_append_v1`` function (made with the tables), which an event loop can also make
over a connection of its own (``insert_events_async``); anything else is written stepwise
in one transaction with its idempotency rows.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from eventsourcing.persistence import (
    IntegrityError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier, Literal

from core.record import LogEntry
from events.append import Check, append_checks, check_read, raise_failed_check, response_rows
from events.url import DatabaseURL

__all__ = ["APPEND_FUNCTION", "CREATE_LOCK", "PostgresLedgerRecorder", "open_postgres"]

#: the function that appends a group (versioned: a changed body gets a new name)
APPEND_FUNCTION = "dataledger_append_v1"
#: the advisory lock that serializes creating the schema, tables and function
#: (two processes opening a fresh store at once would otherwise race on CREATE … IF NOT EXISTS)
CREATE_LOCK = 7263002
#: an event loop's own connection unused for longer than this is checked before use
IDLE_CHECK_S = 1.0


def _value(row: Any, key: str | int) -> Any:
    """One column of a fetched row, or None when there is no row."""
    return None if row is None else row[key]


def _append_params(stored_events: Sequence[StoredEvent],
                   checks: list[Check]) -> tuple[list[Any], ...]:
    """The append function's six arrays: the events' columns, then the checks'."""
    return ([s.originator_id for s in stored_events],
            [s.originator_version for s in stored_events],
            [s.topic for s in stored_events], [s.state for s in stored_events],
            [originator_id for originator_id, _, _ in checks],
            [version for _, version, _ in checks])


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
            return self._insert_by_function(stored_events, append_checks(kwargs))
        return self._insert_stepwise(stored_events, **kwargs)

    def _insert_by_function(self, stored_events: Sequence[StoredEvent],
                            checks: list[Check]) -> list[int]:
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
                raise_failed_check(checks, lambda i: _value(
                    conn.execute(self._max_version, (i,)).fetchone(), "v"))
        return list(range(first, first + len(stored_events)))

    async def insert_events_async(self, stored_events: Sequence[StoredEvent],
                                  checks: list[Check]
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
                raise_failed_check(checks, current.get)
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
                for originator_id, version, error in append_checks(kwargs):
                    curs.execute(self._max_version, (originator_id,))
                    check_read(originator_id, version, _value(curs.fetchone(), "v"), error)
                curs.execute(self._max_id)
                row = curs.fetchone()
                base = int(row["m"]) if row else 0
                ids = list(range(base + 1, base + 1 + len(stored_events)))
                curs.executemany(self._insert_with_ids, [
                    (s.originator_id, s.originator_version, s.topic, s.state, i)
                    for s, i in zip(stored_events, ids, strict=True)])
            rows = response_rows(kwargs.get("batches", ()), ids)
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

    def forget_answers(self, needle: bytes) -> int:
        """Delete the idempotency rows whose stored answer holds ``needle``; the table is
        rewritten after (``VACUUM FULL``), so no page of it keeps them."""
        table = SQL("{0}.idempotency").format(Identifier(self.datastore.schema))
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            gone = conn.execute(SQL("DELETE FROM {0} WHERE position(%s::bytea in response) > 0")
                                .format(table), (needle,)).rowcount
            conn.execute(SQL("VACUUM FULL {0}").format(table))
        return int(gone)

    def idempotency(self, member_id: str, key: str) -> tuple[str, bytes] | None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_idem, (member_id, key))
            row = curs.fetchone()
        return None if row is None else (row["fingerprint"], bytes(row["response"]))


def open_postgres(url: DatabaseURL) -> tuple[PostgresLedgerRecorder, PostgresDatastore]:
    """The recorder of the PostgreSQL database ``url`` names and its datastore (what closes
    the connections); a schema other than public is made first, under the create lock."""
    datastore = PostgresDatastore(url.dbname, url.host, url.port, url.user, url.password,
                                  originator_id_type="text", schema=url.schema,
                                  pool_size=4, max_overflow=8, lock_timeout=30)
    if url.schema != "public":
        with datastore.transaction(commit=True) as curs:
            curs.execute(SQL("SELECT pg_advisory_xact_lock({0})").format(Literal(CREATE_LOCK)))
            curs.execute(SQL("CREATE SCHEMA IF NOT EXISTS {0}").format(Identifier(url.schema)))
    return PostgresLedgerRecorder(datastore, conninfo=url.conninfo()), datastore
