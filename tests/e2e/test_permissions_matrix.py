"""The permission matrix over HTTP: every route of the app as every role, answered as the
table (``domain/permissions.py``) predicts; and the regressions of issue 12 (the platform
acting as the regulator or a provider, member roles barely checked, one member giving the
opinion and the decision), which failed on the main of before.

A route without a row in the table fails here: add its ``Rule`` (and, for a command whose
body the generator below cannot make, an example in ``BODIES``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.routing import APIRoute

from api.routes import ROUTERS
from client.platform import Party
from domain import errors
from domain.permissions import BY_ROUTE, COMMAND, PUBLIC, QUERY, Rule
from tests.e2e.conftest import Chain, World, build_chain, head, list_product, product_body

#: an id nothing has: the role is checked before anything is read, so a refusal is 403 and
#: an allowed role meets 404 (or 422, 409): never 401 or 403
NOBODY = "00000000-0000-4000-8000-000000000000"
#: rows whose condition is "in the caller's own participant": called on the caller's own
OWN_PARTICIPANT = {"participant.member_addition", "participant.key_registration"}
#: queries that, as commands do, refuse a role their row does not name 403 before anything
#: is read (the others answer 404 for a row the caller may not see)
ROLE_CHECKED_QUERIES = {"ledger.export"}
#: bodies the schema-driven example below cannot make valid
BODIES: dict[str, Any] = {
    "POST /participants": {"name": "Matrix org", "role": "provider",
                           "credit_code": "91110000MA01MATRIX", "admin_name": "admin"},
    "POST /participants/{participant_id}/members": {"name": "matrix member",
                                                    "roles": ["member"]},
    "POST /orders/{order_id}/contract": {
        "usage_policy": {}, "price_fen": 0,
        "revenue_split": {"developer": 0, "operator": 10000, "platform": 0, "provider": 0}},
    "POST /authorizations": {"scenario_id": NOBODY,
                             "datasets": [{"dataset_id": NOBODY, "fields": ["a"]}],
                             "not_before": "2030-01-01T00:00:00Z",
                             "not_after": "2031-01-01T00:00:00Z", "usage_policy": {}},
}


@pytest.fixture
def settings_changes() -> dict[str, Any]:
    """Unsigned decisions let through (development mode): the matrix is about roles, and a
    signature's refusal (403 ``signature_required``) would hide an allowed one."""
    return {"allow_unsigned_decisions": True}


@dataclass
class Caller:
    """One column of the matrix: a member (None: no token) and what it is."""

    label: str
    party: Party | None
    role: str = ""
    members: tuple[str, ...] = ()
    suspended: bool = False


def callers(world: World) -> list[Caller]:
    provider = world.onboard("provider", "Matrix provider 提供方")
    suspended = world.onboard("provider", "Suspended provider 被暂停的提供方")
    made = [
        Caller("platform admin", world.platform, "platform", ("admin",)),
        Caller("regulator admin", world.regulator, "regulator", ("admin",)),
        Caller("regulator expert", world.member(world.regulator, "expert 专家", ["expert"]),
               "regulator", ("expert",)),
        Caller("provider admin", provider, "provider", ("admin",)),
        Caller("provider member", world.member(provider, "compute node", ["member"]),
               "provider", ("member",)),
        Caller("operator admin", world.onboard("operator", "Matrix operator"), "operator",
               ("admin",)),
        Caller("developer admin", world.onboard("developer", "Matrix studio"), "developer",
               ("admin",)),
        Caller("demander admin", world.onboard("demander", "Matrix bank"), "demander",
               ("admin",)),
        Caller("suspended provider's admin", suspended, "provider", ("admin",), True),
        Caller("no token", None)]
    world.call("POST", f"/participants/{suspended.participant_id}/suspension", world.regulator,
               json={"reason": "matrix: a suspended participant"})
    return made


def routes(world: World) -> list[tuple[str, APIRoute]]:
    """Every route the app serves and documents, as ("METHOD /path", route): its own and
    its routers' (the OpenAPI document lists exactly these, so none is missed)."""
    app: Any = world.client.app
    every = [*app.routes, *(route for router in ROUTERS for route in router.routes)]
    found = [(f"{method} {route.path}", route) for route in every
             if isinstance(route, APIRoute) and route.include_in_schema
             for method in sorted(route.methods or ()) if method not in ("HEAD", "OPTIONS")]
    documented = {f"{method.upper()} {path}" for path, ops in app.openapi()["paths"].items()
                  for method in ops}
    assert {name for name, _ in found} == documented
    return found


def example(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """A value the schema accepts, as small as it allows (required properties only)."""
    if "$ref" in schema:
        return example(components[schema["$ref"].rsplit("/", 1)[1]], components)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"]
            return example(options[0], components)
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: example(props[k], components) for k in schema.get("required", [])}
    if kind == "array":
        return [example(schema.get("items", {}), components)] * max(1, schema.get("minItems", 0))
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return schema.get("minimum", 1)
    if kind == "boolean":
        return True
    if schema.get("format") == "date-time":
        return "2030-01-01T00:00:00Z"
    if "64}" in schema.get("pattern", ""):
        return "0" * 64
    return "x" * max(1, schema.get("minLength", 1))


def request_of(world: World, name: str, route: APIRoute, caller: Caller,
               rule: Rule) -> tuple[str, str, Any]:
    """(method, path, JSON body) of a call of ``route`` by ``caller``."""
    method, template = name.split(" ", 1)
    own = caller.party.participant_id if caller.party is not None else NOBODY
    path = template
    for param in route.dependant.path_params:
        value = own if param.name == "participant_id" and rule.name in OWN_PARTICIPANT else (
            "1" if param.field_info.annotation is int else NOBODY)
        path = path.replace("{" + param.name + "}", value)
    if not route.dependant.body_params:
        return method, path, None
    if name in BODIES:
        return method, path, BODIES[name]
    spec = world.client.app.openapi()  # type: ignore[attr-defined]
    schema = spec["paths"][template][method.lower()]["requestBody"]["content"][
        "application/json"]["schema"]
    return method, path, example(schema, spec["components"]["schemas"])


def predicted(rule: Rule, caller: Caller) -> str:
    """What the table says ``caller`` gets from ``rule``."""
    if rule.kind == PUBLIC:
        return "allowed"
    if caller.party is None:
        return "unauthenticated"
    if rule.name in ROLE_CHECKED_QUERIES and not rule.allows(caller.role, caller.members):
        return "forbidden"
    if caller.suspended and rule.kind == COMMAND:
        return "suspended"
    if rule.kind == QUERY or rule.allows(caller.role, caller.members):
        return "allowed"
    return "forbidden"


def mismatch(expected: str, status: int, body: Any, rule: Rule) -> str | None:
    """Why the answer is not what the table predicts, or None."""
    error = body.get("error") if isinstance(body, dict) else None
    if status >= 500:
        return "a server error"
    if expected == "allowed" and status in (401, 403):
        return "refused, though the table allows it"
    if expected == "unauthenticated" and status != 401:
        return "not 401 without a token"
    if expected == "suspended" and (status, error) != (409, "participant_suspended"):
        return "not 409 participant_suspended"
    if expected == "forbidden" and (status, error) != (403, "forbidden"):
        return "not 403 forbidden"
    if expected == "forbidden" and body.get("rule") != rule.name:
        return f"the refusal names rule {body.get('rule')!r}, not {rule.name!r}"
    return None


def test_every_route_as_every_role_answers_as_the_table_predicts(world: World) -> None:
    found = routes(world)
    problems = [f"{name}: no row in domain/permissions.py" for name, _ in found
                if name not in BY_ROUTE]
    problems += [f"{name}: a row of domain/permissions.py for a route the app has not"
                 for name in sorted(set(BY_ROUTE) - {name for name, _ in found})]
    columns = callers(world)
    counted = {"allowed": 0, "forbidden": 0, "unauthenticated": 0, "suspended": 0}
    for name, route in found:
        rule = BY_ROUTE.get(name)
        if rule is None:
            continue
        for caller in columns:
            method, path, body = request_of(world, name, route, caller, rule)
            headers = caller.party.headers if caller.party is not None else {}
            r = world.client.request(method, path, headers=headers, json=body)
            expected = predicted(rule, caller)
            counted[expected] += 1
            try:
                answer = r.json()
            except ValueError:
                answer = None
            why = mismatch(expected, r.status_code, answer, rule)
            if why is not None:
                problems.append(f"{name} as {caller.label}: {why} ({r.status_code} "
                                f"{r.text[:200]})")
    assert not problems, "\n".join(problems)
    print(f"\npermission matrix: {len(found)} routes x {len(columns)} callers; {counted}")
    assert all(counted.values())


# -- the regressions of issue 12 ---------------------------------------------------------
def refused(world: World, method: str, path: str, party: Party, status: int, error: str,
            json_body: Any = None) -> dict[str, Any]:
    """The request is refused with ``status`` and ``error`` and writes nothing."""
    before = head(world)
    r = world.api.send(method, path, party, json=json_body)
    assert (r.status_code, r.json()["error"]) == (status, error), f"{path}: {r.text}"
    assert head(world) == before, f"{method} {path} wrote to the log"
    answer: dict[str, Any] = r.json()
    return answer


def test_the_platform_makes_no_member_of_another_participant(world: World) -> None:
    provider = world.onboard("provider", "Tax bureau 税务局")
    for party in (world.regulator, provider):
        body = refused(world, "POST", f"/participants/{party.participant_id}/members",
                       world.platform, 403, "separation_of_duties",
                       {"name": "platform's puppet", "roles": ["admin", "expert"]
                        if party is world.regulator else ["admin"]})
        assert body["rule"] == "participant.member_addition"
    # nor does another participant's admin; the participant's own admin does
    refused(world, "POST", f"/participants/{provider.participant_id}/members", world.regulator,
            403, "separation_of_duties", {"name": "x", "roles": ["member"]})
    world.member(provider, "clerk", ["member"])


def test_the_platform_neither_reviews_nor_decides_nor_grants(world: World, chain: Chain) -> None:
    sc = world.api.propose_scenario(chain.operator, title="another scenario", purpose="p",
                                    sector="finance",
                                    requested=[{"dataset_id": chain.dataset_id,
                                                "fields": ["taxpayer_id"]}])
    refused(world, "POST", f"/scenarios/{sc}/opinions", world.platform, 403, "forbidden",
            {"verdict": "approve", "comment": "the platform's own opinion"})
    world.api.give_opinion(chain.expert, sc, "approve", "fine")
    refused(world, "POST", f"/scenarios/{sc}/decision", world.platform, 403, "forbidden",
            {"approve": True, "comment": "the platform decides"})
    now = datetime.now(UTC)
    refused(world, "POST", "/authorizations", world.platform, 403, "forbidden", {
        "scenario_id": chain.scenario_id,
        "datasets": [{"dataset_id": chain.dataset_id, "fields": ["taxpayer_id"]}],
        "not_before": now.isoformat(), "not_after": (now + timedelta(days=3650)).isoformat(),
        "usage_policy": {"processing_count": 1000000}})


@pytest.mark.parametrize("roles", [["expert"], ["member"]])
def test_a_regulator_member_without_admin_admits_suspends_and_delists_nothing(
        world: World, chain: Chain, roles: list[str]) -> None:
    who = world.member(world.regulator, f"{roles[0]} of the regulator", roles)
    operator = world.onboard("operator", "Candidate operator", admit=False)
    refused(world, "POST", f"/participants/{operator.participant_id}/admission", who, 403,
            "forbidden", {"approve": True, "comment": "admitted"})
    refused(world, "POST", f"/participants/{chain.demander.participant_id}/suspension", who,
            403, "forbidden", {"reason": "suspended by an expert"})
    refused(world, "POST", f"/scenarios/{chain.scenario_id}/suspension", who, 403,
            "forbidden", {"reason": "suspended by an expert"})
    pid = list_product(world, chain)
    refused(world, "POST", f"/products/{pid}/delisting", who, 403, "forbidden",
            {"reason": "delisted by an expert"})
    world.call("POST", f"/products/{pid}/delisting", world.regulator, json={"reason": "recall"})


def test_a_provider_member_neither_grants_nor_revokes(world: World, chain: Chain) -> None:
    node = world.member(chain.provider, "compute node", ["member"])
    now = datetime.now(UTC)
    refused(world, "POST", "/authorizations", node, 403, "forbidden", {
        "scenario_id": chain.scenario_id,
        "datasets": [{"dataset_id": chain.dataset_id, "fields": ["taxpayer_id"]}],
        "not_before": now.isoformat(), "not_after": (now + timedelta(days=3650)).isoformat(),
        "usage_policy": {"processing_count": 1000000}})
    refused(world, "POST", f"/authorizations/{chain.authorization_id}/revocation", node, 403,
            "forbidden", {"reason": "revoked by the node"})
    world.api.revoke_authorization(chain.provider, chain.authorization_id, "the admin revokes")


def test_one_member_gives_the_opinion_or_the_decision_not_both(world: World) -> None:
    chain = build_chain(world)
    both = world.member(world.regulator, "admin and expert", ["admin", "expert"])
    sc = world.api.propose_scenario(chain.operator, title="second scenario", purpose="p",
                                    sector="finance",
                                    requested=[{"dataset_id": chain.dataset_id,
                                                "fields": ["taxpayer_id"]}])
    world.api.give_opinion(both, sc, "approve", "sound")
    body = refused(world, "POST", f"/scenarios/{sc}/decision", both, 403,
                   "separation_of_duties", {"approve": True, "comment": "my own review"})
    assert body["rule"] == "scenario.decision"
    world.api.decide_scenario(world.regulator, sc, "approved by a second person")


# -- refusal codes: 409 naming another aggregate's state; one validation shape -------------
def test_a_refusal_by_another_aggregate_s_state_is_409_naming_it(world: World,
                                                                   chain: Chain) -> None:
    pid = list_product(world, chain)
    world.api.revoke_authorization(chain.provider, chain.authorization_id, "misuse")
    refused(world, "POST", "/orders", chain.demander, 409, "authorization_revoked",
            {"product_id": pid, "purpose": "credit decisions"})
    refused(world, "POST", "/products", chain.operator, 409, "authorization_revoked",
            product_body(chain))
    world.call("POST", f"/products/{pid}/delisting", world.regulator, json={"reason": "recall"})
    refused(world, "POST", "/orders", chain.demander, 409, "product_delisted",
            {"product_id": pid, "purpose": "credit decisions"})
    world.call("POST", f"/scenarios/{chain.scenario_id}/suspension", world.regulator,
               json={"reason": "under review"})
    now = datetime.now(UTC)
    refused(world, "POST", "/authorizations", chain.provider, 409, "scenario_suspended", {
        "scenario_id": chain.scenario_id,
        "datasets": [{"dataset_id": chain.dataset_id, "fields": ["taxpayer_id"]}],
        "not_before": now.isoformat(), "not_after": (now + timedelta(days=30)).isoformat(),
        "usage_policy": {"processing_count": 1}})
    world.call("POST", f"/participants/{chain.demander.participant_id}/suspension",
               world.regulator, json={"reason": "breach"})
    refused(world, "POST", "/orders", chain.demander, 409, "participant_suspended",
            {"product_id": pid, "purpose": "credit decisions"})


def test_a_validation_error_has_one_shape_whoever_found_it(world: World,
                                                           chain: Chain) -> None:
    by_pydantic = refused(world, "POST", "/products", chain.operator, 422, "invalid_input",
                          product_body(chain, price_fen=-1))
    by_domain = refused(world, "POST", "/products", chain.operator, 422, "invalid_input",
                        product_body(chain, key_column="score"))
    for body in (by_pydantic, by_domain):
        assert set(body) == {"error", "detail", "fields"}
        assert all(set(f) == {"field", "reason"} for f in body["fields"]), body
    assert by_domain["fields"] == [{"field": "key_column", "reason":
                                    "'score' is not one of the product's input fields"}]


def test_a_conflict_a_retry_may_cure_carries_retry_after() -> None:
    from api.errors import domain_error

    async def answer(exc: errors.DomainError) -> Any:
        return await domain_error(None, exc)  # type: ignore[arg-type]

    conflict = asyncio.run(answer(errors.ConcurrencyConflict("changed first")))
    assert conflict.status_code == 409 and conflict.headers["Retry-After"] == "0"
    state = asyncio.run(answer(errors.ScenarioSuspendedError("scenario s is suspended")))
    assert state.status_code == 409 and "Retry-After" not in state.headers
    assert json.loads(state.body)["error"] == "scenario_suspended"
