"""A query on a key column that identifies people is refused (docs/PRIVACY.md, Erasure): a
query's values are recorded in clear on the log (``order.placed``,
``contract.query_submitted``), where no erasure reaches them, so a product whose key column
is, in an input dataset, a field of an identifier kind (ID number, phone, name, address,
account, email) or graded L4 takes no query: 422 naming ``query.field``, nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import FIELDS, Chain, World, head, list_product
from tests.e2e.test_market_api import refused
from tests.e2e.test_queries_api import QUERY, approve, order_with


def _regrade(world: World, chain: Chain, **changes: Any) -> None:
    fields = [dict(f) for f in FIELDS]
    fields[0].update(changes)  # taxpayer_id, the products' key column
    world.call("PATCH", f"/datasets/{chain.dataset_id}", chain.provider, json={"fields": fields})


@pytest.mark.parametrize(("changes", "graded"), [
    ({"kind": "id_number"}, "grade L3 and kind id_number"),
    ({"kind": "phone", "grade": "L4"}, "grade L4 and kind phone"),
    ({"grade": "L4"}, "grade L4 and kind none"),
])
def test_a_query_on_a_key_column_naming_people_is_refused(
        world: World, chain: Chain, changes: dict[str, Any], graded: str) -> None:
    _regrade(world, chain, **changes)
    oid = order_with(world, chain, query=None)  # an order without a query is taken
    approve(world, chain, oid)
    product_id = world.call("GET", f"/orders/{oid}", chain.demander)["product_id"]
    before = head(world)
    for path, body in ((f"/orders/{oid}/queries", {"query": QUERY}),
                       ("/orders", {"product_id": product_id, "purpose": "p", "query": QUERY})):
        got = refused(world, "POST", path, chain.demander, 422, json=body)
        assert got["fields"][0]["field"] == "query.field", got
        assert f"'taxpayer_id' is a field of {graded}" in got["detail"]
        assert "recorded in clear on the log" in got["detail"]
    assert head(world) == before


def test_a_query_on_a_key_column_of_no_identifier_kind_is_taken(world: World,
                                                                  chain: Chain) -> None:
    """L3 of kind none (derived from sensitivity personal): taken, the limit the docs state."""
    product_id = list_product(world, chain)
    world.call("POST", "/orders", chain.demander, 201,
               json={"product_id": product_id, "purpose": "p", "query": QUERY})
