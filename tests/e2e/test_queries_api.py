"""Queries over HTTP: the demander says what it wants computed. The order's query is
execution 1 (implied by ``contract.approved``); ``POST /orders/{id}/queries`` asks for
executions 2, 3, … while the contract is approved, each recorded as
``contract.query_submitted`` with a seq the providers' nodes can fetch and prove."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Chain, World, head, list_product
from tests.e2e.test_market_api import invalid, policy, proposal, refused

QUERY = {"field": "taxpayer_id", "values": ["91110000MA01", "91110000MA02"]}


def order_with(world: World, chain: Chain, query: Any = QUERY,
               usage_policy: dict[str, Any] | None = None) -> str:
    product_id = list_product(world, chain)
    body: dict[str, Any] = {"product_id": product_id, "purpose": "credit decisions on SMEs"}
    if query is not None:
        body["query"] = query
    oid: str = world.call("POST", "/orders", chain.demander, 201, json=body)["order_id"]
    terms = proposal(usage_policy=usage_policy or policy())
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json=terms)
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    return oid


def approve(world: World, chain: Chain, oid: str) -> None:
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)


def test_the_order_query_is_execution_one_and_the_demander_asks_for_more(
        world: World, chain: Chain) -> None:
    oid = order_with(world, chain)
    seen = world.call("GET", f"/orders/{oid}", chain.demander)
    assert (seen["query"], seen["executions"], seen["queries"]) == (QUERY, 0, [])
    assert seen["approved_seq"] is None
    approve(world, chain, oid)
    seen = world.call("GET", f"/orders/{oid}", chain.provider)
    assert (seen["query"], seen["executions"], seen["queries"]) == (QUERY, 1, [])
    assert seen["approved_seq"] is not None

    second = {"field": "taxpayer_id", "values": ["91110000MA03"]}
    made = world.call("POST", f"/orders/{oid}/queries", chain.demander, 201,
                      json={"query": second})
    assert set(made) == {"order_id", "execution", "seqs"}
    assert (made["order_id"], made["execution"], len(made["seqs"])) == (oid, 2, 1)
    third = world.call("POST", f"/orders/{oid}/queries", chain.demander, 201,
                       json={"query": QUERY})
    assert third["execution"] == 3
    for party in (chain.provider, chain.operator, chain.demander, world.regulator):
        seen = world.call("GET", f"/orders/{oid}", party)
        assert seen["executions"] == 3
        assert seen["queries"] == [
            {"execution": 2, "seq": made["seqs"][0], "query": second},
            {"execution": 3, "seq": third["seqs"][0], "query": QUERY}]
    # a party provider fetches the event by its seq (to prove it) and finds it in its feed
    event = world.call("GET", f"/ledger/events/{made['seqs'][0]}", chain.provider)
    assert event["type"] == "contract.query_submitted" and event["originator_id"] == oid
    assert event["payload"]["execution"] == 2 and event["payload"]["query"] == second
    feed = world.call("GET", f"/ledger/events?after={made['seqs'][0] - 1}&limit=1000",
                      chain.provider)["events"]
    assert [e["seq"] for e in feed if e["type"] == "contract.query_submitted"] == [
        made["seqs"][0], third["seqs"][0]]
    placed = world.call("GET", "/ledger/events?limit=1000", chain.provider)["events"]
    assert [e["payload"]["query"] for e in placed
            if e["type"] == "order.placed" and e["originator_id"] == oid] == [QUERY]


def test_an_order_without_a_query(world: World, chain: Chain) -> None:
    oid = order_with(world, chain, query=None)
    approve(world, chain, oid)
    seen = world.call("GET", f"/orders/{oid}", chain.demander)
    assert (seen["query"], seen["executions"]) == (None, 1)


def test_a_query_beyond_the_processing_count_is_409_and_writes_nothing(
        world: World, chain: Chain) -> None:
    """With a processing_count of 2, execution 1 (the order's query) and a second query fill
    it: a third is refused, and 20 more write nothing either."""
    oid = order_with(world, chain, usage_policy={**policy(), "processing_count": 2})
    approve(world, chain, oid)
    assert world.call("POST", f"/orders/{oid}/queries", chain.demander, 201,
                      json={"query": QUERY})["execution"] == 2
    before = head(world)
    for _ in range(20):
        body = refused(world, "POST", f"/orders/{oid}/queries", chain.demander, 409,
                       json={"query": QUERY})
        assert body["error"] == "wrong_state"
        assert body["detail"].startswith(
            "count_exhausted: the contract's processing_count 2 is used up"), body["detail"]
        assert oid in body["detail"]
    assert head(world) == before
    seen = world.call("GET", f"/orders/{oid}", chain.demander)
    assert (seen["executions"], len(seen["queries"])) == (2, 1)


def test_a_query_names_only_the_product_s_key_column(world: World, chain: Chain) -> None:
    """A query on another column (here a range of a sensitive one) is 422 naming
    query.field, when the order is placed as when the demander asks for more."""
    oid = order_with(world, chain)
    approve(world, chain, oid)
    product_id = world.call("GET", f"/orders/{oid}", chain.demander)["product_id"]
    assert world.call("GET", f"/products/{product_id}", chain.demander)[
        "key_column"] == "taxpayer_id"
    other = {"field": "annual_revenue", "values": [str(v) for v in range(-100, 200)]}
    for path, body in ((f"/orders/{oid}/queries", {"query": other}),
                       ("/orders", {"product_id": product_id, "purpose": "p", "query": other})):
        got = refused(world, "POST", path, chain.demander, 422, json=body)
        assert got["fields"][0]["field"] == "query.field"
        assert got["detail"] == "query.field: must be the product's key column 'taxpayer_id'"
    keyless = list_product(world, chain, key_column=None, name="SME score, no query")
    got = refused(world, "POST", "/orders", chain.demander, 422,
                  json={"product_id": keyless, "purpose": "p", "query": QUERY})
    assert got["fields"][0]["field"] == "query.field" and "declares no key column" in got["detail"]
    world.call("POST", "/orders", chain.demander, 201,
               json={"product_id": keyless, "purpose": "p"})


def test_queries_need_an_approved_contract_and_the_demander(world: World, chain: Chain) -> None:
    oid = order_with(world, chain)
    body = refused(world, "POST", f"/orders/{oid}/queries", chain.demander, 409,
                   json={"query": QUERY})
    assert body["error"] == "wrong_state" and "accepted" in body["detail"]
    approve(world, chain, oid)
    for party in (chain.operator, chain.provider, world.regulator):
        refused(world, "POST", f"/orders/{oid}/queries", party, 403, json={"query": QUERY})
    refused(world, "POST", "/orders/nope/queries", chain.demander, 404, json={"query": QUERY})
    world.call("POST", f"/orders/{oid}/contract/termination", world.regulator,
               json={"reason": "the regulator ends it"})
    refused(world, "POST", f"/orders/{oid}/queries", chain.demander, 409, json={"query": QUERY})


@pytest.mark.parametrize(("query", "field"), [
    ({**QUERY, "values": ["a", "b", "c", ""]}, "query.values[3]"),
    ({**QUERY, "values": ["a", "b", "a"]}, "query.values[2]"),
    ({**QUERY, "values": ["a", 7]}, "query.values[1]"),
    ({**QUERY, "values": ["a", "x" * 201]}, "query.values[1]"),
    ({**QUERY, "values": []}, "query.values"),
    ({**QUERY, "values": [str(i) for i in range(10_001)]}, "query.values"),
    ({**QUERY, "field": "1abc"}, "query.field"),
    ({**QUERY, "field": "a" * 65}, "query.field"),
    ({"values": ["a"]}, "query.field"),
    ({**QUERY, "other": 1}, "query.other"),
])
def test_an_invalid_query_is_422_naming_the_field(world: World, chain: Chain,
                                                  query: dict[str, Any], field: str) -> None:
    oid = order_with(world, chain)
    approve(world, chain, oid)
    assert invalid(world, f"/orders/{oid}/queries", chain.demander, {"query": query}) == {field}
    product_id = world.call("GET", f"/orders/{oid}", chain.demander)["product_id"]
    assert invalid(world, "/orders", chain.demander,
                   {"product_id": product_id, "purpose": "p", "query": query}) == {field}
    assert invalid(world, f"/orders/{oid}/queries", chain.demander, {}) == {"query"}
    before = head(world)
    assert world.call("GET", f"/orders/{oid}", chain.demander)["executions"] == 1
    assert head(world) == before


def test_the_event_catalogue_lists_query_submitted(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "cli", "events", "catalogue"],
                         capture_output=True, text=True, timeout=60, check=False,
                         cwd=Path(__file__).parents[2],
                         env={"DATALEDGER_DATA_DIR": str(tmp_path), "PATH": ""})
    assert out.returncode == 0, out.stderr
    schemas = json.loads(out.stdout)
    submitted = schemas["contract.query_submitted"]
    assert {"execution", "query", "at", "actor"} <= set(submitted["properties"])
    placed = schemas["order.placed"]
    assert placed["x-class-version"] == 2 and "query" in placed["properties"]
