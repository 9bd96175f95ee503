"""The market's rules, replayed: contracts made and approved by their parties, listings on
approved scenarios, and every execution and delivery standing on what allowed it.

At its seq, every ``computation.requested`` (execution >= 1), ``computation.succeeded`` and
``delivery.made`` had: its contract in force (approved, not terminated); its product listed
(not delisted) and running the product's registered code; the product's scenario approved
(not suspended, 一场景一审核); each input dataset's fields covered by a live authorization of
the product (granted, not revoked or expired, ``not_before <= at < not_after``); the time
inside the usage window (the latest ``not_before`` and earliest ``not_after`` of the
contract's policy and its authorizations' policies: 指定时间控制); and no more executions
than the processing count (the lowest of those policies' ``processing_count``: 处理次数),
counted per provider over the executions it requested that did not fail. The trial
(execution 0) runs on mock data before approval: it needs a trial granted on an open order,
the product listed and its code.

A request the ledger refused is recorded with its ``computation.failed`` (its reason the
refusal): such a request broke no rule, so the findings on a request are held until the
computation's next event and dropped if that is its failure.
"""

from __future__ import annotations

from typing import Any

from audit.rules.authority import Check
from audit.rules.model import (
    Computation,
    Ev,
    Finding,
    Malformed,
    Order,
    Product,
    State,
    instant,
)

OPEN = ("placed", "proposed", "accepted")


def _lifecycle(ev: Ev, what: str, state: str, allowed: str) -> list[Finding]:
    return [Finding(ev.seq, "lifecycle", f"{ev.type} on {what} {ev.id} in state {allowed}",
                    f"it is {state}")]


def _party(ev: Ev, expected: str, found: str) -> list[Finding]:
    return [Finding(ev.seq, "party", expected, found)]


# -- listing -------------------------------------------------------------------------------
def grounds(s: State, ev: Ev, product: Product, inputs: dict[str, frozenset[str]],
            what: str) -> list[Finding]:
    """The product's scenario approved and each of ``inputs`` covered by a live
    authorization of the product at ``ev.at``."""
    out: list[Finding] = []
    sc = s.scenarios.get(product.scenario)
    if sc is None or sc.state != "approved":
        out.append(Finding(ev.seq, "scenario_approved", f"{what}: scenario {product.scenario} "
                           "approved", f"it is {'unknown' if sc is None else sc.state}"))
    auths = [s.authorizations[a] for a in product.authorizations if a in s.authorizations]
    for dataset, fields in inputs.items():
        if any(a.covers(dataset, fields, ev.at) for a in auths):
            continue
        states = ", ".join(f"{a} {s.authorizations[a].state}" if a in s.authorizations
                           else f"{a} unknown" for a in product.authorizations)
        out.append(Finding(ev.seq, "authorization_live", f"{what}: dataset {dataset} fields "
                           f"{sorted(fields)} covered at {ev.at.isoformat()} by a live "
                           "authorization of the product",
                           f"authorizations {states or 'none'}"))
    return out


def _listed(s: State, ev: Ev) -> list[Finding]:
    """No listing (上架) without an approved scenario and live authorizations."""
    product = s.products.get(ev.id)
    if product is None or product.state != "listing_requested":
        return _lifecycle(ev, "product", "unknown" if product is None else product.state,
                          "listing_requested")
    return grounds(s, ev, product, product.inputs, f"listing of product {ev.id}")


# -- orders and contracts ------------------------------------------------------------------
def _order(s: State, ev: Ev, *allowed: str) -> Order | list[Finding]:
    order = s.orders.get(ev.id)
    if order is None or order.state not in allowed:
        return _lifecycle(ev, "order", "unknown" if order is None else order.state,
                          " or ".join(allowed))
    return order


def _placed(s: State, ev: Ev) -> list[Finding]:
    product = s.products.get(str(ev.payload.get("product_id")))
    if ev.payload.get("demander_id") != ev.participant:
        return _party(ev, "an order placed by its demander",
                      f"demander_id {ev.payload.get('demander_id')}, placed by {ev.participant}")
    if product is None or product.state != "listed":
        return [Finding(ev.seq, "product_listed", f"order {ev.id} on a listed product",
                        f"product {ev.payload.get('product_id')} is "
                        f"{'unknown' if product is None else product.state}")]
    if ev.payload.get("operator_id") != product.operator:
        return _party(ev, f"the order names the product's operator {product.operator}",
                      f"operator_id {ev.payload.get('operator_id')}")
    return []


def _trial_granted(s: State, ev: Ev) -> list[Finding]:
    order = _order(s, ev, *OPEN)
    if isinstance(order, list):
        return order
    if ev.role == "operator" and ev.participant != order.operator:
        return _party(ev, f"a trial granted by the order's operator {order.operator}",
                      f"by {ev.participant}")
    return []


def _cancelled(s: State, ev: Ev) -> list[Finding]:
    order = _order(s, ev, *OPEN)
    if isinstance(order, list):
        return order
    if ev.participant != order.demander:
        return _party(ev, f"order cancelled by its demander {order.demander}",
                      f"by {ev.participant}")
    return []


def _proposed(s: State, ev: Ev) -> list[Finding]:
    order = _order(s, ev, "placed")
    if isinstance(order, list):
        return order
    if ev.participant != order.operator:
        return _party(ev, f"contract proposed by the order's operator {order.operator}",
                      f"by {ev.participant}")
    product = s.products.get(order.product)
    if product is None:
        return []
    owners = {s.datasets.get(d, f"owner of {d}?") for d in product.inputs}
    wanted = sorted(owners | {product.operator})
    required = ev.payload.get("required_approvals")
    if not isinstance(required, list) or sorted(map(str, required)) != wanted:
        return _party(ev, f"the approvals required of the input providers and the operator: "
                      f"{wanted}", f"required_approvals {required}")
    return []


def _accepted(s: State, ev: Ev) -> list[Finding]:
    order = _order(s, ev, "proposed")
    if isinstance(order, list):
        return order
    if ev.participant != order.demander:
        return _party(ev, f"contract accepted by the order's demander {order.demander}",
                      f"by {ev.participant}")
    return []


def _party_approved(s: State, ev: Ev) -> list[Finding]:
    order = _order(s, ev, "accepted")
    if isinstance(order, list):
        return order
    party = ev.payload.get("party_id")
    if party != ev.participant or party not in order.required or party in order.approvals:
        return _party(ev, f"one approval by each required party of contract {ev.id} "
                      f"({', '.join(order.required)}), in its own name",
                      f"party_id {party} by {ev.participant} (approved so far: "
                      f"{', '.join(order.approvals) or 'none'})")
    return []


def _approved(s: State, ev: Ev) -> list[Finding]:
    order = _order(s, ev, "accepted")
    if isinstance(order, list):
        return order
    missing = [p for p in order.required if p not in order.approvals]
    if missing or not order.required:
        return _party(ev, f"contract {ev.id} in force once every required party approved",
                      f"not approved by {', '.join(missing) or 'anyone'}")
    product = s.products.get(order.product)
    if product is not None and product.state != "listed":
        return [Finding(ev.seq, "product_listed", f"contract {ev.id} in force on a listed "
                        f"product", f"product {order.product} is {product.state}")]
    return []


def _terminated(s: State, ev: Ev) -> list[Finding]:
    order = _order(s, ev, "approved")
    if isinstance(order, list):
        return order
    if ev.role == "operator" and ev.participant != order.operator:
        return _party(ev, f"terminated by the order's operator {order.operator}",
                      f"by operator {ev.participant}")
    if ev.role == "provider" and (ev.participant not in order.required
                                  or order.policy.get("provider_may_terminate") is not True):
        return _party(ev, "terminated by a party provider only where the contract says "
                      "provider_may_terminate (数据终止控制)",
                      f"by provider {ev.participant}; provider_may_terminate="
                      f"{order.policy.get('provider_may_terminate')}")
    return []


# -- executions and deliveries ---------------------------------------------------------------
def effective_window(s: State, order: Order, product: Product) -> tuple[Any, Any]:
    """The usage window all policies allow: the latest not_before, the earliest not_after."""
    policies = [order.policy, *(s.authorizations[a].policy for a in product.authorizations
                                if a in s.authorizations)]
    starts = [instant(p["not_before"], "not_before") for p in policies if "not_before" in p]
    ends = [instant(p["not_after"], "not_after") for p in policies if "not_after" in p]
    return (max(starts) if starts else None), (min(ends) if ends else None)


def processing_limit(s: State, order: Order, product: Product) -> int | None:
    policies = [order.policy, *(s.authorizations[a].policy for a in product.authorizations
                                if a in s.authorizations)]
    counts = [p["processing_count"] for p in policies
              if isinstance(p.get("processing_count"), int)]
    return min(counts) if counts else None


def _standing(s: State, ev: Ev, run: Computation, what: str) -> list[Finding]:
    """Everything an execution >= 1 stands on, at ``ev``'s seq."""
    order = s.orders.get(run.contract)
    product = s.products.get(run.product)
    if order is None or product is None or order.product != run.product:
        return [Finding(ev.seq, "contract_live", f"{what}: contract {run.contract} of product "
                        f"{run.product}", "no such contract on that product")]
    out: list[Finding] = []
    if order.state != "approved":
        out.append(Finding(ev.seq, "contract_live", f"{what}: contract {run.contract} in "
                           "force (approved, not terminated)", f"it is {order.state}"))
    if product.state != "listed":
        out.append(Finding(ev.seq, "product_listed", f"{what}: product {run.product} listed",
                           f"it is {product.state}"))
    inputs = {d: product.inputs.get(d, frozenset()) for d in run.datasets}
    out += grounds(s, ev, product, inputs, what)
    start, end = effective_window(s, order, product)
    if (start is not None and ev.at < start) or (end is not None and ev.at >= end):
        out.append(Finding(ev.seq, "usage_window", f"{what}: inside the usage window "
                           f"[{start and start.isoformat()}, {end and end.isoformat()})",
                           f"at {ev.at.isoformat()}"))
    return out


def _trial_standing(s: State, ev: Ev, run: Computation, what: str) -> list[Finding]:
    order, product = s.orders.get(run.contract), s.products.get(run.product)
    if order is None or product is None:
        return [Finding(ev.seq, "trial", f"{what}: an order of product {run.product}",
                        f"no order {run.contract} on it")]
    if not order.trial or order.state not in OPEN:
        return [Finding(ev.seq, "trial", f"{what}: a trial granted on order {run.contract}, "
                        "before its contract is approved",
                        f"trial granted: {order.trial}; the order is {order.state}")]
    if product.state != "listed":
        return [Finding(ev.seq, "product_listed", f"{what}: product {run.product} listed",
                        f"it is {product.state}")]
    return []


def _request(s: State, ev: Ev) -> list[Finding]:
    """Judge a request (the rule book holds its findings on the computation: see the
    module)."""
    p = ev.payload
    execution = p.get("execution")
    if not isinstance(execution, int) or isinstance(execution, bool) or execution < 0:
        raise Malformed(f"execution is not an integer >= 0: {execution!r}")
    run = Computation(str(p.get("contract_id")), str(p.get("product_id")),
                      str(p.get("provider_id")), str(p.get("demander_id")), execution,
                      [str(d) for d in p.get("dataset_ids") or []], str(p.get("code_sha256")))
    what = f"execution {execution} of contract {run.contract} by {run.provider}"
    out = _requester(s, ev, run, what)
    if not out:
        out = (_trial_standing(s, ev, run, what) if execution == 0
               else _standing(s, ev, run, what) + _count(s, ev, run, what))
    product = s.products.get(run.product)
    if product is not None and run.code_sha256 != product.code_sha256:
        out.append(Finding(ev.seq, "code_hash", f"{what}: the product's registered code "
                           f"{product.code_sha256}", f"code {run.code_sha256}"))
    return out


def _requester(s: State, ev: Ev, run: Computation, what: str) -> list[Finding]:
    """A provider runs its own input datasets of the ordered product, as a party of it."""
    order, product = s.orders.get(run.contract), s.products.get(run.product)
    if order is None or product is None or order.product != run.product:
        return [Finding(ev.seq, "contract_live", f"{what}: an order of product {run.product}",
                        f"no order {run.contract} on it")]
    owned = [d for d in run.datasets if s.datasets.get(d) == ev.participant]
    if (run.provider != ev.participant or not run.datasets or len(owned) != len(run.datasets)
            or any(d not in product.inputs for d in run.datasets)
            or (run.execution >= 1 and ev.participant not in order.required)
            or run.demander != order.demander):
        return _party(ev, f"{what}: requested by a party provider over its own input "
                      "datasets of the product", f"provider_id {run.provider} by "
                      f"{ev.participant} over {run.datasets}")
    return []


def _count(s: State, ev: Ev, run: Computation, what: str) -> list[Finding]:
    order, product = s.orders[run.contract], s.products[run.product]
    limit = processing_limit(s, order, product)
    used = order.used.get(run.provider, set()) | {run.execution}
    if limit is not None and len(used) > limit:
        return [Finding(ev.seq, "processing_count", f"{what}: at most {limit} processing(s) "
                        f"per provider (处理次数)", f"executions {sorted(used)} not failed")]
    return []


def _result(s: State, ev: Ev) -> list[Finding]:
    """A result or a delivery: the request's held findings, then the execution's standing
    at this seq (the grants can lapse while the code runs)."""
    run = s.computations.get(ev.id)
    if run is None:
        return _lifecycle(ev, "computation", "unknown", "requested")
    held, run.held = run.held, []
    if ev.participant != run.provider:
        return [*held, *_party(ev, f"computation {ev.id} reported by its provider "
                               f"{run.provider}", f"by {ev.participant}")]
    wanted = "requested" if ev.type == "computation.succeeded" else "succeeded"
    if run.state != wanted or (ev.type == "delivery.made" and run.delivered):
        state = "delivered" if run.delivered else run.state
        return [*held, *_lifecycle(ev, "computation", state, wanted)]
    what = f"{ev.type} of execution {run.execution} of contract {run.contract}"
    # the trial's result is mock data's: what it stood on was judged at its request
    out = [] if run.execution == 0 else _standing(s, ev, run, what)
    if ev.type == "delivery.made" and (ev.payload.get("result_sha256") != run.result_sha256
                                       or ev.payload.get("demander_id") != run.demander):
        out.append(Finding(ev.seq, "delivery", f"the result {run.result_sha256} delivered "
                           f"to the contract's demander {run.demander}",
                           f"{ev.payload.get('result_sha256')} to "
                           f"{ev.payload.get('demander_id')}"))
    return [*held, *out]


def _failed(s: State, ev: Ev) -> list[Finding]:
    """A failure drops the request's held findings: the ledger refused and recorded it."""
    run = s.computations.get(ev.id)
    if run is None:
        return _lifecycle(ev, "computation", "unknown", "requested")
    run.held = []
    if run.state != "requested":
        return _lifecycle(ev, "computation", run.state, "requested")
    return []


def _release(s: State, ev: Ev) -> list[Finding]:
    run = s.computations.get(ev.id)
    if run is None:
        return _lifecycle(ev, "computation", "unknown", "succeeded")
    product = s.products.get(run.product)
    owners = {s.datasets.get(d) for d in (product.inputs if product else ())}
    if ev.payload.get("provider_id") != ev.participant or ev.participant not in owners:
        return _party(ev, f"a release approved by a provider of product {run.product}'s "
                      "inputs, in its own name", f"provider_id {ev.payload.get('provider_id')}"
                      f" by {ev.participant}")
    return []


CHECKS: dict[str, Check] = {
    "product.listed": _listed,
    "order.placed": _placed,
    "order.trial_granted": _trial_granted,
    "order.cancelled": _cancelled,
    "contract.proposed": _proposed,
    "contract.accepted": _accepted,
    "contract.party_approved": _party_approved,
    "contract.approved": _approved,
    "contract.terminated": _terminated,
    "computation.requested": _request,
    "computation.succeeded": _result,
    "computation.failed": _failed,
    "delivery.made": _result,
    "delivery.release_approved": _release,
}
