"""The tree's tiles and upper nodes in a SQLite file of their own (``chain.db``)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from anchoring.checkpoints import CHECKPOINT_TABLES
from anchoring.tiles import Chunk, TreeMovedError
from anchoring.tilestore import Fetched, TileStore
from chain.compact import NodeID


class SQLiteTileStore(TileStore):
    """Tiles, upper nodes, size and checkpoints in one SQLite file (WAL)."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                    timeout=30)
        #: one connection serves the integrator and the proof readers: one user at a time,
        #: so a reader never runs inside the integrator's open transaction
        self.lock = threading.RLock()
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS chain_nodes (level INTEGER, idx INTEGER, "
                          "hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID")
        self.conn.execute("CREATE TABLE IF NOT EXISTS chain_tiles (idx INTEGER PRIMARY KEY, "
                          "hashes BLOB NOT NULL)")
        self.conn.execute("CREATE TABLE IF NOT EXISTS chain_state (id INTEGER PRIMARY KEY "
                          "CHECK (id = 1), size INTEGER NOT NULL)")
        self.conn.execute("INSERT OR IGNORE INTO chain_state VALUES (1, 0)")
        for statement in CHECKPOINT_TABLES:
            self.conn.execute(statement.format(int="INTEGER", blob="BLOB"))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.lock:
            return list(self.conn.execute(sql, params).fetchall())

    def size(self) -> int:
        with self.lock:
            return int(self.conn.execute("SELECT size FROM chain_state").fetchone()[0])

    def write(self, batch: Iterable[Chunk], new_size: int, old_size: int) -> None:
        with self.lock:
            c = self.conn
            c.execute("BEGIN IMMEDIATE")
            try:
                if c.execute("SELECT size FROM chain_state").fetchone()[0] != old_size:
                    raise TreeMovedError("another integrator moved the tree; nothing written")
                for tiles, nodes in batch:
                    c.executemany("INSERT INTO chain_tiles VALUES (?, ?) ON CONFLICT (idx) "
                                  "DO UPDATE SET hashes = excluded.hashes", tiles)
                    c.executemany("INSERT INTO chain_nodes VALUES (?, ?, ?)", nodes)
                c.execute("UPDATE chain_state SET size = ?", (new_size,))
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    def fetch(self, ids: Sequence[NodeID], tiles: Sequence[int] = ()) -> Fetched:
        with self.lock:
            return self._nodes(ids), self._tiles(tiles)

    def fetch_sized(self, ids: Sequence[NodeID],
                    tiles: Sequence[int]) -> tuple[dict[NodeID, bytes], dict[int, bytes], int]:
        with self.lock:  # one read transaction: the size and the nodes agree
            self.conn.execute("BEGIN")
            try:
                return self._nodes(ids), self._tiles(tiles), self.size()
            finally:
                self.conn.execute("COMMIT")

    def _nodes(self, ids: Sequence[NodeID]) -> dict[NodeID, bytes]:
        """The stored nodes among ``ids``; the caller holds the lock."""
        out: dict[NodeID, bytes] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 400):
            chunk = unique[start:start + 400]
            where = " OR ".join(["(level = ? AND idx = ?)"] * len(chunk))
            params = [v for pair in chunk for v in pair]
            for level, idx, h in self.conn.execute(
                    f"SELECT level, idx, hash FROM chain_nodes WHERE {where}", params):
                out[(level, idx)] = bytes(h)
        return out

    def _tiles(self, tiles: Sequence[int]) -> dict[int, bytes]:
        """The stored tiles among ``tiles``; the caller holds the lock."""
        out: dict[int, bytes] = {}
        unique = list(dict.fromkeys(tiles))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            for idx, h in self.conn.execute(
                    f"SELECT idx, hashes FROM chain_tiles WHERE idx IN ({marks})", chunk):
                out[int(idx)] = bytes(h)
        return out

    def close(self) -> None:
        self.conn.close()
