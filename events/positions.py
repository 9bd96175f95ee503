"""The publisher's position: ``outbox_position(name PRIMARY KEY, seq)`` in the events' database.

A publisher's row holds the highest seq whose ack and every earlier ack arrived; it is
recorded after the acks, so every event up to it is in the stream (a crash between an ack
and its record is reconciled against the stream at the next session).
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from events.url import DatabaseURL

__all__ = ["PositionStore", "PostgresPositionStore", "SQLitePositionStore",
           "open_position_store"]


class PositionStore(ABC):
    """``outbox_position(name PRIMARY KEY, seq)`` in the database of the events."""

    @abstractmethod
    def get(self, name: str) -> int:
        """The recorded seq of ``name`` (0 when none is recorded)."""

    @abstractmethod
    def set(self, name: str, seq: int) -> None:
        """Record ``seq`` for ``name`` as given (also backwards: a reset)."""

    @abstractmethod
    def advance(self, name: str, seq: int) -> None:
        """Record ``seq`` for ``name`` unless a higher one is recorded already."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""


class SQLitePositionStore(PositionStore):
    """The position table in the SQLite file of the events (a connection of its own)."""

    def __init__(self, path: str) -> None:
        if path in ("", ":memory:"):
            raise ValueError("the outbox position needs the events' SQLite file; an in-memory "
                             "database cannot be shared with a second connection")
        self._lock = threading.Lock()
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                    timeout=30)
        self.conn.execute("CREATE TABLE IF NOT EXISTS outbox_position "
                          "(name TEXT PRIMARY KEY, seq INTEGER NOT NULL)")

    def get(self, name: str) -> int:
        with self._lock:
            row = self.conn.execute("SELECT seq FROM outbox_position WHERE name = ?",
                                    (name,)).fetchone()
        return int(row[0]) if row else 0

    def set(self, name: str, seq: int) -> None:
        with self._lock:
            self.conn.execute("INSERT INTO outbox_position VALUES (?, ?) ON CONFLICT (name) "
                              "DO UPDATE SET seq = excluded.seq", (name, seq))

    def advance(self, name: str, seq: int) -> None:
        with self._lock:
            self.conn.execute("INSERT INTO outbox_position VALUES (?, ?) ON CONFLICT (name) "
                              "DO UPDATE SET seq = max(seq, excluded.seq)", (name, seq))

    def close(self) -> None:
        with self._lock:
            self.conn.close()


class PostgresPositionStore(PositionStore):
    """The position table in the PostgreSQL schema of the events."""

    def __init__(self, conninfo: str, schema: str = "public") -> None:
        self._conninfo = conninfo
        self._lock = threading.Lock()
        table = SQL("{0}.outbox_position").format(Identifier(schema))
        self._get = SQL("SELECT seq FROM {0} WHERE name = %s").format(table)
        self._set = SQL("INSERT INTO {0} VALUES (%s, %s) ON CONFLICT (name) "
                        "DO UPDATE SET seq = EXCLUDED.seq").format(table)
        self._advance = SQL("INSERT INTO {0} AS p VALUES (%s, %s) ON CONFLICT (name) "
                            "DO UPDATE SET seq = GREATEST(p.seq, EXCLUDED.seq)").format(table)
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {0}").format(Identifier(schema)))
        self.conn.execute(SQL("CREATE TABLE IF NOT EXISTS {0} (name text PRIMARY KEY, "
                              "seq bigint NOT NULL)").format(table))

    def _run(self, statement: SQL | Any, params: tuple[Any, ...]) -> Any:
        """Execute (returning the first row, if any); after a lost connection, once more."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    cur = self.conn.execute(statement, params)
                    return cur.fetchone() if cur.description else None
                except psycopg.OperationalError:
                    if attempt == 2 or not (self.conn.closed or self.conn.broken):
                        raise
                    self.conn = psycopg.connect(self._conninfo, autocommit=True)
        return None

    def get(self, name: str) -> int:
        row = self._run(self._get, (name,))
        return int(row[0]) if row else 0

    def set(self, name: str, seq: int) -> None:
        self._run(self._set, (name, seq))

    def advance(self, name: str, seq: int) -> None:
        self._run(self._advance, (name, seq))

    def close(self) -> None:
        with self._lock:
            self.conn.close()


def open_position_store(url: DatabaseURL | str) -> PositionStore:
    """The position table in the database named by ``url`` (the events' database)."""
    parsed = DatabaseURL.parse(url) if isinstance(url, str) else url
    if parsed.kind == "sqlite":
        return SQLitePositionStore(parsed.path)
    return PostgresPositionStore(parsed.conninfo(), parsed.schema)
