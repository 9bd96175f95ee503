"""Authorizations (数据授权): seen by the granting provider and the scenario's operator."""

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

KIND = "authorization"

authorizations = Table(
    "rm_authorizations", METADATA,
    Column("id", String, primary_key=True),
    Column("provider_id", String, nullable=False, index=True),
    Column("scenario_id", String, nullable=False, index=True),
    Column("operator_id", String, nullable=False, index=True),
    Column("datasets", JSON, nullable=False),
    Column("not_before", String, nullable=False),
    Column("not_after", String, nullable=False),
    Column("usage_policy", JSON, nullable=False),
    Column("state", String, nullable=False, index=True),
    Column("granted_at", String, nullable=False),
    Column("ended_at", String, nullable=True),
    Column("revocation_reason", String, nullable=True),
    Column("updated_at", String, nullable=False),
    Column("version", Integer, nullable=False),
)


def _touch(conn: Connection, entry: LogEntry, p: dict[str, Any], **values: Any) -> None:
    touch(conn, authorizations, entry, p["at"], **values)


def _granted(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    insert_row(conn, authorizations,
        id=entry.originator_id, provider_id=p["provider_id"], scenario_id=p["scenario_id"],
        operator_id=p["operator_id"], datasets=p["datasets"], not_before=p["not_before"],
        not_after=p["not_after"], usage_policy=p["usage_policy"], state="granted",
        granted_at=p["at"], updated_at=p["at"], version=entry.version)
    grant(conn, KIND, entry.originator_id, p["provider_id"], p["operator_id"])


def _revoked(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="revoked", ended_at=p["at"], revocation_reason=p["reason"])


def _expired(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="expired", ended_at=p["at"])


class AuthorizationsProjection(Projection):
    name = "authorizations"
    tables = (authorizations,)
    kinds = (KIND,)

    def handlers(self) -> dict[str, EventHandler]:
        return {
            "authorization.granted": _granted,
            "authorization.revoked": _revoked,
            "authorization.expired": _expired,
        }


# -- queries ----------------------------------------------------------------------
COLUMNS = ("id", "provider_id", "scenario_id", "operator_id", "datasets", "not_before",
           "not_after", "usage_policy", "state", "granted_at", "ended_at", "revocation_reason",
           "updated_at", "version")


def list_authorizations(conn: Connection, viewer_id: str, sees_all: bool,
                        state: str | None = None, scenario_id: str | None = None,
                        provider_id: str | None = None,
                        operator_id: str | None = None) -> list[dict[str, Any]]:
    """Authorizations the viewer granted or received; all for those who see all."""
    query = select(authorizations).order_by(authorizations.c.granted_at, authorizations.c.id)
    if not sees_all:
        query = query.where(visible_to(KIND, authorizations.c.id, viewer_id))
    for column, value in ((authorizations.c.state, state),
                          (authorizations.c.scenario_id, scenario_id),
                          (authorizations.c.provider_id, provider_id),
                          (authorizations.c.operator_id, operator_id)):
        if value:
            query = query.where(column == value)
    return [{k: row[k] for k in COLUMNS} for row in conn.execute(query).mappings()]


def get_authorization(conn: Connection, authorization_id: str, viewer_id: str,
                      sees_all: bool) -> dict[str, Any] | None:
    """One authorization, or None if there is none the viewer may see."""
    query = select(authorizations).where(authorizations.c.id == authorization_id)
    if not sees_all:
        query = query.where(visible_to(KIND, authorizations.c.id, viewer_id))
    row = conn.execute(query).mappings().first()
    return None if row is None else {k: row[k] for k in COLUMNS}
