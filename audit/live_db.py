"""The ``--database URL`` source of ``dataledger audit replay``, and the read-model comparison.

The one module of ``audit`` that reads the server's own storage: the stored events (in seq
order, exactly as stored, gaps and all: finding them is the replay's job), the stored
checkpoints, and the live read models. It imports ``events``, ``anchoring`` and
``projections`` inside its functions only, so verifying a bundle never loads them.

The read models are compared by rebuilding them from the log into a scratch SQLite file
(nothing is written to the live database) up to the position the live ones reached, then
taking a digest per table on both sides and, where they differ, naming the first differing
row: (table, key, column, expected, found). A rewritten read-model row is what this catches:
the log and its checkpoints may be intact while what the API shows is not.

Where things are: on SQLite the events are in the file the URL names, and ``chain.db`` (the
tree and its checkpoints) and ``views.db`` (the read models) in the data dir, by default the
directory of that file (the embedded default's layout); on PostgreSQL all three are in the
URL's schema.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from audit.bundle import checkpoint_record
from core.record import LogEntry

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, Table

    from anchoring.checkpoints import StoredCheckpoint
    from events.store import EventStore
    from events.url import DatabaseURL

__all__ = ["LiveDatabase", "LiveDatabaseError", "ReadModelComparison", "RowDifference",
           "TableComparison", "compare_read_models"]


class LiveDatabaseError(ValueError):
    """The database (or a file beside it) cannot be read as a ledger; the message says which
    and why."""


def _parse(url: str) -> DatabaseURL:
    from events.url import DatabaseURL

    try:
        return DatabaseURL.parse(url)
    except ValueError as exc:
        raise LiveDatabaseError(f"--database: {exc}") from exc


class LiveDatabase:
    """A live ledger's events, tree size and checkpoints, read (never written) from its
    database: ``LiveDatabase(url).events()``, ``.checkpoints()``."""

    def __init__(self, url: str, data_dir: str | os.PathLike[str] | None = None,
                 batch: int = 5000) -> None:
        self.url_text = url
        self.url = _parse(url)
        self.batch = batch
        if self.url.kind == "sqlite":
            db = Path(self.url.path)
            if not db.is_file():
                raise LiveDatabaseError(f"--database: {db}: no such file")
            self.data_dir = Path(data_dir) if data_dir is not None else db.absolute().parent
        else:
            self.data_dir = Path(data_dir) if data_dir is not None else Path()
        self._store: EventStore | None = None

    # -- the events -------------------------------------------------------------------
    def store(self) -> EventStore:
        """The event store (opened once, without creating anything)."""
        if self._store is None:
            from events.store import open_store

            try:
                self._store = open_store(self.url, create=False)
            except Exception as exc:  # a driver's error: name the database
                raise LiveDatabaseError(f"--database {self.url_text}: cannot open the event "
                                        f"store: {exc}") from exc
        return self._store

    def events(self, after: int = 0, upto: int | None = None) -> Iterator[LogEntry]:
        """Every stored event with ``after`` < seq (<= ``upto``), in seq order, as stored:
        a missing seq is skipped, not filled (the replay names it)."""
        store = self.store()
        while upto is None or after < upto:
            entries = store.read(after, self.batch)
            if not entries:
                return
            for entry in entries:
                if upto is not None and entry.seq > upto:
                    return
                yield entry
            after = entries[-1].seq

    def max_seq(self) -> int:
        """The seq of the last stored event (0 when empty)."""
        return self.store().max_seq()

    # -- the tree and its checkpoints ----------------------------------------------------
    def _chain_query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """One read-only statement (``?`` placeholders) on the tree's database."""
        if self.url.kind == "sqlite":
            path = self.data_dir / "chain.db"
            if not path.is_file():
                raise LiveDatabaseError(f"--database: no {path} (the tree and its "
                                        "checkpoints); name the data dir that holds it")
            with sqlite3.connect(f"file:{path.absolute()}?mode=ro", uri=True) as conn:
                return conn.execute(sql, params).fetchall()
        import psycopg

        try:
            with psycopg.connect(self.url.conninfo(), autocommit=True) as conn:
                conn.execute(f'SET search_path TO "{self.url.schema}"')
                return conn.execute(sql.replace("?", "%s"), params).fetchall()
        except psycopg.errors.UndefinedTable as exc:
            raise LiveDatabaseError(f"--database {self.url_text}: no tree in schema "
                                    f"{self.url.schema!r}: {exc}") from exc

    def tree_size(self) -> int:
        """How many leaves the stored tree says it has (0 if it has no state row)."""
        rows = self._chain_query("SELECT size FROM chain_state")
        return int(rows[0][0]) if rows else 0

    def stored_leaves(self, first: int, last: int) -> bytes:
        """The leaf hashes the tree stored for seqs ``first`` to ``last`` (leaf index = seq
        - 1), concatenated, 32 bytes each; shorter where the tree holds fewer."""
        from anchoring.tiles import TILE_HEIGHT

        last = min(last, self.tree_size())
        if last < first:
            return b""
        lo, hi = (first - 1) >> TILE_HEIGHT, (last - 1) >> TILE_HEIGHT
        tiles = dict(self._chain_query("SELECT idx, hashes FROM chain_tiles WHERE idx "
                                       "BETWEEN ? AND ? ORDER BY idx", (lo, hi)))
        joined = b"".join(bytes(tiles[t]) for t in range(lo, hi + 1) if t in tiles)
        skip = (first - 1 - (lo << TILE_HEIGHT)) * 32
        return joined[skip:skip + (last - first + 1) * 32]

    def stored_checkpoints(self) -> list[StoredCheckpoint]:
        """Every stored checkpoint, oldest first, as the tree's database holds it."""
        from anchoring.checkpoints import CheckpointStore

        return CheckpointStore(self._chain_query).all()

    def checkpoints(self) -> list[dict[str, Any]]:
        """Every stored checkpoint, oldest first, as a bundle's ``checkpoints.jsonl`` holds
        it (:meth:`audit.bundle.Bundle.checkpoints`: the aggregate in base64)."""
        return [checkpoint_record(cp) for cp in self.stored_checkpoints()]

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# -- the read models ------------------------------------------------------------------------

#: a read-model row: its primary key and its columns
Row = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class RowDifference:
    """The first row of a table where the rebuilt read model (expected) and the live one
    (found) differ; ``column`` is ``(row)`` when the row is on one side only."""

    table: str
    key: str
    column: str
    expected: str
    found: str

    def __str__(self) -> str:
        return (f"read model {self.table}, row {self.key}, {self.column}: expected "
                f"{self.expected}, found {self.found}")


@dataclass(frozen=True)
class TableComparison:
    """One table's digest rebuilt from the log (expected) and live (found)."""

    table: str
    expected: str
    found: str
    rows_expected: int
    rows_found: int
    first_difference: RowDifference | None = None

    @property
    def same(self) -> bool:
        return self.expected == self.found


@dataclass(frozen=True)
class ReadModelComparison:
    """Every read-model table compared at ``position`` (the seq the live ones reached)."""

    position: int
    tables: list[TableComparison] = field(default_factory=list)
    #: what keeps the comparison from being made or trusted (positions that disagree, …)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(t.same for t in self.tables)

    @property
    def findings(self) -> list[RowDifference]:
        """The first differing row of each table that differs, in table order."""
        return [t.first_difference for t in self.tables if t.first_difference is not None]


def _live_views(db: LiveDatabase) -> Engine:
    """The live read models, read only."""
    from sqlalchemy import create_engine

    if db.url.kind == "sqlite":
        path = db.data_dir / "views.db"
        if not path.is_file():
            raise LiveDatabaseError(f"--database: no {path} (the read models); name the "
                                    "data dir that holds it")
        return create_engine(f"sqlite:///file:{path.absolute()}?mode=ro&uri=true")
    return create_engine(db.url.sqlalchemy_url(),
                         connect_args={"options": f"-csearch_path={db.url.schema}"})


def _positions(engine: Engine) -> dict[str, int]:
    from sqlalchemy import select

    from projections.base import tracking

    with engine.connect() as conn:
        return {str(n): int(s) for n, s in conn.execute(select(tracking.c.projection,
                                                               tracking.c.seq))}


class _Upto:
    """The event store as the projection runner reads it, cut at ``upto``."""

    def __init__(self, db: LiveDatabase, upto: int) -> None:
        self.db, self.upto = db, upto

    def read(self, after: int = 0, limit: int = 100) -> list[LogEntry]:
        if after >= self.upto:
            return []
        return [e for e in self.db.store().read(after, limit) if e.seq <= self.upto]


def _rebuild(db: LiveDatabase, upto: int, path: Path) -> Engine:
    """The read models built from seq 1 to ``upto`` into the SQLite file ``path``."""
    from events.store import LogGapError
    from projections import all_projections
    from projections.runner import ProjectionRunner, views_engine

    engine = views_engine(_parse(f"sqlite:///{path}"), os.fspath(path))
    runner = ProjectionRunner(_Upto(db, upto), engine, all_projections())  # type: ignore[arg-type]
    runner.create_tables()
    try:
        reached = runner.catch_up()
    except LogGapError as gap:
        engine.dispose()
        raise LiveDatabaseError(f"cannot rebuild the read models: {gap}") from gap
    if reached != upto:
        engine.dispose()
        raise LiveDatabaseError(f"cannot rebuild the read models to seq {upto}: the log "
                                f"ends at seq {reached}")
    return engine


def compare_read_models(url: str, data_dir: str | os.PathLike[str] | None = None,
                        db: LiveDatabase | None = None) -> ReadModelComparison:
    """Rebuild the read models from the log up to the live ones' position and compare them
    table by table: a digest each, and the first differing row of a table that differs."""
    from projections.base import METADATA

    db = db or LiveDatabase(url, data_dir)
    live = _live_views(db)
    try:
        positions = _positions(live)
        position = min(positions.values(), default=0)
        problems = []
        if len(set(positions.values())) > 1:
            problems.append(f"the live read models stand at different seqs: {positions}")
        head = db.max_seq()
        if position > head:  # they saw events the log no longer holds
            problems.append(f"the live read models stand at seq {position}, past the log's "
                            f"last event (seq {head})")
            return ReadModelComparison(position, [], problems)
        with tempfile.TemporaryDirectory(prefix="dataledger-audit-") as scratch:
            rebuilt = _rebuild(db, position, Path(scratch) / "views.db")
            try:
                with rebuilt.connect() as want, live.connect() as got:
                    tables = [_compare_table(table, want, got)
                              for table in METADATA.sorted_tables]
            finally:
                rebuilt.dispose()
    finally:
        live.dispose()
    return ReadModelComparison(position, tables, problems)


def _ordered_rows(conn: Connection, table: Table) -> Iterator[Row]:
    """(primary key, row) of every row in byte order of the key (PostgreSQL's "C" collation,
    SQLite's binary one: the same order on both backends)."""
    from sqlalchemy import String, select

    keys = list(table.primary_key.columns)
    order = [c.collate("C") if conn.dialect.name == "postgresql" and isinstance(c.type, String)
             else c for c in keys]
    for row in conn.execute(select(table).order_by(*order)).mappings():
        yield tuple(row[c.name] for c in keys), dict(row)


def _encode(value: Any) -> str:
    """A column value as the digest and the findings show it (JSON, keys sorted)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str)


def _key_text(table: Table, key: tuple[Any, ...]) -> str:
    names = [c.name for c in table.primary_key.columns]
    return ", ".join(f"{n}={v}" for n, v in zip(names, key, strict=True))


def _compare_table(table: Table, want: Connection, got: Connection) -> TableComparison:
    """Both sides streamed in key order at once: each side's digest (SHA-256 over its rows,
    columns in table order) and the first row missing, extra or changed."""
    sides = (_ordered_rows(want, table), _ordered_rows(got, table))
    digests, counts = (hashlib.sha256(), hashlib.sha256()), [0, 0]
    heads: list[Any] = [next(sides[0], None), next(sides[1], None)]
    first: RowDifference | None = None
    while heads[0] is not None or heads[1] is not None:
        take = _which(heads[0], heads[1])
        if first is None:
            first = _difference(table, heads[0], heads[1], take)
        for k in take:
            digests[k].update(_encode([heads[k][1][c.name] for c in table.columns])
                              .encode("utf-8") + b"\n")
            counts[k] += 1
            heads[k] = next(sides[k], None)
    expected, found = digests[0].hexdigest(), digests[1].hexdigest()
    return TableComparison(table.name, expected, found, counts[0], counts[1],
                           None if expected == found else first)


def _which(want: Row | None, got: Row | None) -> tuple[int, ...]:
    """Which side's row comes first in key order: (0,), (1,) or both (0, 1) for one key."""
    if got is None:
        return (0,)
    if want is None:
        return (1,)
    a, b = _sort_key(want[0]), _sort_key(got[0])
    return (0,) if a < b else (1,) if b < a else (0, 1)


def _difference(table: Table, want: Row | None, got: Row | None,
                take: tuple[int, ...]) -> RowDifference | None:
    """How the rows at the head of each side differ (None: they are the same)."""
    if take == (0,):
        assert want is not None
        return RowDifference(table.name, _key_text(table, want[0]), "(row)", "the row",
                             "no such row")
    if take == (1,):
        assert got is not None
        return RowDifference(table.name, _key_text(table, got[0]), "(row)", "no such row",
                             "the row")
    assert want is not None and got is not None
    for column in table.columns:
        a, b = _encode(want[1][column.name]), _encode(got[1][column.name])
        if a != b:
            return RowDifference(table.name, _key_text(table, want[0]), column.name, a, b)
    return None


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """A key as both backends order it: strings by their UTF-8 bytes."""
    return tuple(k.encode("utf-8") if isinstance(k, str) else k for k in key)
