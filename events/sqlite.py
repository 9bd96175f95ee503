"""The SQLite recorder: the library's SQLite application recorder plus idempotency rows.

Each stored event gets a global, gap-free ``seq`` (the library's notification id, SQLite's
rowid: rows are never deleted). The usual group (no idempotency row) is written as one
``INSERT … SELECT … WHERE <checks>`` in autocommit mode; anything else the library's way,
in one transaction with its idempotency rows.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    IntegrityError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

from events.append import append_checks, check_read, raise_failed_check, response_rows

__all__ = ["MAX_WHERE_CHECKS", "SQLiteLedgerRecorder", "open_sqlite"]

#: SQLite caps an expression's depth at 1000: a group with more read and admission checks
#: than this goes the stepwise way (BEGIN, inserts, checks, COMMIT) instead of one statement
MAX_WHERE_CHECKS = 200


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
        rows = response_rows(kwargs.get("batches", ()), ids)
        if rows:
            c.executemany("INSERT INTO idempotency VALUES (?,?,?,?)", rows)
        for originator_id, version, error in append_checks(kwargs) if stored_events else ():
            check_read(originator_id, version, self._max_version(c, originator_id), error)
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
        checks = append_checks(kwargs)
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
                    raise_failed_check(checks, lambda i: self._max_version(cursor, i))
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

    def forget_answers(self, needle: bytes) -> int:
        """Delete the idempotency rows whose stored answer holds ``needle``, their bytes
        overwritten (``secure_delete``); then the write-ahead log is checkpointed and
        truncated if no reader holds it (else its frames age out as the server writes)."""
        with self.datastore.transaction(commit=True) as c:
            c.execute("PRAGMA secure_delete=ON")
            c.execute("DELETE FROM idempotency WHERE instr(response, ?) > 0", (needle,))
            c.execute("SELECT changes()")
            gone = int(c.fetchone()[0])
        with self.datastore.get_connection(commit=False) as conn:
            conn.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return gone

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


def open_sqlite(path: str) -> tuple[SQLiteLedgerRecorder, SQLiteDatastore]:
    """The recorder of the SQLite file ``path`` (its directory made; "" is in memory) and
    its datastore (what closes the connections)."""
    if path not in ("", ":memory:"):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    datastore = SQLiteDatastore(path or ":memory:", originator_id_type="text", lock_timeout=30)
    return SQLiteLedgerRecorder(datastore), datastore
