"""The kit of the read models: SQL tables built from the log in order, one handler per
event type.

A projection declares its tables on the shared ``METADATA`` (an aggregate's row in a
``state_table``) and maps stable event type names to handlers ``(conn, entry, payload) ->
None`` (a plain state change is a ``transition``). The runner applies them and records each
projection's position in the same transaction as its writes. Its queries are a ``Listing``:
the rows a viewer may see, filtered and ordered.

Tenant isolation is one table for every read model: ``acl(kind, resource_id,
participant_id)`` lists who may see a non-public row; the regulator and the
platform see everything.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Insert,
    Integer,
    MetaData,
    RowMapping,
    String,
    Table,
    delete,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from core.record import LogEntry

METADATA = MetaData()

#: who may see a non-public row: the read models' one table of tenant isolation
acl = Table(
    "rm_acl", METADATA,
    Column("kind", String, primary_key=True),
    Column("resource_id", String, primary_key=True),
    Column("participant_id", String, primary_key=True),
)

#: each projection's position: the seq of the last event it applied
tracking = Table(
    "rm_tracking", METADATA,
    Column("projection", String, primary_key=True),
    Column("seq", Integer, nullable=False),
)

EventHandler = Callable[[Connection, LogEntry, dict[str, Any]], None]


def grant(conn: Connection, kind: str, resource_id: str, *participant_ids: str) -> None:
    """Let ``participant_ids`` see resource ``kind``/``resource_id`` (again: no change)."""
    rows = [{"kind": kind, "resource_id": resource_id, "participant_id": p}
            for p in dict.fromkeys(participant_ids) if p]
    if isinstance(conn, BufferedConnection):
        for row in rows:
            conn.add(acl, row, ignore_conflicts=True)
    elif rows:
        conn.execute(insert_ignoring_conflicts(conn, acl), rows)


def state_table(name: str, *columns: Column[Any], stamped: bool = True) -> Table:
    """A table of one row per aggregate: its ``id``, ``columns``, then the time of its last
    event ``updated_at`` (unless not ``stamped``) and its ``version``, both kept by ``touch``."""
    stamp = [Column("updated_at", String, nullable=False)] if stamped else []
    return Table(name, METADATA, Column("id", String, primary_key=True), *columns, *stamp,
                 Column("version", Integer, nullable=False))


def touch(conn: Connection, table: Table, entry: LogEntry, payload: dict[str, Any],
          **values: Any) -> None:
    """Update the row of the event's aggregate: ``values``, its version and, if the table
    has the column, ``updated_at`` (the event's time ``at``)."""
    stamp = {"updated_at": payload["at"]} if "updated_at" in table.c else {}
    conn.execute(update(table).where(table.c.id == entry.originator_id)
                 .values(version=entry.version, **stamp, **values))


def transition(table: Table, state: str | None = None, **from_payload: str) -> EventHandler:
    """The handler of an event that only changes its aggregate's row (``touch``): to
    ``state`` if given, and each column named in ``from_payload`` to the payload's value
    under the key given (``closed_at="at"``)."""
    moved = {} if state is None else {"state": state}

    def handle(conn: Connection, entry: LogEntry, payload: dict[str, Any]) -> None:
        values = {column: payload[key] for column, key in from_payload.items()}
        touch(conn, table, entry, payload, **moved, **values)

    return handle


def insert_row(conn: Connection, table: Table, **values: Any) -> None:
    """Insert one row (buffered into an executemany when the runner batches)."""
    if isinstance(conn, BufferedConnection):
        conn.add(table, values)
    else:
        conn.execute(insert(table).values(**values))


def insert_ignoring_conflicts(conn: Connection, table: Table) -> Any:
    """INSERT … ON CONFLICT DO NOTHING in the connection's dialect."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


class BufferedConnection:
    """A connection that turns the handlers' single-row INSERTs into executemany batches.

    ``insert(table).values(...)`` is buffered (per table and column set); any other
    statement first flushes the buffer, so every read and update sees the rows
    inserted before it, in order. One executemany costs a tenth of as many single
    INSERTs through SQLAlchemy.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect
        self._groups: dict[tuple[Table, bool, tuple[str, ...]], list[dict[str, Any]]] = {}

    def add(self, table: Table, row: dict[str, Any], *, ignore_conflicts: bool = False) -> None:
        """Buffer one row for ``table``."""
        key = (table, ignore_conflicts, tuple(sorted(row)))
        if key not in self._groups and any(k[0] is table for k in self._groups):
            self.flush()  # another column set for the same table: keep the order
        self._groups.setdefault(key, []).append(row)

    def execute(self, statement: Any, parameters: Any = None) -> Any:
        """Buffer a plain single-row INSERT; run anything else after a flush."""
        if (parameters is None and type(statement) is Insert and statement._values
                and not statement._multi_values and not statement._returning):
            row = {str(k): v.value for k, v in statement._values.items()}
            self.add(statement.table, row)  # type: ignore[arg-type]
            return None
        self.flush()
        return self.conn.execute(statement, parameters)

    def flush(self) -> None:
        """Write every buffered row: one statement per table and column set.

        On PostgreSQL the rows go as one array per column into a single prepared
        ``INSERT … SELECT FROM unnest(…)`` (psycopg's executemany sends one INSERT per
        row, which costs several times the CPU, here and in the server); elsewhere one
        executemany.
        """
        groups, self._groups = self._groups, {}
        for (table, ignore, columns), rows in groups.items():
            if self.dialect.name == "postgresql" and len(rows) > 1:
                self._insert_arrays(table, ignore, columns, rows)
                continue
            stmt = insert_ignoring_conflicts(self.conn, table) if ignore else insert(table)
            self.conn.execute(stmt, rows)

    def _insert_arrays(self, table: Table, ignore: bool, columns: tuple[str, ...],
                       rows: list[dict[str, Any]]) -> None:
        statement, processors = _array_insert(self.dialect, table, ignore, columns)
        arrays = []
        for name, process in zip(columns, processors, strict=True):
            values = [row[name] for row in rows]
            arrays.append(values if process is None else [process(v) for v in values])
        self.conn.exec_driver_sql(statement, tuple(arrays))


_ARRAY_INSERTS: dict[tuple[Any, ...], tuple[str, list[Callable[[Any], Any] | None]]] = {}


def _array_insert(dialect: Any, table: Table, ignore: bool, columns: tuple[str, ...]
                  ) -> tuple[str, list[Callable[[Any], Any] | None]]:
    """``INSERT INTO t (cols) SELECT * FROM unnest(%b::type[], …)`` for PostgreSQL (the
    arrays sent in binary), and the bind processors SQLAlchemy would apply to each
    column's values (JSON → text, …)."""
    key = (table, ignore, columns)
    found = _ARRAY_INSERTS.get(key)
    if found is None:
        quote = dialect.identifier_preparer
        cols = [table.c[name] for name in columns]
        arrays = ", ".join(f"%b::{c.type.compile(dialect=dialect)}[]" for c in cols)
        statement = (f"INSERT INTO {quote.format_table(table)} "
                     f"({', '.join(quote.quote(c.name) for c in cols)}) "
                     f"SELECT * FROM unnest({arrays})"
                     + (" ON CONFLICT DO NOTHING" if ignore else ""))
        found = statement, [c.type.dialect_impl(dialect).bind_processor(dialect) for c in cols]
        _ARRAY_INSERTS[key] = found
    return found


class Projection(ABC):
    """A read model: tables plus handlers by event type name.

    ``kinds`` are the acl kinds this projection grants, cleared with its tables.
    """

    name: ClassVar[str] = ""
    tables: ClassVar[tuple[Table, ...]] = ()
    kinds: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def handlers(self) -> dict[str, EventHandler]:
        """Map stable event type names to handler functions."""

    def digest(self, conn: Connection) -> str:
        """SHA-256 over every row of every table, ordered: equal states give equal digests."""
        h = hashlib.sha256()
        grants = select(acl).where(acl.c.kind.in_(self.kinds)).order_by(*acl.primary_key.columns)
        for row in conn.execute(grants).mappings():
            h.update(json.dumps(dict(row), sort_keys=True).encode())
        for table in self.tables:
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).mappings()
            for row in rows:
                h.update(json.dumps(dict(row), sort_keys=True, default=str).encode())
        return h.hexdigest()

    def reset(self, conn: Connection) -> None:
        """Empty this projection's tables."""
        for table in self.tables:
            conn.execute(delete(table))
        if self.kinds:
            conn.execute(delete(acl).where(acl.c.kind.in_(self.kinds)))


#: the acl kind of each event type's aggregate, by the type name's first part
ACL_KIND_OF_TYPE = {"dataset": "dataset", "scenario": "scenario", "authorization": "authorization",
                    "product": "product", "order": "order", "contract": "order",
                    "computation": "computation", "delivery": "computation", "usage": "usage",
                    "joint": "joint"}
#: the event types whose aggregate is not the one the first part of their name says (a
#: provider's node key, and the member keys that sign it: seen by the providers of its joint
#: executions, projections/joint.py)
ACL_KIND_OF_EXACT_TYPE = {"delivery.accessed": "usage",
                          "participant.node_key_registered": "node_key",
                          "participant.key_registered": "node_key",
                          "participant.key_revoked": "node_key",
                          # ε spent on a dataset under an authorization (its own stream):
                          # seen by the authorization's parties (projections/privacy_budget.py)
                          "privacy.budget_spent": "privacy_budget"}
#: event types seen also by those granted a second kind on the same id: a joint input's
#: registration, by the joint's providers (each proves who owns which input)
ALSO_ACL_KIND_OF_TYPE = {"dataset.registered": "joint_input"}


def acl_kind_of_event(type_name: str) -> str | None:
    """The acl kind of the aggregate an event of ``type_name`` belongs to (None: no grants,
    e.g. participant events: only the regulator and the platform read those in the log)."""
    exact = ACL_KIND_OF_EXACT_TYPE.get(type_name)
    return exact if exact is not None else ACL_KIND_OF_TYPE.get(type_name.split(".", 1)[0])


def may_see_event(conn: Connection, type_name: str, originator_id: str,
                  participant_id: str) -> bool:
    """Whether ``participant_id`` was granted the aggregate that an event belongs to."""
    return bool(visible_events(conn, [(type_name, originator_id)], participant_id))


def visible_events(conn: Connection, events: Iterable[tuple[str, str]],
                   participant_id: str) -> set[tuple[str, str]]:
    """Which of ``events`` (type name, originator id) ``participant_id`` may see: those whose
    aggregate it was granted (the rule of ``may_see_event``, one query per acl kind)."""
    wanted: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for type_name, originator_id in events:
        for kind in (acl_kind_of_event(type_name), ALSO_ACL_KIND_OF_TYPE.get(type_name)):
            if kind is not None:
                wanted.setdefault(kind, {}).setdefault(originator_id, []).append(
                    (type_name, originator_id))
    out: set[tuple[str, str]] = set()
    for kind, by_id in wanted.items():
        granted = conn.execute(select(acl.c.resource_id).where(
            acl.c.kind == kind, acl.c.participant_id == participant_id,
            acl.c.resource_id.in_(list(by_id)))).scalars()
        for resource_id in granted:
            out.update(by_id[resource_id])
    return out


def visible_to(kind: str, id_column: Any, participant_id: str) -> Any:
    """A WHERE clause: rows of ``kind`` that ``participant_id`` was granted."""
    return id_column.in_(select(acl.c.resource_id).where(
        acl.c.kind == kind, acl.c.participant_id == participant_id))


def pick(row: RowMapping, fields: Iterable[str]) -> dict[str, Any]:
    """The ``fields`` of ``row``, as a dict."""
    return {k: row[k] for k in fields}


Shape = Callable[[RowMapping, str, bool], dict[str, Any]]


class Listing:
    """The visible-list queries of one table keyed by ``id``: which rows a viewer may see
    (every row for those who see all; else those of acl ``kind`` granted to it and the
    ``public`` ones), in which order, and what of each row it is shown (``fields``, or
    ``shape(row, viewer_id, sees_all)``)."""

    def __init__(self, table: Table, kind: str, *, order_by: tuple[str, ...],
                 fields: tuple[str, ...] = (), public: ColumnElement[bool] | None = None,
                 shape: Shape | None = None) -> None:
        self.table = table
        self.kind = kind
        self.order_by = [table.c[name] for name in order_by]
        self.fields = fields
        self.public = public
        self.shape = shape

    def visible(self, viewer_id: str, sees_all: bool) -> ColumnElement[bool]:
        """A WHERE clause: the rows ``viewer_id`` may see."""
        if sees_all:
            return true()
        granted: ColumnElement[bool] = visible_to(self.kind, self.table.c.id, viewer_id)
        return granted if self.public is None else self.public | granted

    def find_all(self, conn: Connection, viewer_id: str, sees_all: bool,
                 **filters: str | None) -> list[dict[str, Any]]:
        """The rows the viewer may see, in order, narrowed by each filter given (column =
        value; None or empty: any)."""
        query = select(self.table).where(self.visible(viewer_id, sees_all)).order_by(
            *self.order_by)
        for column, value in filters.items():
            if value:
                query = query.where(self.table.c[column] == value)
        return [self._shown(row, viewer_id, sees_all)
                for row in conn.execute(query).mappings()]

    def find(self, conn: Connection, row_id: str, viewer_id: str,
             sees_all: bool) -> dict[str, Any] | None:
        """Row ``row_id`` if the viewer may see it, else None (never the data)."""
        row = conn.execute(select(self.table).where(
            self.table.c.id == row_id, self.visible(viewer_id, sees_all))).mappings().first()
        return None if row is None else self._shown(row, viewer_id, sees_all)

    def _shown(self, row: RowMapping, viewer_id: str, sees_all: bool) -> dict[str, Any]:
        return pick(row, self.fields) if self.shape is None else self.shape(row, viewer_id,
                                                                            sees_all)
