"""The results store: the bytes of delivered results, which never go in the log.

The log records only a result's SHA-256 (``computation.succeeded``, ``delivery.made``); the
bytes are kept here, keyed by (computation id, SHA-256). The route stores the bytes *before*
the command that records their digest commits, so a crash between the two never leaves a
recorded delivery without its bytes. Rows for other digests of the same computation may
exist (a provider that posted other bytes, or a party the command then refused) but are
never served: a delivery serves the row whose digest the log recorded, which no later post
can replace.

The table lives beside the read models (in their database) but has a ``MetaData`` of its
own: it is not a read model, so rebuilding the read models (which drops their tables) never
touches it.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    LargeBinary,
    MetaData,
    String,
    Table,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from core.canonical import canonical_bytes

RESULTS_METADATA = MetaData()
TABLE = "rm_delivery_results"

results = Table(
    TABLE, RESULTS_METADATA,
    Column("computation_id", String, primary_key=True),
    Column("sha256", String, primary_key=True),
    Column("content", LargeBinary, nullable=False),
)

_ready: weakref.WeakSet[Engine] = weakref.WeakSet()
_lock = threading.Lock()


def ensure_table(engine: Engine) -> None:
    """Create the table if it does not exist (once per engine)."""
    if engine in _ready:
        return
    with _lock:
        if engine not in _ready:
            RESULTS_METADATA.create_all(engine)
            _ready.add(engine)


def encode(result: Any) -> tuple[bytes, str]:
    """The canonical JSON bytes of ``result`` and their hex SHA-256.

    Raises ``core.canonical.CanonicalEncodingError`` (floats, NUL, …).
    """
    content = canonical_bytes(result)
    return content, hashlib.sha256(content).hexdigest()


def put(engine: Engine, computation_id: str, content: bytes) -> str:
    """Store ``content`` for ``computation_id`` under its SHA-256, which it returns.

    Idempotent: the key holds the digest, so the row for a key can only ever hold the same
    bytes; other bytes for the same computation go to a row of their own and shadow nothing.
    """
    ensure_table(engine)
    digest = hashlib.sha256(content).hexdigest()
    with engine.begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(dialect.insert(results).on_conflict_do_nothing(),
                     [{"computation_id": computation_id, "sha256": digest, "content": content}])
    return digest


def get(engine: Engine, computation_id: str, sha256: str) -> bytes | None:
    """The stored bytes of ``computation_id`` whose SHA-256 is ``sha256``, or None."""
    ensure_table(engine)
    with engine.connect() as conn:
        row = conn.execute(select(results.c.content).where(
            results.c.computation_id == computation_id,
            results.c.sha256 == sha256)).first()
    return None if row is None else bytes(row.content)
