"""Leak traces (溯源): each ``forensics.leak_traced`` the platform recorded, for the
regulator and the platform (a trace has no acl kind: no other participant reads it); and
the readers other than the demander who were served their own copy of a delivery
(``delivery.accessed``): the copies ``trace-leak`` compares a leak with."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Column, Connection, String, Table, Text

from core.actor_index import actor_of
from core.record import LogEntry
from projections import base

leak_traces = Table(
    "rm_leak_traces", base.METADATA,
    Column("id", String, primary_key=True),
    Column("file_sha256", String, nullable=False, index=True),
    # the best matched copy (null: no match), its contract, demander and reader (null: the
    # demander's copy); every match in ``matches``; ``merged``: several matched
    Column("delivery_id", String, nullable=True, index=True),
    Column("contract_id", String, nullable=True),
    Column("demander_id", String, nullable=True),
    Column("reader_id", String, nullable=True),
    Column("matches", JSON, nullable=False),
    Column("merged", Boolean, nullable=False),
    Column("confidence", Text, nullable=True),
    Column("p_value", Text, nullable=False),
    Column("votes", JSON, nullable=False),
    Column("traced_at", String, nullable=False),
)

#: who was served a copy of a delivery (the demander too; its first access), since
#: ``delivery.accessed`` version 2: the others' copies are their own
delivery_readers = Table(
    "rm_delivery_readers", base.METADATA,
    Column("delivery_id", String, primary_key=True),
    Column("reader_id", String, primary_key=True),
    Column("first_served_sha256", String, nullable=True),
    Column("first_at", String, nullable=False),
)


def _matches(p: dict[str, Any]) -> list[dict[str, Any]]:
    """The matched copies of a trace, version 1 (one ``match``) or 2 (``matches``)."""
    if "matches" in p:
        return list(p["matches"])
    match = p.get("match")
    return [] if match is None else [{**match, "reader_id": None, "p_value": p["p_value"]}]


def _traced(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    matches = _matches(p)
    best = matches[0] if matches else {}
    base.insert_row(conn, leak_traces, id=entry.originator_id, file_sha256=p["file_sha256"],
                    delivery_id=best.get("delivery_id"), contract_id=best.get("contract_id"),
                    demander_id=best.get("demander_id"), reader_id=best.get("reader_id"),
                    matches=matches, merged=len(matches) > 1, confidence=p.get("confidence"),
                    p_value=p["p_value"], votes=p["votes"], traced_at=p["at"])


def _accessed(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    reader = actor_of(p)
    if reader is None or p.get("served_sha256") is None:
        return  # before version 2 every reader was served the demander's copy
    conn.execute(base.insert_ignoring_conflicts(conn, delivery_readers).values(
        delivery_id=p["computation_id"], reader_id=reader,
        first_served_sha256=p.get("served_sha256"), first_at=p["at"]))


class ForensicsProjection(base.Projection):
    name = "forensics"
    tables = (leak_traces, delivery_readers)

    def handlers(self) -> dict[str, base.EventHandler]:
        return {"forensics.leak_traced": _traced, "delivery.accessed": _accessed}
