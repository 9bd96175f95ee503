"""Products (数据产品): the storefront of listed products and each operator's own products.

Listed and delisted products are public (the storefront, and its history); the other
states are seen only by the owning operator, the product's developer and the providers of
its input datasets (acl kind ``product``). The ``code`` itself is shown only to the owning
operator, the developer, the providers of the input datasets (their datasites run it), the
regulator and the platform; everyone who sees a product sees its ``code_sha256``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Connection, RowMapping, String, Text, select

from core.record import LogEntry
from projections import base
from projections.datasets import datasets

KIND = "product"
#: states everyone sees: the storefront and its history
PUBLIC_STATES = ("listed", "delisted")

products = base.state_table(
    "rm_products",
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
    # the output column a query may name (null: the product takes no query)
    Column("key_column", String, nullable=True),
    # input dataset id -> its fields marked sensitive or personal, as registered
    Column("sensitive_fields", JSON, nullable=False),
    # input dataset id -> field -> {grade, kind}, as registered (the node masks by them)
    Column("field_grades", JSON, nullable=False),
    # the joint output {value_columns, min_providers, deadline_seconds}; null: plain mode
    Column("joint", JSON, nullable=True),
    # differential privacy {epsilon, columns} (domain/privacy_budget.py); null: no noise
    Column("dp", JSON, nullable=True),
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
)


def _registered(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    # The providers of the inputs read the code too: their datasites run it (after review).
    owners = list(conn.execute(select(datasets.c.owner_id).where(
        datasets.c.id.in_([i["dataset_id"] for i in p["inputs"]]))).scalars())
    readers = sorted({p["operator_id"], p.get("developer_id") or "", *owners} - {""})
    base.insert_row(conn, products, code_readers=readers,
        id=entry.originator_id, operator_id=p["operator_id"], developer_id=p.get("developer_id"),
        scenario_id=p["scenario_id"], authorization_ids=list(p["authorization_ids"]),
        name=p["name"], kind=p["kind"], description=p["description"], code=p["code"],
        code_sha256=p["code_sha256"], inputs=p["inputs"], output_schema=p["output_schema"],
        key_column=p.get("key_column"), sensitive_fields=p.get("sensitive_fields") or {},
        field_grades=p.get("field_grades") or {},
        joint=p.get("joint"), dp=p.get("dp"),
        quality_report=p["quality_report"], price_fen=p["price_fen"], state="registered",
        registered_at=p["at"], registered_seq=entry.seq, updated_at=p["at"],
        version=entry.version)
    base.grant(conn, KIND, entry.originator_id, *readers)


class ProductsProjection(base.Projection):
    name = "products"
    tables = (products,)
    kinds = (KIND,)

    def handlers(self) -> dict[str, base.EventHandler]:
        return {
            "product.registered": _registered,
            "product.listing_requested": base.transition(products, "listing_requested"),
            "product.listed": base.transition(products, "listed", review_comment="comment",
                                              listed_at="at"),
            "product.listing_rejected": base.transition(products, "registered",
                                                        review_comment="reason"),
            "product.delisted": base.transition(products, "delisted", delist_reason="reason",
                                                delisted_at="at"),
        }


_FIELDS = ("id", "operator_id", "developer_id", "scenario_id", "authorization_ids", "name",
           "kind", "description", "code_sha256", "inputs", "output_schema", "key_column",
           "sensitive_fields", "field_grades", "joint", "dp", "quality_report",
           "price_fen", "state", "review_comment", "delist_reason", "registered_at",
           "registered_seq", "listed_at", "delisted_at", "updated_at", "version")


def _product_row(row: RowMapping, viewer_id: str, sees_all: bool) -> dict[str, Any]:
    out = base.pick(row, _FIELDS)
    own = sees_all or viewer_id in row["code_readers"]
    out["code"] = row["code"] if own else None
    return out


#: listed and delisted products for everyone, plus the viewer's own (all for those who see
#: all), ``code`` only for those who may read it; filters: state, operator_id
PRODUCTS = base.Listing(products, KIND, order_by=("registered_at", "id"),
                   public=products.c.state.in_(PUBLIC_STATES), shape=_product_row)
