"""The privacy budget spent (差分隐私预算): a projection of ``privacy.budget_spent``.

``rm_privacy_spent`` holds one row per execution of a contract and input dataset with the
ε it spent (an execution recorded under two authorizations granting the dataset counts
once for the contract); ``rm_privacy_budgets`` one row per budget stream (an authorization
and a dataset) with the ε spent under it by every contract. ``contract_budgets`` shows, for
a contract's view, each input dataset's budget, spent and remaining;
``authorization_budgets`` the same for an authorization's view. Amounts are exact decimals kept as text and summed
as decimals. A budget stream (one authorization and dataset) is seen by the
authorization's provider and operator (acl kind ``privacy_budget``); the regulator and the
platform see all.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Column, Connection, Integer, String, Table, select, update

from core.record import LogEntry
from projections import base
from projections.authorizations import authorizations
from projections.products import products

KIND = "privacy_budget"

spent = Table(
    "rm_privacy_spent", base.METADATA,
    Column("id", String, primary_key=True),  # contract#dataset#execution
    Column("contract_id", String, nullable=False, index=True),
    Column("dataset_id", String, nullable=False),
    Column("execution", Integer, nullable=False),
    Column("epsilon", String, nullable=False),
    Column("spent_at", String, nullable=False),
)

#: one row per budget stream (an authorization and a dataset): the ε spent under it
budgets = base.state_table(
    "rm_privacy_budgets",
    Column("authorization_id", String, nullable=False, index=True),
    Column("dataset_id", String, nullable=False),
    Column("spent", String, nullable=False),
)


def _spent(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    row = {"id": f"{p['contract_id']}#{p['dataset_id']}#{p['execution']}",
           "contract_id": p["contract_id"], "dataset_id": p["dataset_id"],
           "execution": p["execution"], "epsilon": p["epsilon"], "spent_at": p["at"]}
    if isinstance(conn, base.BufferedConnection):
        conn.add(spent, row, ignore_conflicts=True)
    else:
        conn.execute(base.insert_ignoring_conflicts(conn, spent), [row])
    found = conn.execute(select(budgets.c.spent).where(
        budgets.c.id == entry.originator_id)).scalar()
    if found is None:
        base.insert_row(conn, budgets, id=entry.originator_id,
                        authorization_id=p["authorization_id"], dataset_id=p["dataset_id"],
                        spent=p["epsilon"], updated_at=p["at"], version=entry.version)
    else:
        conn.execute(update(budgets).where(budgets.c.id == entry.originator_id).values(
            spent=_text(Decimal(found) + Decimal(p["epsilon"])), updated_at=p["at"],
            version=entry.version))
    parties = conn.execute(select(authorizations.c.provider_id, authorizations.c.operator_id)
                           .where(authorizations.c.id == p["authorization_id"])).first()
    if parties is not None:
        base.grant(conn, KIND, entry.originator_id, *parties)


class PrivacyBudgetProjection(base.Projection):
    name = "privacy_budget"
    tables = (spent, budgets)
    kinds = (KIND,)

    def handlers(self) -> dict[str, base.EventHandler]:
        return {"privacy.budget_spent": _spent}


def _text(amount: Decimal) -> str:
    return format(amount.normalize(), "f") if amount else "0"


def contract_budgets(conn: Connection, rows: list[dict[str, Any]]
                     ) -> dict[str, dict[str, dict[str, str | None]] | None]:
    """Per order row (``rm_orders``, visible to the caller), its contract's privacy budget:
    for each input dataset of its product ``budget`` (the contract's ``privacy_budget``;
    null: none set), ``spent`` and ``remaining`` (null without a budget), as decimal text;
    null for a contract whose product declares no dp and whose policy sets no budget."""
    product_ids = sorted({r["product_id"] for r in rows})
    found = conn.execute(select(products.c.id, products.c.inputs, products.c.dp)
                         .where(products.c.id.in_(product_ids))) if product_ids else []
    product = {pid: (inputs, dp) for pid, inputs, dp in found}
    out: dict[str, dict[str, dict[str, str | None]] | None] = {}
    for row in rows:
        inputs, dp = product.get(row["product_id"], ([], None))
        budget = (row.get("usage_policy") or {}).get("privacy_budget")
        out[row["id"]] = None if dp is None and budget is None else _per_dataset(
            conn, row["id"], [i["dataset_id"] for i in inputs], budget)
    return out


def authorization_budgets(conn: Connection, rows: list[dict[str, Any]]
                          ) -> dict[str, dict[str, dict[str, str | None]] | None]:
    """Per authorization row (``rm_authorizations``, visible to the caller): for each dataset
    it grants, ``budget`` (its ``privacy_budget``; null: none set), ``spent`` by every
    contract under it and ``remaining`` (null without a budget), as decimal text; null for
    an authorization without a budget under which nothing was spent."""
    ids = [r["id"] for r in rows]
    used: dict[str, dict[str, Decimal]] = {i: {} for i in ids}
    if ids:
        for auth_id, dataset_id, amount in conn.execute(
                select(budgets.c.authorization_id, budgets.c.dataset_id, budgets.c.spent)
                .where(budgets.c.authorization_id.in_(ids))):
            used[auth_id][dataset_id] = Decimal(amount)
    out: dict[str, dict[str, dict[str, str | None]] | None] = {}
    for row in rows:
        budget = (row.get("usage_policy") or {}).get("privacy_budget")
        if budget is None and not used[row["id"]]:
            out[row["id"]] = None
            continue
        granted = [d["dataset_id"] for d in row.get("datasets") or []]
        out[row["id"]] = {d: _line(budget, used[row["id"]].get(d, Decimal(0)))
                          for d in granted}
    return out


def _line(budget: str | None, amount: Decimal) -> dict[str, str | None]:
    return {"budget": budget, "spent": _text(amount),
            "remaining": None if budget is None else _text(
                max(Decimal(budget) - amount, Decimal(0)))}


def _per_dataset(conn: Connection, contract_id: str, dataset_ids: list[str],
                 budget: str | None) -> dict[str, dict[str, str | None]]:
    used = {d: Decimal(0) for d in dataset_ids}
    for dataset_id, epsilon in conn.execute(select(spent.c.dataset_id, spent.c.epsilon)
                                            .where(spent.c.contract_id == contract_id)):
        used[dataset_id] = used.get(dataset_id, Decimal(0)) + Decimal(epsilon)
    return {d: _line(budget, amount) for d, amount in used.items()}
