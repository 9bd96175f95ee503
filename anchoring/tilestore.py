"""Where the tree's hashes are kept: one database connection, one subclass per database.

Tables: ``chain_tiles (idx, hashes)`` the leaf tiles, ``chain_nodes (level, idx, hash)``
the nodes of level >= 8 (see :mod:`anchoring.tiles`), ``chain_state (size)`` the number
of integrated leaves, and the checkpoint tables of :mod:`anchoring.checkpoints`, which
share the connection.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

from anchoring.tiles import Chunk
from chain.compact import NodeID

Fetched = tuple[dict[NodeID, bytes], dict[int, bytes]]
"""Nodes of level >= 8 by (level, index), and leaf tiles by tile index."""


class TileStore(ABC):
    """The tree's tiles, upper nodes and size in one database; thread-safe."""

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement (``?`` placeholders) and return its rows."""

    @abstractmethod
    def size(self) -> int:
        """The number of integrated leaves."""

    @abstractmethod
    def write(self, batch: Iterable[Chunk], new_size: int, old_size: int) -> None:
        """In one transaction, if the size is still ``old_size`` (else raise TreeMovedError,
        nothing written): store (upsert) the tiles and insert the nodes of each chunk of
        ``batch`` as it comes, and set the size to ``new_size``."""

    @abstractmethod
    def fetch(self, ids: Sequence[NodeID], tiles: Sequence[int] = ()) -> Fetched:
        """The stored hashes of ``ids`` (levels >= 8) and the stored ``tiles``, in one
        query (missing ones absent)."""

    @abstractmethod
    def fetch_sized(self, ids: Sequence[NodeID],
                    tiles: Sequence[int]) -> tuple[dict[NodeID, bytes], dict[int, bytes], int]:
        """:meth:`fetch` and the current size, as one read."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def tiles_between(self, lo: int, hi: int) -> dict[int, bytes]:
        """The stored leaf tiles ``lo`` to ``hi`` (inclusive), by tile index."""
        return {int(t): bytes(h) for t, h in self.query(
            "SELECT idx, hashes FROM chain_tiles WHERE idx BETWEEN ? AND ?", (lo, hi))}

    def nodes_between(self, level: int, lo: int, hi: int) -> dict[NodeID, bytes]:
        """The stored nodes of ``level`` (>= 8) with an index from ``lo`` to ``hi``."""
        return {(int(lv), int(ix)): bytes(h) for lv, ix, h in self.query(
            "SELECT level, idx, hash FROM chain_nodes WHERE level = ? AND idx BETWEEN ? AND ?",
            (level, lo, hi))}
