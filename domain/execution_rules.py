"""The rules an execution stands on: the contract in force (``contract_breach``), the
grants the product rests on (``grant_breach``), each a ``Breach`` (its stable code and a
sentence naming the ids) or None; and the code being the listed product's
(``code_refusal``).

``domain.computation`` checks them when a node asks to run an execution and checks the
first two (what can change while the code runs) again when its result is recorded: one
definition for both.
"""

from __future__ import annotations

from typing import Any, Protocol

from domain.authorization import Authorization, coverage_breach
from domain.base import Context
from domain.order import OPEN_STATES, Order
from domain.policy import strictest, unknown_keys
from domain.product import Product
from domain.scenario import Scenario
from domain.unit_of_work import UnitOfWork
from domain.usage import Refusal, circulation_refusal, unknown_refusal, window_refusal

#: why a rule an execution stands on fails: (its code, a sentence naming the ids)
Breach = tuple[str, str]
#: the execution number of the trial (试用): the code run on mock data before approval
TRIAL = 0


def contract_breach(order: Order) -> Breach | None:
    """The contract is in force: approved (not terminated). Its usage window is part of the
    effective policy (:func:`window_breach`, :func:`usage_refusal`)."""
    if order.state == "terminated":
        return "contract_terminated", f"contract {order.id} was terminated"
    if order.state != "approved":
        return "contract_not_approved", f"contract {order.id} is {order.state}, not approved"
    return None


def listing_breach(product: Product) -> Breach | None:
    """The product is still listed: a product delisted while its code runs delivers nothing."""
    if product.state != "listed":
        return "product_not_listed", f"product {product.id} is {product.state}, not listed"
    return None


def window_breach(uow: UnitOfWork, order: Order, product: Product, at: str) -> Breach | None:
    """The usage window (指定时间控制) of the effective policy: the stricter of the
    contract's and its authorizations' windows."""
    policy, _ = effective_policy(uow, order, product)
    refusal = window_refusal(policy, at)
    return None if refusal is None else (refusal.code, refusal.detail)


def _authorization_breach(auths: list[Authorization], product: Product,
                          inputs: list[dict[str, Any]], at: str) -> Breach | None:
    """Each input must be covered by a live authorization of the product (first gap wins)."""
    return coverage_breach(auths, inputs, at, f"product {product.id}")


def grant_breach(uow: UnitOfWork, product: Product, inputs: list[dict[str, Any]],
                 at: str) -> Breach | None:
    """The grants the product rests on still hold: its scenario approved (一场景一审核: what
    the regulator approved authorizes the use; read here, so a concurrent suspension
    clashes) and each input covered by a live authorization."""
    scenario = uow.get(Scenario, product.scenario_id)
    if scenario.state != "approved":
        return ("scenario_suspended",
                f"scenario {scenario.id} of product {product.id} is {scenario.state}")
    auths = [uow.get(Authorization, a) for a in product.authorization_ids]
    return _authorization_breach(auths, product, inputs, at)


def effective_policy(uow: UnitOfWork, order: Order,
                     product: Product) -> tuple[dict[str, Any], list[str]]:
    """The policy a use of the contract meets (the stricter of the contract's and the usage
    policies of the authorizations its product uses: ``domain.policy.strictest``), and the
    keys among them this evaluator does not know (any refuses the use)."""
    policies = [order.usage_policy,
                *(uow.get(Authorization, a).usage_policy for a in product.authorization_ids)]
    unknown = sorted({k for p in policies for k in unknown_keys(p)})
    return strictest(*policies), unknown


def usage_refusal(uow: UnitOfWork, order: Order, product: Product, at: str) -> Refusal | None:
    """What the effective policy refuses of any use at ``at``: an unknown key, the usage
    window (the strictest of the contract's and the authorizations'), a circulation mode
    that leaves out the form results take."""
    policy, unknown = effective_policy(uow, order, product)
    return (unknown_refusal(unknown) or window_refusal(policy, at)
            or circulation_refusal(policy))


def processing_limit(uow: UnitOfWork, order: Order) -> int | None:
    """The processing count that applies: the lowest of the contract's and its
    authorizations' (None: no limit)."""
    policy, _ = effective_policy(uow, order, uow.get(Product, order.product_id))
    limit: int | None = policy.get("processing_count")
    return limit


def code_refusal(order: Order, product: Product, number: int,
                 code_sha256: str) -> str | None:
    """Why execution ``number`` may not run this code (``code: sentence``): not the listed
    product's code, or the product is not listed; else None."""
    if code_sha256 != product.code_sha256:
        return (f"code_hash_mismatch: the code posted for execution {number} of contract "
                f"{order.id} has SHA-256 {code_sha256}, not that of product {product.id} "
                f"({product.code_sha256})")
    if product.state != "listed":
        return f"product_not_listed: product {product.id} is {product.state}, not listed"
    return None


def trial_refusal(order: Order, product: Product, code_sha256: str) -> str | None:
    """Why the ledger refuses to run the trial (execution 0), as ``code: sentence``; else
    None. No authorization or processing-count check: the trial reads mock data only."""
    if not order.trial_granted:
        return (f"trial_not_granted: no trial was granted on order {order.id} (POST "
                f"/orders/{order.id}/trial by its operator or the platform); the trial "
                "cannot run")
    if order.state not in OPEN_STATES:
        return (f"trial_after_approval: contract {order.id} is {order.state}; the trial "
                "runs only before the contract is approved")
    return code_refusal(order, product, TRIAL, code_sha256)


class Run(Protocol):
    """An execution as ``lapse_refusal`` reads it (a ``domain.computation.Computation``)."""

    contract_id: str
    product_id: str
    execution: int
    dataset_ids: list[str]


def lapse_refusal(uow: UnitOfWork, ctx: Context, agg: Run) -> str | None:
    """Why the result of ``agg`` (an execution >= 1) is no longer delivered, as
    ``policy_lapsed: sentence``; else None. The rules its request was checked against that
    can change while it runs (``contract_breach``, ``listing_breach``, ``window_breach``,
    ``grant_breach``), checked again now: the contract still approved, the product still
    listed, inside the window of its effective policy (its own and its authorizations'),
    the grants still live."""
    order = uow.get(Order, agg.contract_id)
    product = uow.get(Product, agg.product_id)
    inputs = [i for i in product.inputs if i["dataset_id"] in agg.dataset_ids]
    breach = (contract_breach(order) or listing_breach(product)
              or window_breach(uow, order, product, ctx.at)
              or grant_breach(uow, product, inputs, ctx.at))
    if breach is None:
        return None
    return (f"policy_lapsed: {breach[1]}; the result of execution {agg.execution} of "
            f"contract {order.id} is not delivered")
