"""The tree's tiled layout, without a database: what is stored, and nodes read back from it.

As in C2SP tlog-tiles and trillian-tessera's ``Subtree`` rows, the leaf hashes live in
tiles: tile ``idx`` is the 32-byte hashes of the leaves ``[idx * 256, (idx + 1) * 256)``
concatenated, and the rightmost tile is partial and rewritten as it grows. The perfect
subtrees of level 1 to 7 each lie inside one tile and are recomputed from it (at most 127
hashes), so they are not stored; the nodes of level >= 8 are stored by (level, index), one
per 256 leaves. Every stored hash is written once, in the transaction that moves the size,
and never changes after (a partial tile only grows).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from chain import merkle
from chain.compact import Node, NodeID
from chain.hasher import HASH_SIZE
from chain.proof import NodeGetter

TILE_HEIGHT = 8
"""Levels below this are kept in tiles: leaf hashes stored, nodes of level 1-7 recomputed."""

TILE_WIDTH = 1 << TILE_HEIGHT
"""Leaf hashes per full tile (256: 8,192 bytes)."""

TileRow = tuple[int, bytes]
"""A leaf tile as stored: (tile index, its leaf hashes concatenated)."""

Chunk = tuple[list[TileRow], list[Node]]
"""What one chunk of an append stores: the tiles it fills, the nodes of level >= 8 it completes."""

CHUNK = 1024
"""Leaves hashed at a time while a write is under way (4 tiles)."""


class MissingNodeError(LookupError):
    """A node the tree should have is not stored (the store is damaged or behind)."""


class TreeMovedError(ValueError):
    """Another writer moved the tree since its size was read: nothing was written."""


@dataclass(frozen=True)
class Tip:
    """Where the tree ends: its size, its compact range's roots and its partial tile."""

    size: int
    roots: list[bytes]
    partial: bytes


class Batch:
    """Leaves after a tip, hashed chunk by chunk as they are iterated: each chunk gives
    the tiles it fills (and the partial tile at the end) and the nodes of level >= 8 it
    completes. Once iterated, :attr:`end` is the new tip."""

    def __init__(self, tip: Tip, leaves: Sequence[bytes], hashed: bool) -> None:
        self.tip, self.leaves, self.hashed = tip, leaves, hashed
        self.end: Tip | None = None

    def __iter__(self) -> Iterator[Chunk]:
        size, roots, pending = self.tip.size, self.tip.roots, self.tip.partial
        tile = (size - len(pending) // HASH_SIZE) >> TILE_HEIGHT  # the tile ``pending`` starts
        full = TILE_WIDTH * HASH_SIZE
        for start in range(0, len(self.leaves), CHUNK):
            hashes, nodes, roots = merkle.append(size, roots, self.leaves[start:start + CHUNK],
                                                 hashed=self.hashed, store_from=TILE_HEIGHT)
            size += len(hashes) // HASH_SIZE
            pending += hashes
            tiles = []
            while len(pending) >= full:
                tiles.append((tile, pending[:full]))
                pending, tile = pending[full:], tile + 1
            if start + CHUNK >= len(self.leaves) and pending:
                tiles.append((tile, pending))
            yield tiles, nodes
        self.end = Tip(size, roots, pending)


def split_hashes(hashes: bytes) -> list[bytes]:
    """32-byte hashes concatenated, as a list."""
    return [hashes[i:i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]


def where_stored(ids: Sequence[NodeID]) -> tuple[list[NodeID], list[int]]:
    """``(rows, tiles)``: the nodes of level >= 8 among ``ids`` (stored as rows) and the
    leaf tiles that hold the others (from which they are read or recomputed). Ids with a
    negative level or index (outside any tree) are left out."""
    ids = [(level, index) for level, index in ids if level >= 0 and index >= 0]
    rows = [i for i in ids if i[0] >= TILE_HEIGHT]
    tiles = sorted({(index << level) >> TILE_HEIGHT for level, index in ids if level < TILE_HEIGHT})
    return rows, tiles


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
