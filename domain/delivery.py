"""Delivered results in use (交付后的使用控制): a view or a download of a delivered result,
decided by the usage controls, and the input providers' release of a held derivative.

``access_result`` decides one access on the counters the read model holds (``Meter``, see
``domain.usage``): allowed, it records ``delivery.accessed``; refused, ``usage.refused``
with the rule and its limit, and answers ``refused`` so the route can say why after the
refusal is stored (a refusal is an event too). Who is subject to what:

- the demander's members, to whom results are delivered: every control (the window, the
  designated users, the circulation modes, the release of a held result, the view and
  download counts, which their accesses use up); an unknown key refuses; the contract must
  still be approved (a terminated contract's results are no longer used);
- the operator's members: the same controls but the designated users and the counts (its
  accesses are recorded, not counted);
- the regulator (supervision): every access recorded, none refused; the platform
  operator reads no delivered result (403: it runs the market, it is no party to it);
- the trial's result (execution 0, on mock data, before any contract): recorded, not
  controlled.

``approve_release`` is an input provider's signed decision (``delivery.release_approval``)
releasing its part of an execution's result (its own computation's delivery) when the
contract holds derivatives (``derivatives_need_approval``): the demander's accesses to any
part of that execution are refused (``release_pending``) until every input provider
released its part.
"""

from __future__ import annotations

from typing import Any

from domain.base import Context
from domain.computation import Computation, computation_id
from domain.dataset import Dataset
from domain.errors import Forbidden, NotFound, WrongState
from domain.execution_rules import TRIAL, effective_policy
from domain.order import Order
from domain.permissions import permit
from domain.product import Product
from domain.signing import Signed, verify_decision
from domain.unit_of_work import UnitOfWork
from domain.usage import (
    KINDS,
    Access,
    DeliveryReleaseApproved,
    Meter,
    Refusal,
    Usage,
    access_refusal,
    unknown_refusal,
)

SUPERVISORS = ("regulator",)


def input_providers(uow: UnitOfWork, product: Product) -> list[str]:
    """The providers owning the product's input datasets, sorted: those whose approval
    releases a held result."""
    return sorted({uow.get(Dataset, d).owner_id for d in product.dataset_ids()})


def _released(uow: UnitOfWork, contract_id: str, execution: int, provider_id: str) -> bool:
    try:
        part = uow.get(Computation, computation_id(contract_id, execution, provider_id))
    except NotFound:
        return False
    return provider_id in part.released_by


def pending_releases(uow: UnitOfWork, comp: Computation, product: Product) -> list[str]:
    """The input providers that have not yet approved the release of their part of
    ``comp``'s execution: an execution's result is each input provider's delivered part,
    released once every one of them approved its own (so no part of a joint derivative
    leaves before each provider consented)."""
    return [p for p in input_providers(uow, product)
            if not _released(uow, comp.contract_id, comp.execution, p)]


def _delivered(uow: UnitOfWork, ctx: Context, delivery_id: str) -> tuple[Computation, Order]:
    """The delivered computation and its contract, if the actor may read it at all (the
    demander, the operator, the supervisors; NotFound for anyone else, never the data)."""
    comp = uow.get(Computation, delivery_id)
    actor = ctx.actor
    if not (actor.role in SUPERVISORS
            or actor.participant_id in (comp.demander_id, comp.operator_id)):
        raise NotFound(f"no delivery {delivery_id}", kind="delivery", id=delivery_id)
    if not comp.delivered:
        raise WrongState(f"computation {delivery_id} is {comp.state}; nothing is delivered "
                         "yet", state=comp.state)
    return comp, uow.get(Order, comp.contract_id)


def _contract_refusal(order: Order) -> Refusal | None:
    if order.state == "approved":
        return None
    code = "contract_terminated" if order.state == "terminated" else "contract_not_approved"
    return Refusal(code, "contract_state", "approved",
                   f"contract {order.id} is {order.state}; its results are used only while "
                   "it is approved")


def _refusal(uow: UnitOfWork, ctx: Context, comp: Computation, order: Order,
             usage: Usage, kind: str) -> Refusal | None:
    """Why the actor's ``kind`` access to ``comp``'s result is refused (see the module)."""
    product = uow.get(Product, order.product_id)
    policy, unknown = effective_policy(uow, order, product)
    demander = ctx.actor.participant_id == order.demander_id
    held = policy.get("derivatives_need_approval")
    access = Access(kind, ctx.actor.member_id, demander, ctx.at,
                    tuple(pending_releases(uow, comp, product)) if held else ())
    return (unknown_refusal(unknown) or _contract_refusal(order)
            or access_refusal(policy, usage.meter(), access))


def access_result(uow: UnitOfWork, ctx: Context, delivery_id: str, *, kind: str,
                  meter: Meter, served_sha256: str | None = None) -> dict[str, Any]:
    """One ``kind`` access (view or download) to delivery ``delivery_id``, decided on
    ``meter`` (the contract's usage counters as the read model holds them; the append
    refuses the event if the stream moved since), of the copy ``served_sha256`` (the
    reader's watermarked copy). Records ``delivery.accessed`` or
    ``usage.refused``; the answer says which (``allowed``), with the refusal's code,
    rule, limit and detail, and the counters after."""
    if kind not in KINDS:
        raise ValueError(f"an access is one of {KINDS}, not {kind!r}")
    permit(ctx.actor, "deliveries.result" if kind == "download" else "deliveries.view")
    comp, order = _delivered(uow, ctx, delivery_id)
    usage = Usage.at(order.id, meter)
    supervised = ctx.actor.role in SUPERVISORS or comp.execution == TRIAL
    refusal = None if supervised else _refusal(uow, ctx, comp, order, usage, kind)
    if refusal is not None:
        usage.refuse(ctx, computation_id=comp.id, kind=kind, refusal=refusal)
    else:
        usage.access(ctx, computation_id=comp.id, kind=kind, served_sha256=served_sha256,
                     counted=not supervised and ctx.actor.participant_id == order.demander_id)
    uow.add(usage)
    body: dict[str, Any] = {"delivery_id": comp.id, "contract_id": order.id, "kind": kind,
                            "result_sha256": comp.result_sha256, "allowed": refusal is None, "views_used": usage.views,
                            "downloads_used": usage.downloads}
    if refusal is not None:
        body["refusal"] = {"code": refusal.code, "rule": refusal.rule, "limit": refusal.limit,
                           "used": refusal.used, "detail": refusal.detail,
                           "forbidden": refusal.forbidden}
    return body


def refusal_error(body: dict[str, Any]) -> WrongState | Forbidden:
    """The error answering an access ``access_result`` refused (from its answer)."""
    r = body["refusal"]
    return Refusal(r["code"], r["rule"], r["limit"], r["detail"], r["used"],
                   r["forbidden"]).error()


def approve_release(uow: UnitOfWork, ctx: Context, delivery_id: str, *,
                    signed: Signed | None = None) -> dict[str, Any]:
    """The provider whose computation made delivery ``delivery_id`` (its part of the
    execution's result) approves its release (signed: ``delivery.release_approval``).
    Refused: 403 unless that provider; 409 when nothing is delivered, the contract holds no
    result (``derivatives_need_approval`` not set) or it approved already. The answer's
    ``pending_releases`` are the input providers whose part is not released yet."""
    permit(ctx.actor, "delivery.release_approval")
    comp = uow.get(Computation, delivery_id)
    order = uow.get(Order, comp.contract_id)
    product = uow.get(Product, order.product_id)
    provider = ctx.actor.participant_id
    if provider != comp.provider_id:
        raise Forbidden(f"only provider {comp.provider_id}, whose computation made delivery "
                        f"{comp.id}, approves its release")
    if not comp.delivered:
        raise WrongState(f"computation {comp.id} is {comp.state}; nothing is delivered to "
                         "release", state=comp.state)
    if not effective_policy(uow, order, product)[0].get("derivatives_need_approval"):
        raise WrongState(f"contract {order.id} holds no result for approval "
                         "(derivatives_need_approval is not set)")
    if provider in comp.released_by:
        raise WrongState(f"provider {provider} already approved the release of delivery "
                         f"{comp.id}; each provider approves once")
    signature = verify_decision(uow, ctx, "delivery.release_approval", comp, signed)
    comp.trigger(DeliveryReleaseApproved, ctx, provider_id=provider, signature=signature)
    pending = pending_releases(uow, comp, product)
    return {"delivery_id": comp.id, "computation_id": comp.id, "contract_id": order.id,
            "released_by": list(comp.released_by), "pending_releases": pending,
            "released": not pending}
