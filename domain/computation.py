"""Computation (计算) and delivery (交付): on ``contract.approved`` a provider's compute node
runs the product's registered code on its PySyft datasite and reports back here.

The idempotency key of an execution is (contract id, execution number): the computation id
is derived from it (``computation_id``), so a redelivered ``contract.approved`` or a
restarted node finds the computation it already asked for and never runs or delivers twice.
The result itself stays off the log; only its SHA-256 is recorded (``delivery.made``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from domain.authorization import Authorization
from domain.base import Aggregate, Context, applies
from domain.dataset import Dataset, require_text
from domain.errors import Forbidden, InvalidInput, NotFound, WrongState
from domain.order import Order
from domain.product import Product, check_inputs_covered
from domain.unit_of_work import UnitOfWork
from events.catalogue import Event

#: the namespace of computation ids: uuid5(NAMESPACE, f"{contract_id}#{execution}")
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "dataledger:computation")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_REASON = 5000


def computation_id(contract_id: str, execution: int) -> str:
    """The id of execution ``execution`` of contract ``contract_id`` (its idempotency key)."""
    return str(uuid.uuid5(NAMESPACE, f"{contract_id}#{execution}"))


@dataclass(frozen=True, kw_only=True)
class ComputationRequested(Event):
    """A party provider's compute node is to run execution ``execution`` of the contract."""

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
class ComputationSucceeded(Event):
    """The code ran on the private data: the hashes of what went in and came out."""

    type_name = "computation.succeeded"
    datasite: str
    code_sha256: str
    input_hashes: dict[str, str]
    result_sha256: str
    result_rows: int


@dataclass(frozen=True, kw_only=True)
class ComputationFailed(Event):
    """The execution failed; terminal (the next execution number may be requested)."""

    type_name = "computation.failed"
    reason: str


@dataclass(frozen=True, kw_only=True)
class DeliveryMade(Event):
    """The result (by its SHA-256) was delivered to the demander (交付)."""

    type_name = "delivery.made"
    demander_id: str
    result_sha256: str


def require_sha256(value: Any, field: str) -> str:
    """A lower-case hex SHA-256 digest (upper case is folded)."""
    if not isinstance(value, str) or not SHA256_HEX.fullmatch(value.lower()):
        raise InvalidInput(field, "must be a hex SHA-256 digest (64 hex digits)")
    return value.lower()


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
        self.delivered = False
        self.reason = ""

    # -- decide -----------------------------------------------------------------
    @classmethod
    def request(cls, ctx: Context, *, order: Order, product: Product, execution: int,
                datasite: str) -> Computation:
        """Request; the caller checked the contract, the product and the authorizations."""
        agg = cls(computation_id(order.id, execution))
        agg.trigger(ComputationRequested, ctx, contract_id=order.id, product_id=product.id,
                    demander_id=order.demander_id, operator_id=order.operator_id,
                    provider_id=ctx.actor.participant_id, execution=execution,
                    code_sha256=product.code_sha256, datasite=datasite,
                    dataset_ids=product.dataset_ids())
        return agg

    def succeed(self, ctx: Context, *, result_sha256: str, input_hashes: dict[str, str],
                result_rows: int, datasite: str) -> None:
        self.require_requester(ctx)
        self.require_state(["requested"], "record a result")
        self.trigger(ComputationSucceeded, ctx, datasite=datasite, code_sha256=self.code_sha256,
                     input_hashes=input_hashes, result_sha256=result_sha256,
                     result_rows=result_rows)
        self.trigger(DeliveryMade, ctx, demander_id=self.demander_id,
                     result_sha256=result_sha256)

    def fail(self, ctx: Context, *, reason: str) -> None:
        self.require_requester(ctx)
        self.require_state(["requested"], "record a failure")
        text = require_text(reason, "reason")
        if len(text) > MAX_REASON:
            raise InvalidInput("reason", f"must be at most {MAX_REASON} characters")
        self.trigger(ComputationFailed, ctx, reason=text)

    def require_requester(self, ctx: Context) -> None:
        """Raise Forbidden unless the actor is the provider that requested the computation."""
        ctx.actor.require_role("provider")
        if ctx.actor.participant_id != self.provider_id:
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

    @applies(DeliveryMade)
    def _delivered(self, e: DeliveryMade) -> None:
        self.delivered = True


def _find(uow: UnitOfWork, id: str) -> Computation | None:
    try:
        return uow.get(Computation, id)
    except NotFound:
        return None


def _view(agg: Computation, existing: bool = False) -> dict[str, Any]:
    return {"computation_id": agg.id, "contract_id": agg.contract_id,
            "execution": agg.execution, "state": agg.state, "existing": existing}


def _require_party_provider(ctx: Context, order: Order) -> None:
    ctx.actor.require_role("provider")
    if ctx.actor.participant_id not in order.required_approvals:
        raise Forbidden(f"provider {ctx.actor.participant_id} is not a party "
                        f"to contract {order.id}")


def _check_input_hashes(uow: UnitOfWork, agg: Computation, value: Any) -> dict[str, str]:
    """One SHA-256 per input dataset; equal to the dataset's last loaded data, if recorded."""
    if not isinstance(value, dict) or set(value) != set(agg.dataset_ids):
        raise InvalidInput("input_hashes", "must map exactly the input datasets "
                                           f"{agg.dataset_ids!r} to SHA-256 digests")
    out: dict[str, str] = {}
    for dataset_id in agg.dataset_ids:
        digest = require_sha256(value[dataset_id], f"input_hashes.{dataset_id}")
        loaded = uow.get(Dataset, dataset_id).data_sha256
        if loaded and digest != loaded:
            raise InvalidInput(f"input_hashes.{dataset_id}",
                               f"is not the SHA-256 of the data last loaded ({loaded})")
        out[dataset_id] = digest
    return out


# -- use cases ------------------------------------------------------------------
def request_computation(uow: UnitOfWork, ctx: Context, *, contract_id: str, execution: int,
                        datasite: str, code_sha256: str) -> dict[str, Any]:
    """A party provider's node asks to run execution ``execution`` of an approved contract.

    Idempotent: if that execution was already requested, its id and state come back with
    ``existing: true`` and nothing is written.
    """
    order = uow.get(Order, contract_id)
    _require_party_provider(ctx, order)
    number = _require_count(execution, "execution", 1)
    digest = require_sha256(code_sha256, "code_sha256")
    found = _find(uow, computation_id(order.id, number))
    if found is not None:
        if found.code_sha256 != digest:
            raise InvalidInput("code_sha256", f"computation {found.id} was requested for code "
                                              f"{found.code_sha256}")
        return _view(found, existing=True)
    order.require_state(["approved"], "run a computation")
    limit = order.usage_policy.get("processing_count")
    if limit is not None and number > limit:
        raise WrongState(f"processing count exhausted: contract {order.id} allows {limit} "
                         f"execution(s), not execution {number}", limit=limit)
    if number > 1 and _find(uow, computation_id(order.id, number - 1)) is None:
        raise WrongState(f"execution {number - 1} of contract {order.id} was not requested; "
                         "executions are numbered from 1 without gaps")
    product = uow.get(Product, order.product_id)
    if product.code_sha256 != digest:
        raise InvalidInput("code_sha256", "the code differs from the listed one (its SHA-256 "
                                          f"is {product.code_sha256})")
    product.require_listed()
    auths = [uow.get(Authorization, a) for a in product.authorization_ids]
    check_inputs_covered(product.inputs, auths, ctx.at)
    agg = Computation.request(ctx, order=order, product=product, execution=number,
                              datasite=require_text(datasite, "datasite"))
    uow.add(agg)
    return _view(agg)


def record_success(uow: UnitOfWork, ctx: Context, computation_id: str, *, result_sha256: str,
                   input_hashes: dict[str, str], result_rows: int,
                   datasite: str) -> dict[str, Any]:
    """The requesting provider reports the result's hash; the delivery is recorded with it.

    A repeated report of the same result is answered with ``existing: true``, writing nothing.
    """
    agg = uow.get(Computation, computation_id)
    agg.require_requester(ctx)
    digest = require_sha256(result_sha256, "result_sha256")
    if agg.state == "succeeded" and agg.result_sha256 == digest:
        return {**_view(agg, existing=True), "result_sha256": agg.result_sha256}
    agg.require_state(["requested"], "record a result")
    if require_text(datasite, "datasite") != agg.datasite:
        raise InvalidInput("datasite", f"computation {agg.id} was requested on datasite "
                                       f"{agg.datasite!r}")
    agg.succeed(ctx, result_sha256=digest,
                input_hashes=_check_input_hashes(uow, agg, input_hashes),
                result_rows=_require_count(result_rows, "result_rows", 0), datasite=datasite)
    return {**_view(agg), "result_sha256": agg.result_sha256}


def record_failure(uow: UnitOfWork, ctx: Context, computation_id: str, *,
                   reason: str) -> dict[str, Any]:
    """The requesting provider reports that the execution failed (terminal)."""
    agg = uow.get(Computation, computation_id)
    agg.fail(ctx, reason=reason)
    return _view(agg)
