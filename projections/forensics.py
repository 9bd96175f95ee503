"""Leak traces (溯源): each ``forensics.leak_traced`` the platform recorded, for the
regulator and the platform (a trace has no acl kind: no other participant reads it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Connection, String, Table, Text

from core.record import LogEntry
from projections import base

leak_traces = Table(
    "rm_leak_traces", base.METADATA,
    Column("id", String, primary_key=True),
    Column("file_sha256", String, nullable=False, index=True),
    # the matched delivery (null: no match), its contract and demander
    Column("delivery_id", String, nullable=True, index=True),
    Column("contract_id", String, nullable=True),
    Column("demander_id", String, nullable=True),
    Column("confidence", Text, nullable=True),
    Column("p_value", Text, nullable=False),
    Column("votes", JSON, nullable=False),
    Column("traced_at", String, nullable=False),
)


def _traced(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    match = p.get("match") or {}
    base.insert_row(conn, leak_traces, id=entry.originator_id, file_sha256=p["file_sha256"],
                    delivery_id=match.get("delivery_id"), contract_id=match.get("contract_id"),
                    demander_id=match.get("demander_id"), confidence=p.get("confidence"),
                    p_value=p["p_value"], votes=p["votes"], traced_at=p["at"])


class ForensicsProjection(base.Projection):
    name = "forensics"
    tables = (leak_traces,)

    def handlers(self) -> dict[str, base.EventHandler]:
        return {"forensics.leak_traced": _traced}
