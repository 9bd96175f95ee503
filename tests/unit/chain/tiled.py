"""The tree as TreeStore keeps it, in memory: leaf tiles + nodes of level >= 8.

Built with chain.merkle.append (as TreeStore.append_leaf_data does) and read through
anchoring.tiles.tiled_getter (as TreeStore reads), so the unit tests check the tiled
layout and both hashing cores against the oracles without a database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

from anchoring.tiles import TILE_HEIGHT, TILE_WIDTH, tiled_getter
from chain import merkle
from chain.compact import NodeID
from chain.hasher import HASH_SIZE
from chain.proof import consistency_proof, inclusion_proof, root_at

_C_MISSING = "chain._merkle (the C core) is not built: no C compiler or OpenSSL headers"
if "c" not in merkle.IMPLEMENTATIONS and os.environ.get("CI"):
    # CI machines have gcc and libssl-dev: a missing C core there is a broken build
    raise RuntimeError(_C_MISSING + " (CI is set: it must be)")

#: pytest params: each hashing core ("c" skipped where it was not built)
IMPLS = [pytest.param("c", marks=pytest.mark.skipif("c" not in merkle.IMPLEMENTATIONS,
                                                    reason=_C_MISSING)),
         "python"]


@contextmanager
def using(name: str) -> Iterator[None]:
    """Make chain.merkle (and so TreeStore) use the named core inside the block."""
    saved = merkle._impl
    merkle._impl = merkle.IMPLEMENTATIONS[name]
    try:
        yield
    finally:
        merkle._impl = saved


class TiledTree:
    """Leaves appended in chunks of ``chunk``, stored as TreeStore stores them."""

    def __init__(self, entries: Sequence[bytes], chunk: int = 37, hashed: bool = False) -> None:
        self.tiles: dict[int, bytes] = {}
        self.nodes: dict[NodeID, bytes] = {}
        self.size = 0
        roots: list[bytes] = []
        leaves = b""
        for start in range(0, len(entries), chunk):
            hashes, nodes, roots = merkle.append(self.size, roots, entries[start:start + chunk],
                                                 hashed=hashed, store_from=TILE_HEIGHT)
            assert all(level >= TILE_HEIGHT for level, _, _ in nodes)
            self.nodes.update({(level, index): h for level, index, h in nodes})
            leaves += hashes
            self.size += len(hashes) // HASH_SIZE
        step = TILE_WIDTH * HASH_SIZE
        for t, begin in enumerate(range(0, len(leaves), step)):
            self.tiles[t] = leaves[begin:begin + step]
        self.get = tiled_getter(self.nodes, self.tiles)

    def root(self, size: int) -> bytes:
        return root_at(size, self.get)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return inclusion_proof(index, size, self.get)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return consistency_proof(size1, size2, self.get)
