"""The per-subject keys of personal data in events (密钥销毁), kept apart from the log.

A subject (today: a member, its id the subject id) has one 256-bit key, made the first time
a field naming it is sealed (``core.sealed``). Destroying the key erases every value sealed
under it: the log keeps the envelopes (its leaves, proofs and checkpoints unchanged), and
nobody can open them again.

Where the keys live:

- SQLite (the embedded default): a file of its own, ``<data dir>/subject_keys.db`` (mode
  0600), never the log's or the read models' file. ``PRAGMA secure_delete=ON`` overwrites a
  destroyed key's bytes with zeros in its page, and the write-ahead log is checkpointed and
  truncated after a destruction, so no file keeps them. Commits are ``synchronous=FULL``:
  a key is on disk before the event sealed with it is appended.
- PostgreSQL: the table ``privacy_subject_keys`` in the database's schema, apart from the
  event table and the read models; a destruction deletes the row and rewrites the table
  (``VACUUM FULL``), so no page of it keeps the key. PostgreSQL's own write-ahead log and
  any base backup or WAL archive still hold the key until they are recycled: the limit of a
  key store inside the database (docs/PRIVACY.md).

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
from sqlalchemy.dialects import postgresql

from core import sealed
from core.files import write_private
from events.url import DatabaseURL

#: the SQLite key store's file name in the data directory
KEYS_FILE = "subject_keys.db"
#: the PostgreSQL key store's table
KEYS_TABLE = "privacy_subject_keys"

_METADATA = MetaData()
_keys = Table(KEYS_TABLE, _METADATA,
              Column("subject_id", String, primary_key=True),
              Column("key", LargeBinary, nullable=False))


class KeyStore(Protocol):
    """Get-or-create, get, destroy a subject's key; seal and reveal with them."""

    def get_or_create(self, subject: str) -> bytes: ...

    def get_many(self, subjects: Iterable[str]) -> dict[str, bytes]: ...

    def get(self, subject: str) -> bytes | None: ...

    def destroy(self, subject: str) -> bool: ...

    def seal(self, subject: str, path: str, value: str) -> dict[str, str]: ...

    def reveal(self, value: Any, path: str) -> str: ...

    def reveal_all(self, values: list[Any], path: str) -> list[str]: ...

    def close(self) -> None: ...


class _Keys(ABC):
    """What both stores share, on their ``get_or_create`` and ``get_many``."""

    @abstractmethod
    def get_or_create(self, subject: str) -> bytes:
        """The subject's key, made (and stored durably) if it has none."""

    @abstractmethod
    def get_many(self, subjects: Iterable[str]) -> dict[str, bytes]:
        """The keys of those subjects that have one."""

    def get(self, subject: str) -> bytes | None:
        """The subject's key, or None (never made, or destroyed)."""
        return self.get_many([subject]).get(subject)

    def seal(self, subject: str, path: str, value: str) -> dict[str, str]:
        """The ``Sealer`` port the domain is handed: ``value`` sealed under the subject's key."""
        return sealed.seal(self.get_or_create(subject), subject, path, value)

    def reveal(self, value: Any, path: str) -> str:
        """What a reader shows for a stored field (``core.sealed.reveal``)."""
        return sealed.reveal(value, path, self.get)

    def reveal_all(self, values: list[Any], path: str) -> list[str]:
        """:meth:`reveal` of many values, their keys read at once."""
        keys = self.get_many({s for v in values if (s := sealed.subject_of(v)) is not None})
        return [sealed.reveal(v, path, keys.get) for v in values]


class SQLiteKeyStore(_Keys):
    """The keys in a SQLite file of their own (one connection, serialized by a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            write_private(path, b"")  # mode 0600 before SQLite writes a byte into it
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                     timeout=30)
        for pragma in ("secure_delete=ON", "journal_mode=WAL", "synchronous=FULL"):
            self._conn.execute(f"PRAGMA {pragma}")
        self._conn.execute(f"CREATE TABLE IF NOT EXISTS {KEYS_TABLE} "
                           "(subject_id TEXT PRIMARY KEY, key BLOB NOT NULL)")

    def get_or_create(self, subject: str) -> bytes:
        with self._lock:
            self._conn.execute(f"INSERT OR IGNORE INTO {KEYS_TABLE} VALUES (?, ?)",
                               (subject, sealed.new_key()))
            row = self._conn.execute(f"SELECT key FROM {KEYS_TABLE} WHERE subject_id = ?",
                                     (subject,)).fetchone()
        return bytes(row[0])

    def get_many(self, subjects: Iterable[str]) -> dict[str, bytes]:
        wanted = list(subjects)
        out: dict[str, bytes] = {}
        with self._lock:
            for i in range(0, len(wanted), 500):
                part = wanted[i:i + 500]
                marks = ",".join("?" * len(part))
                out.update((str(s), bytes(k)) for s, k in self._conn.execute(
                    f"SELECT subject_id, key FROM {KEYS_TABLE} WHERE subject_id IN ({marks})",
                    part))
        return out

    def destroy(self, subject: str) -> bool:
        with self._lock:
            gone = self._conn.execute(f"DELETE FROM {KEYS_TABLE} WHERE subject_id = ?",
                                      (subject,)).rowcount > 0
            # the WAL's frames still hold the key's page as it was: copy the zeroed page
            # back into the file and truncate the WAL to nothing
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return gone

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresKeyStore(_Keys):
    """The keys in a table of their own in the PostgreSQL database's schema."""

    def __init__(self, url: DatabaseURL) -> None:
        self.engine: Engine = create_engine(
            url.sqlalchemy_url(), pool_size=4, max_overflow=8,
            connect_args={"options": f"-csearch_path={url.schema}"})
        with self.engine.begin() as conn:  # the log's store makes it too; either may be first
            schema = conn.dialect.identifier_preparer.quote_identifier(url.schema)
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
        _METADATA.create_all(self.engine, tables=[_keys])

    def get_or_create(self, subject: str) -> bytes:
        with self.engine.begin() as conn:
            conn.execute(postgresql.insert(_keys).values(
                subject_id=subject, key=sealed.new_key()).on_conflict_do_nothing())
            return bytes(conn.execute(select(_keys.c.key).where(
                _keys.c.subject_id == subject)).scalar_one())

    def get_many(self, subjects: Iterable[str]) -> dict[str, bytes]:
        wanted = list(subjects)
        if not wanted:
            return {}
        with self.engine.connect() as conn:
            return {str(s): bytes(k) for s, k in conn.execute(
                select(_keys.c.subject_id, _keys.c.key).where(_keys.c.subject_id.in_(wanted)))}

    def destroy(self, subject: str) -> bool:
        with self.engine.begin() as conn:
            gone = conn.execute(delete(_keys).where(_keys.c.subject_id == subject)).rowcount > 0
        # the deleted row's bytes stay in the table's pages until it is rewritten
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"VACUUM FULL {KEYS_TABLE}"))
        return gone

    def close(self) -> None:
        self.engine.dispose()


def open_keystore(url: DatabaseURL, data_dir: Path) -> KeyStore:
    """The key store beside the log at ``url``: PostgreSQL's table, or the SQLite file in
    ``data_dir`` (made if absent)."""
    if url.kind == "postgresql":
        return PostgresKeyStore(url)
    data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteKeyStore(data_dir / KEYS_FILE)
