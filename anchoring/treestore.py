"""The persistent Merkle tree: appending leaves, and reading roots, proofs and hashes back.

Appending a batch of leaves hashes them and the nodes they complete in the C core
(:mod:`chain.merkle`), then stores the leaf tiles they touch, the nodes of level >= 8
they complete and the new size in one transaction (the layout: :mod:`anchoring.tiles`).
A root of any size ≤ n and any proof are computed by :mod:`chain.proof` from O(log n)
stored hashes and at most two tiles, fetched in one query. The hashes live in a
:class:`~anchoring.tilestore.TileStore` (a SQLite file by default, PostgreSQL when
configured; same tests on both), and the checkpoints beside them
(:class:`~anchoring.checkpoints.CheckpointStore`, on the same connection).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from anchoring.checkpoints import CheckpointStore
from anchoring.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    Batch,
    MissingNodeError,
    Tip,
    TreeMovedError,
    split_hashes,
    tiled_getter,
    where_stored,
)
from anchoring.tilestore import TileStore
from chain import merkle
from chain.compact import CompactRange, Node, NodeID, range_nodes
from chain.hasher import HASH_SIZE
from chain.proof import NodeGetter, consistency_proof, inclusion_proof, nodes_read, root_at

T = TypeVar("T")


class TreeStore:
    """The tree over the hashes ``tiles`` keeps; its checkpoints are :attr:`checkpoints`."""

    def __init__(self, tiles: TileStore) -> None:
        self.tiles = tiles
        self.checkpoints = CheckpointStore(tiles.query)
        #: the tip this store last wrote (None: read it from the database first)
        self._tip: Tip | None = None

    def size(self) -> int:
        """The number of integrated leaves."""
        return self.tiles.size()

    def close(self) -> None:
        """Release the connection."""
        self.tiles.close()

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement on the tree's database (tests and benchmarks look at the rows)."""
        return self.tiles.query(sql, params)

    # -- appending --------------------------------------------------------------------
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
        items = leaves if isinstance(leaves, list | tuple) else list(leaves)
        tip = None if fresh else self._tip
        if tip is None or (expected_size is not None and expected_size != tip.size):
            tip, fresh = self._read_tip(), True
        if expected_size is not None and tip.size != expected_size:
            raise ValueError(f"tree size is {tip.size}, expected {expected_size}")
        if not items:
            return tip.size if fresh else self.size()
        batch = Batch(tip, items, hashed)
        self._tip = None
        try:
            self.tiles.write(batch, tip.size + len(items), tip.size)
        except TreeMovedError:
            if fresh:
                raise
            return self._append(items, hashed, expected_size, fresh=True)
        self._tip = batch.end
        return tip.size + len(items)

    def _read_tip(self) -> Tip:
        """The stored tip: the whole tiles' roots (all of level >= 8, stored) with the
        partial tile's leaves appended to them."""
        size = self.size()
        base = size - size % TILE_WIDTH
        ids = range_nodes(0, base)
        tile = base >> TILE_HEIGHT
        found, tiles = self.tiles.fetch(ids, [tile] if size != base else [])
        get = tiled_getter(found, {})
        whole = [get(level, index) for level, index in ids]
        partial = tiles.get(tile, b"") if size != base else b""
        if len(partial) != (size - base) * HASH_SIZE:
            raise MissingNodeError(f"leaf tile {tile} holds {len(partial) // HASH_SIZE} leaf "
                                   f"hashes; tree size {size} needs {size - base}")
        roots = merkle.append(base, whole, split_hashes(partial), hashed=True,
                              store_from=TILE_HEIGHT)[2]
        return Tip(base + len(partial) // HASH_SIZE, roots, partial)

    def compact_range(self) -> CompactRange:
        """The frontier of the current tree, read from the stored tiles and nodes."""
        tip = self._read_tip()
        return CompactRange(tip.size, tip.roots)

    # -- reading stored hashes by range ---------------------------------------------------
    def leaf_hashes(self, begin: int, end: int) -> bytes:
        """The stored hashes of leaves [begin, end), concatenated (32 bytes each).

        Read from the tiles; shorter than ``32 * (end - begin)`` if some are not stored.
        """
        if not 0 <= begin <= end:
            raise ValueError(f"invalid leaf range [{begin}, {end})")
        if begin == end:
            return b""
        tiles = self.tiles.tiles_between(begin >> TILE_HEIGHT, (end - 1) >> TILE_HEIGHT)
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

    def nodes_between(self, nodes: Sequence[Node]) -> dict[NodeID, bytes]:
        """The stored hashes at the levels of ``nodes``, between the lowest and the highest
        index named at each level (one range query per level).

        Leaves come from the tiles; nodes of levels 1 to 7 are recomputed from them (they
        are not stored); levels >= 8 are read from their rows.
        """
        spans: dict[int, tuple[int, int]] = {}
        for level, index, _ in nodes:
            lo, hi = spans.get(level, (index, index))
            spans[level] = (min(lo, index), max(hi, index))
        out: dict[NodeID, bytes] = {}
        for level, (lo, hi) in spans.items():
            if level >= TILE_HEIGHT:
                out.update(self.tiles.nodes_between(level, lo, hi))
                continue
            hashes = self.leaf_hashes(lo << level, (hi + 1) << level)
            for k in range(len(hashes) // HASH_SIZE >> level):
                out[(level, lo + k)] = merkle.subtree(hashes, k << level, level)
        return out

    # -- roots and proofs ---------------------------------------------------------------
    def node(self, level: int, index: int) -> bytes:
        """One perfect-subtree hash: stored (a leaf in its tile, or level >= 8), or
        recomputed from its tile (levels 1 to 7)."""
        return tiled_getter(*self.tiles.fetch(*where_stored([(level, index)])))(level, index)

    def root(self, size: int | None = None) -> bytes:
        """The RFC 6962 root of the first ``size`` leaves (default: all). Requires size ≤ n."""
        return self._at_size(size, root_at)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Audit path of leaf ``index`` in the tree of ``size``. Requires 0 ≤ index < size ≤ n."""
        return self._at_size(size, lambda n, get: inclusion_proof(index, n, get))

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Proof that the tree of ``size1`` is a prefix of ``size2``. Requires 0 < size1 ≤ size2 ≤ n."""
        return self._at_size(size2, lambda n, get: consistency_proof(size1, n, get))

    def _at_size(self, size: int | None, compute: Callable[[int, NodeGetter], T]) -> T:
        """``compute(n, get)`` at tree size ``size`` (default: the current size).

        The nodes it reads (:func:`chain.proof.nodes_read`) are fetched in one query, with
        the current size to check ``size`` against, then it computes.
        """
        if size is not None and size < 0:
            raise ValueError(f"size {size} is negative")
        n = self.size() if size is None else size
        rows, tiles = where_stored(nodes_read(lambda get: compute(n, get)))
        found, blobs, current = self.tiles.fetch_sized(rows, tiles)
        if n > current:
            raise ValueError(f"size {n} is beyond the integrated tree ({current} leaves)")
        return compute(n, tiled_getter(found, blobs))
