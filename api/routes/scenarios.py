"""Scenarios (应用场景): an operator applies, the expert group reviews, the regulator decides."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CommandsDep, ReaderDep
from api.fields import NAME, TEXT, CirculationMode, SignedBody
from api.routes.common import CommandAnswer, CommandRoute, answer, visible_row, visible_rows
from domain import scenario as uc
from projections import scenarios as q

router = APIRouter(prefix="/scenarios", tags=["scenarios"], route_class=CommandRoute)

Verdict = Literal["approve", "reject"]
ScenarioState = Literal["submitted", "approved", "rejected", "suspended"]
assert get_args(Verdict) == uc.VERDICTS

FieldName = Annotated[str, Field(min_length=1, max_length=200)]


class DatasetSelection(BaseModel):
    """Fields of one dataset, each dataset named once per request."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(min_length=1, max_length=100)
    fields: list[FieldName] = Field(min_length=1, max_length=1000)


class ScenarioCreate(BaseModel):
    title: str = NAME
    purpose: str = Field(min_length=1, max_length=5000, description="what the data is used for")
    sector: str = Field(min_length=1, max_length=200, description="e.g. finance, healthcare")
    requested: list[DatasetSelection] = Field(
        min_length=1, max_length=100, description="published datasets and the fields wanted")
    circulation_mode: CirculationMode = Field(description="L4 datasets never circulate as "
                                              "plaintext")


class OpinionCreate(SignedBody):
    verdict: Verdict
    comment: str = TEXT


class ScenarioDecision(SignedBody):
    approve: bool
    comment: str = Field(default="", max_length=5000,
                         description="required (non-empty) when rejecting")


class Suspension(BaseModel):
    reason: str = Field(min_length=1, max_length=5000)


class ScenarioAnswer(CommandAnswer):
    scenario_id: str
    state: ScenarioState


class OpinionAnswer(ScenarioAnswer):
    opinions: int = Field(description="opinions recorded so far")


class OpinionView(BaseModel):
    expert_id: str = Field(description="the expert member's id")
    verdict: Verdict
    comment: str
    at: str


class ScenarioView(BaseModel):
    id: str
    operator_id: str
    title: str
    purpose: str
    sector: str
    requested: list[DatasetSelection]
    circulation_mode: CirculationMode
    state: ScenarioState
    opinion_count: int
    submitted_at: str
    decided_at: str | None
    decision_comment: str | None = Field(description="the approval comment or rejection reason")
    suspended_at: str | None
    suspension_reason: str | None
    updated_at: str
    version: int = Field(description="the scenario's stream version")


class ScenarioDetail(ScenarioView):
    opinions: list[OpinionView]


@router.post("", status_code=201, response_model=ScenarioAnswer)
async def submit_scenario(body: ScenarioCreate, cmd: CommandsDep) -> JSONResponse:
    """An operator applies for a scenario over published datasets (一场景一审核)."""
    return answer(await cmd.run(uc.submit_scenario, title=body.title, purpose=body.purpose,
                                sector=body.sector,
                                requested=[r.model_dump() for r in body.requested],
                                circulation_mode=body.circulation_mode), 201)


@router.post("/{scenario_id}/opinions", status_code=201, response_model=OpinionAnswer)
async def record_opinion(scenario_id: str, body: OpinionCreate, cmd: CommandsDep) -> JSONResponse:
    """An expert of the regulator's expert group (专家组) gives one review opinion."""
    return answer(await cmd.run(uc.record_opinion, scenario_id, verdict=body.verdict,
                                comment=body.comment, signed=body.signed()), 201)


@router.post("/{scenario_id}/decision", response_model=ScenarioAnswer)
async def decide_scenario(scenario_id: str, body: ScenarioDecision,
                          cmd: CommandsDep) -> JSONResponse:
    """A regulator admin approves (needs a majority of approving opinions) or rejects."""
    return answer(await cmd.run(uc.decide_scenario, scenario_id, approve=body.approve,
                                comment=body.comment, signed=body.signed()))


@router.post("/{scenario_id}/suspension", response_model=ScenarioAnswer)
async def suspend_scenario(scenario_id: str, body: Suspension, cmd: CommandsDep) -> JSONResponse:
    """The regulator suspends an approved scenario (terminal)."""
    return answer(await cmd.run(uc.suspend_scenario, scenario_id, reason=body.reason))


@router.get("", response_model=list[ScenarioView])
def list_scenarios(reader: ReaderDep,
                   state: Annotated[ScenarioState | None, Query()] = None,
                   operator_id: Annotated[str | None, Query(max_length=100)] = None,
                   ) -> list[dict[str, Any]]:
    """Scenarios the caller submitted or whose datasets it provides; all of them for the
    regulator and the platform."""
    return visible_rows(reader, q.SCENARIOS, state=state, operator_id=operator_id)


@router.get("/{scenario_id}", response_model=ScenarioDetail)
def get_scenario(scenario_id: str, reader: ReaderDep) -> dict[str, Any]:
    """One scenario with its expert opinions (404 unless the caller may see it)."""
    return visible_row(reader, q.SCENARIOS, "scenario", scenario_id)
