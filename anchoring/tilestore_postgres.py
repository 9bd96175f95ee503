"""The tree's tiles and upper nodes in PostgreSQL, in the same database and schema as the events."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from anchoring.checkpoints import CHECKPOINT_TABLES
from anchoring.tiles import Chunk, TreeMovedError
from anchoring.tilestore import Fetched, TileStore
from chain.compact import NodeID

_ROWS = 1000
"""Rows per multi-row INSERT (PostgreSQL's limit is 65,535 parameters)."""


class PostgresTileStore(TileStore):
    """Tiles, upper nodes, size and checkpoints in one PostgreSQL schema."""

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

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.lock, self.conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), params)
            return list(cur.fetchall()) if cur.description else []

    def size(self) -> int:
        with self.lock, self.conn.cursor() as cur:
            cur.execute("SELECT size FROM chain_state")
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def write(self, batch: Iterable[Chunk], new_size: int, old_size: int) -> None:
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

    def fetch(self, ids: Sequence[NodeID], tiles: Sequence[int] = ()) -> Fetched:
        if not ids and not tiles:
            return {}, {}
        found, blobs, _ = self._read(ids, tiles, sized=False)
        return found, blobs

    def fetch_sized(self, ids: Sequence[NodeID],
                    tiles: Sequence[int]) -> tuple[dict[NodeID, bytes], dict[int, bytes], int]:
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

    def close(self) -> None:
        self.conn.close()
