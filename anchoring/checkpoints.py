"""The checkpoints cut so far and the size each witness last co-signed, beside the tree.

``chain_checkpoints`` holds each checkpoint as the platform signed it, the note with the
co-signatures gathered so far, who signed, their BLS aggregate and whether a quorum
signed (anchored). ``chain_witness_sizes`` holds, per witness, the size it last
co-signed for us: the next consistency proof it is sent starts there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Query = Callable[[str, Sequence[Any]], list[Any]]
"""Runs one statement (``?`` placeholders) on the tree's database and returns its rows."""

CHECKPOINT_TABLES = (
    ("CREATE TABLE IF NOT EXISTS chain_checkpoints (size {int} PRIMARY KEY, note TEXT NOT NULL, "
     "cosigned TEXT NOT NULL, signers TEXT NOT NULL, aggregate {blob}, anchored {int} NOT NULL, "
     "cut_at TEXT NOT NULL)"),
    "CREATE TABLE IF NOT EXISTS chain_witness_sizes (name TEXT PRIMARY KEY, size {int} NOT NULL)",
)
"""The tables' statements; ``{int}`` and ``{blob}`` are the database's type names."""

_COLUMNS = "size, note, cosigned, signers, aggregate, anchored, cut_at"


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


class CheckpointStore:
    """Checkpoints and witnesses' sizes, through the tree database's ``query``."""

    def __init__(self, query: Query) -> None:
        self._q = query

    def put(self, size: int, note: str, cut_at: str) -> None:
        """Store a newly signed checkpoint (not yet anchored)."""
        self._q("INSERT INTO chain_checkpoints (size, note, cosigned, signers, aggregate, "
                "anchored, cut_at) VALUES (?, ?, ?, '[]', NULL, 0, ?)",
                (size, note, note, cut_at))

    def record_cosignatures(self, size: int, cosigned: str, signers: list[str],
                            aggregate: bytes | None, anchored: bool) -> None:
        """Store the co-signed note, who signed, the aggregate and whether a quorum signed."""
        self._q("UPDATE chain_checkpoints SET cosigned = ?, signers = ?, aggregate = ?, "
                "anchored = ? WHERE size = ?",
                (cosigned, json.dumps(sorted(signers)), aggregate, int(anchored), size))

    def get(self, size: int) -> StoredCheckpoint | None:
        """The checkpoint cut at tree size ``size``, if any."""
        rows = self._q(f"SELECT {_COLUMNS} FROM chain_checkpoints WHERE size = ?", (size,))
        return _stored_checkpoint(rows[0]) if rows else None

    def latest(self, *, anchored: bool = False) -> StoredCheckpoint | None:
        """The newest checkpoint (the newest anchored one if ``anchored``)."""
        where = "WHERE anchored = 1 " if anchored else ""
        rows = self._q(f"SELECT {_COLUMNS} FROM chain_checkpoints {where}"
                       "ORDER BY size DESC LIMIT 1", ())
        return _stored_checkpoint(rows[0]) if rows else None

    def all(self) -> list[StoredCheckpoint]:
        """Every checkpoint, oldest first."""
        return [_stored_checkpoint(r) for r in self._q(
            f"SELECT {_COLUMNS} FROM chain_checkpoints ORDER BY size", ())]

    def page(self, after_size: int, limit: int) -> list[StoredCheckpoint]:
        """Up to ``limit`` checkpoints with size > ``after_size``, oldest first."""
        return [_stored_checkpoint(r) for r in self._q(
            f"SELECT {_COLUMNS} FROM chain_checkpoints WHERE size > ? ORDER BY size LIMIT ?",
            (after_size, limit))]

    def witness_size(self, name: str) -> int:
        """The size the witness ``name`` last co-signed for us (0 if never)."""
        rows = self._q("SELECT size FROM chain_witness_sizes WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0

    def set_witness_size(self, name: str, size: int) -> None:
        """Remember the size the witness ``name`` last co-signed."""
        self._q("DELETE FROM chain_witness_sizes WHERE name = ?", (name,))
        self._q("INSERT INTO chain_witness_sizes VALUES (?, ?)", (name, size))
