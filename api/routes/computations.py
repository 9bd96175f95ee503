"""Computations and deliveries (计算/交付): what a provider's compute node reports.

On ``contract.approved`` a party provider's node asks for execution ``n`` of the contract
(``POST /computations``: idempotent per contract, execution number and provider), runs the
product's registered code on its PySyft datasite and posts the result. Execution 0 is the
trial (试用): on ``order.trial_granted``, before approval, each input provider's node runs
the same code on its datasite's mock data and the result goes to the demander the same way. A request the ledger refuses
for a policy reason is recorded as a failed computation (``reason``: ``code: sentence``). The result's bytes are kept
off the log (only their SHA-256 is recorded) and served to the demander. The node also
records the data it loaded onto its datasite (``POST /datasets/{id}/data-loaded``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.concurrency import run_in_threadpool

from api.deps import CommandsDep, ReaderDep, Services
from api.errors import TOO_LARGE
from api.fields import Id, JsonValue, Name, NoNul
from api.routes.common import (
    CommandAnswer,
    ReadRoute,
    answer,
    posting,
    run_retried,
    visible_row,
    visible_rows,
)
from api.watermarking import watermark_result
from core.canonical import CanonicalEncodingError
from delivery import results
from domain import computation as uc
from domain import dataset as datasets_uc
from domain.errors import DomainError, InvalidInput, WrongState
from domain.product import Product
from domain.succeeded import verify_masked
from projections import computations as q

router = APIRouter(tags=["computations"], route_class=ReadRoute)

State = Literal["requested", "succeeded", "failed"]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$", description="hex SHA-256")]
Count = Annotated[StrictInt, Field(ge=0, le=2**53 - 1)]


class ComputationRequest(BaseModel):
    contract_id: Id = Field(description="an approved contract (the order id); for the "
                                        "trial (execution 0) an order not yet approved")
    execution: StrictInt = Field(ge=0, le=2**31 - 1,
                                 description="execution number: 0 the trial on mock data, "
                                             "then from 1; with the contract id and the "
                                             "provider, the idempotency key")
    datasite: Name = Field(description="the PySyft datasite that will run the code")
    code_sha256: Sha256 = Field(description="the SHA-256 of the code the node will run; "
                                            "must be the listed product's")


class ResultReport(BaseModel):
    result: JsonValue = Field(description="the result as JSON (integers, strings, no floats); "
                                    "its SHA-256 over the canonical bytes is recorded")
    input_hashes: dict[Annotated[str, NoNul], Sha256] = Field(
        description="input dataset id → SHA-256 of the private data the code read (of the "
                    "mock table for the trial, execution 0)")
    result_rows: Count
    datasite: Name
    masking: dict[Annotated[str, NoNul], Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, max_length=1000, description=(
            "column → the masking rule the node applied before the result left the datasite "
            "(\"<grade>:<kind>:<rule>\", e.g. \"L3:phone:partial\"; docs/PRIVACY.md), checked "
            "against the product's field_grades and recorded on computation.succeeded; "
            "omitted: nothing masked"))


class FailureReport(BaseModel):
    reason: Annotated[str, NoNul] = Field(min_length=1, max_length=uc.MAX_REASON)


class SchemaColumn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    type: str = Field(min_length=1, max_length=100)


class DataLoaded(BaseModel):
    rows: Count = Field(description="rows of the private data")
    schema_: list[SchemaColumn] = Field(alias="schema", min_length=1, max_length=1000)
    sha256: Sha256 = Field(description="SHA-256 of the private data file")
    mock_rows: Count = Field(description="rows of its mock")


class ComputationAnswer(CommandAnswer):
    computation_id: str
    contract_id: str
    execution: int
    state: str
    existing: bool = Field(description="true: this execution was already requested or "
                                       "reported; nothing was written, unless it was still "
                                       "requested and the policy now refuses it (then "
                                       "computation.failed is, and state is failed)")
    reason: str | None = Field(default=None, description=(
        "null unless state is failed: a stable code, ': ', then a sentence naming the ids; "
        "codes of a policy refusal: " + ", ".join(uc.REFUSAL_CODES)))
    joint_id: str | None = Field(default=None, description=(
        "POST /computations: the joint execution this computation is a part of (a joint "
        "product's execution >= 1: post its masked part, POST "
        "/computations/{id}/masked-part); null for a plain product or the trial"))


class ResultAnswer(ComputationAnswer):
    result_sha256: str


class DataLoadedAnswer(CommandAnswer):
    dataset_id: str
    state: str
    sha256: str
    rows: int


class ComputationView(BaseModel):
    id: str
    computation_id: str
    contract_id: str
    execution: int
    trial: bool = Field(description="execution 0: the trial (试用), run on mock data")
    product_id: str
    demander_id: str
    operator_id: str
    provider_id: str = Field(description="the provider whose node requested it")
    code_sha256: str
    datasite: str
    dataset_ids: list[str]
    state: State
    input_hashes: dict[str, str] | None
    result_sha256: str | None
    result_rows: int | None
    masking: dict[str, str] | None = Field(default=None, description=(
        "column → the masking rule the node applied to the result (computation.succeeded); "
        "null until it succeeded"))
    failure_reason: str | None
    reason: str | None = Field(default=None, description="the same as failure_reason")
    requested_at: str
    finished_at: str | None
    updated_at: str
    version: int


@router.post("/computations", status_code=201, response_model=ComputationAnswer,
             responses={200: {"model": ComputationAnswer,
                              "description": "this execution already exists; nothing written"}})
async def request_computation(body: ComputationRequest, cmd: CommandsDep) -> JSONResponse:
    """A party provider's compute node asks to run execution ``n`` of an approved contract;
    ``n = 0`` is the trial (试用), the code run on the datasite's mock data before approval.

    201 with the new computation, ``state: "requested"``; 200 with ``existing: true`` (and
    its current state and reason) if this provider already requested that execution. An
    existing execution still ``requested`` is checked again as a new one would be: if the
    policy now refuses it (contract terminated, authorization revoked, scenario suspended,
    …; for the trial, the trial's check), ``computation.failed`` is recorded and the answer
    is 200, ``existing: true``, ``state: "failed"`` with the reason, so a node restarting
    after the policy changed does not run the code.

    When the ledger check refuses for a policy reason, the refusal is recorded:
    ``computation.requested`` + ``computation.failed`` are written at once and the answer is
    201 with ``state: "failed"`` and ``reason`` = ``code: sentence``, the code one of
    ``contract_not_approved``, ``contract_terminated``, ``outside_contract_window`` (the
    contract's usage window), ``count_exhausted`` (this provider's
    earlier executions requested or succeeded reached the contract's ``processing_count``;
    failed ones do not count),
    ``code_hash_mismatch``, ``product_not_listed``, ``authorization_revoked``,
    ``authorization_expired`` (or not yet valid), ``no_authorization``.

    The trial (``n = 0``) may be asked for by a provider owning an input dataset of the
    ordered product (the contract may not be proposed yet). Its policy codes are
    ``trial_not_granted`` (no ``order.trial_granted``), ``trial_after_approval`` (the
    contract is approved, terminated or cancelled), ``code_hash_mismatch`` and
    ``product_not_listed``; authorizations and the processing count are not checked (mock
    data is not the provider's data) and execution 1 does not need it.

    Other errors write nothing: 422 invalid field, 403 the caller is not a provider party to
    the contract (for the trial: owns no input dataset of the product), 404 unknown
    contract, 409 execution ``n - 1`` (``n`` ≥ 2) was never requested by this provider or
    execution ``n`` was not asked for.
    """
    result = await run_retried(cmd, uc.request_computation, contract_id=body.contract_id,
                           execution=body.execution, datasite=body.datasite,
                           code_sha256=body.code_sha256)
    return answer(result, 200 if result.body.get("existing") else 201)


@router.post("/computations/{computation_id}/result", response_model=ResultAnswer,
             responses=TOO_LARGE)
async def record_result(computation_id: str, body: ResultReport,
                        cmd: CommandsDep) -> JSONResponse:
    """The requesting provider posts the result: its SHA-256 is recorded with the delivery,
    its bytes are stored off the log. Posting the same result again writes nothing to the
    log (and stores the bytes if they are not stored yet).

    The bytes are stored first, under (computation id, their SHA-256), and only then is the
    command run that records that SHA-256: a crash between the two leaves bytes no delivery
    names (dropped later by the background sweep), never a delivery without its bytes. A
    post the command refuses keeps no bytes: one bound to be refused (another provider's,
    one for a failed computation or other bytes after success) is refused before anything
    is stored, and bytes stored for a post refused afterwards are dropped.

    For an execution ≥ 1 the policy is checked again now: the contract still approved (not
    terminated) and inside its usage window, its scenario approved, each input still covered
    by a live authorization. If not, ``computation.failed`` is recorded with the reason
    ``policy_lapsed: …``, nothing is delivered, and the answer is 409 whose ``detail`` is
    that reason. The trial (execution 0) is not checked against the contract.

    A body larger than ``DATALEDGER_MAX_RESULT_BYTES`` is answered 413 ``too_large``, and
    nothing is stored.

    ``input_hashes`` name exactly the computation's input datasets; for executions ≥ 1 each
    must equal the private file's hash of the dataset's last ``dataset.data_loaded`` (if
    any); for the trial (execution 0) they are the hashes of the mock tables read, not
    checked against it.

    The posted result must be masked as the product's ``field_grades`` call for (the node
    masks before the result leaves the datasite; docs/PRIVACY.md, Masking): the server masks
    it again (the masks are idempotent) and refuses 422 ``result``, storing nothing, if that
    changes anything (naming the column and its grade, never a value), 422 ``masking`` if
    the node's ``masking`` report differs from the server's; the server's own is recorded.

    The demander is never served the posted bytes: the server watermarks the result for
    this delivery (its integers outside the product's key column, by at most 1 each;
    docs/PRIVACY.md), stores that copy beside the posted one and records its SHA-256 on
    ``delivery.made`` (``delivered_sha256``, with ``watermark``)."""
    try:
        content, digest = results.encode(body.result)
    except CanonicalEncodingError as exc:
        raise InvalidInput(("result" + exc.path.removeprefix("$")), exc.reason) from None
    c = cmd.container
    async with posting(computation_id):
        # only the requesting provider may store bytes (else anyone could fill the store),
        # and only for a computation that still takes this result
        await run_in_threadpool(c.ledger.check, uc.check_reporter, cmd.actor, computation_id,
                                digest)
        applied = await run_in_threadpool(_masked, c, computation_id, body)
        served, marked = await run_in_threadpool(watermark_result, c, computation_id,
                                                 body.result, content)
        await run_in_threadpool(results.put, c.engine, computation_id, content)
        await run_in_threadpool(results.put, c.engine, computation_id, marked)
        digests = {digest, served.sha256}
        try:
            done = await cmd.run(uc.record_success, computation_id,
                                 result=uc.Reported(digest, body.result_rows, applied),
                                 input_hashes=dict(body.input_hashes),
                                 datasite=body.datasite, delivered=served)
        except DomainError:
            for kept in digests:
                await run_in_threadpool(results.discard, c.engine, c.store, computation_id,
                                        kept)
            raise
        if done.body["state"] == "failed":  # policy_lapsed: recorded, never delivered
            for kept in digests:
                await run_in_threadpool(results.discard, c.engine, c.store, computation_id,
                                        kept)
            raise WrongState(done.body["reason"], state="failed")
    return answer(done)


def _masked(container: Services, computation_id: str, body: ResultReport) -> dict[str, str]:
    """The masking the server applies to the posted result with the product's grades
    (``domain.succeeded.verify_masked``): 422 ``result`` if it would change anything (the
    node did not mask it), 422 ``masking`` if the node's report differs. Blocking."""
    store = container.store
    comp = uc.Computation.replay(computation_id, store.load(computation_id))
    product = Product.replay(comp.product_id, store.load(comp.product_id))
    return verify_masked(body.result, product.field_grades, body.masking)


@router.post("/computations/{computation_id}/failure", response_model=ComputationAnswer)
async def record_failure(computation_id: str, body: FailureReport,
                         cmd: CommandsDep) -> JSONResponse:
    """The requesting provider reports that the execution failed (terminal)."""
    return answer(await run_retried(cmd, uc.record_failure, computation_id,
                                    reason=body.reason))


@router.get("/computations", response_model=list[ComputationView])
def list_computations(reader: ReaderDep,
                      contract_id: Annotated[str | None, Query(max_length=200)] = None,
                      state: Annotated[State | None, Query()] = None) -> list[dict[str, Any]]:
    """The computations of the caller's contracts (as demander, operator or requesting
    provider); all of them for the regulator and the platform."""
    return visible_rows(reader, q.COMPUTATIONS, contract_id=contract_id, state=state)


@router.get("/computations/{computation_id}", response_model=ComputationView)
def get_computation(computation_id: str, reader: ReaderDep) -> dict[str, Any]:
    """One computation, for its demander, operator and requesting provider."""
    return visible_row(reader, q.COMPUTATIONS, "computation", computation_id)


@router.post("/datasets/{dataset_id}/data-loaded", response_model=DataLoadedAnswer,
             tags=["datasets"])
async def record_data_loaded(dataset_id: str, body: DataLoaded,
                             cmd: CommandsDep) -> JSONResponse:
    """The owning provider records that its datasite holds the dataset's private data (by
    SHA-256; the data never leaves the datasite) and a mock of it."""
    return answer(await cmd.run(datasets_uc.record_data_loaded, dataset_id, rows=body.rows,
                                schema=[c.model_dump() for c in body.schema_],
                                sha256=body.sha256, mock_rows=body.mock_rows))
