"""The rules an execution stands on: the contract in force (``contract_breach``), the
grants the product rests on (``grant_breach``), each a ``Breach`` (its stable code and a
sentence naming the ids) or None; and the code being the listed product's
(``code_refusal``).

``domain.computation`` checks them when a node asks to run an execution and checks the
first two (what can change while the code runs) again when its result is recorded: one
definition for both.
"""

from __future__ import annotations

from typing import Any

from domain.authorization import Authorization, coverage_breach
from domain.order import Order
from domain.policy import parse_instant
from domain.product import Product
from domain.scenario import Scenario
from domain.unit_of_work import UnitOfWork

#: why a rule an execution stands on fails: (its code, a sentence naming the ids)
Breach = tuple[str, str]


def _window_breach(order: Order, at: str) -> Breach | None:
    """The contract's usage window (指定时间控制: ``not_before`` <= now < ``not_after``)."""
    now = parse_instant(at, "at")
    start, end = order.usage_policy.get("not_before"), order.usage_policy.get("not_after")
    if start is not None and now < parse_instant(start, "not_before"):
        return ("outside_contract_window",
                f"the usage window of contract {order.id} opens at {start} (now {at})")
    if end is not None and now >= parse_instant(end, "not_after"):
        return ("outside_contract_window",
                f"the usage window of contract {order.id} closed at {end} (now {at})")
    return None


def contract_breach(order: Order, at: str) -> Breach | None:
    """The contract is in force: approved (not terminated) and inside its usage window."""
    if order.state == "terminated":
        return "contract_terminated", f"contract {order.id} was terminated"
    if order.state != "approved":
        return "contract_not_approved", f"contract {order.id} is {order.state}, not approved"
    return _window_breach(order, at)


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
