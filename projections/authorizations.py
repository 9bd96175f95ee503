"""Authorizations (数据授权): seen by the granting provider and the scenario's operator."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Connection, String

from core.record import LogEntry
from projections import base

KIND = "authorization"

authorizations = base.state_table(
    "rm_authorizations",
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
    # the seq of authorization.granted: a compute node proves the granted fields from it
    Column("granted_seq", BigInteger, nullable=True),
)


def _granted(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    base.insert_row(conn, authorizations,
        id=entry.originator_id, provider_id=p["provider_id"], scenario_id=p["scenario_id"],
        operator_id=p["operator_id"], datasets=p["datasets"], not_before=p["not_before"],
        not_after=p["not_after"], usage_policy=p["usage_policy"], state="granted",
        granted_at=p["at"], granted_seq=entry.seq, updated_at=p["at"], version=entry.version)
    base.grant(conn, KIND, entry.originator_id, p["provider_id"], p["operator_id"])


class AuthorizationsProjection(base.Projection):
    name = "authorizations"
    tables = (authorizations,)
    kinds = (KIND,)

    def handlers(self) -> dict[str, base.EventHandler]:
        return {
            "authorization.granted": _granted,
            "authorization.revoked": base.transition(authorizations, "revoked", ended_at="at",
                                                     revocation_reason="reason"),
            "authorization.expired": base.transition(authorizations, "expired", ended_at="at"),
        }


#: authorizations the viewer granted or received (all for those who see all); filters:
#: state, scenario_id, provider_id, operator_id
AUTHORIZATIONS = base.Listing(
    authorizations, KIND, order_by=("granted_at", "id"),
    fields=("id", "provider_id", "scenario_id", "operator_id", "datasets", "not_before",
            "not_after", "usage_policy", "state", "granted_at", "ended_at",
            "revocation_reason", "granted_seq", "updated_at", "version"))
