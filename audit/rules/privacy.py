"""Differential privacy's budget, replayed (差分隐私预算, white paper 5.2.4 可信基础管控), from
the event catalogue and docs/PRIVACY.md, never from ``domain/``.

A product may declare ``dp`` on ``product.registered`` (``{"epsilon", "columns"}``, ε as
decimal text). Each ``privacy.budget_spent`` must be the spending of a request recorded
before it (its ``computation_id``: an execution >= 1 of that contract, by the provider that
records the spending, over the dataset named) of a product declaring dp, of exactly its ε,
under one of the product's authorizations granting the dataset, once per (computation,
dataset, authorization); and it must keep the ε spent on the dataset within the contract's
``privacy_budget`` (each execution counted once) and within the authorization's (every
contract under it together). A dp product's execution >= 1 that succeeds has spent its ε on
each dataset it read; a product's without dp succeeds only where no budget applies (the
contract's, or that of one of the product's authorizations granting a dataset it read): a
budget binds every product. Amounts are compared as decimals.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from audit.rules.model import Ev, Finding, State

RULE = "privacy_budget"


def _amount(value: Any) -> Decimal | None:
    """A stored amount of ε (decimal text or an integer), or None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount > 0 else None


class PrivacyRules:
    """The ε each dp product spends, and what was spent per contract and authorization."""

    def __init__(self) -> None:
        #: product id -> its declared ε (products without dp are absent)
        self.epsilon: dict[str, Decimal] = {}
        #: (authorization, dataset) -> ε spent under it
        self.by_authorization: dict[tuple[str, str], Decimal] = {}
        #: (contract, dataset) -> execution -> ε it spent
        self.by_contract: dict[tuple[str, str], dict[int, Decimal]] = {}
        #: (computation, dataset, authorization) recorded
        self.charged: set[tuple[str, str, str]] = set()

    def findings(self, s: State, ev: Ev) -> list[Finding]:
        """The findings on ``ev``; then remember what it spent or declared."""
        if ev.type == "product.registered":
            dp = ev.payload.get("dp")
            epsilon = _amount(dp.get("epsilon")) if isinstance(dp, dict) else None
            if epsilon is not None:
                self.epsilon[ev.id] = epsilon
        elif ev.type == "privacy.budget_spent":
            return self._spent(s, ev)
        elif ev.type == "computation.succeeded":
            return self._succeeded(s, ev)
        return []

    def _spent(self, s: State, ev: Ev) -> list[Finding]:
        p = ev.payload
        run = s.computations.get(str(p.get("computation_id")))
        dataset, auth_id = str(p.get("dataset_id")), str(p.get("authorization_id"))
        epsilon = _amount(p.get("epsilon"))
        what = f"ε spent by computation {p.get('computation_id')} on dataset {dataset}"
        if (run is None or run.contract != p.get("contract_id") or run.execution < 1
                or run.execution != p.get("execution") or run.provider != ev.participant
                or dataset not in run.datasets):
            return [Finding(ev.seq, RULE, f"{what}: the spending of a request of that "
                            "execution (>= 1) by its provider over that dataset",
                            f"by {ev.participant}, no such request")]
        product, declared = s.products.get(run.product), self.epsilon.get(run.product)
        auth = s.authorizations.get(auth_id)
        out: list[Finding] = []
        if declared is None or epsilon != declared:
            out.append(Finding(ev.seq, RULE, f"{what}: the ε product {run.product} declares "
                               f"({declared if declared is not None else 'none: no dp'})",
                               f"epsilon {p.get('epsilon')!r}"))
        if (product is None or auth_id not in product.authorizations or auth is None
                or dataset not in auth.datasets):
            return [*out, Finding(ev.seq, RULE, f"{what}: under an authorization of the "
                                  "product granting the dataset", f"authorization {auth_id}")]
        run_key = (str(p.get("computation_id")), dataset, auth_id)
        if run_key in self.charged or epsilon is None:
            return [*out, Finding(ev.seq, RULE, f"{what}: once per authorization, an "
                                  "amount of ε", f"under authorization {auth_id} again, or "
                                  f"epsilon {p.get('epsilon')!r}")]
        self.charged.add(run_key)
        return out + self._within(s, ev, run.contract, run.execution, dataset, auth_id,
                                  epsilon)

    def _within(self, s: State, ev: Ev, contract: str, execution: int, dataset: str,
                auth_id: str, epsilon: Decimal) -> list[Finding]:
        """Spend; a finding if the contract's or the authorization's budget is passed."""
        out: list[Finding] = []
        spent = self.by_contract.setdefault((contract, dataset), {})
        order = s.orders.get(contract)
        limit = _amount(order.policy.get("privacy_budget")) if order is not None else None
        if execution not in spent:
            total = sum(spent.values(), Decimal(0)) + epsilon
            if limit is not None and total > limit:
                out.append(Finding(ev.seq, RULE, f"ε spent on dataset {dataset} under "
                                   f"contract {contract} within its budget {limit}",
                                   f"{total} with execution {execution}"))
            spent[execution] = epsilon
        key = (auth_id, dataset)
        total = self.by_authorization.get(key, Decimal(0)) + epsilon
        auth_limit = _amount(s.authorizations[auth_id].policy.get("privacy_budget"))
        if auth_limit is not None and total > auth_limit:
            out.append(Finding(ev.seq, RULE, f"ε spent on dataset {dataset} under "
                               f"authorization {auth_id} within its budget {auth_limit}",
                               f"{total} with contract {contract} execution {execution}"))
        self.by_authorization[key] = total
        return out

    def _succeeded(self, s: State, ev: Ev) -> list[Finding]:
        """A dp product's execution >= 1 delivers only once it spent its ε on each dataset;
        a product without dp delivers none where a budget applies (``_exact``)."""
        run = s.computations.get(ev.id)
        if run is None or run.execution < 1:
            return []
        if run.product not in self.epsilon:
            return _exact(s, ev, run.contract, run.product, run.datasets)
        missing = [d for d in run.datasets
                   if run.execution not in self.by_contract.get((run.contract, d), {})]
        if not missing:
            return []
        return [Finding(ev.seq, RULE, f"execution {run.execution} of contract {run.contract} "
                        f"(product {run.product} declares dp) spent its ε on each dataset it "
                        "read before it ran", f"nothing spent on {', '.join(missing)}")]


def _exact(s: State, ev: Ev, contract: str, product_id: str,
           datasets: list[str]) -> list[Finding]:
    """A budget binds every product: the execution of a product without dp succeeds only
    if neither its contract nor an authorization of the product granting one of the
    datasets it read sets a ``privacy_budget`` (its exact result would bypass the budget)."""
    order, product = s.orders.get(contract), s.products.get(product_id)
    bound = []
    if order is not None and _amount(order.policy.get("privacy_budget")) is not None:
        bound.append(f"contract {contract}")
    for auth_id in product.authorizations if product is not None else []:
        auth = s.authorizations.get(auth_id)
        if (auth is not None and _amount(auth.policy.get("privacy_budget")) is not None
                and any(d in auth.datasets for d in datasets)):
            bound.append(f"authorization {auth_id}")
    if not bound:
        return []
    return [Finding(ev.seq, RULE, f"an execution of contract {contract} under a privacy budget "
                    f"is of a product declaring dp (product {product_id} declares none)",
                    f"exact result delivered under the budget of {bound[0]}")]
