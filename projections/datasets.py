"""Datasets: the catalog (数据目录). Published entries are public; the rest only their owner's."""

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

KIND = "dataset"

datasets = Table(
    "rm_datasets", METADATA,
    Column("id", String, primary_key=True),
    Column("owner_id", String, nullable=False, index=True),
    Column("name", String, nullable=False),
    Column("description", String, nullable=False),
    Column("source_system", String, nullable=False),
    Column("classification", String, nullable=False),
    Column("fields", JSON, nullable=False),
    Column("state", String, nullable=False, index=True),
    Column("registered_at", String, nullable=False),
    Column("published_at", String, nullable=True),
    Column("updated_at", String, nullable=False),
    Column("withdrawn_at", String, nullable=True),
    Column("withdrawal_reason", String, nullable=True),
    Column("version", Integer, nullable=False),
)


def _touch(conn: Connection, entry: LogEntry, p: dict[str, Any], **values: Any) -> None:
    touch(conn, datasets, entry, p["at"], **values)


def _registered(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    insert_row(conn, datasets,
        id=entry.originator_id, owner_id=p["owner_id"], name=p["name"],
        description=p["description"], source_system=p["source_system"],
        classification=p["classification"], fields=p["fields"], state="registered",
        registered_at=p["at"], updated_at=p["at"], version=entry.version)
    grant(conn, KIND, entry.originator_id, p["owner_id"])


def _published(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="published", published_at=p["at"])


def _updated(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    changes = {key: p[key] for key in ("description", "fields") if p.get(key) is not None}
    _touch(conn, entry, p, **changes)


def _withdrawn(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="withdrawn", withdrawn_at=p["at"],
           withdrawal_reason=p["reason"])


class DatasetsProjection(Projection):
    name = "datasets"
    tables = (datasets,)
    kinds = (KIND,)

    def handlers(self) -> dict[str, EventHandler]:
        return {
            "dataset.registered": _registered,
            "dataset.published": _published,
            "dataset.updated": _updated,
            "dataset.withdrawn": _withdrawn,
            # the data stays on the owner's datasite: the view only follows the stream
            "dataset.data_loaded": _touch,
        }


# -- queries ----------------------------------------------------------------------
COLUMNS = ("id", "owner_id", "name", "description", "source_system", "classification",
           "fields", "state", "registered_at", "published_at", "updated_at", "withdrawn_at",
           "withdrawal_reason", "version")


def _visible(viewer_id: str) -> Any:
    return (datasets.c.state == "published") | visible_to(KIND, datasets.c.id, viewer_id)


def list_datasets(conn: Connection, viewer_id: str, sees_all: bool, state: str | None = None,
                  owner_id: str | None = None,
                  classification: str | None = None) -> list[dict[str, Any]]:
    """The catalog (published datasets) plus the viewer's own; everything for those who see all."""
    query = select(datasets).order_by(datasets.c.registered_at, datasets.c.id)
    if not sees_all:
        query = query.where(_visible(viewer_id))
    if state:
        query = query.where(datasets.c.state == state)
    if owner_id:
        query = query.where(datasets.c.owner_id == owner_id)
    if classification:
        query = query.where(datasets.c.classification == classification)
    return [{k: row[k] for k in COLUMNS} for row in conn.execute(query).mappings()]


def get_dataset(conn: Connection, dataset_id: str, viewer_id: str,
                sees_all: bool) -> dict[str, Any] | None:
    """One dataset, or None if there is none the viewer may see."""
    query = select(datasets).where(datasets.c.id == dataset_id)
    if not sees_all:
        query = query.where(_visible(viewer_id))
    row = conn.execute(query).mappings().first()
    return None if row is None else {k: row[k] for k in COLUMNS}
