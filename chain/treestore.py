"""The persistent Merkle tree: every perfect-subtree hash stored once, by (level, index).

Appending a leaf stores the nodes it completes (O(1) amortized, O(log n) at worst)
and the new size in one transaction. A root of any size ≤ n and any proof are
computed from O(log n) stored hashes, fetched in one query. SQLite file by
default, PostgreSQL when configured (same tests on both).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from chain.compact import CompactRange, Node, NodeID, range_nodes
from chain.proof import NodeGetter, consistency_proof, inclusion_proof, root_at

T = TypeVar("T")


class MissingNodeError(LookupError):
    """A node the tree should have is not stored (the store is damaged or behind)."""


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


class TreeStore(ABC):
    """Common logic; subclasses provide the SQL for their database."""

    @abstractmethod
    def size(self) -> int:
        """The number of integrated leaves."""

    @abstractmethod
    def _write(self, nodes: Sequence[Node], new_size: int, old_size: int) -> None:
        """Store ``nodes`` and the new size in one transaction, if the size is still old."""

    @abstractmethod
    def _fetch(self, ids: Sequence[NodeID]) -> dict[NodeID, bytes]:
        """The stored hashes of ``ids`` (missing ones absent)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def nodes_between(self, nodes: Sequence[Node]) -> dict[NodeID, bytes]:
        """The stored hashes of the nodes named in ``nodes`` (one range query per level)."""
        spans: dict[int, tuple[int, int]] = {}
        for level, index, _ in nodes:
            lo, hi = spans.get(level, (index, index))
            spans[level] = (min(lo, index), max(hi, index))
        out: dict[NodeID, bytes] = {}
        for level, (lo, hi) in spans.items():
            for lv, ix, h in self._q("SELECT level, idx, hash FROM chain_nodes WHERE level = ? "
                                     "AND idx BETWEEN ? AND ?", (level, lo, hi)):
                out[(int(lv), int(ix))] = bytes(h)
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
    def compact_range(self) -> CompactRange:
        """The frontier of the current tree, read from the stored nodes."""
        size = self.size()
        ids = range_nodes(0, size)
        found = self._fetch(ids)
        return CompactRange(size, [self._need(found, i) for i in ids])

    def append_leaves(self, leaf_hashes: Iterable[bytes], expected_size: int | None = None) -> int:
        """Append leaf hashes and store their nodes atomically; return the new size.

        ``expected_size`` guards against two integrators: if the stored size
        differs, nothing is written and ``ValueError`` is raised.
        """
        compact = self.compact_range()
        if expected_size is not None and compact.size != expected_size:
            raise ValueError(f"tree size is {compact.size}, expected {expected_size}")
        old = compact.size
        nodes: list[Node] = []
        for leaf in leaf_hashes:
            nodes += compact.append(leaf)
        if compact.size != old:
            self._write(nodes, compact.size, old)
        return compact.size

    # -- reading ----------------------------------------------------------------------
    def node(self, level: int, index: int) -> bytes:
        """One stored perfect-subtree hash."""
        return self._need(self._fetch([(level, index)]), (level, index))

    def root(self, size: int | None = None) -> bytes:
        """The RFC 6962 root of the first ``size`` leaves (default: all). Requires size ≤ n."""
        return self._two_pass(lambda get: root_at(self._checked(size), get))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Audit path of leaf ``index`` in the tree of ``size``. Requires 0 ≤ index < size ≤ n."""
        n = self._checked(size)
        return self._two_pass(lambda get: inclusion_proof(index, n, get))

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Proof that the tree of ``size1`` is a prefix of ``size2``. Requires 0 < size1 ≤ size2 ≤ n."""
        n = self._checked(size2)
        return self._two_pass(lambda get: consistency_proof(size1, n, get))

    def _checked(self, size: int | None) -> int:
        current = self.size()
        if size is None:
            return current
        if not 0 <= size <= current:
            raise ValueError(f"size {size} is beyond the integrated tree ({current} leaves)")
        return size

    def _two_pass(self, compute: Callable[[NodeGetter], T]) -> T:
        recorder = _Recorder()
        compute(recorder)
        found = self._fetch(recorder.ids)
        return compute(lambda level, index: self._need(found, (level, index)))

    @staticmethod
    def _need(found: dict[NodeID, bytes], node_id: NodeID) -> bytes:
        try:
            return found[node_id]
        except KeyError:
            raise MissingNodeError(f"tree node {node_id} (level, index) is not stored") from None


class SQLiteTreeStore(TreeStore):
    """Tree nodes in a SQLite file of their own (``chain.db``)."""

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
        self.conn.execute("CREATE TABLE IF NOT EXISTS chain_state (id INTEGER PRIMARY KEY "
                          "CHECK (id = 1), size INTEGER NOT NULL)")
        self.conn.execute("INSERT OR IGNORE INTO chain_state VALUES (1, 0)")
        for statement in CHECKPOINT_TABLES:
            self.conn.execute(statement.format(int="INTEGER", blob="BLOB"))

    def _q(self, sql: str, params: Sequence[Any] = (), *, write: bool = False) -> list[Any]:
        with self.lock:
            return list(self.conn.execute(sql, params).fetchall())

    def size(self) -> int:
        with self.lock:
            return int(self.conn.execute("SELECT size FROM chain_state").fetchone()[0])

    def _write(self, nodes: Sequence[Node], new_size: int, old_size: int) -> None:
        with self.lock:
            self._write_locked(nodes, new_size, old_size)

    def _write_locked(self, nodes: Sequence[Node], new_size: int, old_size: int) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            if c.execute("SELECT size FROM chain_state").fetchone()[0] != old_size:
                raise ValueError("another integrator moved the tree; nothing written")
            c.executemany("INSERT INTO chain_nodes VALUES (?, ?, ?)", nodes)
            c.execute("UPDATE chain_state SET size = ?", (new_size,))
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def _fetch(self, ids: Sequence[NodeID]) -> dict[NodeID, bytes]:
        with self.lock:
            return self._fetch_locked(ids)

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

    def close(self) -> None:
        self.conn.close()


class PostgresTreeStore(TreeStore):
    """Tree nodes in PostgreSQL, in the same database and schema as the events."""

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
            cur.execute("CREATE TABLE IF NOT EXISTS chain_state (id int PRIMARY KEY "
                        "CHECK (id = 1), size bigint NOT NULL)")
            cur.execute("INSERT INTO chain_state VALUES (1, 0) ON CONFLICT DO NOTHING")
            for statement in CHECKPOINT_TABLES:
                cur.execute(statement.format(int="bigint", blob="bytea"))

    def _q(self, sql: str, params: Sequence[Any] = (), *, write: bool = False) -> list[Any]:
        with self.lock, self.conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), params)
            return list(cur.fetchall()) if cur.description else []

    def size(self) -> int:
        with self.lock, self.conn.cursor() as cur:
            cur.execute("SELECT size FROM chain_state")
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def _write(self, nodes: Sequence[Node], new_size: int, old_size: int) -> None:
        with self.lock, self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute("SELECT size FROM chain_state FOR UPDATE")
            row = cur.fetchone()
            if row is None or row[0] != old_size:
                raise ValueError("another integrator moved the tree; nothing written")
            with cur.copy("COPY chain_nodes (level, idx, hash) FROM STDIN") as copy:
                for node in nodes:
                    copy.write_row(node)
            cur.execute("UPDATE chain_state SET size = %s", (new_size,))

    def _fetch(self, ids: Sequence[NodeID]) -> dict[NodeID, bytes]:
        unique = list(dict.fromkeys(ids))
        if not unique:
            return {}
        with self.lock, self.conn.cursor() as cur:
            cur.execute("SELECT n.level, n.idx, n.hash FROM chain_nodes n JOIN "
                        "unnest(%s::smallint[], %s::bigint[]) AS w(level, idx) "
                        "ON n.level = w.level AND n.idx = w.idx",
                        ([i[0] for i in unique], [i[1] for i in unique]))
            return {(int(lv), int(ix)): bytes(h) for lv, ix, h in cur.fetchall()}

    def close(self) -> None:
        self.conn.close()
