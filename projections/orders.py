"""Orders and their contracts (订单/合约): the contract id is the order id.

An order is seen by its demander, its operator and the owners of the product's input
datasets (the providers who will approve the contract, and who run the trial on their mock
data before it) from placement, and by every participant in ``required_approvals`` once the
contract is proposed (acl kind ``order``); the regulator and the platform see every order.
The owners are read from the datasets and products read models (applied before this one; a
product's inputs and a dataset's owner never change), so a rebuild grants the same.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
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
from projections.datasets import datasets
from projections.products import products

KIND = "order"

orders = Table(
    "rm_orders", METADATA,
    Column("id", String, primary_key=True),
    Column("demander_id", String, nullable=False, index=True),
    Column("product_id", String, nullable=False, index=True),
    Column("operator_id", String, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("state", String, nullable=False),
    Column("trial_granted", Boolean, nullable=False),
    # the seq of the order.trial_granted event: the input providers' nodes prove its
    # inclusion before running the trial (execution 0) on their mock data
    Column("trial_seq", BigInteger, nullable=True),
    # the contract terms: null (or empty) until the operator proposes the contract
    Column("usage_policy", JSON, nullable=True),
    Column("price_fen", BigInteger, nullable=True),
    Column("revenue_split", JSON, nullable=True),
    Column("required_approvals", JSON, nullable=False),
    Column("approvals", JSON, nullable=False),
    Column("termination_reason", Text, nullable=True),
    Column("cancellation_reason", Text, nullable=True),
    Column("placed_at", String, nullable=False),
    # the seq of order.placed: a node proves the order's query (execution 1) from it
    Column("placed_seq", BigInteger, nullable=True),
    Column("proposed_at", String, nullable=True),
    Column("accepted_at", String, nullable=True),
    Column("approved_at", String, nullable=True),
    # the seq of the contract.approved event: a compute node fetches exactly that event
    # (GET /ledger/events/{seq}) to check it against an anchored checkpoint
    Column("approved_seq", BigInteger, nullable=True),
    # what the demander asked to compute: the order's query (execution 1), the number of
    # executions asked for (1 once approved) and the queries of executions 2, 3, … with the
    # seq of each contract.query_submitted (a node proves its inclusion before running it)
    Column("query", JSON, nullable=True),
    Column("executions", Integer, nullable=False),
    Column("queries", JSON, nullable=False),
    Column("closed_at", String, nullable=True),
    Column("updated_at", String, nullable=False),
    Column("version", Integer, nullable=False),
)


def _touch(conn: Connection, entry: LogEntry, p: dict[str, Any], **values: Any) -> None:
    touch(conn, orders, entry, p["at"], **values)


def _placed(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    insert_row(conn, orders,
        id=entry.originator_id, demander_id=p["demander_id"], product_id=p["product_id"],
        operator_id=p["operator_id"], purpose=p["purpose"], state="placed", trial_granted=False,
        required_approvals=[], approvals=[], placed_at=p["at"], placed_seq=entry.seq,
        updated_at=p["at"],
        version=entry.version, query=p.get("query"), executions=0, queries=[])
    grant(conn, KIND, entry.originator_id, p["demander_id"], p["operator_id"],
          *_input_owners(conn, p["product_id"]))


def _input_owners(conn: Connection, product_id: str) -> list[str]:
    """The owners of the product's input datasets, sorted."""
    inputs = conn.execute(select(products.c.inputs).where(
        products.c.id == product_id)).scalar_one_or_none() or []
    ids = [i["dataset_id"] for i in inputs]
    return sorted(set(conn.execute(select(datasets.c.owner_id).where(
        datasets.c.id.in_(ids))).scalars()))


def _trial_granted(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, trial_granted=True, trial_seq=entry.seq)


def _proposed(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="proposed", usage_policy=p["usage_policy"],
           price_fen=p["price_fen"], revenue_split=p["revenue_split"],
           required_approvals=list(p["required_approvals"]), proposed_at=p["at"])
    grant(conn, KIND, entry.originator_id, *p["required_approvals"])


def _accepted(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="accepted", accepted_at=p["at"])


def _party_approved(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    approvals = conn.execute(select(orders.c.approvals).where(
        orders.c.id == entry.originator_id)).scalar_one()
    _touch(conn, entry, p, approvals=[*approvals, p["party_id"]])


def _approved(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="approved", approved_at=p["at"], approved_seq=entry.seq,
           executions=1)


def _query_submitted(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    queries = conn.execute(select(orders.c.queries).where(
        orders.c.id == entry.originator_id)).scalar_one()
    _touch(conn, entry, p, executions=p["execution"], queries=[
        *queries, {"execution": p["execution"], "seq": entry.seq, "query": p["query"]}])


def _terminated(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="terminated", termination_reason=p["reason"], closed_at=p["at"])


def _cancelled(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="cancelled", cancellation_reason=p.get("reason", ""),
           closed_at=p["at"])


class OrdersProjection(Projection):
    name = "orders"
    tables = (orders,)
    kinds = (KIND,)

    def handlers(self) -> dict[str, EventHandler]:
        return {
            "order.placed": _placed,
            "order.trial_granted": _trial_granted,
            "contract.proposed": _proposed,
            "contract.accepted": _accepted,
            "contract.party_approved": _party_approved,
            "contract.approved": _approved,
            "contract.query_submitted": _query_submitted,
            "contract.terminated": _terminated,
            "order.cancelled": _cancelled,
        }


# -- queries ----------------------------------------------------------------------
_FIELDS = ("id", "demander_id", "product_id", "operator_id", "purpose", "state",
           "trial_granted", "trial_seq", "usage_policy", "price_fen", "revenue_split", "required_approvals",
           "approvals", "termination_reason", "cancellation_reason", "placed_at", "proposed_at",
           "accepted_at", "approved_at", "approved_seq", "placed_seq", "query", "executions", "queries",
           "closed_at", "updated_at", "version")


def _visible(viewer_id: str, sees_all: bool) -> ColumnElement[bool]:
    if sees_all:
        return true()
    clause: ColumnElement[bool] = visible_to(KIND, orders.c.id, viewer_id)
    return clause


def _order_row(row: Any) -> dict[str, Any]:
    out = {k: row[k] for k in _FIELDS}
    out["trial_granted"] = bool(out["trial_granted"])
    out["contract_id"] = row["id"]
    out["pending_approvals"] = [p for p in row["required_approvals"]
                                if p not in row["approvals"]]
    return out


def list_orders(conn: Connection, viewer_id: str, sees_all: bool, state: str | None = None,
                product_id: str | None = None) -> list[dict[str, Any]]:
    """The orders the caller is a party to (every order for the regulator and the platform)."""
    query = (select(orders).where(_visible(viewer_id, sees_all))
             .order_by(orders.c.placed_at, orders.c.id))
    if state:
        query = query.where(orders.c.state == state)
    if product_id:
        query = query.where(orders.c.product_id == product_id)
    return [_order_row(r) for r in conn.execute(query).mappings()]


def get_order(conn: Connection, order_id: str, viewer_id: str,
              sees_all: bool) -> dict[str, Any] | None:
    """One order with its contract terms if the caller is a party (None otherwise)."""
    row = conn.execute(select(orders).where(
        orders.c.id == order_id, _visible(viewer_id, sees_all))).mappings().first()
    return None if row is None else _order_row(row)
