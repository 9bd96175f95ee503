"""Computations and deliveries (计算/交付).

A computation is seen by the contract's demander, its operator and the provider that
requested it (acl kind ``computation``); a delivery by the demander and the operator (acl
kind ``delivery``); the regulator and the platform see everything. The delivery id is the
computation id.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Connection, Integer, RowMapping, String, Table, Text, select

from core.record import LogEntry
from domain.delivered import UNMARKED_V1
from projections import base

KIND = "computation"
DELIVERY_KIND = "delivery"

computations = base.state_table(
    "rm_computations",
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
    # column -> the masking rule the node applied (computation.succeeded v2; v1: none)
    Column("masking", JSON, nullable=True),
    Column("failure_reason", Text, nullable=True),
    Column("requested_at", String, nullable=False),
    Column("finished_at", String, nullable=True),
    # the input providers that approved the release of a held result, in approval order
    Column("released_by", JSON, nullable=True),
)

deliveries = Table(
    "rm_deliveries", base.METADATA,
    Column("id", String, primary_key=True),  # the computation id
    Column("contract_id", String, nullable=False, index=True),
    Column("demander_id", String, nullable=False),
    Column("operator_id", String, nullable=False),
    Column("result_sha256", String, nullable=False),
    Column("delivered_at", String, nullable=False),
    # the bytes served (the result watermarked for this delivery), and the watermark (null:
    # nothing marked, watermark_reason says why)
    Column("delivered_sha256", String, nullable=True),
    Column("watermark", JSON, nullable=True),
    Column("watermark_reason", Text, nullable=True),
)


def _requested(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    base.insert_row(conn, computations,
               id=entry.originator_id, contract_id=p["contract_id"], execution=p["execution"],
               product_id=p["product_id"], demander_id=p["demander_id"],
               operator_id=p["operator_id"], provider_id=p["provider_id"],
               code_sha256=p["code_sha256"], datasite=p["datasite"],
               dataset_ids=list(p["dataset_ids"]), state="requested", requested_at=p["at"],
               updated_at=p["at"], version=entry.version)
    base.grant(conn, KIND, entry.originator_id, p["demander_id"], p["provider_id"], p["operator_id"])


def _delivered(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    row = conn.execute(select(computations.c.contract_id, computations.c.operator_id).where(
        computations.c.id == entry.originator_id)).one()
    base.insert_row(conn, deliveries, id=entry.originator_id, contract_id=row.contract_id,
               demander_id=p["demander_id"], operator_id=row.operator_id,
               result_sha256=p["result_sha256"], delivered_at=p["at"],
               # delivery.made v1 served the result's own bytes, unmarked
               delivered_sha256=p.get("delivered_sha256", p["result_sha256"]),
               watermark=p.get("watermark"), watermark_reason=p.get(
                   "watermark_reason", UNMARKED_V1))
    base.touch(conn, computations, entry, p)
    base.grant(conn, DELIVERY_KIND, entry.originator_id, p["demander_id"], row.operator_id)


def _succeeded(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    base.touch(conn, computations, entry, p, state="succeeded", input_hashes=p["input_hashes"],
               result_sha256=p["result_sha256"], result_rows=p["result_rows"],
               masking=p.get("masking") or {}, finished_at=p["at"])


def _release_approved(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    released = conn.execute(select(computations.c.released_by).where(
        computations.c.id == entry.originator_id)).scalar_one()
    base.touch(conn, computations, entry, p, released_by=[*(released or []), p["provider_id"]])


def _usage_refused(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    """A refused processing is on its computation's stream (its version moves); a refused
    access is on the contract's usage stream (no row here: nothing changes)."""
    base.touch(conn, computations, entry, p)


class ComputationsProjection(base.Projection):
    name = "computations"
    tables = (computations, deliveries)
    kinds = (KIND, DELIVERY_KIND)

    def handlers(self) -> dict[str, base.EventHandler]:
        return {
            "computation.requested": _requested,
            "computation.succeeded": _succeeded,
            "computation.failed": base.transition(computations, "failed", failure_reason="reason",
                                                  finished_at="at"),
            "delivery.made": _delivered,
            "delivery.release_approved": _release_approved,
            "usage.refused": _usage_refused,
        }


_FIELDS = ("id", "contract_id", "execution", "product_id", "demander_id", "operator_id",
           "provider_id", "code_sha256", "datasite", "dataset_ids", "state", "input_hashes",
           "result_sha256", "result_rows", "masking", "failure_reason", "requested_at", "finished_at",
           "updated_at", "version")


def _computation_row(row: RowMapping, viewer_id: str, sees_all: bool) -> dict[str, Any]:
    out = base.pick(row, _FIELDS)
    out["computation_id"] = row["id"]
    out["reason"] = row["failure_reason"]
    out["trial"] = row["execution"] == 0  # the trial (试用), on mock data
    out["released_by"] = list(row["released_by"] or [])
    return out


#: the computations the viewer may see, by contract then execution number; filters:
#: contract_id, state
COMPUTATIONS = base.Listing(computations, KIND, order_by=("contract_id", "execution"),
                       shape=_computation_row)
#: a delivery, for its demander and operator (and those who see all)
DELIVERIES = base.Listing(deliveries, DELIVERY_KIND, order_by=("id",),
                     fields=("id", "contract_id", "demander_id", "operator_id",
                             "result_sha256", "delivered_at", "delivered_sha256",
                             "watermark", "watermark_reason"))
