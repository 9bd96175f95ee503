"""The per-actor index as the server keeps it, in the tree database beside the chain.

Before the checkpoint of size N is cut, :meth:`ActorIndex.advance` indexes the events up
to seq N (core/actor_index.py: the rules, the values, the sparse Merkle tree) and stores,
in one transaction:

- ``index_keys (keyhash, actor, resource)``: each key once;
- ``index_postings (keyhash, seq, count, chain)``: a row per (key, event), with the key's
  value after that event, so the value of any key at any size is one indexed read;
- ``index_roots (size, root)``: the map's root at each checkpoint size, the one the
  checkpoint's ``index`` extension line carries;
- ``index_state (size)``: how far the index has read the log.

The map's nodes are not stored: they are rebuilt in memory from the latest posting of each
key at or below a size (O(keys) hashes in the C core), then moved forward from posting
rows only. So a proof at an older checkpoint is rebuilt from the postings and checked
against that checkpoint's stored root before it is handed out (docs/INDEX.md).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from anchoring.tilestore import TileStore
from chain import smt
from core.actor_index import IndexFold, IndexValue, index_key_hash
from events.store import EventStore, follow_on

INDEX_TABLES = (
    ("CREATE TABLE IF NOT EXISTS index_keys (keyhash {blob} PRIMARY KEY, actor TEXT NOT NULL, "
     "resource TEXT NOT NULL)"),
    ("CREATE TABLE IF NOT EXISTS index_postings (keyhash {blob} NOT NULL, seq {int} NOT NULL, "
     "count {int} NOT NULL, chain {blob} NOT NULL, PRIMARY KEY (keyhash, seq))"),
    "CREATE TABLE IF NOT EXISTS index_roots (size {int} PRIMARY KEY, root {blob} NOT NULL)",
    ("CREATE TABLE IF NOT EXISTS index_state (id {int} PRIMARY KEY CHECK (id = 1), "
     "size {int} NOT NULL)"),
)

_LATEST = ("SELECT p.keyhash, p.seq, p.count, p.chain FROM index_postings p JOIN "
           "(SELECT keyhash, max(seq) AS seq FROM index_postings WHERE seq > ? AND seq <= ? "
           "GROUP BY keyhash) m ON p.keyhash = m.keyhash AND p.seq = m.seq")
"""Each key's latest posting in (lo, hi]: its value at size hi, for the keys that moved."""


class NoIndexRoot(LookupError):
    """No index root is kept at that size (only checkpoint sizes are)."""


class ActorIndex:
    """The index of the log in ``store``, kept in ``tiles``' database; thread-safe."""

    def __init__(self, store: EventStore, tiles: TileStore, batch: int = 5000) -> None:
        self.store = store
        self.tiles = tiles
        self.batch = batch
        self._lock = threading.RLock()
        self._fold: IndexFold | None = None
        #: the latest tree rebuilt for proofs: (size, tree)
        self._proving: tuple[int, smt.SparseMerkleTree] | None = None
        blob, integer = ("BLOB", "INTEGER") if _is_sqlite(tiles) else ("bytea", "bigint")
        for statement in INDEX_TABLES:
            tiles.query(statement.format(blob=blob, int=integer))
        tiles.query("INSERT INTO index_state (id, size) SELECT 1, 0 WHERE NOT EXISTS "
                    "(SELECT 1 FROM index_state)")

    # -- keeping it up to date -------------------------------------------------------------
    def size(self) -> int:
        """How far the stored index has read the log."""
        return int(self.tiles.query("SELECT size FROM index_state")[0][0])

    def advance(self, size: int) -> bytes:
        """Index the log up to seq ``size``, store it, and return the map's root at ``size``
        (the root stored before, when the index is already there)."""
        with self._lock:
            fold = self._loaded()
            if size <= fold.size:
                root = self.root_at(size)
                if root is None and size == fold.size:
                    root = fold.root()
                    self._write({}, [], size, root)
                if root is None:
                    raise NoIndexRoot(f"the index is at size {fold.size}; no root kept at {size}")
                return root
            keys: dict[bytes, tuple[str, str]] = {}
            postings: list[tuple[bytes, int, int, bytes]] = []
            while fold.size < size:
                entries = self.store.read(fold.size, min(self.batch, size - fold.size))
                if not entries:
                    raise ValueError(f"the log has {fold.size} events; cannot index {size}")
                follow_on(fold.size, entries)
                for entry in entries:
                    for key, kh, value in fold.apply(entry):
                        if value.count == 1:
                            keys[kh] = key
                        postings.append((kh, entry.seq, value.count, value.chain))
            root = fold.root()
            self._write(keys, postings, size, root)
            return root

    def _loaded(self) -> IndexFold:
        """The fold at the stored size: values from the postings, the rules replayed."""
        if self._fold is not None:
            return self._fold
        fold = IndexFold()
        stored = self.size()
        done = 0
        while done < stored:  # the rules' memory (owners, inputs, parties) from the log
            entries = self.store.read(done, min(self.batch, stored - done))
            if not entries:
                raise ValueError(f"the index is at size {stored}; the log has {done} events")
            for entry in entries:
                fold.rules.keys(entry)
            done = entries[-1].seq
        fold.load(self._values(0, stored), stored)
        kept = self.root_at(stored)
        if stored and kept is not None and kept != fold.root():
            raise ValueError(f"the stored index disagrees with its root at size {stored}")
        self._fold = fold
        return fold

    def _write(self, keys: dict[bytes, tuple[str, str]],
               postings: list[tuple[bytes, int, int, bytes]], size: int, root: bytes) -> None:
        """Keys, postings, the root and the size in one transaction."""
        statements: list[tuple[str, Sequence[Sequence[Any]]]] = [
            ("INSERT INTO index_keys (keyhash, actor, resource) VALUES (?, ?, ?)",
             [(kh, a, r) for kh, (a, r) in keys.items()]),
            ("INSERT INTO index_postings (keyhash, seq, count, chain) VALUES (?, ?, ?, ?)",
             postings),
            ("INSERT INTO index_roots (size, root) VALUES (?, ?)", [(size, root)]),
            ("UPDATE index_state SET size = ?", [(size,)]),
        ]
        if _is_sqlite(self.tiles):
            with self.tiles.lock:  # type: ignore[attr-defined]
                conn = self.tiles.conn  # type: ignore[attr-defined]
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for sql, rows in statements:
                        conn.executemany(sql, rows)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            return
        conn = self.tiles.conn  # type: ignore[attr-defined]
        with self.tiles.lock, conn.transaction(), conn.cursor() as cur:  # type: ignore[attr-defined]
            for sql, rows in statements:
                if rows:
                    cur.executemany(sql.replace("?", "%s"), rows)

    # -- reading it back ------------------------------------------------------------------
    def root_at(self, size: int) -> bytes | None:
        """The map's root stored at ``size`` (a checkpoint size), or None."""
        rows = self.tiles.query("SELECT root FROM index_roots WHERE size = ?", (size,))
        return bytes(rows[0][0]) if rows else None

    def postings(self, actor: str, resource: str, upto_size: int) -> list[int]:
        """The seqs of the events indexed under (actor, resource), up to ``upto_size``."""
        rows = self.tiles.query("SELECT seq FROM index_postings WHERE keyhash = ? AND seq <= ? "
                                "ORDER BY seq", (index_key_hash(actor, resource), upto_size))
        return [int(r[0]) for r in rows]

    def value_at(self, actor: str, resource: str, at_size: int) -> IndexValue | None:
        """The key's value in the index at log size ``at_size`` (None: no event yet)."""
        rows = self.tiles.query(
            "SELECT seq, count, chain FROM index_postings WHERE keyhash = ? AND seq <= ? "
            "ORDER BY seq DESC LIMIT 1", (index_key_hash(actor, resource), at_size))
        if not rows:
            return None
        seq, count, chain = rows[0]
        return IndexValue(int(count), int(seq), bytes(chain))

    def prove(self, actor: str, resource: str, at_size: int) -> smt.MapProof:
        """The map proof of the key's value (or absence) in the index of checkpoint size
        ``at_size``, against :meth:`root_at` ``(at_size)``. Raises NoIndexRoot when no root
        is kept at that size."""
        with self._lock:  # the tree kept for proofs moves forward under this lock
            return self.tree_at(at_size).prove(index_key_hash(actor, resource))

    def tree_at(self, at_size: int) -> smt.SparseMerkleTree:
        """The map as of checkpoint size ``at_size``, rebuilt from the postings (or moved
        forward from the last one rebuilt) and checked against its stored root."""
        kept = self.root_at(at_size)
        if kept is None:
            raise NoIndexRoot(f"no index root is kept at size {at_size} (not a checkpoint "
                              "size, or cut before the index existed)")
        with self._lock:
            last = self._proving
            if last is not None and last[0] == at_size:
                return last[1]
            if last is not None and last[0] < at_size:
                tree, since = last[1], last[0]
            else:
                tree, since = smt.SparseMerkleTree(), 0
            tree.update({kh: v.hash() for kh, v in self._values(since, at_size).items()})
            if tree.root() != kept:
                self._proving = None
                raise ValueError(f"the index rebuilt at size {at_size} does not give the root "
                                 "stored for it")
            self._proving = (at_size, tree)
            return tree

    def _values(self, after: int, upto: int) -> dict[bytes, IndexValue]:
        """Each key's value at ``upto``, for the keys with a posting in (after, upto]."""
        return {bytes(kh): IndexValue(int(count), int(seq), bytes(chain))
                for kh, seq, count, chain in self.tiles.query(_LATEST, (after, upto))}


def _is_sqlite(tiles: TileStore) -> bool:
    from anchoring.tilestore_sqlite import SQLiteTileStore
    return isinstance(tiles, SQLiteTileStore)
