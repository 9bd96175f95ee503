"""Products (数据产品): the storefront of listed products and each operator's own products.

Listed and delisted products are public (the storefront, and its history); the other
states are seen only by the owning operator, the product's developer and the providers of
its input datasets (acl kind ``product``). The ``code`` itself is shown only to the owning
operator, the developer, the providers of the input datasets (their datasites run it), the
regulator and the platform; everyone who sees a product sees its ``code_sha256``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Integer,
    String,
    Table,
    Text,
    select,
    true,
)

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

KIND = "product"
#: states everyone sees: the storefront and its history
PUBLIC_STATES = ("listed", "delisted")

products = Table(
    "rm_products", METADATA,
    Column("id", String, primary_key=True),
    Column("operator_id", String, nullable=False, index=True),
    Column("developer_id", String, nullable=True),
    Column("scenario_id", String, nullable=False),
    Column("authorization_ids", JSON, nullable=False),
    Column("name", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("description", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("code_readers", JSON, nullable=False),
    Column("code_sha256", String, nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("output_schema", JSON, nullable=False),
    Column("quality_report", Text, nullable=False),
    Column("price_fen", BigInteger, nullable=False),
    Column("state", String, nullable=False),
    Column("review_comment", Text, nullable=True),
    Column("delist_reason", Text, nullable=True),
    Column("registered_at", String, nullable=False),
    # the seq of product.registered: a node proves the code's SHA-256 (and inputs) from it
    Column("registered_seq", BigInteger, nullable=True),
    Column("listed_at", String, nullable=True),
    Column("delisted_at", String, nullable=True),
    Column("updated_at", String, nullable=False),
    Column("version", Integer, nullable=False),
)


def _touch(conn: Connection, entry: LogEntry, p: dict[str, Any], **values: Any) -> None:
    touch(conn, products, entry, p["at"], **values)


def _registered(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    # The providers of the inputs read the code too: their datasites run it (after review).
    owners = list(conn.execute(select(datasets.c.owner_id).where(
        datasets.c.id.in_([i["dataset_id"] for i in p["inputs"]]))).scalars())
    readers = sorted({p["operator_id"], p.get("developer_id") or "", *owners} - {""})
    insert_row(conn, products, code_readers=readers,
        id=entry.originator_id, operator_id=p["operator_id"], developer_id=p.get("developer_id"),
        scenario_id=p["scenario_id"], authorization_ids=list(p["authorization_ids"]),
        name=p["name"], kind=p["kind"], description=p["description"], code=p["code"],
        code_sha256=p["code_sha256"], inputs=p["inputs"], output_schema=p["output_schema"],
        quality_report=p["quality_report"], price_fen=p["price_fen"], state="registered",
        registered_at=p["at"], registered_seq=entry.seq, updated_at=p["at"],
        version=entry.version)
    grant(conn, KIND, entry.originator_id, *readers)


def _listing_requested(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="listing_requested")


def _listed(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="listed", review_comment=p["comment"], listed_at=p["at"])


def _listing_rejected(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="registered", review_comment=p["reason"])


def _delisted(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    _touch(conn, entry, p, state="delisted", delist_reason=p["reason"], delisted_at=p["at"])


class ProductsProjection(Projection):
    name = "products"
    tables = (products,)
    kinds = (KIND,)

    def handlers(self) -> dict[str, EventHandler]:
        return {
            "product.registered": _registered,
            "product.listing_requested": _listing_requested,
            "product.listed": _listed,
            "product.listing_rejected": _listing_rejected,
            "product.delisted": _delisted,
        }


# -- queries ----------------------------------------------------------------------
_FIELDS = ("id", "operator_id", "developer_id", "scenario_id", "authorization_ids", "name",
           "kind", "description", "code_sha256", "inputs", "output_schema", "quality_report",
           "price_fen", "state", "review_comment", "delist_reason", "registered_at",
           "registered_seq", "listed_at", "delisted_at", "updated_at", "version")


def _visible(viewer_id: str, sees_all: bool) -> ColumnElement[bool]:
    if sees_all:
        return true()
    clause: ColumnElement[bool] = (products.c.state.in_(PUBLIC_STATES)
                                   | visible_to(KIND, products.c.id, viewer_id))
    return clause


def _product_row(row: Any, viewer_id: str, sees_all: bool) -> dict[str, Any]:
    out = {k: row[k] for k in _FIELDS}
    own = sees_all or viewer_id in row["code_readers"]
    out["code"] = row["code"] if own else None
    return out


def list_products(conn: Connection, viewer_id: str, sees_all: bool, state: str | None = None,
                  operator_id: str | None = None) -> list[dict[str, Any]]:
    """Listed and delisted products for everyone, plus the caller's own (all for the
    regulator and the platform); ``code`` only for those who may see it."""
    query = (select(products).where(_visible(viewer_id, sees_all))
             .order_by(products.c.registered_at, products.c.id))
    if state:
        query = query.where(products.c.state == state)
    if operator_id:
        query = query.where(products.c.operator_id == operator_id)
    return [_product_row(r, viewer_id, sees_all) for r in conn.execute(query).mappings()]


def get_product(conn: Connection, product_id: str, viewer_id: str,
                sees_all: bool) -> dict[str, Any] | None:
    """One product if the caller may see it (None otherwise: never the data)."""
    row = conn.execute(select(products).where(
        products.c.id == product_id, _visible(viewer_id, sees_all))).mappings().first()
    return None if row is None else _product_row(row, viewer_id, sees_all)
