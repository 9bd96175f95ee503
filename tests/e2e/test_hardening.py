"""Hardened input and output at the edge: free-form JSON fields are bounded in depth and
size (422 naming the field), a value already stored reads back whatever its shape, a body
over the limit is 413 unread, the OpenAPI document states the limits the server enforces,
``OPTIONS`` answers the methods a path has, the proof parameters are checked."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from fastapi.testclient import TestClient

from runtime.build import Container
from tests.e2e.conftest import USED, Chain, World, head, list_product, product_body


def nested(depth: int) -> list[Any]:
    """A list nested ``depth`` lists deep: ``[[[…]]]``."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def deep_schema(depth: int = 256) -> dict[str, Any]:
    """A valid-looking output schema whose ``enum`` nests ``depth`` lists deep."""
    return {"type": "object", "properties": {"score": {"type": "integer"}},
            "enum": nested(depth)}


def fields(response: Any) -> list[str]:
    return [f["field"] for f in response.json()["fields"]]


def test_a_deep_output_schema_is_refused_naming_the_field(world: World, chain: Chain) -> None:
    before = head(world)
    r = world.client.post("/products", json=product_body(chain, output_schema=deep_schema()),
                          headers=chain.operator.headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_input"
    assert fields(r) == ["output_schema"]
    assert "depth limit of 32" in r.json()["fields"][0]["reason"], r.text
    assert head(world) == before


def _poison(container: Container, product_id: str) -> str:
    """A copy of product ``product_id``'s stream with a 256-deep output schema, appended to
    the store behind the API (as a store written before the limit would hold): its id."""
    poisoned = str(uuid.uuid4())
    stream = container.store.load(product_id)
    copies = [dataclasses.replace(e, originator_id=poisoned) for e in stream]
    copies[0] = dataclasses.replace(copies[0], output_schema=deep_schema())  # type: ignore[call-arg]
    container.store.append(copies)
    container.runner.wait_for(container.store.max_seq(), 10)
    return poisoned


def test_a_poison_stored_behind_the_api_still_reads(
        world: World, chain: Chain, container: Container) -> None:
    listed = list_product(world, chain)
    poisoned = _poison(container, listed)
    seqs = [s for s in range(1, head(world) + 1)]
    for who in (chain.operator, world.platform, chain.demander):
        got = world.call("GET", f"/products/{poisoned}", who)
        assert got["output_schema"] == deep_schema()
        listing = world.call("GET", "/products", who)
        assert poisoned in {p["id"] for p in listing}
    for seq in seqs[-3:]:
        assert world.call("GET", f"/ledger/events/{seq}", world.platform)["seq"] == seq
    page = world.call("GET", "/ledger/events", world.platform, params={"after": 0,
                                                                       "limit": 1000})
    assert [e["seq"] for e in page["events"]] == seqs
    registered = next(e for e in page["events"] if e["originator_id"] == poisoned)
    assert registered["payload"]["output_schema"] == deep_schema()


def test_every_free_form_field_is_bounded(world: World, chain: Chain) -> None:
    """usage_policy, a query's values, an output schema's size: each refused by name."""
    api, before = world.api, head(world)
    grant = {"scenario_id": chain.scenario_id,
             "datasets": [{"dataset_id": chain.dataset_id, "fields": USED}],
             "not_before": "2025-01-01T00:00:00+00:00", "not_after": "2035-01-01T00:00:00+00:00",
             "usage_policy": {"processing_count": 1, "allowed_fields": nested(40)}}
    r = world.client.post("/authorizations", json=grant, headers=chain.provider.headers)
    assert (r.status_code, fields(r)) == (422, ["usage_policy"]), r.text
    big = product_body(chain, output_schema={"type": "object", "description": "x" * 70_000})
    r = world.client.post("/products", json=big, headers=chain.operator.headers)
    assert (r.status_code, fields(r)) == (422, ["output_schema"]), r.text
    assert "over the limit of 65536 bytes" in r.json()["fields"][0]["reason"]
    product = api.list_product(chain.operator, world.platform, product_body(chain))
    r = world.client.post("/orders", headers=chain.demander.headers, json={
        "product_id": product, "purpose": "credit",
        "query": {"field": "taxpayer_id", "values": ["a", nested(300)]}})
    assert (r.status_code, fields(r)) == (422, ["query.values.1"]), r.text
    assert head(world) == before + 3  # the listed product's events only


def test_the_openapi_document_bounds_every_free_form_field(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        return resolve(schemas[ref.rsplit("/", 1)[1]]) if ref else schema

    def free_form(schema: dict[str, Any]) -> bool:
        kinds = {"type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const"}
        if not kinds & set(schema):
            return True
        return (schema.get("type") == "object" and "properties" not in schema
                and schema.get("additionalProperties", True) is True)

    unbounded, seen = [], set()

    def walk(schema: dict[str, Any], where: str) -> None:
        if "$ref" in schema:
            if schema["$ref"] in seen:
                return
            seen.add(schema["$ref"])
        schema = resolve(schema)
        if free_form(schema) and "x-max-depth" not in schema:
            unbounded.append(where)
        for name, prop in schema.get("properties", {}).items():
            walk(prop, f"{where}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                walk(schema[key], f"{where}[]")
        for key in ("anyOf", "oneOf", "allOf"):
            for option in schema.get(key, []):
                if option.get("type") != "null":
                    walk(option, where)

    bodies = 0
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            content = op.get("requestBody", {}).get("content", {})
            for media in content.values():
                bodies += 1
                walk(media["schema"], f"{method.upper()} {path}")
    assert bodies > 20 and not unbounded, unbounded
    output_schema = schemas["ProductCreate"]["properties"]["output_schema"]
    assert (output_schema["x-max-depth"], output_schema["x-max-bytes"]) == (32, 65536)
