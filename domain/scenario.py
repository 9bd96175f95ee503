"""Scenario (应用场景): an operator's application to use datasets for one purpose, reviewed
by the regulator's expert group and decided by the regulator (一场景一审核)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.event import Event
from domain.base import Aggregate, Context, applies, new_id
from domain.dataset import Dataset, require_text, validate_selection
from domain.errors import (
    InvalidInput,
    ScenarioNotApproved,
    ScenarioSuspendedError,
    SeparationOfDuties,
    WrongState,
)
from domain.permissions import permit
from domain.policy import CIRCULATION_MODES
from domain.signing import Sign, Signed, signature_check
from domain.unit_of_work import UnitOfWork

VERDICTS = ("approve", "reject")


@dataclass(frozen=True, kw_only=True)
class ScenarioSubmitted(Event):
    """An operator applied for a scenario: purpose, sector, requested datasets and fields."""

    type_name = "scenario.submitted"
    operator_id: str
    title: str
    purpose: str
    sector: str
    requested: list[dict[str, Any]]
    circulation_mode: str


@dataclass(frozen=True, kw_only=True)
class ScenarioOpinionRecorded(Event):
    """An expert of the regulator's expert group (专家组) gave a review opinion."""

    type_name = "scenario.opinion_recorded"
    class_version = 2
    expert_id: str
    verdict: str
    comment: str
    #: the deciding member's signature (core.decision); null: unsigned (development mode)
    signature: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 was not signed."""
        state["signature"] = None


@dataclass(frozen=True, kw_only=True)
class ScenarioApproved(Event):
    """The regulator approved the scenario; providers may now authorize it."""

    type_name = "scenario.approved"
    class_version = 2
    comment: str
    #: the deciding member's signature (core.decision); null: unsigned (development mode)
    signature: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 was not signed."""
        state["signature"] = None


@dataclass(frozen=True, kw_only=True)
class ScenarioRejected(Event):
    """The regulator rejected the scenario; terminal."""

    type_name = "scenario.rejected"
    class_version = 2
    reason: str
    #: the deciding member's signature (core.decision); null: unsigned (development mode)
    signature: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 was not signed."""
        state["signature"] = None


@dataclass(frozen=True, kw_only=True)
class ScenarioSuspended(Event):
    """The regulator suspended an approved scenario; terminal."""

    type_name = "scenario.suspended"
    reason: str


class Scenario(Aggregate):
    """submitted → approved | rejected; approved → suspended. Rejected and suspended are terminal."""

    kind = "scenario"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.state = "new"
        self.operator_id = ""
        self.title = ""
        self.purpose = ""
        self.sector = ""
        self.requested: list[dict[str, Any]] = []
        self.circulation_mode = ""
        self.opinions: dict[str, str] = {}

    # -- queries ----------------------------------------------------------------
    def requested_fields(self, dataset_id: str) -> list[str] | None:
        """The fields requested from ``dataset_id``, or None if it is not requested."""
        for item in self.requested:
            if item["dataset_id"] == dataset_id:
                return list(item["fields"])
        return None

    def require_approved(self) -> None:
        """Raise (409 ``scenario_suspended`` or ``scenario_not_approved``) unless the scenario
        is approved: what rests on it is refused by its state."""
        if self.state != "approved":
            error = ScenarioSuspendedError if self.state == "suspended" else ScenarioNotApproved
            raise error(f"scenario {self.id} is {self.state}, not approved", state=self.state)

    # -- decide -----------------------------------------------------------------
    @classmethod
    def submit(cls, id: str, ctx: Context, *, title: str, purpose: str, sector: str,
               requested: list[dict[str, Any]], circulation_mode: str) -> Scenario:
        """Submit; ``requested`` was validated (and checked against the datasets) by the caller."""
        agg = cls(id)
        agg.trigger(ScenarioSubmitted, ctx, operator_id=ctx.actor.participant_id,
                    title=require_text(title, "title"), purpose=require_text(purpose, "purpose"),
                    sector=require_text(sector, "sector"), requested=requested,
                    circulation_mode=circulation_mode)
        return agg

    def record_opinion(self, ctx: Context, *, verdict: str, comment: str,
                       sign: Sign = lambda: None) -> None:
        self.require_state(["submitted"], "record an opinion")
        if ctx.actor.member_id in self.opinions:
            raise WrongState(f"expert {ctx.actor.member_id} already gave an opinion "
                             f"on scenario {self.id}; one opinion per expert")
        if verdict not in VERDICTS:
            raise InvalidInput("verdict", f"must be one of {', '.join(VERDICTS)}")
        self.trigger(ScenarioOpinionRecorded, ctx, expert_id=ctx.actor.member_id,
                     verdict=verdict, comment=comment, signature=sign())

    def decide(self, ctx: Context, *, approve: bool, comment: str,
               sign: Sign = lambda: None) -> None:
        self.require_state(["submitted"], "decide")
        if ctx.actor.member_id in self.opinions:
            raise SeparationOfDuties(
                f"scenario.decision: member {ctx.actor.member_id} gave an opinion on scenario "
                f"{self.id}; another admin of the regulator decides it", rule="scenario.decision")
        if not approve:
            self.trigger(ScenarioRejected, ctx, reason=require_text(comment, "comment"),
                         signature=sign())
            return
        approvals = sum(v == "approve" for v in self.opinions.values())
        if not self.opinions or approvals * 2 <= len(self.opinions):
            raise WrongState(f"approval needs at least one expert opinion and a majority of "
                             f"approve opinions; {approvals} of {len(self.opinions)} approve")
        self.trigger(ScenarioApproved, ctx, comment=comment, signature=sign())

    def suspend(self, ctx: Context, *, reason: str) -> None:
        self.require_state(["approved"], "suspend")
        self.trigger(ScenarioSuspended, ctx, reason=require_text(reason, "reason"))

    # -- evolve -----------------------------------------------------------------
    @applies(ScenarioSubmitted)
    def _submitted(self, e: ScenarioSubmitted) -> None:
        self.state, self.operator_id, self.title = "submitted", e.operator_id, e.title
        self.purpose, self.sector, self.circulation_mode = e.purpose, e.sector, e.circulation_mode
        self.requested = [{"dataset_id": r["dataset_id"], "fields": list(r["fields"])}
                          for r in e.requested]

    @applies(ScenarioOpinionRecorded)
    def _opinion(self, e: ScenarioOpinionRecorded) -> None:
        self.opinions[e.expert_id] = e.verdict

    @applies(ScenarioApproved)
    def _approved(self, e: ScenarioApproved) -> None:
        self.state = "approved"

    @applies(ScenarioRejected)
    def _rejected(self, e: ScenarioRejected) -> None:
        self.state = "rejected"

    @applies(ScenarioSuspended)
    def _suspended(self, e: ScenarioSuspended) -> None:
        self.state = "suspended"


def _check_requested(uow: UnitOfWork, requested: Any,
                     circulation_mode: str) -> list[dict[str, Any]]:
    """Each requested dataset exists and is published, has the fields, and allows the mode."""
    if circulation_mode not in CIRCULATION_MODES:
        raise InvalidInput("circulation_mode", f"must be one of {', '.join(CIRCULATION_MODES)}")
    items = validate_selection(requested, "requested")
    for i, item in enumerate(items):
        dataset = uow.get(Dataset, item["dataset_id"])
        dataset.require_published()
        missing = dataset.missing_fields(item["fields"])
        if missing:
            raise InvalidInput(f"requested[{i}].fields",
                               f"dataset {dataset.id} has no fields {missing!r}")
        if dataset.classification == "L4" and circulation_mode == "plaintext":
            raise InvalidInput("circulation_mode", f"dataset {dataset.id} is classified L4 and "
                                                   "may not circulate as plaintext")
    return items


# -- use cases ------------------------------------------------------------------
def submit_scenario(uow: UnitOfWork, ctx: Context, *, title: str, purpose: str, sector: str,
                    requested: list[dict[str, Any]], circulation_mode: str) -> dict[str, str]:
    """An operator applies for a scenario over published datasets."""
    permit(ctx.actor, "scenario.submission")
    items = _check_requested(uow, requested, circulation_mode)
    agg = Scenario.submit(new_id(), ctx, title=title, purpose=purpose, sector=sector,
                          requested=items, circulation_mode=circulation_mode)
    uow.add(agg)
    return {"scenario_id": agg.id, "state": agg.state}


def record_opinion(uow: UnitOfWork, ctx: Context, scenario_id: str, *, verdict: str,
                   comment: str, signed: Signed | None = None) -> dict[str, Any]:
    """An expert of the regulator records a review opinion (one per expert; signed)."""
    permit(ctx.actor, "scenario.opinion")
    agg = uow.get(Scenario, scenario_id)
    sign = signature_check(uow, ctx, "scenario.opinion", agg, signed)
    agg.record_opinion(ctx, verdict=verdict, comment=comment, sign=sign)
    return {"scenario_id": agg.id, "state": agg.state, "opinions": len(agg.opinions)}


def decide_scenario(uow: UnitOfWork, ctx: Context, scenario_id: str, *, approve: bool,
                    comment: str, signed: Signed | None = None) -> dict[str, str]:
    """A regulator admin approves (majority of expert opinions) or rejects the scenario
    (signed); not an admin who gave an opinion on it (separation of duties)."""
    permit(ctx.actor, "scenario.decision")
    agg = uow.get(Scenario, scenario_id)
    sign = signature_check(uow, ctx, "scenario.decision", agg, signed)
    agg.decide(ctx, approve=approve, comment=comment, sign=sign)
    return {"scenario_id": agg.id, "state": agg.state}


def suspend_scenario(uow: UnitOfWork, ctx: Context, scenario_id: str, *,
                     reason: str) -> dict[str, str]:
    """The regulator suspends an approved scenario (terminal)."""
    permit(ctx.actor, "scenario.suspension")
    agg = uow.get(Scenario, scenario_id)
    agg.suspend(ctx, reason=reason)
    return {"scenario_id": agg.id, "state": agg.state}
