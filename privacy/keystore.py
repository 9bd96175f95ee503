"""The keys of personal data in events (密钥销毁), kept apart from the log.

Every sealed value names its key (``core.sealed``: the envelope's ``key``); a key seals
the values of one subject only (today: a member's name, subject = the member id), so
destroying the keys of a subject's envelopes erases it: the log keeps the envelopes (its
leaves, proofs and checkpoints unchanged), and nobody can open them again.

Keys are made ahead, in batches of :data:`BATCH` stored in one durable commit, and each
seal takes the next unused one (:meth:`KeyStore.issue`): a command that seals a name
waits for no write of the key store, and every key an event names was on disk before the
event was appended. A key taken by a command that is then refused, or left in a batch when
its process stops, is never used: a row of 48 bytes that opens nothing.

Where the keys live:

- SQLite (the embedded default): a file of its own, ``<data dir>/subject_keys.db`` (mode
  0600), never the log's or the read models' file. ``PRAGMA secure_delete=ON`` overwrites a
  destroyed key's bytes with zeros in its page, and the write-ahead log is checkpointed and
  truncated after a destruction, so no file keeps them; batches commit with
  ``synchronous=FULL``.
- PostgreSQL: the table ``privacy_subject_keys`` in the database's schema, apart from the
  event table and the read models; a destruction deletes the rows and rewrites the table
  (``VACUUM FULL``), so no page of it keeps the key. PostgreSQL's own write-ahead log and
  any base backup or WAL archive still hold the key until they are recycled: the limit of a
  key store inside the database (docs/PRIVACY.md).
- A database of its own (``DATALEDGER_KEYSTORE_URL``, :func:`open_keystore`'s ``own``): the
  same table in a SQLite file or a PostgreSQL database elsewhere, nothing beside the log.

The domain never sees this store: it is handed :meth:`KeyStore.seal` as its ``Sealer``
port (``domain.base``); readers open values with :meth:`KeyStore.reveal`.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import (
    Column,
    Engine,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from core import sealed
from core.files import write_private
from events.url import DatabaseURL

#: the SQLite key store's file name in the data directory
KEYS_FILE = "subject_keys.db"
#: the key table (SQLite and PostgreSQL)
KEYS_TABLE = "privacy_subject_keys"
#: keys made and stored per durable commit
BATCH = 256
#: the row of the secret that keys the Idempotency-Key fingerprints (``api/deps.py``): not a
#: subject's key (ids of those are 32 hex digits), never destroyed by an erasure
FINGERPRINT_KEY_ID = "idempotency-fingerprint-hmac-v1"

_METADATA = MetaData()
_keys = Table(KEYS_TABLE, _METADATA,
              Column("key_id", String, primary_key=True),
              Column("key", LargeBinary, nullable=False))


class KeyStoreBusy(RuntimeError):
    """A destruction could not yet scrub every file of the key store (run it again)."""


class KeyStore(Protocol):
    """Issue, get and destroy keys; seal and reveal with them."""

    def issue(self) -> tuple[str, bytes]: ...

    def get_many(self, key_ids: Iterable[str]) -> dict[str, bytes]: ...

    def get(self, key_id: str) -> bytes | None: ...

    def destroy(self, key_ids: Iterable[str]) -> int: ...

    def fingerprint_key(self) -> bytes: ...

    def seal(self, subject: str, path: str, value: str) -> dict[str, str]: ...

    def reveal(self, value: Any, path: str) -> str: ...

    def reveal_all(self, values: list[Any], path: str) -> list[str]: ...

    def close(self) -> None: ...


class _Keys(ABC):
    """What both stores share: the batch of keys made ahead, sealing and revealing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: list[tuple[str, bytes]] = []
        self._fingerprint: bytes | None = None

    @abstractmethod
    def _store(self, made: list[tuple[str, bytes]]) -> None:
        """Store ``made`` (key id, key) in one durable commit."""

    @abstractmethod
    def _store_unless_there(self, key_id: str, key: bytes) -> None:
        """Store ``key`` under ``key_id`` unless a key of that id is there (kept then)."""

    @abstractmethod
    def get_many(self, key_ids: Iterable[str]) -> dict[str, bytes]:
        """The keys of those ids that exist (not destroyed)."""

    def issue(self) -> tuple[str, bytes]:
        """A key of its own for the next sealed value: stored before it is handed out."""
        with self._lock:
            if not self._ready:
                made = sealed.new_keys(BATCH)  # one read of the OS generator a batch
                self._store(made)
                self._ready = made[::-1]
            return self._ready.pop()

    def fingerprint_key(self) -> bytes:
        """The platform's secret keying the Idempotency-Key fingerprints (HMAC-SHA256): made
        once by whichever process asks first, shared by every server on the same store, and
        kept apart from the log with the subjects' keys, so that the log's idempotency rows
        (or a copy of them) cannot confirm a guessed request body."""
        with self._lock:
            if self._fingerprint is None:
                self._store_unless_there(FINGERPRINT_KEY_ID, sealed.new_key()[1])
                self._fingerprint = self.get(FINGERPRINT_KEY_ID)
            if self._fingerprint is None:
                raise KeyStoreBusy(f"{FINGERPRINT_KEY_ID}: stored, then not found")
            return self._fingerprint

    def get(self, key_id: str) -> bytes | None:
        """The key of that id, or None (never made, or destroyed)."""
        return self.get_many([key_id]).get(key_id)

    def seal(self, subject: str, path: str, value: str) -> dict[str, str]:
        """The ``Sealer`` port the domain is handed: ``value`` sealed for ``subject`` under
        a key of its own."""
        key_id, key = self.issue()
        return sealed.seal(key_id, key, subject, path, value)

    def reveal(self, value: Any, path: str) -> str:
        """What a reader shows for a stored field (``core.sealed.reveal``)."""
        return sealed.reveal(value, path, self.get)

    def reveal_all(self, values: list[Any], path: str) -> list[str]:
        """:meth:`reveal` of many values, their keys read at once."""
        keys = self.get_many({k for v in values if (k := sealed.key_id_of(v)) is not None})
        return [sealed.reveal(v, path, keys.get) for v in values]


class SQLiteKeyStore(_Keys):
    """The keys in a SQLite file of their own (one connection, serialized by a lock)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        if not path.exists():
            write_private(path, b"")  # mode 0600 before SQLite writes a byte into it
        self._db = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                     timeout=30)
        for pragma in ("secure_delete=ON", "journal_mode=WAL", "synchronous=FULL"):
            self._conn.execute(f"PRAGMA {pragma}")
        self._conn.execute(f"CREATE TABLE IF NOT EXISTS {KEYS_TABLE} "
                           "(key_id TEXT PRIMARY KEY, key BLOB NOT NULL)")

    def _store(self, made: list[tuple[str, bytes]]) -> None:
        with self._db:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(f"INSERT INTO {KEYS_TABLE} VALUES (?, ?)", made)
            self._conn.execute("COMMIT")

    def _store_unless_there(self, key_id: str, key: bytes) -> None:
        with self._db:
            self._conn.execute(f"INSERT OR IGNORE INTO {KEYS_TABLE} VALUES (?, ?)",
                               (key_id, key))

    def get_many(self, key_ids: Iterable[str]) -> dict[str, bytes]:
        wanted = list(key_ids)
        out: dict[str, bytes] = {}
        with self._db:
            for i in range(0, len(wanted), 500):
                part = wanted[i:i + 500]
                marks = ",".join("?" * len(part))
                out.update((str(k), bytes(v)) for k, v in self._conn.execute(
                    f"SELECT key_id, key FROM {KEYS_TABLE} WHERE key_id IN ({marks})", part))
        return out

    def destroy(self, key_ids: Iterable[str]) -> int:
        """Destroy those keys; how many there were. No file keeps their bytes after."""
        ids = [(k,) for k in key_ids]
        with self._db:
            before = self._conn.total_changes
            self._conn.executemany(f"DELETE FROM {KEYS_TABLE} WHERE key_id = ?", ids)
            gone = self._conn.total_changes - before
            # the WAL's frames still hold the key's page as it was: copy the zeroed page
            # back into the file and truncate the WAL to nothing (waiting for readers)
            busy, frames, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy or frames:
            raise KeyStoreBusy(f"{self.path}: the write-ahead log could not be truncated (a "
                               "reader held it): the destroyed keys' old pages may remain in "
                               "it; run the erasure again")
        return gone

    def close(self) -> None:
        with self._db:
            self._conn.close()


class PostgresKeyStore(_Keys):
    """The keys in a table of their own in the PostgreSQL database's schema."""

    def __init__(self, url: DatabaseURL) -> None:
        super().__init__()
        self.engine: Engine = create_engine(
            url.sqlalchemy_url(), pool_size=4, max_overflow=8,
            connect_args={"options": f"-csearch_path={url.schema}"})
        with self.engine.begin() as conn:  # the log's store makes it too; either may be first
            schema = conn.dialect.identifier_preparer.quote_identifier(url.schema)
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
        _METADATA.create_all(self.engine, tables=[_keys])

    def _store(self, made: list[tuple[str, bytes]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(_keys.insert(), [{"key_id": k, "key": v} for k, v in made])

    def _store_unless_there(self, key_id: str, key: bytes) -> None:
        with self.engine.begin() as conn:
            conn.execute(pg_insert(_keys).values(key_id=key_id, key=key)
                         .on_conflict_do_nothing(index_elements=["key_id"]))

    def get_many(self, key_ids: Iterable[str]) -> dict[str, bytes]:
        wanted = list(key_ids)
        if not wanted:
            return {}
        with self.engine.connect() as conn:
            return {str(k): bytes(v) for k, v in conn.execute(
                select(_keys.c.key_id, _keys.c.key).where(_keys.c.key_id.in_(wanted)))}

    def destroy(self, key_ids: Iterable[str]) -> int:
        """Destroy those keys; how many there were. The table is rewritten after."""
        wanted = list(key_ids)
        with self.engine.begin() as conn:
            gone = conn.execute(delete(_keys).where(_keys.c.key_id.in_(wanted))).rowcount
        # the deleted rows' bytes stay in the table's pages until it is rewritten
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"VACUUM FULL {KEYS_TABLE}"))
        return int(gone)

    def close(self) -> None:
        self.engine.dispose()


def open_keystore(url: DatabaseURL, data_dir: Path,
                  own: DatabaseURL | None = None) -> KeyStore:
    """The key store in a database of its ``own`` when given (``DATALEDGER_KEYSTORE_URL``: a
    PostgreSQL database or schema, or a SQLite file, made if absent), else beside the log
    at ``url``: PostgreSQL's table, or the SQLite file in ``data_dir`` (made if absent)."""
    if own is not None and own.kind == "postgresql":
        return PostgresKeyStore(own)
    if own is not None:
        path = Path(own.path).absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteKeyStore(path)
    if url.kind == "postgresql":
        return PostgresKeyStore(url)
    data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteKeyStore(data_dir / KEYS_FILE)
