"""Scenarios (应用场景) and their expert opinions.

A scenario is seen by its operator and by the owners of every dataset it requests
(granted at submission from ``rm_datasets``, which is projected before this table in
the same transaction); its opinions are seen with it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Connection, Integer, String, Table, select

from core.record import LogEntry
from projections.base import (
    METADATA,
    EventHandler,
    Projection,
    grant,
    insert_row,
    touch,
    visible_to,
)
from projections.datasets import datasets

KIND = "scenario"

scenarios = Table(
    "rm_scenarios", METADATA,
    Column("id", String, primary_key=True),
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
    Column("updated_at", String, nullable=False),
    Column("version", Integer, nullable=False),
)

opinions = Table(
    "rm_scenario_opinions", METADATA,
    Column("scenario_id", String, primary_key=True),
    Column("expert_id", String, primary_key=True),
    Column("verdict", String, nullable=False),
    Column("comment", String, nullable=False),
    Column("at", String, nullable=False),
)


def _touch(conn: Connection, entry: LogEntry, p: dict[str, Any], **values: Any) -> None:
    touch(conn, scenarios, entry, p["at"], **values)


def _submitted(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    insert_row(conn, scenarios,
        id=entry.originator_id, operator_id=p["operator_id"], title=p["title"],
        purpose=p["purpose"], sector=p["sector"], requested=p["requested"],
        circulation_mode=p["circulation_mode"], state="submitted", opinion_count=0,
        submitted_at=p["at"], updated_at=p["at"], version=entry.version)
    dataset_ids = [item["dataset_id"] for item in p["requested"]]
    owners = conn.execute(select(datasets.c.owner_id).where(datasets.c.id.in_(dataset_ids))
                          .order_by(datasets.c.owner_id)).scalars().all()
    grant(conn, KIND, entry.originator_id, p["operator_id"], *owners)


def _opinion(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    insert_row(conn, opinions,
        scenario_id=entry.originator_id, expert_id=p["expert_id"], verdict=p["verdict"],
        comment=p["comment"], at=p["at"])
    _touch(conn, entry, p, opinion_count=scenarios.c.opinion_count + 1)


def _approved(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="approved", decided_at=p["at"], decision_comment=p["comment"])


def _rejected(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="rejected", decided_at=p["at"], decision_comment=p["reason"])


def _suspended(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="suspended", suspended_at=p["at"],
           suspension_reason=p["reason"])


class ScenariosProjection(Projection):
    name = "scenarios"
    tables = (scenarios, opinions)
    kinds = (KIND,)

    def handlers(self) -> dict[str, EventHandler]:
        return {
            "scenario.submitted": _submitted,
            "scenario.opinion_recorded": _opinion,
            "scenario.approved": _approved,
            "scenario.rejected": _rejected,
            "scenario.suspended": _suspended,
        }


# -- queries ----------------------------------------------------------------------
COLUMNS = ("id", "operator_id", "title", "purpose", "sector", "requested", "circulation_mode",
           "state", "opinion_count", "submitted_at", "decided_at", "decision_comment",
           "suspended_at", "suspension_reason", "updated_at", "version")


def list_scenarios(conn: Connection, viewer_id: str, sees_all: bool, state: str | None = None,
                   operator_id: str | None = None) -> list[dict[str, Any]]:
    """Scenarios the viewer submitted or whose datasets it owns; all for those who see all."""
    query = select(scenarios).order_by(scenarios.c.submitted_at, scenarios.c.id)
    if not sees_all:
        query = query.where(visible_to(KIND, scenarios.c.id, viewer_id))
    if state:
        query = query.where(scenarios.c.state == state)
    if operator_id:
        query = query.where(scenarios.c.operator_id == operator_id)
    return [{k: row[k] for k in COLUMNS} for row in conn.execute(query).mappings()]


def get_scenario(conn: Connection, scenario_id: str, viewer_id: str,
                 sees_all: bool) -> dict[str, Any] | None:
    """One scenario with its opinions, or None if there is none the viewer may see."""
    query = select(scenarios).where(scenarios.c.id == scenario_id)
    if not sees_all:
        query = query.where(visible_to(KIND, scenarios.c.id, viewer_id))
    row = conn.execute(query).mappings().first()
    if row is None:
        return None
    found = conn.execute(select(opinions).where(opinions.c.scenario_id == scenario_id)
                         .order_by(opinions.c.at, opinions.c.expert_id)).mappings()
    return {**{k: row[k] for k in COLUMNS},
            "opinions": [{k: o[k] for k in ("expert_id", "verdict", "comment", "at")}
                         for o in found]}
