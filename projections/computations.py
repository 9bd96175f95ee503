"""Computations and deliveries (计算/交付).

A computation is seen by the contract's demander, its operator and the provider that
requested it (acl kind ``computation``); a delivery by the demander and the operator (acl
kind ``delivery``); the regulator and the platform see everything. The delivery id is the
computation id.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Connection,
    Integer,
    String,
    Table,
    Text,
    select,
    true,
)

from core.record import LogEntry
from projections.base import (
    METADATA,
    EventHandler,
    Projection,
    grant,
    insert_row,
    touch,
    visible_to,
)

KIND = "computation"
DELIVERY_KIND = "delivery"

computations = Table(
    "rm_computations", METADATA,
    Column("id", String, primary_key=True),
    Column("contract_id", String, nullable=False, index=True),
    Column("execution", Integer, nullable=False),
    Column("product_id", String, nullable=False),
    Column("demander_id", String, nullable=False),
    Column("operator_id", String, nullable=False),
    Column("provider_id", String, nullable=False),
    Column("code_sha256", String, nullable=False),
    Column("datasite", String, nullable=False),
    Column("dataset_ids", JSON, nullable=False),
    Column("state", String, nullable=False),
    Column("input_hashes", JSON, nullable=True),
    Column("result_sha256", String, nullable=True),
    Column("result_rows", Integer, nullable=True),
    Column("failure_reason", Text, nullable=True),
    Column("requested_at", String, nullable=False),
    Column("finished_at", String, nullable=True),
    Column("updated_at", String, nullable=False),
    Column("version", Integer, nullable=False),
)

deliveries = Table(
    "rm_deliveries", METADATA,
    Column("id", String, primary_key=True),  # the computation id
    Column("contract_id", String, nullable=False, index=True),
    Column("demander_id", String, nullable=False),
    Column("operator_id", String, nullable=False),
    Column("result_sha256", String, nullable=False),
    Column("delivered_at", String, nullable=False),
)


def _touch(conn: Connection, entry: LogEntry, p: dict[str, Any], **values: Any) -> None:
    touch(conn, computations, entry, p["at"], **values)


def _requested(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    insert_row(conn, computations,
               id=entry.originator_id, contract_id=p["contract_id"], execution=p["execution"],
               product_id=p["product_id"], demander_id=p["demander_id"],
               operator_id=p["operator_id"], provider_id=p["provider_id"],
               code_sha256=p["code_sha256"], datasite=p["datasite"],
               dataset_ids=list(p["dataset_ids"]), state="requested", requested_at=p["at"],
               updated_at=p["at"], version=entry.version)
    grant(conn, KIND, entry.originator_id, p["demander_id"], p["provider_id"], p["operator_id"])


def _succeeded(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="succeeded", input_hashes=dict(p["input_hashes"]),
           result_sha256=p["result_sha256"], result_rows=p["result_rows"], finished_at=p["at"])


def _failed(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="failed", failure_reason=p["reason"], finished_at=p["at"])


def _delivered(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    row = conn.execute(select(computations.c.contract_id, computations.c.operator_id).where(
        computations.c.id == entry.originator_id)).one()
    insert_row(conn, deliveries, id=entry.originator_id, contract_id=row.contract_id,
               demander_id=p["demander_id"], operator_id=row.operator_id,
               result_sha256=p["result_sha256"], delivered_at=p["at"])
    _touch(conn, entry, p)
    grant(conn, DELIVERY_KIND, entry.originator_id, p["demander_id"], row.operator_id)


class ComputationsProjection(Projection):
    name = "computations"
    tables = (computations, deliveries)
    kinds = (KIND, DELIVERY_KIND)

    def handlers(self) -> dict[str, EventHandler]:
        return {
            "computation.requested": _requested,
            "computation.succeeded": _succeeded,
            "computation.failed": _failed,
            "delivery.made": _delivered,
        }


# -- queries ----------------------------------------------------------------------
_FIELDS = ("id", "contract_id", "execution", "product_id", "demander_id", "operator_id",
           "provider_id", "code_sha256", "datasite", "dataset_ids", "state", "input_hashes",
           "result_sha256", "result_rows", "failure_reason", "requested_at", "finished_at",
           "updated_at", "version")
_DELIVERY_FIELDS = ("id", "contract_id", "demander_id", "operator_id", "result_sha256",
                    "delivered_at")


def _visible(kind: str, column: Any, viewer_id: str, sees_all: bool) -> ColumnElement[bool]:
    if sees_all:
        return true()
    clause: ColumnElement[bool] = visible_to(kind, column, viewer_id)
    return clause


def _computation_row(row: Any) -> dict[str, Any]:
    out = {k: row[k] for k in _FIELDS}
    out["computation_id"] = row["id"]
    out["reason"] = row["failure_reason"]
    out["trial"] = row["execution"] == 0  # the trial (试用), on mock data
    return out


def list_computations(conn: Connection, viewer_id: str, sees_all: bool,
                      contract_id: str | None = None,
                      state: str | None = None) -> list[dict[str, Any]]:
    """The computations the caller may see, by contract then execution number."""
    query = (select(computations)
             .where(_visible(KIND, computations.c.id, viewer_id, sees_all))
             .order_by(computations.c.contract_id, computations.c.execution))
    if contract_id:
        query = query.where(computations.c.contract_id == contract_id)
    if state:
        query = query.where(computations.c.state == state)
    return [_computation_row(r) for r in conn.execute(query).mappings()]


def get_computation(conn: Connection, computation_id: str, viewer_id: str,
                    sees_all: bool) -> dict[str, Any] | None:
    """One computation if the caller may see it (None otherwise)."""
    row = conn.execute(select(computations).where(
        computations.c.id == computation_id,
        _visible(KIND, computations.c.id, viewer_id, sees_all))).mappings().first()
    return None if row is None else _computation_row(row)


def get_delivery(conn: Connection, delivery_id: str, viewer_id: str,
                 sees_all: bool) -> dict[str, Any] | None:
    """One delivery if the caller is its demander or operator (or sees all); else None."""
    row = conn.execute(select(deliveries).where(
        deliveries.c.id == delivery_id,
        _visible(DELIVERY_KIND, deliveries.c.id, viewer_id, sees_all))).mappings().first()
    return None if row is None else {k: row[k] for k in _DELIVERY_FIELDS}
