"""The usage counters of each contract (使用计数): a projection of its usage stream
(``delivery.accessed``, ``usage.refused``), never a mutable column a command writes.

``rm_usage`` holds, per contract, the usage stream's version and the demander's views and
downloads counted up to it, and how many uses were refused (accesses and processings). An
access is decided on this row (``meter``): one indexed read, however many accesses came
before. The processings used are read from the computations read model (``counters``).

The usage events are seen by the contract's parties (acl kind ``usage``): its demander, its
operator and its providers; the regulator and the platform see all.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, Integer, String, func, select, update

from core.record import LogEntry
from domain.usage import Meter, usage_id
from projections import base
from projections.computations import computations
from projections.orders import _input_owners, orders

KIND = "usage"

usage = base.state_table(
    "rm_usage",
    Column("contract_id", String, nullable=False, unique=True),
    Column("views", Integer, nullable=False),
    Column("downloads", Integer, nullable=False),
    Column("refused", Integer, nullable=False),
)


def _parties(conn: Connection, contract_id: str) -> list[str]:
    """The contract's demander, operator and input providers: what never changes of an
    order (so a rebuild grants the same, whatever the batches)."""
    row = conn.execute(select(orders.c.demander_id, orders.c.operator_id,
                              orders.c.product_id).where(orders.c.id == contract_id)).first()
    if row is None:
        return []
    return [row.demander_id, row.operator_id, *_input_owners(conn, row.product_id)]


def _count(conn: Connection, entry: LogEntry, p: dict[str, Any], **added: int) -> None:
    """Add ``added`` to the contract's counters; the usage stream's version moves only for
    an event of that stream (a refused processing is on its computation's)."""
    contract_id = p["contract_id"]
    stream = usage_id(contract_id)
    on_stream = entry.originator_id == stream
    found = conn.execute(select(usage.c.id).where(usage.c.id == stream)).first()
    if found is None:
        base.insert_row(conn, usage, id=stream, contract_id=contract_id,
                        views=added.get("views", 0), downloads=added.get("downloads", 0),
                        refused=added.get("refused", 0), updated_at=p["at"],
                        version=entry.version if on_stream else 0)
        base.grant(conn, KIND, stream, *_parties(conn, contract_id))
    else:
        values: dict[str, Any] = {name: usage.c[name] + n for name, n in added.items() if n}
        if on_stream:
            values["version"] = entry.version
        conn.execute(update(usage).where(usage.c.id == stream)
                     .values(updated_at=p["at"], **values))
    if not on_stream:
        base.grant(conn, KIND, entry.originator_id, *_parties(conn, contract_id))


def _accessed(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    counted = bool(p["counted"])
    _count(conn, entry, p, views=int(counted and p["kind"] == "view"),
           downloads=int(counted and p["kind"] == "download"))


def _refused(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _count(conn, entry, p, refused=1)


class UsageProjection(base.Projection):
    name = "usage"
    tables = (usage,)
    kinds = (KIND,)

    def handlers(self) -> dict[str, base.EventHandler]:
        return {"delivery.accessed": _accessed, "usage.refused": _refused}


def meter(conn: Connection, contract_id: str) -> Meter:
    """The contract's usage counters as projected (a fresh stream: all zero). One indexed
    read, sent as plain SQL: it is on the path of every access."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    row = conn.exec_driver_sql(f"SELECT version, views, downloads FROM {usage.name} "
                               f"WHERE id = {mark}", (usage_id(contract_id),)).first()
    return Meter() if row is None else Meter(int(row[0]), int(row[1]), int(row[2]))


def counters(conn: Connection, contract_ids: list[str]) -> dict[str, dict[str, int]]:
    """Per contract: ``views_used`` and ``downloads_used`` (the demander's), ``refused``
    (uses refused), and ``processings_used``: the executions (>= 1) requested or succeeded,
    of the provider that ran the most (a failed one is free, as the count is kept)."""
    out = {c: {"views_used": 0, "downloads_used": 0, "processings_used": 0, "refused": 0}
           for c in contract_ids}
    if not contract_ids:
        return out
    rows = conn.execute(select(usage.c.contract_id, usage.c.views, usage.c.downloads,
                               usage.c.refused).where(usage.c.contract_id.in_(contract_ids)))
    for row in rows:
        out[row.contract_id].update(views_used=row.views, downloads_used=row.downloads,
                                    refused=row.refused)
    per_provider = (select(computations.c.contract_id, func.count().label("n"))
                    .where(computations.c.contract_id.in_(contract_ids),
                           computations.c.execution >= 1,
                           computations.c.state.in_(("requested", "succeeded")))
                    .group_by(computations.c.contract_id, computations.c.provider_id)
                    .subquery())
    for contract_id, most in conn.execute(select(per_provider.c.contract_id,
                                                 func.max(per_provider.c.n))
                                          .group_by(per_provider.c.contract_id)):
        out[contract_id]["processings_used"] = int(most)
    return out
