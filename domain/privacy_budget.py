"""Differential privacy with a metered budget (差分隐私, white paper 5.2.4 可信基础管控).

A product may declare its output differentially private (``dp`` on ``product.registered``,
checked by ``check_dp``): ``{"epsilon": ε, "columns": {column: {"sensitivity": Δ}}}``, the
integer aggregate columns of its output schema. Each execution then costs ε of privacy loss
on every input dataset it reads; the compute node adds Laplace noise of scale Δ / (ε / n)
to each of the n columns (with a library built for it, on the datasite, before the result
leaves: ``compute_nodes/dp_noise.py``), so the whole result is ε-differentially private.

Amounts of ε are exact decimals kept as text (``"0.5"``): the log holds no float, and a
sum of floats could pass a budget by a rounding. The budget is the usage-policy key
``privacy_budget`` (``domain.policy``): a contract's is the most its executions may spend
per input dataset, an authorization's the most every contract using it may spend together
per dataset it grants. When a provider's node asks to run an execution >= 1 of a dp
product (``meter``, after every other rule passed), the ledger reads the spent budget and
either records the spending (``privacy.budget_spent``, one per input dataset the provider
runs over and authorization of the product granting it) or refuses the execution
(``privacy_budget_exhausted: …``, recorded as a refusal with ``usage.refused``), before
anything runs. The spending of one (authorization, dataset) is its own stream
(``budget_id``): two requests spending it at once conflict, and the second is decided
again on the first's spending. Spent budget is never refunded: a run that failed may have
disclosed its result. The trial (execution 0) reads mock data and spends nothing.

Without a ``privacy_budget`` on the contract and its authorizations the spending is
recorded and shown, and nothing refuses it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from core.event import Event
from domain.authorization import Authorization
from domain.base import Aggregate, Context, applies
from domain.errors import InvalidInput, NotFound
from domain.policy import positive_decimal
from domain.unit_of_work import UnitOfWork
from domain.usage import RuleReason

if TYPE_CHECKING:
    from domain.order import Order
    from domain.product import Product

#: the namespace of budget stream ids: uuid5(NAMESPACE, f"{authorization_id}#{dataset_id}")
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "dataledger:privacy-budget")
#: the most columns a dp output may noise, and the largest sensitivity a column may declare
MAX_DP_COLUMNS = 32
MAX_SENSITIVITY = Decimal(10) ** 12
DP_KEYS = ("epsilon", "columns")


def budget_id(authorization_id: str, dataset_id: str) -> str:
    """The id of the stream of ε spent on dataset ``dataset_id`` under authorization
    ``authorization_id``."""
    return str(uuid.uuid5(NAMESPACE, f"{authorization_id}#{dataset_id}"))


def check_dp(dp: Any, column_types: Mapping[str, Any], key_column: str | None,
             joint: Any) -> dict[str, Any] | None:
    """A product's ``dp`` declaration, normalized (ε and each Δ as decimal text), or
    InvalidInput naming ``dp.<field>``; None: no differential privacy.

    ``column_types``: each output column's declared JSON type. Each dp column is an output
    column of type integer (an aggregate the product computes; the noised value is rounded
    to an integer, as results carry integers only), not the key column; a joint product
    cannot declare dp (its parts are masked sums, noised nowhere)."""
    if dp is None:
        return None
    if not isinstance(dp, dict) or set(dp) != set(DP_KEYS):
        raise InvalidInput("dp", "must be null or an object with epsilon and columns")
    if joint is not None:
        raise InvalidInput("dp", "a joint product cannot declare differential privacy")
    epsilon = positive_decimal(dp["epsilon"], "dp.epsilon")
    columns = dp["columns"]
    if not isinstance(columns, dict) or not 1 <= len(columns) <= MAX_DP_COLUMNS:
        raise InvalidInput("dp.columns", f"must be an object of 1 to {MAX_DP_COLUMNS} output "
                                         "columns, each {\"sensitivity\": Δ}")
    out: dict[str, dict[str, str]] = {}
    for name in sorted(columns):
        where, spec = f"dp.columns.{name}", columns[name]
        if column_types.get(name) != "integer" or name == key_column:
            raise InvalidInput(where, f"{name!r} is not an output column of type integer "
                                      "(the key column is never noised)")
        if not isinstance(spec, dict) or set(spec) != {"sensitivity"}:
            raise InvalidInput(where, "must be an object {\"sensitivity\": Δ}")
        out[name] = {"sensitivity": positive_decimal(spec["sensitivity"],
                                                     f"{where}.sensitivity", MAX_SENSITIVITY)}
    return {"epsilon": epsilon, "columns": out}


@dataclass(frozen=True, kw_only=True)
class PrivacyBudgetSpent(Event):
    """Execution ``execution`` of contract ``contract_id`` (its computation
    ``computation_id``) spent ``epsilon`` (decimal text) of privacy loss on dataset
    ``dataset_id``, under authorization ``authorization_id``: recorded when the provider's
    node asked to run it, before it runs; never refunded."""

    type_name = "privacy.budget_spent"
    contract_id: str
    execution: int
    computation_id: str
    dataset_id: str
    authorization_id: str
    epsilon: str


class PrivacyBudget(Aggregate):
    """The ε spent on one dataset under one authorization: in total and per contract."""

    kind = "privacy_budget"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.spent = Decimal(0)
        self.by_contract: dict[str, Decimal] = {}

    def spend(self, ctx: Context, *, computation_id: str, contract_id: str, execution: int,
              dataset_id: str, authorization_id: str, epsilon: str) -> None:
        self.trigger(PrivacyBudgetSpent, ctx, contract_id=contract_id, execution=execution,
                     computation_id=computation_id, dataset_id=dataset_id,
                     authorization_id=authorization_id, epsilon=epsilon)

    @applies(PrivacyBudgetSpent)
    def _spent(self, e: PrivacyBudgetSpent) -> None:
        amount = Decimal(e.epsilon)
        self.spent += amount
        self.by_contract[e.contract_id] = self.by_contract.get(e.contract_id, 0) + amount


def _budget(uow: UnitOfWork, authorization_id: str, dataset_id: str) -> PrivacyBudget:
    """The stream of (authorization, dataset), new (nothing spent) if it has no event."""
    id = budget_id(authorization_id, dataset_id)
    try:
        return uow.get(PrivacyBudget, id)
    except NotFound:
        fresh = PrivacyBudget(id)
        uow.add(fresh)
        return fresh


def _exhausted(order: Order, number: int, epsilon: Decimal, why: str, limit: str) -> RuleReason:
    return RuleReason(f"privacy_budget_exhausted: execution {number} of contract {order.id} "
                      f"would spend ε {epsilon} on {why} (budget {limit}); it cannot run",
                      "privacy_budget", limit)


def _charges(uow: UnitOfWork, order: Order, product: Product, number: int,
             dataset_ids: list[str]) -> RuleReason | list[tuple[str, str, PrivacyBudget]]:
    """What execution ``number`` over ``dataset_ids`` would spend, per dataset and granting
    authorization of the product (its budget stream), or why it may not: a refusal if, on
    any of the datasets, the contract's spending plus ε would pass the contract's
    ``privacy_budget``, or the spending of every contract under one of those authorizations
    plus ε would pass that authorization's."""
    assert product.dp is not None
    epsilon = Decimal(product.dp["epsilon"])
    contract_limit = order.usage_policy.get("privacy_budget")
    auths = [uow.get(Authorization, a) for a in product.authorization_ids]
    charges: list[tuple[str, str, PrivacyBudget]] = []
    for dataset_id in dataset_ids:
        granting = [(a, _budget(uow, a.id, dataset_id)) for a in auths
                    if a.granted_fields(dataset_id) is not None]
        used = granting[0][1].by_contract.get(order.id, Decimal(0)) if granting else 0
        if contract_limit is not None and used + epsilon > Decimal(contract_limit):
            return _exhausted(order, number, epsilon, f"dataset {dataset_id}, which has spent "
                              f"{used} of the contract's", contract_limit)
        for auth, budget in granting:
            limit = auth.usage_policy.get("privacy_budget")
            if limit is not None and budget.spent + epsilon > Decimal(limit):
                return _exhausted(order, number, epsilon, f"dataset {dataset_id}, which has "
                                  f"spent {budget.spent} under authorization {auth.id}'s",
                                  limit)
            charges.append((dataset_id, auth.id, budget))
    return charges


def meter(uow: UnitOfWork, ctx: Context, *, order: Order, product: Product,
          computation_id: str, number: int, dataset_ids: list[str]) -> RuleReason | None:
    """Charge execution ``number`` (its computation ``computation_id``, over the provider's
    input datasets ``dataset_ids``) of a dp product its ε: one ``privacy.budget_spent`` per
    dataset and authorization of the product granting it; or say why not
    (``privacy_budget_exhausted``, ``_charges``), spending nothing. None also for a product
    without dp and for the trial."""
    if product.dp is None or number < 1:
        return None
    charges = _charges(uow, order, product, number, dataset_ids)
    if isinstance(charges, RuleReason):
        return charges
    for dataset_id, authorization_id, budget in charges:
        budget.spend(ctx, computation_id=computation_id, contract_id=order.id,
                     execution=number, dataset_id=dataset_id,
                     authorization_id=authorization_id, epsilon=product.dp["epsilon"])
    return None


def query_refusal(uow: UnitOfWork, order: Order, product: Product, number: int) -> str | None:
    """Why the demander may not ask for execution ``number`` of a dp product: the budget
    spent so far leaves too little for its ε on one of the product's input datasets (the
    node's request of it would be refused); None otherwise, or without dp. An early answer
    only: executions asked for and not yet requested have spent nothing yet, and the node's
    request is what spends."""
    if product.dp is None:
        return None
    refusal = _charges(uow, order, product, number, product.dataset_ids())
    if not isinstance(refusal, RuleReason):
        return None
    return refusal.replace("; it cannot run", "; it cannot be asked for")
