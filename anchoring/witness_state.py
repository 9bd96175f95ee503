"""The witness's files: its state (what it last co-signed, per log) and its secret key.

The state is a SQLite file of its own (:class:`WitnessState`), run with
``synchronous=FULL``: an update is on disk (fsynced) when it returns, so the witness
remembers every checkpoint it co-signed. The key file holds the 32-byte BLS secret key
(mode 0600), created once, atomically (:func:`load_or_create_key`).
"""

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from chain.bls import SECRET_KEY_SIZE, WitnessKey
from chain.hasher import HASH_SIZE

MAX_STORED_SIZE: Final = 2**63 - 1
"""Largest tree size the witness stores (a SQLite INTEGER); larger sizes are refused (400)."""


@dataclass(frozen=True)
class LogState:
    """What the witness last co-signed for a log: origin, size, root and the signed note."""

    origin: str
    size: int
    root: bytes
    note: str


class WitnessState:
    """The witness's memory: one row per log in a SQLite file of its own.

    Table ``witness_logs (origin PRIMARY KEY, size, root, last_note)``. The
    connection runs with ``journal_mode=WAL`` and ``synchronous=FULL``, so a
    committed update is on disk (fsynced) when :meth:`update` returns.
    Thread-safe; ``BEGIN IMMEDIATE`` also serializes other processes
    opening the same file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open (or create) the state file at ``path``, creating its directory."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS witness_logs ("
            " origin TEXT PRIMARY KEY,"
            " size INTEGER NOT NULL CHECK (size >= 0),"
            " root BLOB NOT NULL CHECK (length(root) = 32),"
            " last_note TEXT NOT NULL"
            ") WITHOUT ROWID"
        )
        _fsync_dir(self.path.parent)  # The new file's directory entry, once.

    @property
    def synchronous(self) -> int:
        """The connection's ``PRAGMA synchronous`` (2 is FULL)."""
        with self._lock:
            return int(self._conn.execute("PRAGMA synchronous").fetchone()[0])

    def get(self, origin: str) -> LogState | None:
        """Return what the witness last co-signed for ``origin``, or None if nothing."""
        with self._lock:
            return self._read(origin)

    def all(self) -> list[LogState]:
        """Return the state of every log, by origin."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT origin, size, root, last_note FROM witness_logs ORDER BY origin"
            ).fetchall()
        return [LogState(str(o), int(s), bytes(r), str(n)) for o, s, r, n in rows]

    def update(self, origin: str, decide: Callable[[LogState | None], LogState]) -> LogState:
        """Atomically read ``origin``'s state, let ``decide`` judge it, and store its verdict.

        Runs in one ``BEGIN IMMEDIATE`` transaction: ``decide`` gets the
        current state (None for a log never co-signed) and returns the new
        one, or raises to leave the state untouched (the exception
        propagates). The new state is committed and fsynced before this
        returns it.
        """
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                new = decide(self._read(origin))
                if new.origin != origin:
                    raise ValueError(f"decided state of {new.origin!r}, want {origin!r}")
                if not 0 <= new.size <= MAX_STORED_SIZE or len(new.root) != HASH_SIZE:
                    raise ValueError(f"invalid state: size {new.size}, root {new.root.hex()}")
                conn.execute(
                    "INSERT INTO witness_logs (origin, size, root, last_note) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (origin) DO UPDATE SET size = excluded.size,"
                    " root = excluded.root, last_note = excluded.last_note",
                    (origin, new.size, new.root, new.note),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return new

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def _read(self, origin: str) -> LogState | None:
        """Read one row; the caller holds the lock."""
        row = self._conn.execute(
            "SELECT size, root, last_note FROM witness_logs WHERE origin = ?", (origin,)
        ).fetchone()
        if row is None:
            return None
        return LogState(origin, int(row[0]), bytes(row[1]), str(row[2]))


def load_or_create_key(path: str | os.PathLike[str], name: str) -> WitnessKey:
    """Return the witness key of ``name`` whose 32-byte secret key is in the file ``path``.

    Creates the file (mode 0600, its directory 0700 if new) with a fresh
    random key if it does not exist; the file is written to a temporary
    name, fsynced, then linked into place, so a crash never leaves a
    partial key and two starts never create two keys. Raises ValueError if
    the file is not exactly 32 bytes of a valid key, or if its mode lets
    the group or others access it.
    """
    target = Path(path)
    if not target.exists():
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _create_secret_file(target, WitnessKey.generate(name).secret_key)
    mode = target.stat().st_mode & 0o777
    if mode & 0o077:
        raise ValueError(f"witness key file {target} has mode {mode:04o}; make it 0600")
    secret = target.read_bytes()
    if len(secret) != SECRET_KEY_SIZE:
        raise ValueError(
            f"witness key file {target} holds {len(secret)} bytes, want {SECRET_KEY_SIZE}"
        )
    return WitnessKey(name, secret)


def _create_secret_file(target: Path, secret: bytes) -> None:
    """Write ``secret`` to ``target`` (mode 0600) unless it exists; durable before returning."""
    temp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # fails if another process created the key first: keep theirs
        with contextlib.suppress(FileExistsError):
            os.link(temp, target)
    finally:
        os.unlink(temp)
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    """Fsync a directory so the entries created in it survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
