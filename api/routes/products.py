"""Products (数据产品): registration by an operator, listing review (上架), delisting (下架)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from api.deps import CommandsDep, ReaderDep
from api.fields import Epsilon, Id, JsonObject, Money, Name, NoNul, Reason, SignedBody, Text
from api.routes.common import CommandAnswer, CommandRoute, answer, visible_row, visible_rows
from domain import product as uc
from projections import products as q

router = APIRouter(prefix="/products", tags=["products"], route_class=CommandRoute)

Kind = Literal["dataset", "api", "model", "verification"]
State = Literal["registered", "listing_requested", "listed", "delisted"]
assert get_args(Kind) == uc.KINDS


class InputSelection(BaseModel):
    """One input: a dataset and the fields the product reads from it."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: Id
    fields: list[Name] = Field(min_length=1)


class JointDeclaration(BaseModel):
    """A joint output (联合计算): each input provider computes its part on its own datasite,
    masked so that only the sum over the providers is recovered (docs/SECAGG.md)."""

    model_config = ConfigDict(extra="forbid")

    value_columns: list[Name] = Field(min_length=1, max_length=uc.MAX_VALUE_COLUMNS,
                                      description="output columns of type integer or number, "
                                      "summed over the providers key by key")
    min_providers: StrictInt = Field(default=2, ge=uc.JOINT_PROVIDERS[0],
                                     le=uc.JOINT_PROVIDERS[1], description="the inputs must "
                                     "belong to at least this many providers")
    deadline_seconds: StrictInt = Field(default=600, ge=uc.JOINT_DEADLINE_S[0],
                                        le=uc.JOINT_DEADLINE_S[1], description="how long an "
                                        "execution waits for every provider's part")


class DpColumn(BaseModel):
    """A noised column: the most one person's record can change its value (Δ)."""

    model_config = ConfigDict(extra="forbid")

    sensitivity: Epsilon = Field(description="Δ > 0 (decimal text such as \"1\" or an "
                                 "integer, at most 10^12): the noise's scale is Δ / (ε / n)")


class DpDeclaration(BaseModel):
    """Differential privacy (差分隐私) of an aggregate output (docs/PRIVACY.md): the compute
    node adds Laplace noise to each listed column before the result leaves the datasite,
    and each execution spends ``epsilon`` of every input dataset's privacy budget."""

    model_config = ConfigDict(extra="forbid")

    epsilon: Epsilon = Field(description="ε per execution (split evenly over the columns)")
    columns: dict[Name, DpColumn] = Field(min_length=1, max_length=32, description=(
        "output columns of type integer (not the key column) → their sensitivity"))


class ProductCreate(BaseModel):
    scenario_id: Id = Field(description="the operator's approved scenario")
    authorization_ids: list[Id] = Field(min_length=1, description="live authorizations of "
                                        "that scenario covering every input")
    name: Name
    kind: Kind
    description: Text = ""
    code: Annotated[str, NoNul] = Field(
        min_length=1, max_length=1_000_000,
        description="the computation's source; the compute node checks its SHA-256")
    code_sha256: str | None = Field(default=None, pattern="^[0-9a-fA-F]{64}$",
                                    description="optional: refused unless it matches the code")
    inputs: list[InputSelection] = Field(min_length=1)
    output_schema: JsonObject
    key_column: Name | None = Field(
        default=None, description="the output column a query may name: a property of "
        "output_schema (or of its items) and one of the inputs' fields; null (the default): "
        "the product takes no query")
    quality_report: Text = ""
    price_fen: Money
    developer_id: Id | None = Field(default=None, description="an admitted developer, if any")
    joint: JointDeclaration | None = Field(default=None, description=(
        "a joint output: needs a key_column of type string and inputs of at least "
        "min_providers providers; its orders take no clear query (hidden queries only). "
        "null (the default): each provider's result is delivered on its own"))
    dp: DpDeclaration | None = Field(default=None, description=(
        "differential privacy of an aggregate output: noised on the datasite, metered "
        "against the contracts' and authorizations' privacy_budget; its output_schema must "
        "be a table (items with additionalProperties false) of the key column and the dp "
        "columns only. null (the default): no noise; refused (422 dp) under an "
        "authorization setting a privacy_budget on an input dataset. Not for a joint "
        "product"))


class ListingDecision(SignedBody):
    approve: bool
    comment: Text = Field(default="", description="required to reject")


class Delisting(BaseModel):
    reason: Reason


class ProductAnswer(CommandAnswer):
    product_id: str
    state: str


class ProductRegistered(ProductAnswer):
    code_sha256: str


class ProductView(BaseModel):
    id: str
    operator_id: str
    developer_id: str | None
    scenario_id: str
    authorization_ids: list[str]
    name: str
    kind: str
    description: str
    code: str | None = Field(description="only for the owning operator, the developer, "
                             "the regulator and the platform")
    code_sha256: str
    inputs: list[dict[str, Any]]
    output_schema: dict[str, Any]
    key_column: str | None = Field(default=None, description="the output column a query may "
                                   "name; null: the product takes no query")
    joint: dict[str, Any] | None = Field(default=None, description=(
        "the joint output {value_columns, min_providers, deadline_seconds}; null: plain"))
    dp: dict[str, Any] | None = Field(default=None, description=(
        "differential privacy {epsilon, columns: {column: {sensitivity}}} (decimal text); "
        "null: no noise"))
    sensitive_fields: dict[str, list[str]] = Field(
        default_factory=dict, description="input dataset id → its fields marked sensitive or "
        "personal when the product was registered (recorded by the platform, in "
        "product.registered): outputs must not carry them unless the contract allows")
    field_grades: dict[str, dict[str, dict[str, str]]] = Field(
        default_factory=dict, description="input dataset id → field → {grade, kind} when the "
        "product was registered (recorded by the platform, in product.registered): the "
        "compute node masks the result's columns named like these fields by them "
        "(docs/PRIVACY.md, Masking)")
    quality_report: str
    price_fen: int
    state: str
    review_comment: str | None
    delist_reason: str | None
    registered_at: str
    registered_seq: int | None = Field(
        default=None, description="seq of the product.registered event (it carries the "
                                  "code's SHA-256, the inputs, the key column and the "
                                  "sensitive fields a compute node checks)")
    listed_at: str | None
    delisted_at: str | None
    updated_at: str
    version: int


@router.post("", status_code=201, response_model=ProductRegistered)
async def register_product(body: ProductCreate, cmd: CommandsDep) -> JSONResponse:
    """An operator registers a product over inputs covered by live authorizations."""
    result = await cmd.run(uc.register_product, uc.ProductDraft(
        scenario_id=body.scenario_id, authorization_ids=list(body.authorization_ids),
        name=body.name, kind=body.kind, description=body.description, code=body.code,
        inputs=[i.model_dump() for i in body.inputs], output_schema=body.output_schema,
        quality_report=body.quality_report, price_fen=body.price_fen,
        developer_id=body.developer_id, code_sha256=body.code_sha256,
        key_column=body.key_column,
        joint=None if body.joint is None else body.joint.model_dump(),
        dp=None if body.dp is None else body.dp.model_dump()))
    return answer(result, 201)


@router.post("/{product_id}/listing-request", response_model=ProductAnswer)
async def request_listing(product_id: str, cmd: CommandsDep) -> JSONResponse:
    """The owning operator asks the platform to list the product."""
    return answer(await cmd.run(uc.request_listing, product_id))


@router.post("/{product_id}/listing-decision", response_model=ProductAnswer)
async def decide_listing(product_id: str, body: ListingDecision,
                         cmd: CommandsDep) -> JSONResponse:
    """The platform lists the product (上架) or sends it back to registered (with a reason)."""
    return answer(await cmd.run(uc.decide_listing, product_id, approve=body.approve,
                                comment=body.comment, signed=body.signed()))


@router.post("/{product_id}/delisting", response_model=ProductAnswer)
async def delist_product(product_id: str, body: Delisting, cmd: CommandsDep) -> JSONResponse:
    """The platform, the owning operator or the regulator delists the product (下架, terminal)."""
    return answer(await cmd.run(uc.delist_product, product_id, reason=body.reason))


@router.get("", response_model=list[ProductView])
def list_products(reader: ReaderDep, state: Annotated[State | None, Query()] = None,
                  operator_id: Annotated[str | None, Query(max_length=200)] = None,
                  ) -> list[dict[str, Any]]:
    """The storefront (listed and delisted products) plus the caller's own products;
    every product for the regulator and the platform."""
    return visible_rows(reader, q.PRODUCTS, state=state, operator_id=operator_id)


@router.get("/{product_id}", response_model=ProductView)
def get_product(product_id: str, reader: ReaderDep) -> dict[str, Any]:
    """One product (its code only for its operator, developer, the regulator, the platform)."""
    return visible_row(reader, q.PRODUCTS, "product", product_id)
