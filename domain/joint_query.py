"""The hidden query (隐匿查询) on the ledger: the demander's lookup in a published joint table.

The bank, the contract's demander, blinds its credit codes on its own machine
(``core.hidden_query.blind``) and posts the blinded request; the platform's aggregation node
evaluates it with the table's OPRF key. The ledger records what may be known of a query:
the request's commitment (SHA-256 of its bytes), its size (how many codes it asks about) and
the answer's hash, as ``joint.queried`` on the ``JointExecution``. Never a code, the request
or the response (docs/HIDDEN_QUERY.md).

A query is a use of the contract's data, checked like any use (``domain.execution_rules``):
only the demander's members (403 otherwise), on a joint of this contract that is published
(404 / 409), the contract approved, inside its window, by a designated user if it names
any, its circulation modes, its authorizations and scenario still live, and within its
``query_count``: the codes looked up by all the contract's hidden queries, summed over their
sizes (the stricter of the contract's and its authorizations' counts). A refusal by a usage
control is recorded (``usage.refused``, action ``hidden_query``) before it is answered.

The route asks twice: ``check_query`` (writes nothing) before the node evaluates, so a
refused query costs the node nothing; ``record_query`` once it has the answer's hash,
deciding again on fresh state (the joints of the contract are in its read set, so two
queries racing for the last of the count cannot both be recorded); the response is
returned only once the query is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core import hidden_query as hq
from domain.base import Context
from domain.errors import ConcurrencyConflict, Forbidden, InvalidInput, NotFound, WrongState
from domain.execution_rules import contract_breach, effective_policy, grant_breach
from domain.joint import JointExecution, JointQueried, find_joint, joint_id
from domain.order import Order
from domain.permissions import permit
from domain.product import Product
from domain.unit_of_work import UnitOfWork
from domain.usage import (
    Meter,
    Refusal,
    Usage,
    UsageDenied,
    circulation_refusal,
    designated_refusal,
    unknown_refusal,
    window_refusal,
)

#: the ``action`` a refused hidden query is recorded with (``usage.refused``)
ACTION = "hidden_query"


@dataclass(frozen=True)
class Query:
    """What the ledger may know of a request (never its bytes): the joint it asks, its
    commitment and its size."""

    joint_id: str
    request_commitment: str
    request_size: int


def read_query(joint_id: str, request: bytes | None) -> Query:
    """The query of a blinded ``request`` (None: it was not base64); InvalidInput naming
    ``request`` unless it is a well-formed hidden-query request (every element checked)."""
    if request is None:
        raise InvalidInput("request", "must be the base64 of a hidden-query request")
    try:
        return Query(joint_id, hq.request_commitment(request), hq.request_size(request))
    except hq.HiddenQueryError as exc:
        raise InvalidInput("request", str(exc)) from None


def queried(uow: UnitOfWork, order: Order) -> int:
    """The codes looked up so far by the hidden queries of contract ``order`` (summed over
    the request sizes of each of its joint executions); each joint read joins the decision's
    read set."""
    total = 0
    for execution in range(1, order.executions + 1):
        found = find_joint(uow, joint_id(order.id, execution))
        if found is not None:
            total += found.queried
    return total


def _published_joint(uow: UnitOfWork, ctx: Context, order_id: str,
                     id: str) -> tuple[Order, JointExecution]:
    """The contract and its joint execution ``id``, if the actor is its demander and the
    joint is published; else the error (nothing recorded)."""
    permit(ctx.actor, "joint.hidden_query")
    order = uow.get(Order, order_id)
    if ctx.actor.participant_id != order.demander_id:
        raise Forbidden(f"only the demander {order.demander_id} of contract {order.id} "
                        "makes hidden queries on it")
    joint = find_joint(uow, id)
    if joint is None or joint.contract_id != order.id:
        raise NotFound(f"no joint execution {id} of contract {order.id}", kind="joint", id=id)
    if joint.state != "published":
        raise WrongState(f"joint {id} is {joint.state}; a hidden query needs its published "
                         "table", state=joint.state)
    return order, joint


def _contract_refusal(order: Order) -> Refusal | None:
    breach = contract_breach(order)
    if breach is None:
        return None
    return Refusal(breach[0], "contract_state", "approved",
                   f"{breach[1]}; its joint tables are queried only while it is approved")


def _refusal(uow: UnitOfWork, ctx: Context, order: Order, product: Product,
             size: int) -> Refusal | None:
    """Why the usage controls refuse a query of ``size`` codes now (recorded), or None."""
    policy, unknown = effective_policy(uow, order, product)
    refusal = (unknown_refusal(unknown) or _contract_refusal(order)
               or window_refusal(policy, ctx.at)
               or designated_refusal(policy, ctx.actor.member_id)
               or circulation_refusal(policy))
    if refusal is not None:
        return refusal
    limit, used = policy.get("query_count"), queried(uow, order)
    if limit is not None and used + size > limit:
        return Refusal("count_exhausted", "query_count", limit,
                       f"the contract's query_count allows {limit} code(s) looked up by "
                       "hidden queries; "
                       f"{used} were, and this query asks about {size}", used=used)
    return None


def _grant_error(uow: UnitOfWork, ctx: Context, product: Product) -> UsageDenied | None:
    """The grants the product rests on (its scenario, its authorizations) still hold."""
    breach = grant_breach(uow, product, product.inputs, ctx.at)
    if breach is None:
        return None
    code, why = breach
    return UsageDenied(code, f"{code}: {why}; the joint table is not queried")


def _decide(uow: UnitOfWork, ctx: Context, order_id: str,
            query: Query) -> tuple[Order, JointExecution, Refusal | None]:
    order, joint = _published_joint(uow, ctx, order_id, query.joint_id)
    product = uow.get(Product, order.product_id)
    refusal = _refusal(uow, ctx, order, product, query.request_size)
    if refusal is None:
        error = _grant_error(uow, ctx, product)
        if error is not None:
            raise error
    return order, joint, refusal


def check_query(uow: UnitOfWork, ctx: Context, order_id: str, *, joint_id: str,
                request: bytes | None) -> None:
    """Raise what would refuse the query of ``request`` on ``joint_id`` now (the caller and
    the joint first, then the request's form, then the usage controls: a refusal as its
    error, not recorded, ``record_query`` records it); write nothing. Before the node
    evaluates."""
    _published_joint(uow, ctx, order_id, joint_id)
    _, _, refusal = _decide(uow, ctx, order_id, read_query(joint_id, request))
    if refusal is not None:
        raise refusal.error()


def record_query(uow: UnitOfWork, ctx: Context, order_id: str, *, query: Query,
                 answer_hash: str | None, meter: Meter) -> dict[str, Any]:
    """Decide ``query`` again and record it: ``joint.queried`` with its commitment, size
    and ``answer_hash``; or, refused by a usage control, ``usage.refused`` on the contract's
    usage stream (at ``meter``'s version: the append refuses it if the stream moved). The
    answer says which (``allowed``). ``answer_hash`` None records a refusal only (the check
    refused): a query found allowed then is a conflict, to be sent again."""
    order, joint, refusal = _decide(uow, ctx, order_id, query)
    body: dict[str, Any] = {"joint_id": joint.id, "contract_id": order.id,
                            "request_commitment": query.request_commitment,
                            "request_size": query.request_size, "allowed": refusal is None}
    if refusal is not None:
        usage = Usage.at(order.id, meter)
        usage.refuse(ctx, computation_id=joint.id, kind=ACTION, refusal=refusal)
        uow.add(usage)
        body["refusal"] = {"code": refusal.code, "rule": refusal.rule,
                           "limit": refusal.limit, "used": refusal.used,
                           "detail": refusal.detail, "forbidden": refusal.forbidden}
        return body
    if answer_hash is None:
        raise ConcurrencyConflict("the contract's controls changed while the query was "
                                  "checked; send it again")
    joint.trigger(JointQueried, ctx, contract_id=order.id, demander_id=order.demander_id,
                  request_commitment=query.request_commitment,
                  request_size=query.request_size, answer_hash=answer_hash)
    return {**body, "answer_hash": answer_hash, "queries": joint.queries,
            "queried": queried(uow, order)}
