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
from tests.e2e.conftest import FIELDS, USED, Chain, World, head, list_product, product_body


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
    """The fields a 422 names (``fields``; a domain refusal's ``field`` before it had them)."""
    body = response.json()
    return [f["field"] for f in body.get("fields", [])] or [body.get("field")]


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


def test_a_50_mb_body_is_413_unread(world: World, chain: Chain) -> None:
    before = head(world)
    body = b'{"name": "' + b"x" * (50 * 1024 * 1024) + b'"}'
    r = world.client.post("/datasets", content=body, headers={
        **chain.provider.headers, "Content-Type": "application/json"})
    assert r.status_code == 413, r.text[:300]
    assert r.json() == {"error": "too_large", "detail": (
        "the body is larger than 8388608 bytes (DATALEDGER_MAX_BODY_BYTES); nothing was "
        "stored")}
    assert r.headers["connection"] == "close"

    def chunked() -> Any:  # no Content-Length: counted as it is read, refused past the limit
        for _ in range(50):
            yield b"x" * (1024 * 1024)

    r = world.client.post("/products", content=chunked(), headers={
        **chain.operator.headers, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large", r.text[:300]
    assert head(world) == before


def test_the_openapi_document_states_the_limits(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    text = spec["info"]["description"]
    for limit in ("DATALEDGER_MAX_BODY_BYTES", "8388608", "DATALEDGER_MAX_RESULT_BYTES",
                  "DATALEDGER_BODY_READ_TIMEOUT", "DATALEDGER_HEADER_READ_TIMEOUT",
                  "DATALEDGER_MAX_HEADER_BYTES", "x-max-depth", "NUL", "integer literal"):
        assert limit in text, limit
    with_body = [(path, op) for path, ops in spec["paths"].items() for op in ops.values()
                 if "requestBody" in op]
    for path, op in with_body:
        for status in ("408", "413"):
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
    result = spec["paths"]["/computations/{computation_id}/result"]["post"]["responses"]
    assert "DATALEDGER_MAX_RESULT_BYTES" in result["413"]["description"]


def test_the_idempotency_key_is_declared_with_its_limits(world: World, chain: Chain) -> None:
    spec = world.client.get("/openapi.json").json()
    declared = [p for ops in spec["paths"].values() for op in ops.values()
                for p in op.get("parameters", []) if p["name"] == "idempotency-key"]
    assert len(declared) > 20
    assert all((p["schema"]["minLength"], p["schema"]["maxLength"]) == (1, 200)
               for p in declared)
    for key, status in (("k" * 201, 422), ("", 422), ("k" * 200, 201)):
        r = world.client.post("/datasets", headers={**chain.provider.headers,
                                                     "Idempotency-Key": key},
                              json={"name": "d", "source_system": "s", "classification": "L2",
                                    "fields": FIELDS})
        assert r.status_code == status, (len(key), r.text)


def test_options_names_every_method_and_405_the_same(client: TestClient) -> None:
    r = client.options("/products")
    assert (r.status_code, r.headers["allow"]) == (204, "GET, OPTIONS, POST")
    r = client.options("/products/some-id")
    assert (r.status_code, r.headers["allow"]) == (204, "GET, OPTIONS")
    r = client.options("/products/some-id/listing-request")
    assert (r.status_code, r.headers["allow"]) == (204, "OPTIONS, POST")
    for method in ("DELETE", "PUT", "PATCH"):
        r = client.request(method, "/products")
        assert r.status_code == 405 and r.headers["allow"] == "GET, OPTIONS, POST", r.text
        assert r.json()["error"] == "method_not_allowed"
    assert client.options("/no/such/path").status_code == 404


def test_proof_parameters_are_checked_in_the_schema_and_at_run_time(
        world: World, container: Container) -> None:
    spec = world.client.get("/openapi.json").json()["paths"]
    inclusion = {p["name"]: p for p in spec["/ledger/proofs/inclusion"]["get"]["parameters"]}
    consistency = {p["name"]: p for p in spec["/ledger/proofs/consistency"]["get"]["parameters"]}
    assert inclusion["index"]["schema"]["x-less-than"] == "size"
    assert consistency["old"]["schema"]["x-at-most"] == "new"
    assert inclusion["size"]["schema"]["maximum"] == consistency["new"]["schema"]["maximum"]
    world.onboard("demander", "Bank")
    assert container.chain is not None
    container.chain.wait_anchored(head(world), timeout=20)
    size = head(world)
    for path, field in ((f"/ledger/proofs/inclusion?index={size}&size={size}", "query.index"),
                        ("/ledger/proofs/inclusion?index=9&size=3", "query.index"),
                        (f"/ledger/proofs/consistency?old={size}&new=1", "query.old"),
                        (f"/ledger/proofs/consistency?old=1&new={size + 1}", "query.new"),
                        ("/ledger/proofs/inclusion?index=-1&size=3", "query.index")):
        r = world.client.get(path)
        assert (r.status_code, fields(r)) == (422, [field]), (path, r.text)
    assert world.client.get(f"/ledger/proofs/inclusion?index=0&size={size}").status_code == 200
    assert world.client.get(f"/ledger/proofs/consistency?old=1&new={size}").status_code == 200
