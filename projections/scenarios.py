"""Scenarios (应用场景) and their expert opinions.

A scenario is seen by its operator and by the owners of every dataset it requests
(granted at submission from ``rm_datasets``, which is projected before this table in
the same transaction); its opinions are seen with it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Connection, Integer, String, Table, select

from core.record import LogEntry
from projections import base
from projections.datasets import datasets

KIND = "scenario"

scenarios = base.state_table(
    "rm_scenarios",
    Column("operator_id", String, nullable=False, index=True),
    Column("title", String, nullable=False),
    Column("purpose", String, nullable=False),
    Column("sector", String, nullable=False),
    Column("requested", JSON, nullable=False),
    Column("circulation_mode", String, nullable=False),
    Column("state", String, nullable=False, index=True),
    Column("opinion_count", Integer, nullable=False),
    Column("submitted_at", String, nullable=False),
    Column("decided_at", String, nullable=True),
    Column("decision_comment", String, nullable=True),
    Column("suspended_at", String, nullable=True),
    Column("suspension_reason", String, nullable=True),
)

opinions = Table(
    "rm_scenario_opinions", base.METADATA,
    Column("scenario_id", String, primary_key=True),
    Column("expert_id", String, primary_key=True),
    Column("verdict", String, nullable=False),
    Column("comment", String, nullable=False),
    Column("at", String, nullable=False),
)


def _submitted(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    base.insert_row(conn, scenarios,
        id=entry.originator_id, operator_id=p["operator_id"], title=p["title"],
        purpose=p["purpose"], sector=p["sector"], requested=p["requested"],
        circulation_mode=p["circulation_mode"], state="submitted", opinion_count=0,
        submitted_at=p["at"], updated_at=p["at"], version=entry.version)
    dataset_ids = [item["dataset_id"] for item in p["requested"]]
    owners = conn.execute(select(datasets.c.owner_id).where(datasets.c.id.in_(dataset_ids))
                          .order_by(datasets.c.owner_id)).scalars().all()
    base.grant(conn, KIND, entry.originator_id, p["operator_id"], *owners)


def _opinion(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    base.insert_row(conn, opinions,
        scenario_id=entry.originator_id, expert_id=p["expert_id"], verdict=p["verdict"],
        comment=p["comment"], at=p["at"])
    base.touch(conn, scenarios, entry, p, opinion_count=scenarios.c.opinion_count + 1)


class ScenariosProjection(base.Projection):
    name = "scenarios"
    tables = (scenarios, opinions)
    kinds = (KIND,)

    def handlers(self) -> dict[str, base.EventHandler]:
        return {
            "scenario.submitted": _submitted,
            "scenario.opinion_recorded": _opinion,
            "scenario.approved": base.transition(scenarios, "approved", decided_at="at",
                                                 decision_comment="comment"),
            "scenario.rejected": base.transition(scenarios, "rejected", decided_at="at",
                                                 decision_comment="reason"),
            "scenario.suspended": base.transition(scenarios, "suspended", suspended_at="at",
                                                  suspension_reason="reason"),
        }


class ScenarioListing(base.Listing):
    """Scenarios the viewer submitted or whose datasets it owns (all for those who see
    all); filters: state, operator_id. One scenario comes with its opinions."""

    def find(self, conn: Connection, row_id: str, viewer_id: str,
             sees_all: bool) -> dict[str, Any] | None:
        found = super().find(conn, row_id, viewer_id, sees_all)
        if found is None:
            return None
        rows = conn.execute(select(opinions).where(opinions.c.scenario_id == row_id)
                            .order_by(opinions.c.at, opinions.c.expert_id)).mappings()
        return {**found, "opinions": [base.pick(o, ("expert_id", "verdict", "comment", "at"))
                                      for o in rows]}


SCENARIOS = ScenarioListing(
    scenarios, KIND, order_by=("submitted_at", "id"),
    fields=("id", "operator_id", "title", "purpose", "sector", "requested",
            "circulation_mode", "state", "opinion_count", "submitted_at", "decided_at",
            "decision_comment", "suspended_at", "suspension_reason", "updated_at", "version"))
