"""The persistent Merkle tree: leaf hashes in tiles of 256, upper nodes by (level, index).

Appending a batch of leaves hashes them and the nodes they complete in the C core
(:mod:`chain.merkle`), then stores the leaf tiles they touch, the nodes of level >= 8
they complete and the new size in one transaction. A root of any size ≤ n and any proof
are computed from O(log n) stored hashes and at most two tiles, fetched in one query.
SQLite file by default, PostgreSQL when configured (same tests on both).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from chain import merkle
from chain.compact import CompactRange, Node, NodeID, range_nodes
from chain.hasher import HASH_SIZE
from chain.proof import NodeGetter, consistency_proof, inclusion_proof, root_at

T = TypeVar("T")

log = logging.getLogger(__name__)

TILE_HEIGHT = 8
"""Levels below this are kept in tiles: leaf hashes stored, nodes of level 1-7 recomputed."""

TILE_WIDTH = 1 << TILE_HEIGHT
"""Leaf hashes per full tile (256: 8,192 bytes)."""


class MissingNodeError(LookupError):
    """A node the tree should have is not stored (the store is damaged or behind)."""


class TreeMovedError(ValueError):
    """Another writer moved the tree since its size was read: nothing was written."""


@dataclass(frozen=True)
class _Tip:
    """Where the tree ends: its size, its compact range's roots and its partial tile."""

    size: int
    roots: list[bytes]
    partial: bytes


_CHUNK = 1024
"""Leaves hashed at a time while a write is under way (4 tiles)."""


class _Batch:
    """Leaves after a tip, hashed chunk by chunk as they are iterated: each chunk gives
    the tiles it fills (and the partial tile at the end) and the nodes of level >= 8 it
    completes. Once iterated, :attr:`end` is the new tip."""

    def __init__(self, tip: _Tip, leaves: Sequence[bytes], hashed: bool) -> None:
        self.tip, self.leaves, self.hashed = tip, leaves, hashed
        self.end: _Tip | None = None

    def __iter__(self) -> Iterator[tuple[list[tuple[int, bytes]], list[Node]]]:
        size, roots, pending = self.tip.size, self.tip.roots, self.tip.partial
        tile = (size - len(pending) // HASH_SIZE) >> TILE_HEIGHT  # the tile ``pending`` starts
        full = TILE_WIDTH * HASH_SIZE
        for start in range(0, len(self.leaves), _CHUNK):
            hashes, nodes, roots = merkle.append(size, roots, self.leaves[start:start + _CHUNK],
                                                 hashed=self.hashed, store_from=TILE_HEIGHT)
            size += len(hashes) // HASH_SIZE
            pending += hashes
            tiles = []
            while len(pending) >= full:
                tiles.append((tile, pending[:full]))
                pending, tile = pending[full:], tile + 1
            if start + _CHUNK >= len(self.leaves) and pending:
                tiles.append((tile, pending))
            yield tiles, nodes
        self.end = _Tip(size, roots, pending)


def _split(hashes: bytes) -> list[bytes]:
    """32-byte hashes concatenated, as a list."""
    return [hashes[i:i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]


_CP_COLUMNS = "size, note, cosigned, signers, aggregate, anchored, cut_at"

CHECKPOINT_TABLES = (
    ("CREATE TABLE IF NOT EXISTS chain_checkpoints (size {int} PRIMARY KEY, note TEXT NOT NULL, "
     "cosigned TEXT NOT NULL, signers TEXT NOT NULL, aggregate {blob}, anchored {int} NOT NULL, "
     "cut_at TEXT NOT NULL)"),
    "CREATE TABLE IF NOT EXISTS chain_witness_sizes (name TEXT PRIMARY KEY, size {int} NOT NULL)",
)


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint as stored: the platform-signed note and its co-signatures so far."""

    size: int
    note: str
    cosigned: str
    signers: list[str]
    aggregate: bytes | None
    anchored: bool
    cut_at: str


def _stored_checkpoint(row: Sequence[Any]) -> StoredCheckpoint:
    size, note, cosigned, signers, agg, anchored, cut_at = row
    return StoredCheckpoint(int(size), str(note), str(cosigned), list(json.loads(signers)),
                            None if agg is None else bytes(agg), bool(anchored), str(cut_at))


class _Recorder:
    """Collects the node ids a proof computation asks for (first pass)."""

    def __init__(self) -> None:
        self.ids: list[NodeID] = []

    def __call__(self, level: int, index: int) -> bytes:
        self.ids.append((level, index))
        return bytes(32)


def _tile_of(node_id: NodeID) -> int:
    """The leaf tile that holds the leaves under the node ``(level, index)``, level < 8."""
    level, index = node_id
    return (index << level) >> TILE_HEIGHT


def _tile_rows(first_leaf: int, hashes: bytes) -> list[tuple[int, bytes]]:
    """(tile index, leaf hashes) rows for the leaf hashes starting at ``first_leaf``.

    ``first_leaf`` is the first leaf of a tile (a multiple of TILE_WIDTH).
    """
    step = TILE_WIDTH * HASH_SIZE
    first = first_leaf >> TILE_HEIGHT
    return [(first + k, hashes[start:start + step])
            for k, start in enumerate(range(0, len(hashes), step))]


def _on_conflict(damage: str | None) -> str:
    """How the migration writes a tile already stored: replaced from the old rows when they
    are whole, left alone when they are damaged (their prefix never overwrites a tile)."""
    return "DO UPDATE SET hashes = excluded.hashes" if damage is None else "DO NOTHING"


def tiled_getter(nodes: dict[NodeID, bytes], tiles: dict[int, bytes]) -> NodeGetter:
    """A node getter for the tiled layout: ``nodes`` holds nodes of level >= 8 by
    (level, index), ``tiles`` leaf tiles by tile index. A node of level < 8 is recomputed
    from the tile that holds its leaves; a node that is not there raises MissingNodeError.
    """

    def get(level: int, index: int) -> bytes:
        if level >= TILE_HEIGHT or level < 0 or index < 0:
            try:
                return nodes[(level, index)]
            except KeyError:
                raise MissingNodeError(f"tree node {(level, index)} (level, index) is not "
                                       "stored") from None
        first = index << level
        blob = tiles.get(first >> TILE_HEIGHT, b"")
        offset = first & (TILE_WIDTH - 1)
        if len(blob) < (offset + (1 << level)) * HASH_SIZE:
            raise MissingNodeError(f"tree node {(level, index)} (level, index) is not "
                                   f"stored: leaf tile {first >> TILE_HEIGHT} holds "
                                   f"{len(blob) // HASH_SIZE} leaf hashes")
        return merkle.subtree(blob, offset, level)

    return get


class TreeStore(ABC):
    """Common logic; subclasses provide the SQL for their database.

    Layout (as in C2SP tlog-tiles and trillian-tessera's ``Subtree`` rows): the leaf hashes
    live in tiles, ``chain_tiles (idx, hashes)``, each the 32-byte hashes of the leaves
    ``[idx * 256, (idx + 1) * 256)`` concatenated; the rightmost tile is partial and is
    rewritten as it grows. The perfect subtrees of level 1 to 7 are not stored: each lies
    inside one tile and is recomputed from it (at most 127 hashes). The nodes of level
    >= 8 are rows of ``chain_nodes (level, idx, hash)``, one per 256 leaves. Every stored
    hash is written once, in the transaction that moves the size, and never changes after
    (a partial tile only grows).
    """

    #: the tip this store last wrote (None: read it from the database first)
    _tip: _Tip | None = None

    #: why the old layout found at open was not moved into tiles (None: nothing left to
    #: move); while set, the tree takes no new leaf
    _legacy_damage: str | None = None

    @abstractmethod
    def size(self) -> int:
        """The number of integrated leaves."""

    @abstractmethod
    def _write(self, batch: Iterable[tuple[list[tuple[int, bytes]], list[Node]]],
               new_size: int, old_size: int) -> None:
        """In one transaction, if the size is still ``old_size`` (else raise TreeMovedError,
        nothing written): store (upsert) the tiles and insert the nodes of each chunk of
        ``batch`` as it comes, and set the size to ``new_size``."""

    @abstractmethod
    def _fetch(self, ids: Sequence[NodeID],
               tiles: Sequence[int] = ()) -> tuple[dict[NodeID, bytes], dict[int, bytes]]:
        """The stored hashes of ``ids`` (levels >= 8) and the stored ``tiles``, in one
        query (missing ones absent)."""

    @abstractmethod
    def _migrate_legacy(self) -> None:
        """Move a tree stored in the old layout (every node a row) into tiles, at open.

        Under the lock that writers take (the size row), and only if the old rows are
        still there once it is held (another store may just have moved them): the leaf
        tiles are upserted from the old leaf rows, then the old rows of levels < 8 are
        deleted, in one transaction. Tiles are never deleted. If the old leaf rows are not
        exactly 0..size-1 (see :meth:`_legacy_tiles`), no old row is deleted: only the
        intact prefix is copied, into tiles not stored yet (so reads and ``chain verify``
        see every leaf before the first missing one, and verify names that one), the
        damage is logged, and this store refuses to append (:attr:`_legacy_damage`). Once
        the rows are repaired, the next open moves the tree.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    # -- reading stored hashes by range ---------------------------------------------------
    def leaf_hashes(self, begin: int, end: int) -> bytes:
        """The stored hashes of leaves [begin, end), concatenated (32 bytes each).

        Read from the tiles; shorter than ``32 * (end - begin)`` if some are not stored.
        """
        if not 0 <= begin <= end:
            raise ValueError(f"invalid leaf range [{begin}, {end})")
        if begin == end:
            return b""
        tiles = self.tiles_between(begin >> TILE_HEIGHT, (end - 1) >> TILE_HEIGHT)
        first = begin >> TILE_HEIGHT
        out = []
        for t in range(first, ((end - 1) >> TILE_HEIGHT) + 1):
            blob = tiles.get(t)
            if blob is None:
                break
            out.append(blob)
            if len(blob) < TILE_WIDTH * HASH_SIZE:
                break
        joined = b"".join(out)
        skip = (begin - (first << TILE_HEIGHT)) * HASH_SIZE
        return joined[skip:skip + (end - begin) * HASH_SIZE]

    def tiles_between(self, lo: int, hi: int) -> dict[int, bytes]:
        """The stored leaf tiles ``lo`` to ``hi`` (inclusive), by tile index."""
        return {int(t): bytes(h) for t, h in self._q(
            "SELECT idx, hashes FROM chain_tiles WHERE idx BETWEEN ? AND ?", (lo, hi))}

    def nodes_between(self, nodes: Sequence[Node]) -> dict[NodeID, bytes]:
        """The stored hashes at the levels of ``nodes``, between the lowest and the highest
        index named at each level (one range query per level).

        Leaves come from the tiles; nodes of levels 1 to 7 are recomputed from them (they
        are not stored); levels >= 8 are read from ``chain_nodes``.
        """
        spans: dict[int, tuple[int, int]] = {}
        for level, index, _ in nodes:
            lo, hi = spans.get(level, (index, index))
            spans[level] = (min(lo, index), max(hi, index))
        out: dict[NodeID, bytes] = {}
        for level, (lo, hi) in spans.items():
            if level >= TILE_HEIGHT:
                for lv, ix, h in self._q("SELECT level, idx, hash FROM chain_nodes WHERE "
                                         "level = ? AND idx BETWEEN ? AND ?", (level, lo, hi)):
                    out[(int(lv), int(ix))] = bytes(h)
                continue
            hashes = self.leaf_hashes(lo << level, (hi + 1) << level)
            for k in range(len(hashes) // HASH_SIZE >> level):
                out[(level, lo + k)] = merkle.subtree(hashes, k << level, level)
        return out

    # -- checkpoints and witnesses' positions -------------------------------------------
    @abstractmethod
    def _q(self, sql: str, params: Sequence[Any] = (), *, write: bool = False) -> list[Any]:
        """Run one statement (``?`` placeholders) and return its rows."""

    def put_checkpoint(self, size: int, note: str, cut_at: str) -> None:
        """Store a newly signed checkpoint (not yet anchored)."""
        self._q("INSERT INTO chain_checkpoints (size, note, cosigned, signers, aggregate, "
                "anchored, cut_at) VALUES (?, ?, ?, '[]', NULL, 0, ?)",
                (size, note, note, cut_at), write=True)

    def record_cosignatures(self, size: int, cosigned: str, signers: list[str],
                            aggregate: bytes | None, anchored: bool) -> None:
        """Store the co-signed note, who signed, the aggregate and whether a quorum signed."""
        self._q("UPDATE chain_checkpoints SET cosigned = ?, signers = ?, aggregate = ?, "
                "anchored = ? WHERE size = ?",
                (cosigned, json.dumps(sorted(signers)), aggregate, int(anchored), size),
                write=True)

    def checkpoint(self, size: int) -> StoredCheckpoint | None:
        """The checkpoint cut at tree size ``size``, if any."""
        rows = self._q(f"SELECT {_CP_COLUMNS} FROM chain_checkpoints WHERE size = ?", (size,))
        return _stored_checkpoint(rows[0]) if rows else None

    def latest_checkpoint(self, *, anchored: bool = False) -> StoredCheckpoint | None:
        """The newest checkpoint (the newest anchored one if ``anchored``)."""
        where = "WHERE anchored = 1 " if anchored else ""
        rows = self._q(f"SELECT {_CP_COLUMNS} FROM chain_checkpoints {where}"
                       "ORDER BY size DESC LIMIT 1")
        return _stored_checkpoint(rows[0]) if rows else None

    def checkpoints(self) -> list[StoredCheckpoint]:
        """Every checkpoint, oldest first."""
        return [_stored_checkpoint(r) for r in self._q(
            f"SELECT {_CP_COLUMNS} FROM chain_checkpoints ORDER BY size")]

    def witness_size(self, name: str) -> int:
        """The size the witness ``name`` last co-signed for us (0 if never)."""
        rows = self._q("SELECT size FROM chain_witness_sizes WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0

    def set_witness_size(self, name: str, size: int) -> None:
        """Remember the size the witness ``name`` last co-signed."""
        self._q("DELETE FROM chain_witness_sizes WHERE name = ?", (name,), write=True)
        self._q("INSERT INTO chain_witness_sizes VALUES (?, ?)", (name, size), write=True)

    # -- appending --------------------------------------------------------------------
    def _frontier(self) -> tuple[int, list[bytes], bytes]:
        """``(base, roots, partial)``: the leaves [0, base) are whole tiles, whose perfect-
        subtree roots (all of level >= 8) are ``roots``; ``partial`` is the leaf hashes of
        the partial tile after them (empty if the size is a multiple of 256)."""
        size = self.size()
        base = size - size % TILE_WIDTH
        ids = range_nodes(0, base)
        tile = base >> TILE_HEIGHT
        found, tiles = self._fetch(ids, [tile] if size != base else [])
        roots = [self._need(found, i) for i in ids]
        partial = tiles.get(tile, b"") if size != base else b""
        if len(partial) != (size - base) * HASH_SIZE:
            raise MissingNodeError(f"leaf tile {tile} holds {len(partial) // HASH_SIZE} leaf "
                                   f"hashes; tree size {size} needs {size - base}")
        return base, roots, partial

    @staticmethod
    def _resume(base: int, roots: list[bytes], partial: bytes) -> list[bytes]:
        """The roots of the whole range, the partial tile's leaves appended to ``roots``."""
        return merkle.append(base, roots, _split(partial), hashed=True,
                             store_from=TILE_HEIGHT)[2]

    def compact_range(self) -> CompactRange:
        """The frontier of the current tree, read from the stored tiles and nodes."""
        base, roots, partial = self._frontier()
        return CompactRange(base + len(partial) // HASH_SIZE,
                            self._resume(base, roots, partial))

    def append_leaves(self, leaf_hashes: Iterable[bytes], expected_size: int | None = None) -> int:
        """Append leaf hashes (32 bytes each) and store them atomically; return the new size.

        ``expected_size`` guards against two integrators: if the stored size
        differs, nothing is written and ``ValueError`` is raised.
        """
        return self._append(leaf_hashes, True, expected_size)

    def append_leaf_data(self, leaves: Iterable[bytes], expected_size: int | None = None) -> int:
        """Append leaves given as their data: each is hashed here, SHA-256(0x00 ‖ data),
        in the C core when it is built. Otherwise as :meth:`append_leaves`."""
        return self._append(leaves, False, expected_size)

    def _append(self, leaves: Iterable[bytes], hashed: bool, expected_size: int | None,
                fresh: bool = False) -> int:
        """Hash and store ``leaves`` after the tree's tip.

        The tip (size, roots, partial tile) this store last wrote is kept, so a run of
        appends reads nothing back; the write's guard (the size must still be the tip's)
        catches another writer, and the append is then redone once from the stored state.
        The leaves are hashed in chunks as the write transaction consumes them, so the
        database works on one chunk's tiles while the next chunk is hashed.
        """
        if self._legacy_damage is not None:
            raise MissingNodeError(f"the tree is still in the old layout, which is damaged "
                                   f"({self._legacy_damage}): no leaf is appended until it "
                                   "is repaired")
        items = leaves if isinstance(leaves, list | tuple) else list(leaves)
        tip = None if fresh else self._tip
        if tip is None or (expected_size is not None and expected_size != tip.size):
            tip, fresh = self._read_tip(), True
        if expected_size is not None and tip.size != expected_size:
            raise ValueError(f"tree size is {tip.size}, expected {expected_size}")
        if not items:
            return tip.size if fresh else self.size()
        batch = _Batch(tip, items, hashed)
        self._tip = None
        try:
            self._write(batch, tip.size + len(items), tip.size)
        except TreeMovedError:
            if fresh:
                raise
            return self._append(items, hashed, expected_size, fresh=True)
        self._tip = batch.end
        return tip.size + len(items)

    def _read_tip(self) -> _Tip:
        base, roots, partial = self._frontier()
        return _Tip(base + len(partial) // HASH_SIZE, self._resume(base, roots, partial), partial)

    # -- reading ----------------------------------------------------------------------
    def node(self, level: int, index: int) -> bytes:
        """One perfect-subtree hash: stored (a leaf in its tile, or level >= 8), or
        recomputed from its tile (levels 1 to 7)."""
        return self._getter([(level, index)])(level, index)

    def root(self, size: int | None = None) -> bytes:
        """The RFC 6962 root of the first ``size`` leaves (default: all). Requires size ≤ n."""
        return self._two_pass(size, root_at)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Audit path of leaf ``index`` in the tree of ``size``. Requires 0 ≤ index < size ≤ n."""
        return self._two_pass(size, lambda n, get: inclusion_proof(index, n, get))

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Proof that the tree of ``size1`` is a prefix of ``size2``. Requires 0 < size1 ≤ size2 ≤ n."""
        return self._two_pass(size2, lambda n, get: consistency_proof(size1, n, get))

    def _two_pass(self, size: int | None, compute: Callable[[int, NodeGetter], T]) -> T:
        """``compute(n, get)`` at tree size ``size`` (default: the current size).

        A first pass records the nodes it asks for, one query reads them (and, when
        ``size`` is given, the current size with them, to check it), a second computes.
        """
        if size is not None and size < 0:
            raise ValueError(f"size {size} is negative")
        n = self.size() if size is None else size
        recorder = _Recorder()
        compute(n, recorder)
        ids = [(level, index) for level, index in recorder.ids if level >= 0 and index >= 0]
        found, tiles, current = self._fetch_sized(
            [i for i in ids if i[0] >= TILE_HEIGHT],
            sorted({_tile_of(i) for i in ids if i[0] < TILE_HEIGHT}))
        if n > current:
            raise ValueError(f"size {n} is beyond the integrated tree ({current} leaves)")
        return compute(n, tiled_getter(found, tiles))

    def _fetch_sized(self, ids: Sequence[NodeID], tiles: Sequence[int],
                     ) -> tuple[dict[NodeID, bytes], dict[int, bytes], int]:
        """:meth:`_fetch` and the current size, as one read (PostgreSQL: one query)."""
        found, blobs = self._fetch(ids, tiles)
        return found, blobs, self.size()

    def _getter(self, ids: Sequence[NodeID]) -> NodeGetter:
        """A node getter over ``ids``, read in one query: nodes of level >= 8 from their
        rows, lower ones from the tiles that hold them."""
        ids = [(level, index) for level, index in ids if level >= 0 and index >= 0]
        found, tiles = self._fetch([i for i in ids if i[0] >= TILE_HEIGHT],
                                   sorted({_tile_of(i) for i in ids if i[0] < TILE_HEIGHT}))
        return tiled_getter(found, tiles)

    @staticmethod
    def _need(found: dict[NodeID, bytes], node_id: NodeID) -> bytes:
        try:
            return found[node_id]
        except KeyError:
            raise MissingNodeError(f"tree node {node_id} (level, index) is not stored") from None

    @staticmethod
    def _legacy_tiles(leaves: Iterable[tuple[int, bytes]], size: int,
                      ) -> tuple[list[tuple[int, bytes]], str | None]:
        """``(tiles, damage)`` from the old layout's leaf rows ``(idx, hash)`` (in idx order)
        and the tree's size: the tiles of the leaves before the first missing one (at most
        ``size``), and ``None`` if the rows are exactly leaves 0..size-1, else what is
        wrong (the first missing leaf, or rows beyond the size)."""
        hashes: list[bytes] = []
        rows = 0
        for idx, h in leaves:
            rows += 1
            if idx == len(hashes) and idx < size:
                hashes.append(bytes(h))
        damage = None
        if len(hashes) < size:
            damage = (f"leaf {len(hashes)} (seq {len(hashes) + 1}) is missing: "
                      f"{rows} leaf rows for a tree of {size}")
        elif rows > size:
            damage = f"{rows - size} leaf rows beyond the tree's size {size}"
        return _tile_rows(0, b"".join(hashes)), damage

    def _legacy_moved(self, damage: str | None) -> bool:
        """After the tiles are written: whether the old rows may go (else log why not)."""
        self._legacy_damage = damage
        if damage is None:
            return True
        log.error("chain tree: the old layout (one row per node) is damaged, %s; it was not "
                  "moved into tiles and every old row is kept (only the leaves before the "
                  "damage were copied into tiles); run `dataledger chain verify` and repair "
                  "the rows, the next open moves the tree", damage)
        return False


class SQLiteTreeStore(TreeStore):
    """Tree tiles and upper nodes in a SQLite file of their own (``chain.db``)."""

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
        self._migrate_legacy()

    def _q(self, sql: str, params: Sequence[Any] = (), *, write: bool = False) -> list[Any]:
        with self.lock:
            return list(self.conn.execute(sql, params).fetchall())

    def size(self) -> int:
        with self.lock:
            return int(self.conn.execute("SELECT size FROM chain_state").fetchone()[0])

    def _write(self, batch: Iterable[tuple[list[tuple[int, bytes]], list[Node]]],
               new_size: int, old_size: int) -> None:
        with self.lock:
            self._write_locked(batch, new_size, old_size)

    def _write_locked(self, batch: Iterable[tuple[list[tuple[int, bytes]], list[Node]]],
                      new_size: int, old_size: int) -> None:
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

    def _fetch(self, ids: Sequence[NodeID],
               tiles: Sequence[int] = ()) -> tuple[dict[NodeID, bytes], dict[int, bytes]]:
        with self.lock:
            return self._fetch_locked(ids), self._fetch_tiles_locked(tiles)

    def _fetch_sized(self, ids: Sequence[NodeID], tiles: Sequence[int],
                     ) -> tuple[dict[NodeID, bytes], dict[int, bytes], int]:
        with self.lock:  # one read transaction: the size and the nodes agree
            self.conn.execute("BEGIN")
            try:
                return self._fetch_locked(ids), self._fetch_tiles_locked(tiles), self.size()
            finally:
                self.conn.execute("COMMIT")

    def _fetch_locked(self, ids: Sequence[NodeID]) -> dict[NodeID, bytes]:
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

    def _fetch_tiles_locked(self, tiles: Sequence[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        unique = list(dict.fromkeys(tiles))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            for idx, h in self.conn.execute(
                    f"SELECT idx, hashes FROM chain_tiles WHERE idx IN ({marks})", chunk):
                out[int(idx)] = bytes(h)
        return out

    def _migrate_legacy(self) -> None:
        c = self.conn
        with self.lock:
            if c.execute("SELECT 1 FROM chain_nodes WHERE level < ? LIMIT 1",
                         (TILE_HEIGHT,)).fetchone() is None:
                return
            c.execute("BEGIN IMMEDIATE")
            try:
                # again under the write lock: another store may have moved them meanwhile
                if c.execute("SELECT 1 FROM chain_nodes WHERE level < ? LIMIT 1",
                             (TILE_HEIGHT,)).fetchone() is not None:
                    size = int(c.execute("SELECT size FROM chain_state").fetchone()[0])
                    tiles, damage = self._legacy_tiles(c.execute(
                        "SELECT idx, hash FROM chain_nodes WHERE level = 0 ORDER BY idx"), size)
                    c.executemany("INSERT INTO chain_tiles VALUES (?, ?) ON CONFLICT (idx) "
                                  + _on_conflict(damage), tiles)
                    if self._legacy_moved(damage):
                        c.execute("DELETE FROM chain_nodes WHERE level < ?", (TILE_HEIGHT,))
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


_ROWS = 1000
"""Rows per multi-row INSERT on PostgreSQL (its limit is 65,535 parameters)."""


class PostgresTreeStore(TreeStore):
    """Tree tiles and upper nodes in PostgreSQL, in the same database and schema as the events."""

    def __init__(self, conninfo: str, schema: str = "public") -> None:
        self.schema = schema
        self.conn = psycopg.connect(conninfo, autocommit=True)
        #: one connection serves the integrator and the proof readers: one user at a time
        self.lock = threading.RLock()
        with self.conn.cursor() as cur:
            cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            cur.execute(f'SET search_path TO "{schema}"')
            cur.execute("CREATE TABLE IF NOT EXISTS chain_nodes (level smallint, idx bigint, "
                        "hash bytea NOT NULL, PRIMARY KEY (level, idx))")
            cur.execute("CREATE TABLE IF NOT EXISTS chain_tiles (idx bigint PRIMARY KEY, "
                        "hashes bytea NOT NULL)")
            # hashes do not compress: store tiles out of line without trying (TOAST EXTERNAL)
            cur.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = "
                        "'chain_tiles'::regclass AND attname = 'hashes'")
            row = cur.fetchone()
            if row is not None and row[0] != "e":
                cur.execute("ALTER TABLE chain_tiles ALTER COLUMN hashes SET STORAGE EXTERNAL")
            cur.execute("CREATE TABLE IF NOT EXISTS chain_state (id int PRIMARY KEY "
                        "CHECK (id = 1), size bigint NOT NULL)")
            cur.execute("INSERT INTO chain_state VALUES (1, 0) ON CONFLICT DO NOTHING")
            for statement in CHECKPOINT_TABLES:
                cur.execute(statement.format(int="bigint", blob="bytea"))
        self._migrate_legacy()

    def _q(self, sql: str, params: Sequence[Any] = (), *, write: bool = False) -> list[Any]:
        with self.lock, self.conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), params)
            return list(cur.fetchall()) if cur.description else []

    def size(self) -> int:
        with self.lock, self.conn.cursor() as cur:
            cur.execute("SELECT size FROM chain_state")
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def _write(self, batch: Iterable[tuple[list[tuple[int, bytes]], list[Node]]],
               new_size: int, old_size: int) -> None:
        # The whole transaction is pipelined: one round trip, and the server stores a
        # chunk's tiles while the next chunk is hashed. Moving the size first locks its row
        # (a second integrator waits, then finds it moved); if it had moved, the division
        # by zero aborts the transaction, so nothing after it is written.
        try:
            with self.lock, self.conn.pipeline(), self.conn.transaction(), \
                    self.conn.cursor(binary=True) as cur:
                cur.execute("WITH moved AS (UPDATE chain_state SET size = %s WHERE size = %s "
                            "RETURNING size) SELECT 1 / count(*) FROM moved",
                            (new_size, old_size))
                # multi-row INSERTs with binary parameters: about as cheap for the server as
                # a binary COPY (which cannot be pipelined), an unnest of a bytea[] ~5x dearer
                for tiles, nodes in batch:
                    for start in range(0, len(tiles), _ROWS):
                        chunk = tiles[start:start + _ROWS]
                        cur.execute("INSERT INTO chain_tiles (idx, hashes) VALUES "
                                    + ", ".join(["(%s, %s)"] * len(chunk))
                                    + " ON CONFLICT (idx) DO UPDATE SET hashes = EXCLUDED.hashes",
                                    [v for row in chunk for v in row])
                    for start in range(0, len(nodes), _ROWS):
                        rows = nodes[start:start + _ROWS]
                        cur.execute("INSERT INTO chain_nodes (level, idx, hash) VALUES "
                                    + ", ".join(["(%s, %s, %s)"] * len(rows)),
                                    [v for row in rows for v in row])
        except psycopg.errors.DivisionByZero:
            raise TreeMovedError("another integrator moved the tree; nothing written") from None

    def _fetch(self, ids: Sequence[NodeID],
               tiles: Sequence[int] = ()) -> tuple[dict[NodeID, bytes], dict[int, bytes]]:
        if not ids and not tiles:
            return {}, {}
        found, blobs, _ = self._read(ids, tiles, sized=False)
        return found, blobs

    def _fetch_sized(self, ids: Sequence[NodeID], tiles: Sequence[int],
                     ) -> tuple[dict[NodeID, bytes], dict[int, bytes], int]:
        return self._read(ids, tiles, sized=True)

    def _read(self, ids: Sequence[NodeID], tiles: Sequence[int], sized: bool,
              ) -> tuple[dict[NodeID, bytes], dict[int, bytes], int]:
        """Upper nodes (kind 0), leaf tiles (kind 1) and the size (kind 2) in one query."""
        unique = list(dict.fromkeys(ids))
        # a primary-key lookup per node, whatever the planner's statistics say
        sql = ("SELECT 0, w.level, w.idx, n.hash FROM unnest(%s::smallint[], %s::bigint[]) "
               "AS w(level, idx) CROSS JOIN LATERAL (SELECT hash FROM chain_nodes n "
               "WHERE n.level = w.level AND n.idx = w.idx) n "
               "UNION ALL SELECT 1, 0, t.idx, t.hashes FROM chain_tiles t "
               "WHERE t.idx = ANY(%s::bigint[])")
        if sized:
            sql += " UNION ALL SELECT 2, 0, size, NULL FROM chain_state"
        with self.lock, self.conn.cursor(binary=True) as cur:
            cur.execute(sql, ([i[0] for i in unique], [i[1] for i in unique],
                              list(dict.fromkeys(tiles))))
            rows = cur.fetchall()
        nodes: dict[NodeID, bytes] = {}
        found: dict[int, bytes] = {}
        size = -1
        for kind, lv, ix, h in rows:
            if kind == 0:
                nodes[(int(lv), int(ix))] = bytes(h)
            elif kind == 1:
                found[int(ix)] = bytes(h)
            else:
                size = int(ix)
        return nodes, found, size

    def _migrate_legacy(self) -> None:
        with self.lock, self.conn.cursor() as cur:
            cur.execute("SELECT 1 FROM chain_nodes WHERE level < %s LIMIT 1", (TILE_HEIGHT,))
            if cur.fetchone() is None:
                return
            with self.conn.transaction():
                # the writers' lock; then look again (READ COMMITTED: each statement sees
                # what committed before it), as another store may have moved the rows
                cur.execute("SELECT size FROM chain_state FOR UPDATE")
                row = cur.fetchone()
                size = int(row[0]) if row else 0
                cur.execute("SELECT 1 FROM chain_nodes WHERE level < %s LIMIT 1",
                            (TILE_HEIGHT,))
                if cur.fetchone() is None:
                    return
                cur.execute("SELECT idx, hash FROM chain_nodes WHERE level = 0 ORDER BY idx")
                tiles, damage = self._legacy_tiles(cur.fetchall(), size)
                cur.executemany("INSERT INTO chain_tiles VALUES (%s, %s) ON CONFLICT (idx) "
                                + _on_conflict(damage), tiles)
                if self._legacy_moved(damage):
                    cur.execute("DELETE FROM chain_nodes WHERE level < %s", (TILE_HEIGHT,))

    def close(self) -> None:
        self.conn.close()
