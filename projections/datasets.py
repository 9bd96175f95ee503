"""Datasets: the catalog (数据目录). Published entries are public; the rest only their owner's."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Connection, String

from core.record import LogEntry
from domain.dataset import complete_field
from projections import base

KIND = "dataset"

datasets = base.state_table(
    "rm_datasets",
    Column("owner_id", String, nullable=False, index=True),
    Column("name", String, nullable=False),
    Column("description", String, nullable=False),
    Column("source_system", String, nullable=False),
    Column("classification", String, nullable=False),
    Column("fields", JSON, nullable=False),
    Column("state", String, nullable=False, index=True),
    Column("registered_at", String, nullable=False),
    Column("published_at", String, nullable=True),
    Column("withdrawn_at", String, nullable=True),
    Column("withdrawal_reason", String, nullable=True),
    # the seq of dataset.registered: a joint's provider proves an input's owner from it
    Column("registered_seq", BigInteger, nullable=True),
)


def _registered(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    base.insert_row(conn, datasets,
        id=entry.originator_id, owner_id=p["owner_id"], name=p["name"],
        description=p["description"], source_system=p["source_system"],
        classification=p["classification"],
        fields=[complete_field(f) for f in p["fields"]], state="registered",
        registered_at=p["at"], updated_at=p["at"], version=entry.version,
        registered_seq=entry.seq)
    base.grant(conn, KIND, entry.originator_id, p["owner_id"])


def _updated(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    changes = {key: p[key] for key in ("description", "fields") if p.get(key) is not None}
    if "fields" in changes:  # version 1 stored no grade and kind: derived as the domain does
        changes["fields"] = [complete_field(f) for f in changes["fields"]]
    base.touch(conn, datasets, entry, p, **changes)


class DatasetsProjection(base.Projection):
    name = "datasets"
    tables = (datasets,)
    kinds = (KIND,)

    def handlers(self) -> dict[str, base.EventHandler]:
        return {
            "dataset.registered": _registered,
            "dataset.published": base.transition(datasets, "published", published_at="at"),
            "dataset.updated": _updated,
            "dataset.withdrawn": base.transition(datasets, "withdrawn", withdrawn_at="at",
                                                 withdrawal_reason="reason"),
            # the data stays on the owner's datasite: the view only follows the stream
            "dataset.data_loaded": base.transition(datasets),
        }


#: the catalog (published datasets) plus the viewer's own (everything for those who see
#: all); filters: state, owner_id, classification
DATASETS = base.Listing(
    datasets, KIND, order_by=("registered_at", "id"), public=datasets.c.state == "published",
    fields=("id", "owner_id", "name", "description", "source_system", "classification",
            "fields", "state", "registered_at", "published_at", "updated_at", "withdrawn_at",
            "withdrawal_reason", "version", "registered_seq"))
