"""Read models: SQL tables built from the log in order, one handler per event type.

A projection declares its tables on the shared ``METADATA`` and maps stable event
type names to handlers ``(conn, entry, payload) -> None``. The runner applies them
and records each projection's position in the same transaction as its writes.

Tenant isolation is one table for every read model: ``acl(kind, resource_id,
participant_id)`` lists who may see a non-public row; the regulator and the
platform see everything.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from events.store import LogEntry

METADATA = MetaData()

acl = Table(
    "rm_acl", METADATA,
    Column("kind", String, primary_key=True),
    Column("resource_id", String, primary_key=True),
    Column("participant_id", String, primary_key=True),
)

tracking = Table(
    "rm_tracking", METADATA,
    Column("projection", String, primary_key=True),
    Column("seq", Integer, nullable=False),
)

EventHandler = Callable[[Connection, LogEntry, dict[str, Any]], None]


def grant(conn: Connection, kind: str, resource_id: str, *participant_ids: str) -> None:
    """Let ``participant_ids`` see resource ``kind``/``resource_id`` (again: no change)."""
    rows = [{"kind": kind, "resource_id": resource_id, "participant_id": p}
            for p in dict.fromkeys(participant_ids) if p]
    if rows:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(dialect.insert(acl).on_conflict_do_nothing(), rows)


class Projection(ABC):
    """A read model: tables plus handlers by event type name.

    ``kinds`` are the acl kinds this projection grants, cleared with its tables.
    """

    name: ClassVar[str] = ""
    tables: ClassVar[tuple[Table, ...]] = ()
    kinds: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def handlers(self) -> dict[str, EventHandler]:
        """Map stable event type names to handler functions."""

    def digest(self, conn: Connection) -> str:
        """SHA-256 over every row of every table, ordered: equal states give equal digests."""
        h = hashlib.sha256()
        grants = select(acl).where(acl.c.kind.in_(self.kinds)).order_by(*acl.primary_key.columns)
        for row in conn.execute(grants).mappings():
            h.update(json.dumps(dict(row), sort_keys=True).encode())
        for table in self.tables:
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).mappings()
            for row in rows:
                h.update(json.dumps(dict(row), sort_keys=True, default=str).encode())
        return h.hexdigest()

    def reset(self, conn: Connection) -> None:
        """Empty this projection's tables."""
        for table in self.tables:
            conn.execute(delete(table))
        if self.kinds:
            conn.execute(delete(acl).where(acl.c.kind.in_(self.kinds)))


def visible_to(kind: str, id_column: Any, participant_id: str) -> Any:
    """A WHERE clause: rows of ``kind`` that ``participant_id`` was granted."""
    return id_column.in_(select(acl.c.resource_id).where(
        acl.c.kind == kind, acl.c.participant_id == participant_id))
