"""Computation (计算) and delivery (交付): on ``contract.approved`` a provider's compute node
runs the product's registered code on its PySyft datasite and reports back here.

A product's inputs may belong to several providers, all party to the contract: each party
provider owning at least one input dataset runs its own computation per execution, over its
own input datasets. The idempotency key of a computation is (contract id, execution number,
provider id): the computation id is derived from it (``computation_id``), so a redelivered
``contract.approved`` or a restarted node finds the computation it already asked for and
never runs or delivers twice. One it finds still requested is checked against the policy
again, so a node restarting after the policy changed does not run the code.
The result itself stays off the log; only its SHA-256 is recorded (``delivery.made``).

A request that the ledger check refuses for a *policy* reason (the contract, its processing
count, the code, the listing, the authorizations) is recorded, not just refused:
``computation.requested`` and ``computation.failed`` are written together, the reason
starting with one of ``REFUSAL_CODES`` then ``": "``. Errors that are not policy (invalid
fields, a caller that is no party provider, an unknown contract, a gap in the execution
numbers, an execution the demander has not asked for) write nothing.

What can change while the code runs (the contract terminated or out of its window, the
scenario suspended, an authorization revoked or expired) is checked again when the result
is posted (``domain.execution_rules``, the same rules): a result that arrives after is
recorded as ``computation.failed`` (``policy_lapsed: …``) and never delivered.

The processing count is one count (``_used``): a node's request beyond it is refused
(``count_exhausted``), and so is the demander's query asking for an execution beyond it
(``submit_query``: nothing written).

Execution 0 is the trial (试用): before the contract is approved, once the order's operator
or the platform granted it (``order.trial_granted``), each provider owning an input dataset
of the ordered product runs the same code on its datasite's *mock* data and the result is
delivered to the demander like any other. The trial is checked for the trial itself
(``trial_not_granted``, ``trial_after_approval``), the code and the listing; not for
authorizations or the processing count, since mock data is not the provider's data.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from core.event import Event
from domain.base import Actor, Aggregate, Context, applies
from domain.dataset import Dataset, grades_refusal, require_text
from domain.delivered import Delivered, DeliveryMade, require_sha256
from domain.errors import Forbidden, InvalidInput, NotFound, WrongState
from domain.execution_rules import (
    TRIAL,
    code_refusal,
    contract_breach,
    grant_breach,
    lapse_refusal,
    processing_limit,
    trial_refusal,
    usage_refusal,
)
from domain.joint import joint_id, on_failure, on_request
from domain.order import Order, require_plain_query
from domain.permissions import permit
from domain.privacy_budget import meter, query_refusal
from domain.product import Product
from domain.succeeded import ComputationSucceeded, Reported, check_masking
from domain.unit_of_work import UnitOfWork
from domain.usage import DeliveryReleaseApproved, RuleReason, UsageRefused

#: the namespace of computation ids: uuid5(NAMESPACE, f"{contract_id}#{execution}#{provider_id}")
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "dataledger:computation")
MAX_REASON = 5000
#: the stable codes a recorded policy refusal's reason starts with (``code: sentence``)
REFUSAL_CODES = ("contract_not_approved", "contract_terminated", "outside_contract_window",
                 "count_exhausted", "code_hash_mismatch", "product_not_listed",
                 "authorization_revoked", "authorization_expired", "no_authorization",
                 "scenario_suspended", "trial_not_granted", "trial_after_approval",
                 "policy_lapsed", "unknown_constraint", "circulation_mode_not_allowed",
                 "privacy_budget_exhausted", "privacy_budget_requires_dp",
                 "privacy_budget_missing", "grades_raised")


def computation_id(contract_id: str, execution: int, provider_id: str) -> str:
    """The id of provider ``provider_id``'s run of execution ``execution`` of contract
    ``contract_id`` (its idempotency key)."""
    return str(uuid.uuid5(NAMESPACE, f"{contract_id}#{execution}#{provider_id}"))


@dataclass(frozen=True, kw_only=True)
class ComputationRequested(Event):
    """A party provider's compute node is to run execution ``execution`` of the contract
    over its own input datasets ``dataset_ids`` (in product input order). Execution 0 is
    the trial: the code runs on the datasets' mock data."""

    type_name = "computation.requested"
    contract_id: str
    product_id: str
    demander_id: str
    operator_id: str
    provider_id: str
    execution: int
    code_sha256: str
    datasite: str
    dataset_ids: list[str]


@dataclass(frozen=True, kw_only=True)
class ComputationFailed(Event):
    """The execution failed; terminal (the next execution number may be requested)."""

    type_name = "computation.failed"
    reason: str


def _require_count(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(field, f"must be an integer >= {minimum}")
    return value


class Computation(Aggregate):
    """requested → succeeded | failed; both terminal. Success also records the delivery."""

    kind = "computation"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.state = "new"
        self.contract_id = ""
        self.product_id = ""
        self.demander_id = ""
        self.operator_id = ""
        self.provider_id = ""
        self.execution = 0
        self.code_sha256 = ""
        self.datasite = ""
        self.dataset_ids: list[str] = []
        self.input_hashes: dict[str, str] = {}
        self.result_sha256 = ""
        self.result_rows = 0
        self.delivered, self.delivered_sha256 = False, ""  # the bytes served (watermarked)
        self.reason = ""
        #: the input providers that approved the release of this (held) result
        self.released_by: list[str] = []

    # -- decide -----------------------------------------------------------------
    @classmethod
    def request(cls, ctx: Context, *, order: Order, product: Product, execution: int,
                datasite: str, code_sha256: str, dataset_ids: list[str]) -> Computation:
        """Request (the code the node will run, over ``dataset_ids``); the caller decided
        whether it may run (else it records the refusal with ``fail`` at once)."""
        agg = cls(computation_id(order.id, execution, ctx.actor.participant_id))
        agg.trigger(ComputationRequested, ctx, contract_id=order.id, product_id=product.id,
                    demander_id=order.demander_id, operator_id=order.operator_id,
                    provider_id=ctx.actor.participant_id, execution=execution,
                    code_sha256=code_sha256, datasite=datasite, dataset_ids=list(dataset_ids))
        return agg

    def succeed(self, ctx: Context, *, result_sha256: str, input_hashes: dict[str, str],
                masking: dict[str, str] | None = None,
                result_rows: int, datasite: str, deliver: bool = True,
                delivered: Delivered | None = None) -> None:
        """Record the result; and its delivery (``delivered``: the bytes served, by default
        the result's own, unmarked), unless it is a joint execution's part."""
        self.require_requester(ctx)
        self.require_state(["requested"], "record a result")
        self.trigger(ComputationSucceeded, ctx, datasite=datasite, code_sha256=self.code_sha256,
                     input_hashes=input_hashes, result_sha256=result_sha256,
                     result_rows=result_rows, masking=masking or {})
        if deliver:
            self.trigger(DeliveryMade, ctx, demander_id=self.demander_id, **(
                delivered or Delivered.unmarked(result_sha256)).fields(result_sha256))

    def fail(self, ctx: Context, *, reason: str) -> None:
        """Fail; a usage rule's refusal (``RuleReason``) is recorded as ``usage.refused`` too."""
        self.require_requester(ctx)
        self.require_state(["requested"], "record a failure")
        text = require_text(reason, "reason")
        if len(text) > MAX_REASON:
            raise InvalidInput("reason", f"must be at most {MAX_REASON} characters")
        self.trigger(ComputationFailed, ctx, reason=text)
        if isinstance(reason, RuleReason):
            self.trigger(UsageRefused, ctx, contract_id=self.contract_id,
                         computation_id=self.id, member_id=ctx.actor.member_id,
                         action="processing", rule=reason.rule, limit=reason.limit,
                         used=None, reason=text)

    def require_requester(self, ctx: Context) -> None:
        """Raise Forbidden unless the actor is the provider that requested the computation."""
        self.require_reporter(ctx.actor)

    def require_reporter(self, actor: Actor) -> None:
        """Raise Forbidden unless ``actor`` is the provider that requested the computation
        (whatever its role: the one message for everyone else)."""
        if actor.role != "provider" or actor.participant_id != self.provider_id:
            raise Forbidden(f"only the provider that requested computation {self.id} "
                            "reports on it")

    # -- evolve -----------------------------------------------------------------
    @applies(ComputationRequested)
    def _requested(self, e: ComputationRequested) -> None:
        self.state, self.contract_id, self.product_id = "requested", e.contract_id, e.product_id
        self.demander_id, self.operator_id, self.provider_id = (
            e.demander_id, e.operator_id, e.provider_id)
        self.execution, self.code_sha256, self.datasite = e.execution, e.code_sha256, e.datasite
        self.dataset_ids = list(e.dataset_ids)

    @applies(ComputationSucceeded)
    def _succeeded(self, e: ComputationSucceeded) -> None:
        self.state, self.input_hashes = "succeeded", dict(e.input_hashes)
        self.result_sha256, self.result_rows = e.result_sha256, e.result_rows

    @applies(ComputationFailed)
    def _failed(self, e: ComputationFailed) -> None:
        self.state, self.reason = "failed", e.reason

    @applies(UsageRefused)
    def _usage_refused(self, e: UsageRefused) -> None:
        if self.state == "new":  # a contract's usage stream, not a computation's
            raise NotFound(f"no computation {self.id}", kind="computation", id=self.id)

    @applies(DeliveryReleaseApproved)
    def _release_approved(self, e: DeliveryReleaseApproved) -> None:
        self.released_by = [*self.released_by, e.provider_id]

    @applies(DeliveryMade)
    def _delivered(self, e: DeliveryMade) -> None:
        self.delivered, self.delivered_sha256 = True, e.delivered_sha256


def _find(uow: UnitOfWork, id: str) -> Computation | None:
    try:
        return uow.get(Computation, id)
    except NotFound:
        return None


def _view(agg: Computation, existing: bool = False) -> dict[str, Any]:
    return {"computation_id": agg.id, "contract_id": agg.contract_id,
            "execution": agg.execution, "state": agg.state, "existing": existing,
            "reason": agg.reason if agg.state == "failed" else None}


def fail_computation(uow: UnitOfWork, ctx: Context, agg: Computation, reason: str) -> None:
    """Record ``agg``'s failure; a joint execution's fails with it (``domain.joint``)."""
    agg.fail(ctx, reason=reason)
    on_failure(uow, ctx, contract_id=agg.contract_id, execution=agg.execution,
               computation_id=agg.id, reason=reason)


def _require_plain(uow: UnitOfWork, agg: Computation) -> None:
    """A joint execution's computation posts a masked part, never a result (409)."""
    if agg.execution >= 1 and uow.get(Product, agg.product_id).joint is not None:
        raise WrongState(f"computation {agg.id} is part of joint execution "
                         f"{joint_id(agg.contract_id, agg.execution)}: post its masked part "
                         "(nothing of it is delivered)", state=agg.state)


def _require_party_provider(ctx: Context, order: Order) -> None:
    if ctx.actor.participant_id not in order.required_approvals:
        raise Forbidden(f"provider {ctx.actor.participant_id} is not a party "
                        f"to contract {order.id}")


def check_input_hashes(uow: UnitOfWork, agg: Computation, value: Any) -> dict[str, str]:
    """One SHA-256 per input dataset; equal to the dataset's last loaded data, if recorded
    (not for the trial: its inputs are mock tables, whose hashes the ledger does not hold)."""
    if not isinstance(value, dict) or set(value) != set(agg.dataset_ids):
        raise InvalidInput("input_hashes", "must map exactly the input datasets "
                                           f"{agg.dataset_ids!r} to SHA-256 digests")
    out: dict[str, str] = {}
    for dataset_id in agg.dataset_ids:
        digest = require_sha256(value[dataset_id], f"input_hashes.{dataset_id}")
        loaded = "" if agg.execution == TRIAL else uow.get(Dataset, dataset_id).data_sha256
        if loaded and digest != loaded:
            raise InvalidInput(f"input_hashes.{dataset_id}",
                               f"is not the SHA-256 of the data last loaded ({loaded})")
        out[dataset_id] = digest
    return out


#: the states of an execution that uses up one of the contract's processings: one still
#: running counts, or two in flight could both succeed past the count; a failed one is free
COUNTED = ("requested", "succeeded")


def _used(uow: UnitOfWork, order: Order, provider_id: str, number: int) -> list[int]:
    """The executions before ``number`` that use up one of the contract's processings for
    this provider: requested (in flight) or succeeded, or asked for and not requested by
    its node yet (it will be: executions are requested without gaps); failed ones are free."""
    return [n for n in range(1, number)
            if (c := _find(uow, computation_id(order.id, n, provider_id))) is None
            or c.state in COUNTED]


def _count_refusal(uow: UnitOfWork, order: Order, provider_id: str, number: int) -> str | None:
    """The contract's processing count against this provider's earlier executions
    (``_used``); the count is the stricter of the contract's and its authorizations'."""
    limit = processing_limit(uow, order)
    if limit is None:
        return None
    used = _used(uow, order, provider_id, number)
    if len(used) < limit:
        return None
    return RuleReason(
        f"count_exhausted: contract {order.id} allows {limit} processing(s) and provider "
        f"{provider_id} already has {len(used)} execution(s) requested or succeeded "
        f"(executions {', '.join(map(str, used)) or 'none'}); execution {number} "
        "cannot run", "processing_count", limit)


def _query_count_refusal(uow: UnitOfWork, order: Order, product: Product,
                         number: int) -> str | None:
    """Why asking for execution ``number`` is refused: the processing count is used up
    (``_used``, as a node's request of it would be refused) for every provider owning an
    input dataset; None while one of them may still run it."""
    limit = processing_limit(uow, order)
    if limit is None:
        return None
    owners = sorted({uow.get(Dataset, d).owner_id for d in product.dataset_ids()})
    used = {p: _used(uow, order, p, number) for p in owners}
    if any(len(u) < limit for u in used.values()):
        return None
    counted = "; ".join(f"provider {p}: executions {', '.join(map(str, u)) or 'none'}"
                        for p, u in used.items())
    return (f"count_exhausted: the contract's processing_count {limit} is used up "
            f"({counted}); execution {number} of contract {order.id} cannot be asked for")


def policy_refusal(uow: UnitOfWork, ctx: Context, *, order: Order, product: Product,
                   number: int, code_sha256: str,
                   inputs: list[dict[str, Any]]) -> str | None:
    """Why the ledger refuses to run execution ``number``, as ``code: sentence``; else None.
    A usage rule's refusal is a ``RuleReason`` (recorded as ``usage.refused`` as well)."""
    breach = contract_breach(order)
    if breach is None:
        usage = usage_refusal(uow, order, product, ctx.at)
        if usage is not None:
            return RuleReason(f"{usage.code}: {usage.detail}; execution {number} of contract "
                              f"{order.id} cannot run", usage.rule, usage.limit)
        refusal = (_count_refusal(uow, order, ctx.actor.participant_id, number)
                   or code_refusal(order, product, number, code_sha256)
                   or grades_refusal(uow, product.id, inputs, product.field_grades))
        if refusal:
            return refusal
        breach = grant_breach(uow, product, inputs, ctx.at)
    if breach is None:
        return None
    code, why = breach
    text = f"{code}: {why}; execution {number} of contract {order.id} cannot run"
    if code != "outside_contract_window":
        return text
    return RuleReason(text, "usage_window", {k: order.usage_policy.get(k)
                                             for k in ("not_before", "not_after")})


def _inputs_owned(uow: UnitOfWork, product: Product, provider_id: str) -> list[dict[str, Any]]:
    """The product's inputs whose datasets ``provider_id`` owns, in input order."""
    return [i for i in product.inputs
            if uow.get(Dataset, i["dataset_id"]).owner_id == provider_id]


def _own_inputs(uow: UnitOfWork, product: Product, provider_id: str) -> list[dict[str, Any]]:
    """The product's inputs whose datasets ``provider_id`` owns, in input order (409 if none)."""
    own = _inputs_owned(uow, product, provider_id)
    if not own:
        raise WrongState(f"provider {provider_id} owns none of the input datasets of product "
                         f"{product.id}; a provider runs a computation only over its own "
                         "input datasets")
    return own


def _existing(uow: UnitOfWork, ctx: Context, found: Computation, code_sha256: str,
              refusal: Callable[[], str | None]) -> dict[str, Any]:
    """The answer to a request for an execution this provider already requested
    (``existing: true``).

    One still ``requested`` is checked again (``refusal``: the policy, or the trial's, as
    for a new request): a node that crashed after requesting must not run the code once the
    contract was terminated, an authorization revoked or the scenario suspended. A refusal
    now is recorded (``computation.failed``, the reason ``code: sentence``) and answered with
    ``state: "failed"``; otherwise nothing is written.
    """
    if found.code_sha256 != code_sha256:
        raise InvalidInput("code_sha256", f"computation {found.id} was requested for code "
                                          f"{found.code_sha256}")
    if found.state == "requested":
        reason = refusal()
        if reason is not None:
            fail_computation(uow, ctx, found, reason)
    return _view(found, existing=True)


# -- use cases ------------------------------------------------------------------
def request_computation(uow: UnitOfWork, ctx: Context, *, contract_id: str, execution: int,
                        datasite: str, code_sha256: str) -> dict[str, Any]:
    """A party provider's node asks to run execution ``execution`` of an approved contract
    over its own input datasets (one computation per contract, execution and provider);
    execution 0 is the trial on mock data (``_request_trial``).

    Idempotent: if that execution was already requested, its id, state and reason come back
    with ``existing: true`` and nothing is written, unless it is still ``requested`` and the
    policy now refuses it: then ``computation.failed`` is recorded and the answer is
    ``state: "failed"`` with the reason (``_existing``). A policy refusal of a new request is
    recorded: ``computation.requested`` + ``computation.failed`` (``reason``: ``code:
    sentence``).
    """
    permit(ctx.actor, "computation.request")
    order = uow.get(Order, contract_id)
    if execution == TRIAL and not isinstance(execution, bool):
        return _request_trial(uow, ctx, order, datasite=datasite, code_sha256=code_sha256)
    _require_party_provider(ctx, order)
    provider_id = ctx.actor.participant_id
    number = _require_count(execution, "execution", 1)
    digest = require_sha256(code_sha256, "code_sha256")
    site = require_text(datasite, "datasite")
    product = uow.get(Product, order.product_id)
    inputs = _own_inputs(uow, product, provider_id)
    found = _find(uow, computation_id(order.id, number, provider_id))
    if found is not None:
        return {**_existing(uow, ctx, found, digest, lambda: policy_refusal(
            uow, ctx, order=order, product=product, number=number, code_sha256=digest,
            inputs=inputs)), "joint_id": joint_id(order.id, number) if product.joint else None}
    if number > 1 and _find(uow, computation_id(order.id, number - 1, provider_id)) is None:
        raise WrongState(f"execution {number - 1} of contract {order.id} was not requested by "
                         f"provider {provider_id}; executions are numbered from 1 without gaps")
    asked = max(1, order.executions)  # execution 1 is the order's own; the rest are queries
    if number > asked:
        raise WrongState(f"execution {number} of contract {order.id} was not asked for: the "
                         f"demander asked for {asked} (POST /orders/{order.id}/queries asks "
                         "for the next)", executions=asked)
    refusal = policy_refusal(uow, ctx, order=order, product=product, number=number,
                             code_sha256=digest, inputs=inputs)
    return _record_request(uow, ctx, order, product, _Run(number, site, digest, inputs), refusal)


class _Run(NamedTuple):
    """One execution as requested: its number, datasite, code hash and inputs."""

    number: int
    datasite: str
    code_sha256: str
    inputs: list[dict[str, Any]]


def _record_request(uow: UnitOfWork, ctx: Context, order: Order, product: Product, run: _Run,
                    refusal: str | None) -> dict[str, Any]:
    """Record the request, and with it the refusal if the policy said no."""
    agg = Computation.request(ctx, order=order, product=product, execution=run.number,
                              datasite=run.datasite, code_sha256=run.code_sha256,
                              dataset_ids=[i["dataset_id"] for i in run.inputs])
    uow.add(agg)
    joint = on_request(uow, ctx, order=order, product=product, execution=run.number)
    refusal = refusal or meter(uow, ctx, order=order, product=product, computation_id=agg.id,
                               number=run.number, dataset_ids=agg.dataset_ids)
    if refusal is not None:
        fail_computation(uow, ctx, agg, refusal)
    return {**_view(agg), "joint_id": joint}


def _request_trial(uow: UnitOfWork, ctx: Context, order: Order, *, datasite: str,
                   code_sha256: str) -> dict[str, Any]:
    """A provider owning an input dataset of the ordered product asks to run the trial
    (execution 0): the product's code on its datasite's *mock* data, before approval.

    The contract may not be proposed yet, so the party here is an owner of an input dataset
    of the order's product (403 otherwise). Refused and recorded (``computation.requested``
    + ``computation.failed``) as ``trial_not_granted`` (no ``order.trial_granted``),
    ``trial_after_approval`` (the contract is approved, terminated or cancelled),
    ``code_hash_mismatch`` or ``product_not_listed``. Neither the authorizations nor the
    processing count are checked: mock data is not the provider's data, and the trial is
    not a processing of it. Idempotent as any execution (200, ``existing: true``; a trial
    still ``requested`` is checked again, and a refusal now recorded as ``computation.failed``).
    """
    provider_id = ctx.actor.participant_id
    product = uow.get(Product, order.product_id)
    inputs = _inputs_owned(uow, product, provider_id)
    if not inputs:
        raise Forbidden(f"provider {provider_id} owns none of the input datasets of product "
                        f"{product.id} ordered by {order.id}; only their owners run its trial")
    digest = require_sha256(code_sha256, "code_sha256")
    site = require_text(datasite, "datasite")
    found = _find(uow, computation_id(order.id, TRIAL, provider_id))
    if found is not None:
        return {**_existing(uow, ctx, found, digest, lambda: trial_refusal(
            order, product, digest)), "joint_id": None}
    return _record_request(uow, ctx, order, product, _Run(TRIAL, site, digest, inputs),
                           trial_refusal(order, product, digest))


def _takes_result(agg: Computation, digest: str) -> bool:
    """Whether ``agg`` takes a result whose SHA-256 is ``digest``: True if it recorded that
    very result already (a repeat), False if it awaits one; WrongState otherwise (it
    failed, or succeeded with other bytes)."""
    if agg.state == "succeeded" and agg.result_sha256 == digest:
        return True
    agg.require_state(["requested"], "record a result")
    return False


def record_success(uow: UnitOfWork, ctx: Context, computation_id: str, *, result: Reported,
                   input_hashes: dict[str, str], datasite: str,
                   delivered: Delivered | None = None) -> dict[str, Any]:
    """The requesting provider reports the result's hash; the delivery is recorded with it
    (``delivered``: the bytes served, the result watermarked by the route; ``DeliveryMade``).
    For the trial (execution 0) ``input_hashes`` are those of the mock tables the code read.
    ``result``: its hash, rows and the masking applied (checked against the product's grades).

    For an execution >= 1 the rules that can change while the code runs are checked again
    (``lapse_refusal``): if they no longer hold, ``computation.failed`` is recorded with the
    ``policy_lapsed: …`` reason instead, nothing is delivered, and the answer's state is
    ``failed``. A repeated report of the same result is answered with ``existing: true``,
    writing nothing.
    """
    permit(ctx.actor, "computation.result")
    agg = uow.get(Computation, computation_id)
    agg.require_requester(ctx)
    _require_plain(uow, agg)
    digest = require_sha256(result.sha256, "result_sha256")
    if _takes_result(agg, digest):
        return {**_view(agg, existing=True), "result_sha256": agg.result_sha256}
    if require_text(datasite, "datasite") != agg.datasite:
        raise InvalidInput("datasite", f"computation {agg.id} was requested on datasite "
                                       f"{agg.datasite!r}")
    hashes = check_input_hashes(uow, agg, input_hashes)
    rows = _require_count(result.rows, "result_rows", 0)
    applied = check_masking(result.masking, uow.get(Product, agg.product_id).field_grades)
    lapsed = None if agg.execution == TRIAL else lapse_refusal(uow, ctx, agg)
    if lapsed is not None:
        fail_computation(uow, ctx, agg, lapsed)
        return {**_view(agg), "result_sha256": None}
    agg.succeed(ctx, result_sha256=digest, input_hashes=hashes, result_rows=rows, masking=applied,
                datasite=datasite, delivered=delivered)
    return {**_view(agg), "result_sha256": agg.result_sha256}


def check_reporter(uow: UnitOfWork, ctx: Context, computation_id: str,
                   result_sha256: str | None = None) -> None:
    """Whether the actor may report on computation ``computation_id`` (and, given
    ``result_sha256``, whether it still takes that result): asked (with ``Ledger.check``)
    before a result's bytes are stored, since only the requesting provider may store bytes
    (else anyone could fill the store), and a post bound to be refused stores none.

    NotFound unless it is a computation, Forbidden unless the actor is the provider that
    requested it, WrongState if it failed or succeeded with other bytes; ``record_success``
    checks it all again when it decides.
    """
    permit(ctx.actor, "computation.result")
    agg = uow.get(Computation, computation_id)
    agg.require_reporter(ctx.actor)
    _require_plain(uow, agg)
    if result_sha256 is not None:
        _takes_result(agg, require_sha256(result_sha256, "result_sha256"))


def record_failure(uow: UnitOfWork, ctx: Context, computation_id: str, *,
                   reason: str) -> dict[str, Any]:
    """The requesting provider reports that the execution failed (terminal)."""
    permit(ctx.actor, "computation.failure")
    agg = uow.get(Computation, computation_id)
    fail_computation(uow, ctx, agg, reason)
    return _view(agg)


def submit_query(uow: UnitOfWork, ctx: Context, order_id: str, *,
                 query: Any) -> dict[str, Any]:
    """The demander asks for the next execution (2, 3, …) of its approved contract, with a
    query on the product's key column (``contract.query_submitted``).

    Refused, writing nothing (WrongState, ``count_exhausted: …``), when that execution is
    beyond the contract's processing count for every provider that would run it, counted
    as a node's request is (``_used``: failed executions are free); or
    (``privacy_budget_exhausted: …``) when a dp product's budget spent so far cannot
    afford its ε (``domain.privacy_budget.query_refusal``).
    """
    permit(ctx.actor, "order.query")
    order = uow.get(Order, order_id)
    product = uow.get(Product, order.product_id)
    require_plain_query(product, query)
    execution = order.submit_query(
        ctx, query=query, key_column=product.key_column,
        count_refusal=lambda n: (_query_count_refusal(uow, order, product, n)
                                 or query_refusal(uow, order, product, n)))
    return {"order_id": order.id, "execution": execution}
