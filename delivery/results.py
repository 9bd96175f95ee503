"""The results store: the bytes of delivered results, which never go in the log.

The log records only a result's SHA-256 (``computation.succeeded``, ``delivery.made``); the
bytes are kept here, keyed by (computation id, SHA-256). The route stores the bytes *before*
the command that records their digest commits, so a crash between the two never leaves a
recorded delivery without its bytes. A delivery serves the row whose digest the log
recorded, which no later post can replace.

Bytes the log does not record are not kept: the route drops them when the command refuses
the post (``discard``), and ``sweep`` drops those a crash between storing and recording
left behind, once they are older than a grace period (a post in flight is never that old;
storing the same bytes again renews their time). Neither ever drops bytes the log records.

The table lives beside the read models (in their database) but has a ``MetaData`` of its
own: it is not a read model, so rebuilding the read models (which drops their tables) never
touches it.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from typing import Any, Protocol

from sqlalchemy import (
    Column,
    Engine,
    Float,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    inspect,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite

from core.canonical import canonical_bytes
from core.event import Event

RESULTS_METADATA = MetaData()
TABLE = "rm_delivery_results"
#: the event that records a result's SHA-256 (by its stable type name)
SUCCEEDED = "computation.succeeded"
#: how old unrecorded bytes must be before ``sweep`` drops them, in seconds
ORPHAN_GRACE_S = 3600.0

results = Table(
    TABLE, RESULTS_METADATA,
    Column("computation_id", String, primary_key=True),
    Column("sha256", String, primary_key=True),
    Column("content", LargeBinary, nullable=False),
    # when the bytes were last stored (Unix time); null for rows older than the column
    Column("stored_at", Float, nullable=True),
)

_ready: weakref.WeakSet[Engine] = weakref.WeakSet()
_lock = threading.Lock()


class Log(Protocol):
    """The event log, as far as this store reads it."""

    def load(self, originator_id: str, after_version: int = 0) -> list[Event]: ...


def ensure_table(engine: Engine) -> None:
    """Create the table if it does not exist, with ``stored_at`` (added to a table made
    before it had one), once per engine."""
    if engine in _ready:
        return
    with _lock:
        if engine in _ready:
            return
        RESULTS_METADATA.create_all(engine)
        if "stored_at" not in {c["name"] for c in inspect(engine).get_columns(TABLE)}:
            with engine.begin() as conn:
                kind = Float().compile(dialect=conn.dialect)
                conn.execute(text(f"ALTER TABLE {TABLE} ADD COLUMN stored_at {kind}"))
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
    Storing bytes again renews their ``stored_at``, so ``sweep`` leaves them to the post
    that is about to record them.
    """
    ensure_table(engine)
    digest = hashlib.sha256(content).hexdigest()
    now = time.time()
    with engine.begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(results)
        conn.execute(insert.on_conflict_do_update(
            index_elements=[results.c.computation_id, results.c.sha256],
            set_={"stored_at": insert.excluded.stored_at}),
            [{"computation_id": computation_id, "sha256": digest, "content": content,
              "stored_at": now}])
    return digest


def get(engine: Engine, computation_id: str, sha256: str) -> bytes | None:
    """The stored bytes of ``computation_id`` whose SHA-256 is ``sha256``, or None."""
    ensure_table(engine)
    with engine.connect() as conn:
        row = conn.execute(select(results.c.content).where(
            results.c.computation_id == computation_id,
            results.c.sha256 == sha256)).first()
    return None if row is None else bytes(row.content)


def recorded(log: Log, computation_id: str, sha256: str) -> bool:
    """Whether the log records ``sha256`` as the result of ``computation_id``."""
    return any(e.type_name == SUCCEEDED and e.payload().get("result_sha256") == sha256
               for e in log.load(computation_id))


def discard(engine: Engine, log: Log, computation_id: str, sha256: str) -> bool:
    """Drop the bytes stored for a post the command refused, unless the log records them
    (then another post of the same bytes was accepted); whether any were dropped."""
    return _drop(engine, log, computation_id, sha256, stored_before=None)


def sweep(engine: Engine, log: Log, *, older_than: float = ORPHAN_GRACE_S) -> int:
    """Drop the bytes no ``computation.succeeded`` on the log records, stored more than
    ``older_than`` seconds ago (left by a crash between storing and recording); how many
    rows were dropped. Reads only the candidates' streams, not the whole log."""
    ensure_table(engine)
    cutoff = time.time() - older_than
    with engine.connect() as conn:
        candidates = conn.execute(select(results.c.computation_id, results.c.sha256).where(
            _stored_before(cutoff))).all()
    return sum(_drop(engine, log, cid, digest, stored_before=cutoff)
               for cid, digest in candidates)


def _stored_before(cutoff: float) -> Any:
    return or_(results.c.stored_at < cutoff, results.c.stored_at.is_(None))


def _drop(engine: Engine, log: Log, computation_id: str, sha256: str, *,
          stored_before: float | None) -> bool:
    """Delete one row unless the log records it; with ``stored_before``, only if it was
    not stored again since (checked in the delete itself, so a post renewing it wins)."""
    if recorded(log, computation_id, sha256):
        return False
    ensure_table(engine)
    where = [results.c.computation_id == computation_id, results.c.sha256 == sha256]
    if stored_before is not None:
        where.append(_stored_before(stored_before))
    with engine.begin() as conn:
        return bool(conn.execute(delete(results).where(*where)).rowcount)
