"""Authorizations (数据授权): a provider lets an approved scenario use its datasets' fields."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import CommandsDep, ReaderDep
from api.fields import JsonObject, SignedBody
from api.routes.common import (
    BudgetLine,
    CommandAnswer,
    CommandRoute,
    answer,
    visible_row,
    visible_rows,
)
from api.routes.scenarios import DatasetSelection
from domain import authorization as uc
from domain.policy import KNOWN_KEYS
from projections import authorizations as q
from projections import privacy_budget as budget_q

router = APIRouter(prefix="/authorizations", tags=["authorizations"], route_class=CommandRoute)

AuthorizationState = Literal["granted", "revoked", "expired"]


class AuthorizationCreate(SignedBody):
    scenario_id: str = Field(min_length=1, max_length=100,
                             description="an approved scenario that requested these datasets")
    datasets: list[DatasetSelection] = Field(
        min_length=1, max_length=100,
        description="the provider's own published datasets and a subset of the requested fields")
    not_before: str = Field(min_length=1, max_length=64,
                            description="ISO-8601 date-time with a UTC offset",
                            examples=["2025-01-01T00:00:00+08:00"])
    not_after: str = Field(min_length=1, max_length=64,
                           description="ISO-8601 date-time with a UTC offset, after not_before",
                           examples=["2026-01-01T00:00:00+08:00"])
    usage_policy: JsonObject = Field(
        description="usage constraints (使用控制策略); unknown keys are refused. Known: "
                    + ", ".join(KNOWN_KEYS),
        examples=[{"processing_count": 100, "circulation_modes": ["ciphertext"]}])
    authorization_id: str | None = Field(
        default=None, min_length=36, max_length=36,
        description="the new authorization's id, a UUID the provider chooses and signs with "
        "the body; without it, the id is derived from the signature. A grant whose id "
        "exists is refused (409 decision_replayed): a signed grant counts once")


class Revocation(SignedBody):
    reason: str = Field(min_length=1, max_length=5000)


class AuthorizationAnswer(CommandAnswer):
    authorization_id: str
    state: AuthorizationState


class AuthorizationView(BaseModel):
    id: str
    provider_id: str = Field(description="the granting provider")
    scenario_id: str
    operator_id: str = Field(description="the scenario's operator, who receives the grant")
    datasets: list[DatasetSelection]
    not_before: str
    not_after: str
    usage_policy: dict[str, Any]
    state: AuthorizationState
    granted_at: str
    ended_at: str | None = Field(description="when it was revoked or recorded as expired")
    revocation_reason: str | None
    granted_seq: int | None = Field(default=None, description="seq of the "
                                    "authorization.granted event (a compute node proves the "
                                    "granted fields from it)")
    privacy_budget: dict[str, BudgetLine] | None = Field(default=None, description=(
        "dataset id → its privacy budget (差分隐私预算) under this authorization: the ε every "
        "contract using it spent (privacy.budget_spent); null without a privacy_budget and "
        "nothing spent"))
    updated_at: str
    version: int = Field(description="the authorization's stream version")


@router.post("", status_code=201, response_model=AuthorizationAnswer)
async def grant_authorization(body: AuthorizationCreate, cmd: CommandsDep) -> JSONResponse:
    """A provider authorizes an approved scenario's operator to use some of its datasets'
    fields between not_before and not_after, under a usage policy."""
    return answer(await cmd.run(uc.grant_authorization, scenario_id=body.scenario_id,
                                datasets=[d.model_dump() for d in body.datasets],
                                not_before=body.not_before, not_after=body.not_after,
                                usage_policy=body.usage_policy, signed=body.signed()), 201)


@router.post("/{authorization_id}/revocation", response_model=AuthorizationAnswer)
async def revoke_authorization(authorization_id: str, body: Revocation,
                               cmd: CommandsDep) -> JSONResponse:
    """The granting provider revokes the authorization (terminal)."""
    return answer(await cmd.run(uc.revoke_authorization, authorization_id, reason=body.reason,
                                signed=body.signed()))


@router.post("/{authorization_id}/expiry", response_model=AuthorizationAnswer)
async def expire_authorization(authorization_id: str, cmd: CommandsDep) -> JSONResponse:
    """The platform records that the authorization's period is over (not before not_after)."""
    return answer(await cmd.run(uc.expire_authorization, authorization_id))


@router.get("", response_model=list[AuthorizationView])
def list_authorizations(reader: ReaderDep,
                        state: Annotated[AuthorizationState | None, Query()] = None,
                        scenario_id: Annotated[str | None, Query(max_length=100)] = None,
                        provider_id: Annotated[str | None, Query(max_length=100)] = None,
                        operator_id: Annotated[str | None, Query(max_length=100)] = None,
                        ) -> list[dict[str, Any]]:
    """Authorizations the caller granted or received; all of them for the regulator and the
    platform."""
    return _with_budget(reader, visible_rows(
        reader, q.AUTHORIZATIONS, state=state, scenario_id=scenario_id,
        provider_id=provider_id, operator_id=operator_id))


@router.get("/{authorization_id}", response_model=AuthorizationView)
def get_authorization(authorization_id: str, reader: ReaderDep) -> dict[str, Any]:
    """One authorization, for its provider and operator (404 for anyone else)."""
    return _with_budget(reader, [visible_row(reader, q.AUTHORIZATIONS, "authorization",
                                             authorization_id)])[0]


def _with_budget(reader: ReaderDep, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with each authorization's privacy budget
    (``projections.privacy_budget.authorization_budgets``)."""
    with reader.connect() as conn:
        budgets = budget_q.authorization_budgets(conn, rows)
    return [{**r, "privacy_budget": budgets[r["id"]]} for r in rows]
