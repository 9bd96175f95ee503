"""Joint executions (联合计算): one row per execution of a joint product's contract.

A joint execution is seen by its contract's parties (the demander, the operator, the
providers; acl kind ``joint``); the regulator and the platform see everything. Its providers
also see each other's ``participant.node_key_registered``, ``participant.key_registered``
and ``participant.key_revoked`` events in the log (acl kind ``node_key``, resource the
provider's participant id): each provider's node proves its peers' node keys, signed by a
member key, from them before it masks; and the ``dataset.registered`` of each input of the
product (acl kind ``joint_input``), from which it proves the providers. The view names the
seqs of ``joint.started`` and ``joint.layout_published`` (``started_seq``, ``layout_seq``),
which a node proves the providers, deadline and layout from.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Integer,
    RowMapping,
    String,
    Text,
    select,
)

from core.record import LogEntry
from projections import base
from projections.orders import orders
from projections.products import products

KIND = "joint"
NODE_KEY_KIND = "node_key"
INPUT_KIND = "joint_input"

joints = base.state_table(
    "rm_joints",
    Column("contract_id", String, nullable=False, index=True),
    Column("execution", Integer, nullable=False),
    Column("product_id", String, nullable=False),
    Column("demander_id", String, nullable=False),
    Column("providers", JSON, nullable=False),
    Column("layout_provider", String, nullable=False),
    Column("key_column", String, nullable=False),
    Column("value_columns", JSON, nullable=False),
    Column("state", String, nullable=False),
    Column("deadline", String, nullable=False),
    Column("layout_sha256", String, nullable=True),
    Column("length", BigInteger, nullable=True),
    # provider id -> the digest of its masked part, as they came
    Column("parts", JSON, nullable=False),
    Column("result_sha256", String, nullable=True),
    Column("table_digest", String, nullable=True),
    Column("rows", BigInteger, nullable=True),
    Column("reason", Text, nullable=True),
    # hidden queries answered, and the codes they looked up (summed request sizes)
    Column("queries", Integer, nullable=False),
    Column("queried", BigInteger, nullable=False),
    Column("started_at", String, nullable=False),
    Column("finished_at", String, nullable=True),
    Column("started_seq", BigInteger, nullable=True),
    Column("layout_seq", BigInteger, nullable=True),
)


def _started(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    base.insert_row(conn, joints, id=entry.originator_id, contract_id=p["contract_id"],
                    execution=p["execution"], product_id=p["product_id"],
                    demander_id=p["demander_id"], providers=list(p["providers"]),
                    layout_provider=p["layout_provider"], key_column=p["key_column"],
                    value_columns=list(p["value_columns"]), state="started",
                    deadline=p["deadline"], parts={}, queries=0, queried=0,
                    started_at=p["at"], updated_at=p["at"], version=entry.version,
                    started_seq=entry.seq)
    operator = conn.execute(select(orders.c.operator_id).where(
        orders.c.id == p["contract_id"])).scalar()
    base.grant(conn, KIND, entry.originator_id, p["demander_id"], operator or "",
               *p["providers"])
    for provider in p["providers"]:
        base.grant(conn, NODE_KEY_KIND, provider, *p["providers"])
    inputs = conn.execute(select(products.c.inputs).where(
        products.c.id == p["product_id"])).scalar() or []
    for item in inputs:
        base.grant(conn, INPUT_KIND, item["dataset_id"], *p["providers"])


def _layout_published(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    base.touch(conn, joints, entry, p, state="layout_published",
               layout_sha256=p["layout_sha256"], length=p["length"], layout_seq=entry.seq)


def _part_received(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    parts = conn.execute(select(joints.c.parts).where(
        joints.c.id == entry.originator_id)).scalar_one()
    base.touch(conn, joints, entry, p, parts={**parts, p["provider_id"]: p["digest"]})


def _queried(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    row = conn.execute(select(joints.c.queries, joints.c.queried).where(
        joints.c.id == entry.originator_id)).one()
    base.touch(conn, joints, entry, p, queries=row.queries + 1,
               queried=row.queried + p["request_size"])


class JointProjection(base.Projection):
    name = "joint"
    tables = (joints,)
    kinds = (KIND, NODE_KEY_KIND, INPUT_KIND)

    def handlers(self) -> dict[str, base.EventHandler]:
        return {
            "joint.started": _started,
            "joint.layout_published": _layout_published,
            "joint.part_received": _part_received,
            "joint.published": base.transition(
                joints, "published", result_sha256="result_sha256",
                table_digest="table_digest", rows="rows", finished_at="at"),
            "joint.failed": base.transition(joints, "failed", reason="reason",
                                            finished_at="at"),
            "joint.queried": _queried,
        }


_FIELDS = ("id", "contract_id", "execution", "product_id", "demander_id", "providers",
           "layout_provider", "key_column", "value_columns", "state", "deadline",
           "layout_sha256", "length", "parts", "result_sha256", "table_digest", "rows",
           "reason", "queries", "queried", "started_at", "finished_at", "updated_at",
           "version", "started_seq", "layout_seq")


def _joint_row(row: RowMapping, viewer_id: str, sees_all: bool) -> dict[str, Any]:
    out = base.pick(row, _FIELDS)
    out["joint_id"] = row["id"]
    return out


#: the joint executions the viewer may see, by contract then execution; filter: contract_id
JOINTS = base.Listing(joints, KIND, order_by=("contract_id", "execution"), shape=_joint_row)
