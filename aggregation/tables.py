"""The aggregation node's sealed tables and their OPRF keys, one per joint execution, off the log.

The log records a published table's digest (``joint.published``); its bytes (what the bank
downloads, ``HiddenTable.to_bytes``) and the OPRF key that answers queries over it are kept
here, keyed by the joint id. The key is the platform's secret: this module hands it only to
the aggregation node (``key``), never to a view, a log line or an event; ``StoredTable``
leaves it out of its repr.

The node stores a table *before* it records ``joint.published``, so a published table always
has its bytes and its key. The first table stored for a joint is the one it keeps: a second
``put`` (a run that raced, a restart that prepared again) stores nothing and gets the first
back, so the digest the log records is always the one stored. A table of an execution that
failed is dropped (``drop``).

The table lives beside the read models (in their database) with a ``MetaData`` of its own,
like ``delivery/results.py``: rebuilding the read models never touches it.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from core.hidden_query import HiddenTable, check_key

TABLES_METADATA = MetaData()
TABLE = "agg_joint_tables"

tables = Table(
    TABLE, TABLES_METADATA,
    Column("joint_id", String, primary_key=True),
    Column("digest", String, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("oprf_key", LargeBinary, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("stored_at", Float, nullable=False),
)

_ready: weakref.WeakSet[Engine] = weakref.WeakSet()
_lock = threading.Lock()


@dataclass(frozen=True)
class StoredTable:
    """A joint's stored table: its digest and row count, and the OPRF key (never shown)."""

    joint_id: str
    digest: str
    rows: int
    key: bytes = field(repr=False)


def ensure_table(engine: Engine) -> None:
    """Create the table if it does not exist, once per engine."""
    if engine in _ready:
        return
    with _lock:
        if engine not in _ready:
            TABLES_METADATA.create_all(engine)
            _ready.add(engine)


def put(engine: Engine, joint_id: str, key: bytes, table: HiddenTable) -> StoredTable:
    """Store ``table`` and its OPRF ``key`` for ``joint_id`` unless one is stored already;
    the stored one either way (the first stored wins)."""
    ensure_table(engine)
    check_key(key)
    row = {"joint_id": joint_id, "digest": table.digest(), "rows": len(table.rows),
           "oprf_key": key, "content": table.to_bytes(), "stored_at": time.time()}
    with engine.begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(dialect.insert(tables).on_conflict_do_nothing(
            index_elements=[tables.c.joint_id]), [row])
    stored = find(engine, joint_id)
    if stored is None:  # pragma: no cover - dropped between the insert and the read
        raise LookupError(f"the table of joint {joint_id} was dropped while being stored")
    return stored


def find(engine: Engine, joint_id: str) -> StoredTable | None:
    """The table stored for ``joint_id`` (without its bytes), or None."""
    ensure_table(engine)
    with engine.connect() as conn:
        row = conn.execute(select(tables.c.digest, tables.c.rows, tables.c.oprf_key).where(
            tables.c.joint_id == joint_id)).first()
    return None if row is None else StoredTable(joint_id, row.digest, row.rows,
                                                bytes(row.oprf_key))


def content(engine: Engine, joint_id: str, digest: str) -> bytes | None:
    """The bytes of ``joint_id``'s table if it is the one of ``digest``; else None."""
    ensure_table(engine)
    with engine.connect() as conn:
        row = conn.execute(select(tables.c.content).where(
            tables.c.joint_id == joint_id, tables.c.digest == digest)).first()
    return None if row is None else bytes(row.content)


def key(engine: Engine, joint_id: str, digest: str) -> bytes | None:
    """The OPRF key of ``joint_id``'s table if it is the one of ``digest``; else None."""
    stored = find(engine, joint_id)
    return stored.key if stored is not None and stored.digest == digest else None


def drop(engine: Engine, joint_id: str) -> bool:
    """Drop ``joint_id``'s table and key (its execution failed); whether one was stored."""
    ensure_table(engine)
    with engine.begin() as conn:
        return bool(conn.execute(delete(tables).where(tables.c.joint_id == joint_id)).rowcount)
