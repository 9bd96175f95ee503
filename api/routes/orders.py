"""Orders and contracts (订单/合约): the contract id is the order id.

A demander orders a listed product (optionally with a query: what execution 1 computes), the
operator may grant a trial (试用: the input providers' nodes run the code on mock data,
execution 0) and proposes the contract, the demander accepts, the input
providers and the operator approve; ``contract.approved`` puts it in force. The demander asks
for more executions with ``POST /orders/{id}/queries``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from api.deps import CommandsDep, ReaderDep
from api.fields import (
    MAX_FEN,
    CirculationMode,
    Epsilon,
    Id,
    JsonValue,
    Name,
    NoNul,
    SignedBody,
    Text,
)
from api.routes.common import (
    BudgetLine,
    CommandAnswer,
    ReadRoute,
    answer,
    visible_row,
    visible_rows,
)
from domain import computation, policy
from domain import order as uc
from domain.signing import Signed
from projections import orders as q
from projections import privacy_budget as budget_q
from projections import usage as usage_q

router = APIRouter(prefix="/orders", tags=["orders"], route_class=ReadRoute)

State = Literal["placed", "proposed", "accepted", "approved", "terminated", "cancelled"]
Count = Annotated[StrictInt, Field(ge=0)]
BasisPoints = Annotated[StrictInt, Field(ge=0, le=10000)]
Instant = Annotated[str, Field(min_length=1, max_length=64,
                                description="ISO-8601 with a UTC offset"), NoNul]


class DataQuery(BaseModel):
    """What to compute: the rows whose key column ``field`` has one of ``values``."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(min_length=1, max_length=uc.MAX_QUERY_FIELD,
                       pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                       description="the product's key column (its key_column; 422 "
                                   "query.field otherwise, or if it declares none)")
    values: list[JsonValue] = Field(
        min_length=1, max_length=uc.MAX_QUERY_VALUES,
        json_schema_extra={"items": {"type": "string", "minLength": 1,
                                     "maxLength": uc.MAX_QUERY_VALUE}},
        description=f"1 to {uc.MAX_QUERY_VALUES} distinct non-empty strings of at most "
                    f"{uc.MAX_QUERY_VALUE} characters (each checked as query.values[i])")


class OrderCreate(BaseModel):
    product_id: Id = Field(description="a listed product")
    purpose: Annotated[str, NoNul] = Field(min_length=1, max_length=5000,
                                           description="the declared purpose")
    query: DataQuery | None = Field(default=None, description="what execution 1 computes")


class QuerySubmission(BaseModel):
    query: DataQuery


class QueryAnswer(CommandAnswer):
    order_id: str
    execution: int = Field(description="the execution this query asks for: 2, 3, …")


class SubmittedQuery(BaseModel):
    execution: int
    seq: int = Field(description="seq of its contract.query_submitted event")
    query: dict[str, Any]


class UsagePolicy(BaseModel):
    """Usage constraints (使用控制策略); an unknown constraint is refused (fail closed)."""

    model_config = ConfigDict(extra="forbid")

    view_count: Count | None = None
    processing_count: Count | None = None
    download_count: Count | None = None
    query_count: Count | None = Field(default=None, description="codes looked up by hidden "
                                      "queries in the contract, summed over request sizes")
    not_before: Instant | None = None
    not_after: Instant | None = None
    designated_users: list[Name] | None = Field(default=None, description="member ids")
    provider_may_terminate: StrictBool | None = None
    derivatives_need_approval: StrictBool | None = None
    circulation_modes: list[CirculationMode] | None = Field(default=None, min_length=1)
    allowed_fields: list[Name] | None = None
    privacy_budget: Epsilon | None = Field(default=None, description=(
        "差分隐私预算: the total ε the executions of differentially private products may "
        "spend per input dataset under this contract (docs/PRIVACY.md); required for a "
        "product declaring dp unless its authorizations set one, refused for one without"))


class RevenueSplit(BaseModel):
    """Shares in basis points (万分比), summing to exactly 10000."""

    model_config = ConfigDict(extra="forbid")

    developer: BasisPoints
    operator: BasisPoints
    platform: BasisPoints
    provider: BasisPoints

    @model_validator(mode="after")
    def _sums_to_10000(self) -> RevenueSplit:
        total = self.developer + self.operator + self.platform + self.provider
        if total != uc.BASIS_POINTS:
            raise ValueError(f"shares must sum to {uc.BASIS_POINTS} basis points, not {total}")
        return self


assert tuple(RevenueSplit.model_fields) == uc.SPLIT_KEYS
assert set(UsagePolicy.model_fields) == set(policy.KNOWN_KEYS)


class ContractProposal(SignedBody):
    usage_policy: UsagePolicy
    price_fen: StrictInt = Field(ge=0, le=MAX_FEN, description="integer fen (分), never a float")
    revenue_split: RevenueSplit


class Termination(SignedBody):
    reason: Annotated[str, NoNul] = Field(min_length=1, max_length=5000)


class Cancellation(BaseModel):
    reason: Text = ""


class OrderAnswer(CommandAnswer):
    order_id: str
    contract_id: str = Field(description="the same as order_id")
    state: str


class TrialAnswer(OrderAnswer):
    trial_granted: bool


class ProposalAnswer(OrderAnswer):
    required_approvals: list[str] = Field(description="participant ids that must approve")


class ApprovalAnswer(OrderAnswer):
    pending_approvals: list[str]


class UsageCounters(BaseModel):
    """What the contract's usage controls count (the demander's accesses)."""

    views_used: int = Field(default=0, description="views of its results (view_count)")
    downloads_used: int = Field(default=0, description="downloads (download_count)")
    processings_used: int = Field(default=0, description="executions requested or "
                                  "succeeded, of the provider that ran most "
                                  "(processing_count)")
    refused: int = Field(default=0, description="uses refused (usage.refused)")


class OrderView(BaseModel):
    id: str
    contract_id: str
    demander_id: str
    product_id: str
    operator_id: str
    purpose: str
    state: str
    trial_granted: bool
    placed_seq: int | None = Field(
        default=None, description="seq of the order.placed event (it carries the query of "
                                  "execution 1)")
    proposed_seq: int | None = Field(
        default=None, description="seq of the contract.proposed event (it carries the usage "
                                  "policy, price and revenue split); null until proposed")
    trial_seq: int | None = Field(
        default=None, description="seq of the order.trial_granted event: the input "
                                  "providers' nodes run the trial (execution 0 of "
                                  "POST /computations) on their mock data")
    usage_policy: dict[str, Any] | None = Field(description="null until the contract is proposed")
    price_fen: int | None
    revenue_split: dict[str, int] | None
    required_approvals: list[str]
    approvals: list[str]
    pending_approvals: list[str]
    termination_reason: str | None
    cancellation_reason: str | None
    placed_at: str
    proposed_at: str | None
    accepted_at: str | None
    approved_at: str | None
    approved_seq: int | None = Field(
        default=None, description="seq of the contract.approved event (GET /ledger/events/{seq})")
    query: dict[str, Any] | None = Field(default=None,
                                         description="the order's query: execution 1")
    executions: int = Field(default=0, description="executions asked for: 0 until the "
                                                   "contract is approved, then 1 + queries")
    queries: list[SubmittedQuery] = Field(default_factory=list,
                                          description="the queries of executions 2, 3, …")
    closed_at: str | None
    usage: UsageCounters = Field(default_factory=lambda: UsageCounters(),
                                 description="the contract's usage so far, counted from "
                                 "its delivery.accessed and computations (read model)")
    privacy_budget: dict[str, BudgetLine] | None = Field(default=None, description=(
        "input dataset id → its privacy budget (差分隐私预算) under the contract, from the "
        "log's privacy.budget_spent; null unless the product declares dp or the contract "
        "sets a privacy_budget"))
    updated_at: str
    version: int


@router.post("", status_code=201, response_model=OrderAnswer)
async def place_order(body: OrderCreate, cmd: CommandsDep) -> JSONResponse:
    """An admitted demander orders a listed product for a declared purpose, optionally with
    the query of execution 1 (``contract.approved`` asks for it): on the product's
    ``key_column`` only (422 naming ``query.field`` otherwise)."""
    query = None if body.query is None else body.query.model_dump()
    return answer(await cmd.run(uc.place_order, product_id=body.product_id,
                                purpose=body.purpose, query=query), 201)


@router.post("/{order_id}/queries", status_code=201, response_model=QueryAnswer)
async def submit_query(order_id: str, body: QuerySubmission, cmd: CommandsDep) -> JSONResponse:
    """The order's demander asks for the next execution (2, 3, …) of its approved contract
    (``contract.query_submitted``), with a query on the product's ``key_column`` (422
    naming ``query.field`` otherwise); 409 unless the contract is approved.

    409 too, writing nothing, when the execution would exceed the contract's
    ``processing_count`` (``detail``: ``count_exhausted: the contract's processing_count N
    is used up …``), counted as a node's request of it is: the earlier executions requested,
    succeeded or asked for and not yet requested, failed ones free; with several input
    providers, refused once no provider may still run it.
    """
    return answer(await cmd.run(computation.submit_query, order_id,
                                query=body.query.model_dump()), 201)


@router.post("/{order_id}/trial", response_model=TrialAnswer)
async def grant_trial(order_id: str, cmd: CommandsDep) -> JSONResponse:
    """The order's operator or the platform lets the demander try the product on mock data
    (试用), once per order, before the contract is approved (409 otherwise).

    ``order.trial_granted`` is seen by the owners of the product's input datasets: their
    nodes then run the trial, execution 0 of ``POST /computations``, on their datasites'
    mock data, and the result is delivered to the demander like any other
    (``GET /deliveries/{id}/result``)."""
    return answer(await cmd.run(uc.grant_trial, order_id))


@router.post("/{order_id}/contract", response_model=ProposalAnswer)
async def propose_contract(order_id: str, body: ContractProposal,
                           cmd: CommandsDep) -> JSONResponse:
    """The order's operator proposes the contract: usage policy, price, revenue split."""
    return answer(await cmd.run(
        uc.propose_contract, order_id,
        usage_policy=body.usage_policy.model_dump(exclude_none=True),
        price_fen=body.price_fen, revenue_split=body.revenue_split.model_dump(),
        signed=body.signed()))


@router.post("/{order_id}/contract/acceptance", response_model=OrderAnswer)
async def accept_contract(order_id: str, cmd: CommandsDep,
                          body: SignedBody | None = None) -> JSONResponse:
    """The order's demander accepts the proposed contract (a signed decision: the body is
    its signature, ``{}`` signed)."""
    return answer(await cmd.run(uc.accept_contract, order_id, signed=_signed(body)))


@router.post("/{order_id}/contract/approvals", response_model=ApprovalAnswer)
async def approve_contract(order_id: str, cmd: CommandsDep,
                           body: SignedBody | None = None) -> JSONResponse:
    """A required party approves once (a signed decision: the body is its signature, ``{}``
    signed); the last approval puts the contract in force."""
    return answer(await cmd.run(uc.approve_contract, order_id, signed=_signed(body)))


@router.post("/{order_id}/contract/termination", response_model=OrderAnswer)
async def terminate_contract(order_id: str, body: Termination, cmd: CommandsDep) -> JSONResponse:
    """The operator, the regulator, or a party provider (if the policy allows) ends it."""
    return answer(await cmd.run(uc.terminate_contract, order_id, reason=body.reason,
                                signed=body.signed()))


def _signed(body: SignedBody | None) -> Signed:
    """The signature of a decision whose body is only its signature (none sent: unsigned)."""
    return Signed() if body is None else body.signed()


@router.post("/{order_id}/cancellation", response_model=OrderAnswer)
async def cancel_order(order_id: str, body: Cancellation, cmd: CommandsDep) -> JSONResponse:
    """The demander cancels the order before the contract is approved (terminal)."""
    return answer(await cmd.run(uc.cancel_order, order_id, reason=body.reason))


@router.get("", response_model=list[OrderView])
def list_orders(reader: ReaderDep, state: Annotated[State | None, Query()] = None,
                product_id: Annotated[str | None, Query(max_length=200)] = None,
                ) -> list[dict[str, Any]]:
    """The orders the caller is a party to (all of them for the regulator and the platform)."""
    return _with_usage(reader, visible_rows(reader, q.ORDERS, state=state,
                                            product_id=product_id))


@router.get("/{order_id}", response_model=OrderView)
def get_order(order_id: str, reader: ReaderDep) -> dict[str, Any]:
    """One order with its contract terms, for its parties (the owners of the product's input
    datasets from placement), the regulator and the platform."""
    return _with_usage(reader, [visible_row(reader, q.ORDERS, "order", order_id)])[0]


def _with_usage(reader: ReaderDep, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with each contract's usage counters (``projections.usage.counters``) and
    privacy budget (``projections.privacy_budget.contract_budgets``)."""
    with reader.connect() as conn:
        counted = usage_q.counters(conn, [r["id"] for r in rows])
        budgets = budget_q.contract_budgets(conn, rows)
    return [{**r, "usage": counted[r["id"]], "privacy_budget": budgets[r["id"]]} for r in rows]
