"""Bytes kept off the log, beside the read models: the one way their tables are made,
written, and cleared of what the log does not record.

The log records only a hash of such bytes (a delivered result's, a joint computation's
layout or masked part); the bytes go in a table of their own. A route stores them *before*
the command that records their hash commits, so a crash between the two never leaves a
recorded hash without its bytes; it drops them when the command refuses (``discard``), and
``sweep`` drops what a crash between storing and recording left behind, once older than a
grace period (a post in flight is never that old; storing the same bytes again renews their
time). Neither ever drops bytes the log records.

Each table has a ``MetaData`` of its own (not the read models'), so a rebuild of the read
models, which drops their tables, never touches it. Used by ``delivery/results.py`` and
``aggregation/store.py``.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sqlalchemy import Engine, Table, delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from core.event import Event

#: how old unrecorded bytes must be before ``sweep`` drops them, in seconds
ORPHAN_GRACE_S = 3600.0
#: the column each such table keeps the time its row was last stored in (Unix time)
STORED_AT = "stored_at"


class Log(Protocol):
    """The event log, as far as these stores read it."""

    def load(self, originator_id: str, after_version: int = 0) -> list[Event]: ...


#: whether the log records the row of this primary key
Recorded = Callable[[Log, Mapping[str, Any]], bool]


class OffLogTable:
    """One table of off-log bytes: its primary key names the bytes (their hash among it),
    ``stored_at`` when they were last stored, and ``recorded`` says whether the log
    records a row (then it is never dropped)."""

    def __init__(self, table: Table, recorded: Recorded,
                 upgrade: Callable[[Engine], None] | None = None) -> None:
        self.table = table
        self.recorded = recorded
        #: run once per engine after the table is made (a column added to an older table)
        self.upgrade = upgrade
        self.keys = [c.name for c in table.primary_key.columns]
        self._ready: weakref.WeakSet[Engine] = weakref.WeakSet()
        self._lock = threading.Lock()

    def ensure(self, engine: Engine) -> None:
        """Create the table if it does not exist, once per engine."""
        if engine in self._ready:
            return
        with self._lock:
            if engine in self._ready:
                return
            self.table.metadata.create_all(engine, tables=[self.table])
            if self.upgrade is not None:
                self.upgrade(engine)
            self._ready.add(engine)

    def put(self, engine: Engine, row: Mapping[str, Any]) -> None:
        """Store ``row`` (its ``stored_at`` set now). Idempotent: the key holds the bytes'
        hash, so a key can only ever hold the same bytes; storing them again renews their
        ``stored_at``, so ``sweep`` leaves them to the post about to record them."""
        self.ensure(engine)
        with engine.begin() as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            insert = dialect.insert(self.table)
            conn.execute(insert.on_conflict_do_update(
                index_elements=[self.table.c[k] for k in self.keys],
                set_={STORED_AT: insert.excluded[STORED_AT]}),
                [{**row, STORED_AT: time.time()}])

    def discard(self, engine: Engine, log: Log, key: Mapping[str, Any]) -> bool:
        """Drop the bytes stored for a post the command refused, unless the log records
        them (then another post of the same bytes was accepted); whether any were dropped."""
        return self._drop(engine, log, key, stored_before=None)

    def sweep(self, engine: Engine, log: Log, *, older_than: float = ORPHAN_GRACE_S) -> int:
        """Drop the rows the log does not record, stored more than ``older_than`` seconds
        ago; how many were dropped. Reads only the candidates' streams."""
        self.ensure(engine)
        cutoff = time.time() - older_than
        with engine.connect() as conn:
            candidates = conn.execute(select(*(self.table.c[k] for k in self.keys)).where(
                self._stored_before(cutoff))).mappings().all()
        return sum(self._drop(engine, log, dict(key), stored_before=cutoff)
                   for key in candidates)

    def _stored_before(self, cutoff: float) -> Any:
        column = self.table.c[STORED_AT]
        return or_(column < cutoff, column.is_(None))

    def _drop(self, engine: Engine, log: Log, key: Mapping[str, Any], *,
              stored_before: float | None) -> bool:
        """Delete one row unless the log records it; with ``stored_before``, only if it was
        not stored again since (checked in the delete itself, so a post renewing it wins)."""
        if self.recorded(log, key):
            return False
        self.ensure(engine)
        where = [self.table.c[k] == key[k] for k in self.keys]
        if stored_before is not None:
            where.append(self._stored_before(stored_before))
        with engine.begin() as conn:
            return bool(conn.execute(delete(self.table).where(*where)).rowcount)
