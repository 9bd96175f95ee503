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
    Connection,
    Integer,
    RowMapping,
    String,
    Text,
    select,
)

from core.record import LogEntry
from projections import base
from projections.datasets import datasets
from projections.products import products

KIND = "order"

orders = base.state_table(
    "rm_orders",
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
    # the seq of contract.proposed: a node proves the usage policy (and terms) from it
    Column("proposed_seq", BigInteger, nullable=True),
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
)


def _placed(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    base.insert_row(conn, orders,
        id=entry.originator_id, demander_id=p["demander_id"], product_id=p["product_id"],
        operator_id=p["operator_id"], purpose=p["purpose"], state="placed", trial_granted=False,
        required_approvals=[], approvals=[], placed_at=p["at"], placed_seq=entry.seq,
        updated_at=p["at"],
        version=entry.version, query=p.get("query"), executions=0, queries=[])
    base.grant(conn, KIND, entry.originator_id, p["demander_id"], p["operator_id"],
          *_input_owners(conn, p["product_id"]))


def _input_owners(conn: Connection, product_id: str) -> list[str]:
    """The owners of the product's input datasets, sorted."""
    inputs = conn.execute(select(products.c.inputs).where(
        products.c.id == product_id)).scalar_one_or_none() or []
    ids = [i["dataset_id"] for i in inputs]
    return sorted(set(conn.execute(select(datasets.c.owner_id).where(
        datasets.c.id.in_(ids))).scalars()))


def _trial_granted(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    base.touch(conn, orders, entry, p, trial_granted=True, trial_seq=entry.seq)


def _proposed(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    base.touch(conn, orders, entry, p, state="proposed", usage_policy=p["usage_policy"],
               price_fen=p["price_fen"], revenue_split=p["revenue_split"],
               required_approvals=list(p["required_approvals"]), proposed_at=p["at"],
               proposed_seq=entry.seq)
    base.grant(conn, KIND, entry.originator_id, *p["required_approvals"])


def _party_approved(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    approvals = conn.execute(select(orders.c.approvals).where(
        orders.c.id == entry.originator_id)).scalar_one()
    base.touch(conn, orders, entry, p, approvals=[*approvals, p["party_id"]])


def _approved(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    base.touch(conn, orders, entry, p, state="approved", approved_at=p["at"],
               approved_seq=entry.seq, executions=1)


def _query_submitted(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    queries = conn.execute(select(orders.c.queries).where(
        orders.c.id == entry.originator_id)).scalar_one()
    base.touch(conn, orders, entry, p, executions=p["execution"], queries=[
               *queries, {"execution": p["execution"], "seq": entry.seq, "query": p["query"]}])


def _cancelled(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    base.touch(conn, orders, entry, p, state="cancelled",
               cancellation_reason=p.get("reason", ""), closed_at=p["at"])


class OrdersProjection(base.Projection):
    name = "orders"
    tables = (orders,)
    kinds = (KIND,)

    def handlers(self) -> dict[str, base.EventHandler]:
        return {
            "order.placed": _placed,
            "order.trial_granted": _trial_granted,
            "contract.proposed": _proposed,
            "contract.accepted": base.transition(orders, "accepted", accepted_at="at"),
            "contract.party_approved": _party_approved,
            "contract.approved": _approved,
            "contract.query_submitted": _query_submitted,
            "contract.terminated": base.transition(orders, "terminated", closed_at="at",
                                                   termination_reason="reason"),
            "order.cancelled": _cancelled,
        }


_FIELDS = ("id", "demander_id", "product_id", "operator_id", "purpose", "state",
           "trial_granted", "trial_seq", "usage_policy", "price_fen", "revenue_split",
           "required_approvals", "approvals", "termination_reason", "cancellation_reason",
           "placed_at", "proposed_at", "accepted_at", "approved_at", "approved_seq",
           "placed_seq", "proposed_seq", "query", "executions", "queries", "closed_at", "updated_at", "version")


def _order_row(row: RowMapping, viewer_id: str, sees_all: bool) -> dict[str, Any]:
    out = base.pick(row, _FIELDS)
    out["trial_granted"] = bool(out["trial_granted"])
    out["contract_id"] = row["id"]
    out["pending_approvals"] = [p for p in row["required_approvals"]
                                if p not in row["approvals"]]
    return out


#: the orders the viewer is a party to, with their contract terms (every order for those
#: who see all); filters: state, product_id
ORDERS = base.Listing(orders, KIND, order_by=("placed_at", "id"), shape=_order_row)
