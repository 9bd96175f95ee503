"""The results store: the bytes of delivered results, which never go in the log.

The log records only a result's SHA-256 (``computation.succeeded``, ``delivery.made``); the
bytes are kept here, keyed by (computation id, SHA-256): the result as the node posted it,
and the copy watermarked for its delivery (``delivered_sha256`` of ``delivery.made``), the
only bytes the demander is served. The route stores the bytes *before*
the command that records their digest commits, so a crash between the two never leaves a
recorded delivery without its bytes. A delivery serves the row whose digest the log
recorded, which no later post can replace.

Bytes the log does not record are not kept: the route drops them when the command refuses
the post (``discard``), and ``sweep`` drops those a crash between storing and recording
left behind, once they are older than a grace period (a post in flight is never that old;
storing the same bytes again renews their time). Neither ever drops bytes the log records.

The table lives beside the read models (in their database) but has a ``MetaData`` of its
own: it is not a read model, so rebuilding the read models (which drops their tables) never
touches it. How such a table is made, written and swept is ``events/offlog.py``'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    LargeBinary,
    MetaData,
    String,
    Table,
    inspect,
    select,
    text,
)

from core.canonical import canonical_bytes
from events.offlog import ORPHAN_GRACE_S, Log, OffLogTable

RESULTS_METADATA = MetaData()
TABLE = "rm_delivery_results"
#: the event that records a result's SHA-256 (by its stable type name)
SUCCEEDED = "computation.succeeded"
#: the event that records the delivered (watermarked) copy's SHA-256
DELIVERED = "delivery.made"

results = Table(
    TABLE, RESULTS_METADATA,
    Column("computation_id", String, primary_key=True),
    Column("sha256", String, primary_key=True),
    Column("content", LargeBinary, nullable=False),
    # when the bytes were last stored (Unix time); null for rows older than the column
    Column("stored_at", Float, nullable=True),
)


def _add_stored_at(engine: Engine) -> None:
    """Add ``stored_at`` to a table made before it had one."""
    if "stored_at" not in {c["name"] for c in inspect(engine).get_columns(TABLE)}:
        with engine.begin() as conn:
            kind = Float().compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {TABLE} ADD COLUMN stored_at {kind}"))


def recorded(log: Log, computation_id: str, sha256: str) -> bool:
    """Whether the log records ``sha256`` as the result of ``computation_id``, or as the
    bytes its delivery serves."""
    return any((e.type_name == SUCCEEDED and e.payload().get("result_sha256") == sha256)
               or (e.type_name == DELIVERED and e.payload().get("delivered_sha256") == sha256)
               for e in log.load(computation_id))


def _recorded(log: Log, key: Mapping[str, Any]) -> bool:
    return recorded(log, key["computation_id"], key["sha256"])


STORE = OffLogTable(results, _recorded, upgrade=_add_stored_at)


def ensure_table(engine: Engine) -> None:
    """Create the table if it does not exist, with ``stored_at`` (added to a table made
    before it had one), once per engine."""
    STORE.ensure(engine)


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
    digest = hashlib.sha256(content).hexdigest()
    STORE.put(engine, {"computation_id": computation_id, "sha256": digest,
                       "content": content})
    return digest


def get(engine: Engine, computation_id: str, sha256: str) -> bytes | None:
    """The stored bytes of ``computation_id`` whose SHA-256 is ``sha256``, or None."""
    ensure_table(engine)
    with engine.connect() as conn:
        row = conn.execute(select(results.c.content).where(
            results.c.computation_id == computation_id,
            results.c.sha256 == sha256)).first()
    return None if row is None else bytes(row.content)


def discard(engine: Engine, log: Log, computation_id: str, sha256: str) -> bool:
    """Drop the bytes stored for a post the command refused, unless the log records them
    (then another post of the same bytes was accepted); whether any were dropped."""
    return STORE.discard(engine, log, {"computation_id": computation_id, "sha256": sha256})


def sweep(engine: Engine, log: Log, *, older_than: float = ORPHAN_GRACE_S) -> int:
    """Drop the bytes no ``computation.succeeded`` on the log records, stored more than
    ``older_than`` seconds ago (left by a crash between storing and recording); how many
    rows were dropped. Reads only the candidates' streams, not the whole log."""
    return STORE.sweep(engine, log, older_than=older_than)
