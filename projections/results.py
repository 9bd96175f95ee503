"""The results store: the bytes of delivered results, which never go in the log.

The log records only a result's SHA-256 (``computation.succeeded``, ``delivery.made``); the
bytes are kept here, keyed by computation id. The table has a ``MetaData`` of its own: it is
not a read model, so rebuilding the read models (which drops their tables) never touches it.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from typing import Any

from sqlalchemy import Column, Engine, LargeBinary, MetaData, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from events.canonical import canonical_bytes

RESULTS_METADATA = MetaData()

results = Table(
    "rm_delivery_results", RESULTS_METADATA,
    Column("computation_id", String, primary_key=True),
    Column("content", LargeBinary, nullable=False),
    Column("sha256", String, nullable=False),
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

    Raises ``events.canonical.CanonicalEncodingError`` (floats, NUL, …).
    """
    content = canonical_bytes(result)
    return content, hashlib.sha256(content).hexdigest()


def put(engine: Engine, computation_id: str, content: bytes) -> str:
    """Store ``content`` for ``computation_id`` (first write wins); its hex SHA-256.

    The caller stores only after the log recorded that SHA-256 for the computation, so a
    second put for the same id carries the same bytes.
    """
    ensure_table(engine)
    digest = hashlib.sha256(content).hexdigest()
    with engine.begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(dialect.insert(results).on_conflict_do_nothing(),
                     [{"computation_id": computation_id, "content": content, "sha256": digest}])
    return digest


def get(engine: Engine, computation_id: str) -> tuple[bytes, str] | None:
    """The stored bytes and their SHA-256, or None."""
    ensure_table(engine)
    with engine.connect() as conn:
        row = conn.execute(select(results.c.content, results.c.sha256).where(
            results.c.computation_id == computation_id)).first()
    return None if row is None else (bytes(row.content), str(row.sha256))
