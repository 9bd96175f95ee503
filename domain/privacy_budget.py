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

A budget binds every product over the dataset under that authorization or contract, and
every dp product has one: a product without dp is refused at registration under an
authorization setting a budget on a dataset it reads (``require_dp_under_budget``), and a
contract is refused at proposal (``check_contract_budget``) if it sets a budget, or an
authorization of its product does, for a product without dp (its exact results would read
the rows without spending any ε), or if no budget (its own or an authorization's) bounds
an input dataset of a dp product. An execution of a contract proposed before these rules
is refused the same way when its node asks to run it (``budget_refusal``:
``privacy_budget_requires_dp``, ``privacy_budget_missing``).
"""

from __future__ import annotations

import uuid
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


def check_dp(dp: Any, schema: Any, key_column: str | None,
             joint: Any) -> dict[str, Any] | None:
    """A product's ``dp`` declaration, normalized (ε and each Δ as decimal text), or
    InvalidInput naming ``dp.<field>`` (or ``output_schema``); None: no differential privacy.

    ``schema``: the product's output schema. A dp product's output is a table
    (``dp_table``) whose columns are exactly its key column, if any, and its dp columns:
    each dp column is of type integer (an aggregate the product computes; the noised value
    is rounded to an integer, as results carry integers only), not the key column; no
    column leaves un-noised but the key. A joint product cannot declare dp (its parts are
    masked sums, noised nowhere)."""
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
    properties = dp_table(schema, key_column)
    out: dict[str, dict[str, str]] = {}
    for name in sorted(columns):
        where, spec = f"dp.columns.{name}", columns[name]
        if _type(properties.get(name)) != "integer" or name == key_column:
            raise InvalidInput(where, f"{name!r} is not an output column of type integer "
                                      "(the key column is never noised)")
        if not isinstance(spec, dict) or set(spec) != {"sensitivity"}:
            raise InvalidInput(where, "must be an object {\"sensitivity\": Δ}")
        out[name] = {"sensitivity": positive_decimal(spec["sensitivity"],
                                                     f"{where}.sensitivity", MAX_SENSITIVITY)}
    extra = sorted(set(properties) - set(out) - {key_column})
    if extra:
        raise InvalidInput("dp.columns", f"output column {extra[0]!r} is neither the key column "
                           "nor a dp column: a dp product's output holds only its noised "
                           "columns and its key column (nothing may leave exact)")
    return {"epsilon": epsilon, "columns": out}


#: the keywords a dp product's output schema may use: at its top, and for its rows
TABLE_KEYWORDS = frozenset({"type", "items", "title", "description", "minItems", "maxItems",
                            "$schema"})
ROW_KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "title",
                          "description"})
TABLE_FORM = ('{"type": "array", "items": {"type": "object", "properties": {...}, '
              '"additionalProperties": false}}')


def _type(column: Any) -> Any:
    return column.get("type") if isinstance(column, dict) else None


def dp_table(schema: Any, key_column: str | None) -> dict[str, Any]:
    """The row properties of a dp product's output schema, or InvalidInput naming
    ``output_schema``: it must be a table, ``TABLE_FORM`` (no other keyword that could let
    other values through: ``patternProperties``, ``prefixItems``, ...), its key column of
    type string or integer (a scalar)."""
    items = schema.get("items") if isinstance(schema, dict) else None
    if (not isinstance(schema, dict) or schema.get("type") != "array"
            or not isinstance(items, dict) or items.get("type") != "object"
            or not isinstance(items.get("properties"), dict)
            or items.get("additionalProperties") is not False):
        raise InvalidInput("output_schema", f"a dp product's output must be a table, {TABLE_FORM}"
                           ", whose columns are its key column and its dp columns")
    odd = sorted(set(schema) - TABLE_KEYWORDS) + sorted(set(items) - ROW_KEYWORDS)
    if odd:
        raise InvalidInput("output_schema", f"a dp product's output schema may not use "
                           f"{odd[0]!r} (allowed: {', '.join(sorted(TABLE_KEYWORDS))} and for "
                           f"its items {', '.join(sorted(ROW_KEYWORDS))})")
    properties: dict[str, Any] = items["properties"]
    if key_column is not None and _type(properties.get(key_column)) not in ("string",
                                                                            "integer"):
        raise InvalidInput("output_schema", f"the key column {key_column!r} of a dp product "
                           "must be of type string or integer")
    return properties


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


def bounding(auths: list[Authorization], dataset_ids: list[str]) -> list[tuple[str, str, str]]:
    """Each (authorization, dataset, budget) where one of ``auths`` granting one of
    ``dataset_ids`` sets a ``privacy_budget``."""
    return [(a.id, d, a.usage_policy["privacy_budget"]) for a in auths
            if a.usage_policy.get("privacy_budget") is not None
            for d in dataset_ids if a.granted_fields(d) is not None]


def require_dp_under_budget(dp: Any, auths: list[Authorization],
                            dataset_ids: list[str]) -> None:
    """At a product's registration: InvalidInput naming ``dp`` if it declares none while
    one of its authorizations sets a ``privacy_budget`` on a dataset it reads. A budget
    binds every product over the dataset under that authorization: an exact result would
    read the rows without spending any of it."""
    bound = bounding(auths, dataset_ids) if dp is None else []
    if bound:
        auth_id, dataset_id, limit = bound[0]
        raise InvalidInput("dp", f"authorization {auth_id} sets a privacy_budget ({limit}) on "
                           f"dataset {dataset_id}: a product over it must declare dp (its "
                           "results noised, each execution spending the budget)")


def _unbounded(order_budget: Any, auths: list[Authorization],
               dataset_ids: list[str]) -> list[str]:
    """The datasets of ``dataset_ids`` no budget bounds: neither the contract's
    (``order_budget``) nor one of an authorization granting it."""
    if order_budget is not None:
        return []
    bound = {d for _, d, _ in bounding(auths, dataset_ids)}
    return [d for d in dataset_ids if d not in bound]


def check_contract_budget(uow: UnitOfWork, product: Product, policy: dict[str, Any]) -> None:
    """At a contract's proposal, its (validated) usage policy: InvalidInput naming
    ``usage_policy.privacy_budget`` if it sets a budget, or one of the product's
    authorizations sets one on an input dataset, while the product declares no dp (the
    budget would bind nothing: its results are exact); or if the product declares dp and
    neither the contract nor an authorization granting it bounds one of its input datasets
    (its executions would spend ε without a bound)."""
    auths = [uow.get(Authorization, a) for a in product.authorization_ids]
    dataset_ids, field = product.dataset_ids(), "usage_policy.privacy_budget"
    if product.dp is None:
        if policy.get("privacy_budget") is not None:
            raise InvalidInput(field, f"product {product.id} declares no dp: its results are "
                               "exact, so no budget can bound them")
        bound = bounding(auths, dataset_ids)
        if bound:
            raise InvalidInput(field, f"authorization {bound[0][0]} sets a privacy_budget on "
                               f"dataset {bound[0][1]} and product {product.id} declares no "
                               "dp: no contract may use its exact results")
        return
    free = _unbounded(policy.get("privacy_budget"), auths, dataset_ids)
    if free:
        raise InvalidInput(field, f"product {product.id} declares dp: a contract for it needs a "
                           "privacy_budget (its own, or an authorization's over each input "
                           f"dataset); none bounds dataset {free[0]}")


def budget_refusal(uow: UnitOfWork, order: Order, product: Product, number: int,
                   dataset_ids: list[str]) -> RuleReason | None:
    """Why execution ``number`` over ``dataset_ids`` may not run whatever was spent (a
    contract proposed before the rule of ``check_contract_budget``):
    ``privacy_budget_requires_dp`` (a budget applies and the product declares no dp: its
    exact result would bypass it), ``privacy_budget_missing`` (a dp product with no budget
    bounding a dataset); None otherwise."""
    auths = [uow.get(Authorization, a) for a in product.authorization_ids]
    own = order.usage_policy.get("privacy_budget")
    if product.dp is None:
        bound = ([("the contract", d, own) for d in dataset_ids[:1]] if own is not None
                 else [(f"authorization {a}", d, b) for a, d, b in bounding(auths, dataset_ids)])
        if not bound:
            return None
        who, dataset_id, limit = bound[0]
        return RuleReason(f"privacy_budget_requires_dp: {who} sets a privacy_budget ({limit}) "
                          f"on dataset {dataset_id} and product {product.id} declares no dp; "
                          f"execution {number} of contract {order.id} cannot run",
                          "privacy_budget", limit)
    free = _unbounded(own, auths, dataset_ids)
    if not free:
        return None
    return RuleReason(f"privacy_budget_missing: product {product.id} declares dp and no "
                      f"privacy_budget bounds dataset {free[0]}; execution {number} of "
                      f"contract {order.id} cannot run", "privacy_budget", None)


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
    without dp and for the trial; ``budget_refusal`` first: a product without dp under a
    budget, a dp product under none, is refused (nothing spent)."""
    if number < 1:
        return None
    refusal = budget_refusal(uow, order, product, number, dataset_ids)
    if refusal is not None or product.dp is None:
        return refusal
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
