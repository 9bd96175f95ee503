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
touches it. A table made by an older version, keyed by computation id alone, is migrated in
place on first use (``ensure_table``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import weakref
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    LargeBinary,
    MetaData,
    String,
    Table,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite

from core.canonical import canonical_bytes

log = logging.getLogger(__name__)

RESULTS_METADATA = MetaData()
TABLE = "rm_delivery_results"
#: the primary key of the tables older versions made
OLD_KEY = ["computation_id"]
KEY = ["computation_id", "sha256"]

results = Table(
    TABLE, RESULTS_METADATA,
    Column("computation_id", String, primary_key=True),
    Column("sha256", String, primary_key=True),
    Column("content", LargeBinary, nullable=False),
)

_ready: weakref.WeakSet[Engine] = weakref.WeakSet()
_lock = threading.Lock()


def ensure_table(engine: Engine) -> None:
    """Create the table if it does not exist, or migrate an older one (once per engine)."""
    if engine in _ready:
        return
    with _lock:
        if engine not in _ready:
            if _primary_key(engine) == OLD_KEY:
                migrate(engine)
            RESULTS_METADATA.create_all(engine)
            _ready.add(engine)


def _primary_key(bind: Engine | Connection) -> list[str] | None:
    """The primary key columns of the results table, or None if it does not exist."""
    found = inspect(bind)
    if not found.has_table(TABLE):
        return None
    return list(found.get_pk_constraint(TABLE)["constrained_columns"])


def migrate(engine: Engine) -> None:
    """Re-key a table keyed by computation id alone by (computation id, SHA-256), keeping
    its rows (each row's ``sha256`` is that of its ``content``).

    PostgreSQL: one transaction that locks the table, looks again (another process may have
    migrated it meanwhile) and swaps the primary key in place. SQLite cannot change a
    primary key: the rows are copied to a new table, the old one dropped and the new one
    renamed, all in one transaction that holds the database's write lock: a crash before its
    commit leaves the old table whole and untouched.
    """
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE"))
            if _primary_key(conn) != OLD_KEY:
                return
            name = inspect(conn).get_pk_constraint(TABLE)["name"]
            conn.execute(text(f'ALTER TABLE {TABLE} DROP CONSTRAINT "{name}", '
                              f"ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (computation_id, sha256)"))
        log.warning("results store: %s re-keyed by (computation_id, sha256)", TABLE)
        return
    new = results.to_metadata(MetaData(), name=f"{TABLE}_new")
    with engine.begin() as conn:
        # the driver opens a transaction only before DML: open it here, so that every
        # statement below, DDL too, commits together or not at all
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        if _primary_key(conn) != OLD_KEY:
            return
        new.drop(conn, checkfirst=True)
        new.create(conn)
        conn.execute(text(f"INSERT INTO {new.name} (computation_id, sha256, content) "
                          f"SELECT computation_id, sha256, content FROM {TABLE}"))
        conn.execute(text(f"DROP TABLE {TABLE}"))
        conn.execute(text(f"ALTER TABLE {new.name} RENAME TO {TABLE}"))
    log.warning("results store: %s re-keyed by (computation_id, sha256)", TABLE)


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
