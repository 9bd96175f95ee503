"""Datasets, scenarios and authorizations over HTTP: each step, who sees what, and refusals.

Every refusal leaves the log's head where it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from client.platform import Party
from runtime.build import Container
from tests.e2e.conftest import World, head

FIELDS = [{"name": "taxpayer_id", "type": "string", "sensitivity": "internal"},
          {"name": "revenue", "type": "integer", "sensitivity": "sensitive"},
          {"name": "region", "type": "string", "sensitivity": "public"}]
WINDOW = {"not_before": "2025-01-01T00:00:00+08:00", "not_after": "2099-01-01T00:00:00Z"}
PAST = {"not_before": "2020-01-01T00:00:00Z", "not_after": "2021-01-01T00:00:00Z"}


@dataclass
class Cast:
    world: World
    provider: Party
    provider_b: Party
    operator: Party
    demander: Party
    expert: Party

    @property
    def regulator(self) -> Party:
        return self.world.regulator

    @property
    def platform(self) -> Party:
        return self.world.platform


@pytest.fixture
def cast(world: World) -> Cast:
    return Cast(world, world.onboard("provider", "Tax bureau 税务局"),
                world.onboard("provider", "Market regulator 市场监管局"),
                world.onboard("operator", "Data operator 数据运营公司"),
                world.onboard("demander", "Bank 银行"),
                world.member(world.regulator, "Expert Zhang 专家", ["expert"]))


def refused(world: World, method: str, path: str, party: Party, status: int,
            json: Any = None, error: str | None = None) -> dict[str, Any]:
    """A request that must fail with ``status`` (and ``error``: by default the status's
    own code) and write nothing; its error body."""
    before = head(world)
    r = world.api.send(method, path, party, json=json)  # a decision: signed
    assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
    body: dict[str, Any] = r.json()
    assert body["error"] == (error or {403: "forbidden", 404: "not_found", 409: "wrong_state",
                                       422: "invalid_input"}[status])
    assert head(world) == before
    return body


def named(body: dict[str, Any]) -> set[str]:
    """The fields a 422 names (one shape, whether pydantic or the domain found them)."""
    return {f["field"] for f in body["fields"]}


def dataset_body(**overrides: Any) -> dict[str, Any]:
    return {"name": "Enterprise tax records 企业纳税信息", "description": "annual, by enterprise",
            "source_system": "Golden Tax III", "classification": "L2", "fields": FIELDS,
            **overrides}


def register(cast: Cast, party: Party | None = None, **overrides: Any) -> str:
    made = cast.world.call("POST", "/datasets", party or cast.provider, 201,
                           json=dataset_body(**overrides))
    return str(made["dataset_id"])


def published(cast: Cast, party: Party | None = None, **overrides: Any) -> str:
    dataset_id = register(cast, party, **overrides)
    cast.world.call("POST", f"/datasets/{dataset_id}/publication", party or cast.provider)
    return dataset_id


def scenario_body(dataset_id: str, fields: list[str] | None = None,
                  **overrides: Any) -> dict[str, Any]:
    return {"title": "SME credit scoring 小微企业信用评估", "purpose": "score loan applicants",
            "sector": "finance", "circulation_mode": "ciphertext",
            "requested": [{"dataset_id": dataset_id,
                           "fields": fields or ["taxpayer_id", "revenue"]}], **overrides}


def submitted(cast: Cast, dataset_id: str) -> str:
    made = cast.world.call("POST", "/scenarios", cast.operator, 201,
                           json=scenario_body(dataset_id))
    return str(made["scenario_id"])


def approved(cast: Cast, dataset_id: str) -> str:
    scenario_id = submitted(cast, dataset_id)
    cast.world.call("POST", f"/scenarios/{scenario_id}/opinions", cast.expert, 201,
                    json={"verdict": "approve", "comment": "purpose is legitimate"})
    cast.world.call("POST", f"/scenarios/{scenario_id}/decision", cast.regulator,
                    json={"approve": True, "comment": "approved 同意"})
    return scenario_id


def grant_body(scenario_id: str, dataset_id: str, **overrides: Any) -> dict[str, Any]:
    return {"scenario_id": scenario_id,
            "datasets": [{"dataset_id": dataset_id, "fields": ["taxpayer_id"]}],
            **WINDOW, "usage_policy": {"processing_count": 100}, **overrides}


def granted(cast: Cast, **overrides: Any) -> tuple[str, str, str]:
    """A published dataset, an approved scenario over it, and a live authorization."""
    dataset_id = published(cast)
    scenario_id = approved(cast, dataset_id)
    made = cast.world.call("POST", "/authorizations", cast.provider, 201,
                           json=grant_body(scenario_id, dataset_id, **overrides))
    return dataset_id, scenario_id, str(made["authorization_id"])


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in rows]


# -- datasets -----------------------------------------------------------------------
def stored(fields: list[dict[str, str]]) -> list[dict[str, str]]:
    """The fields as stored: each with its grade (from its sensitivity) and kind "none"."""
    grade = {"public": "L1", "internal": "L2", "sensitive": "L3", "personal": "L3"}
    return [{**f, "grade": grade[f["sensitivity"]], "kind": "none"} for f in fields]


def test_a_dataset_is_registered_updated_published_and_withdrawn(cast: Cast) -> None:
    w = cast.world
    made = w.call("POST", "/datasets", cast.provider, 201, json=dataset_body())
    assert made["state"] == "registered" and len(made["seqs"]) == 1
    dataset_id = made["dataset_id"]
    own = w.call("GET", f"/datasets/{dataset_id}", cast.provider)
    assert own["owner_id"] == cast.provider.participant_id and own["fields"] == stored(FIELDS)
    assert own["state"] == "registered" and own["version"] == 1 and own["published_at"] is None
    assert dataset_id not in ids(w.call("GET", "/datasets", cast.provider_b))

    w.call("PATCH", f"/datasets/{dataset_id}", cast.provider,
           json={"description": "annual, by enterprise, since 2015"})
    assert w.call("POST", f"/datasets/{dataset_id}/publication",
                  cast.provider)["state"] == "published"
    grown = [*FIELDS, {"name": "industry", "type": "string", "sensitivity": "public"}]
    w.call("PATCH", f"/datasets/{dataset_id}", cast.provider, json={"fields": grown})

    public = w.call("GET", f"/datasets/{dataset_id}", cast.demander)
    assert public["state"] == "published" and public["fields"] == stored(grown)
    assert public["description"] == "annual, by enterprise, since 2015"
    assert public["version"] == 4 and public["published_at"] is not None
    assert dataset_id in ids(w.call("GET", "/datasets", cast.provider_b))

    gone = w.call("POST", f"/datasets/{dataset_id}/withdrawal", cast.provider,
                  json={"reason": "source system retired"})
    assert gone["state"] == "withdrawn"
    refused(w, "GET", f"/datasets/{dataset_id}", cast.provider_b, 404)
    assert dataset_id not in ids(w.call("GET", "/datasets", cast.demander))
    mine = w.call("GET", f"/datasets/{dataset_id}", cast.provider)
    assert mine["state"] == "withdrawn" and mine["withdrawal_reason"] == "source system retired"
    assert w.call("GET", f"/datasets/{dataset_id}", cast.regulator)["state"] == "withdrawn"


def test_the_catalog_lists_published_datasets_and_the_callers_own(cast: Cast) -> None:
    w = cast.world
    a_public = published(cast)
    a_draft = register(cast, classification="L3")
    b_public = published(cast, cast.provider_b, classification="L1")
    b_draft = register(cast, cast.provider_b)
    assert ids(w.call("GET", "/datasets", cast.provider)) == [a_public, a_draft, b_public]
    assert ids(w.call("GET", "/datasets", cast.demander)) == [a_public, b_public]
    assert ids(w.call("GET", "/datasets", cast.regulator)) == [a_public, a_draft, b_public,
                                                                b_draft]
    assert ids(w.call("GET", "/datasets?state=registered", cast.provider)) == [a_draft]
    assert ids(w.call("GET", f"/datasets?owner_id={cast.provider_b.participant_id}",
                      cast.provider)) == [b_public]
    assert ids(w.call("GET", "/datasets?classification=L1", cast.demander)) == [b_public]
    assert named(refused(w, "GET", "/datasets?state=lost", cast.provider, 422)) == {
        "query.state"}


def test_another_tenants_unpublished_dataset_is_404_without_its_data(cast: Cast) -> None:
    draft = register(cast)
    for party in (cast.provider_b, cast.demander, cast.operator):
        body = refused(cast.world, "GET", f"/datasets/{draft}", party, 404)
        assert "Enterprise tax records" not in str(body)


def test_unknown_dataset_is_404(cast: Cast) -> None:
    refused(cast.world, "GET", "/datasets/no-such-dataset", cast.provider, 404)
    refused(cast.world, "POST", "/datasets/no-such-dataset/publication", cast.provider, 404)
    refused(cast.world, "PATCH", "/datasets/no-such-dataset", cast.provider, 404,
            json={"description": "x"})


def test_only_the_owning_provider_changes_a_dataset(cast: Cast) -> None:
    w = cast.world
    refused(w, "POST", "/datasets", cast.operator, 403, json=dataset_body())
    dataset_id = register(cast)
    refused(w, "POST", f"/datasets/{dataset_id}/publication", cast.provider_b, 403)
    refused(w, "PATCH", f"/datasets/{dataset_id}", cast.provider_b, 403,
            json={"description": "mine now"})
    refused(w, "POST", f"/datasets/{dataset_id}/withdrawal", cast.regulator, 403,
            json={"reason": "x"})


def test_invalid_dataset_fields_are_422_naming_the_field(cast: Cast) -> None:
    w = cast.world
    bad_field = [{"name": "revenue", "type": "integer", "sensitivity": "secret"}]
    body = refused(w, "POST", "/datasets", cast.provider, 422,
                   json=dataset_body(classification="L9", fields=bad_field))
    assert named(body) == {"classification", "fields.0.sensitivity"}
    assert named(refused(w, "POST", "/datasets", cast.provider, 422,
                         json=dataset_body(fields=[]))) == {"fields"}
    extra = [{**FIELDS[0], "comment": "not a key"}]
    assert named(refused(w, "POST", "/datasets", cast.provider, 422,
                         json=dataset_body(fields=extra))) == {"fields.0.comment"}
    twice = [FIELDS[0], FIELDS[0]]
    assert named(refused(w, "POST", "/datasets", cast.provider, 422,
                         json=dataset_body(fields=twice))) == {"fields"}
    assert named(refused(w, "POST", "/datasets", cast.provider, 422,
                         json=dataset_body(name=" "))) == {"name"}
    dataset_id = register(cast)
    assert named(refused(w, "PATCH", f"/datasets/{dataset_id}", cast.provider, 422,
                         json={})) == {"fields"}
    assert named(refused(w, "POST", f"/datasets/{dataset_id}/withdrawal", cast.provider, 422,
                         json={"reason": ""})) == {"reason"}


def test_dataset_commands_in_the_wrong_state_are_409(cast: Cast) -> None:
    w = cast.world
    dataset_id = published(cast)
    refused(w, "POST", f"/datasets/{dataset_id}/publication", cast.provider, 409)
    shrunk = FIELDS[:1]
    refused(w, "PATCH", f"/datasets/{dataset_id}", cast.provider, 409, json={"fields": shrunk})
    less = [{**FIELDS[1], "sensitivity": "public"}, FIELDS[0], FIELDS[2]]
    refused(w, "PATCH", f"/datasets/{dataset_id}", cast.provider, 409, json={"fields": less})
    w.call("POST", f"/datasets/{dataset_id}/withdrawal", cast.provider, json={"reason": "end"})
    refused(w, "POST", f"/datasets/{dataset_id}/withdrawal", cast.provider, 409,
            json={"reason": "again"})
    refused(w, "PATCH", f"/datasets/{dataset_id}", cast.provider, 409, json={"description": "x"})


# -- scenarios ----------------------------------------------------------------------
def test_a_scenario_is_submitted_reviewed_approved_and_suspended(cast: Cast) -> None:
    w = cast.world
    dataset_id = published(cast)
    made = w.call("POST", "/scenarios", cast.operator, 201, json=scenario_body(dataset_id))
    assert made["state"] == "submitted"
    scenario_id = made["scenario_id"]

    for party in (cast.operator, cast.provider, cast.regulator, cast.expert):
        assert w.call("GET", f"/scenarios/{scenario_id}", party)["state"] == "submitted"
    assert ids(w.call("GET", "/scenarios", cast.provider)) == [scenario_id]

    opinion = w.call("POST", f"/scenarios/{scenario_id}/opinions", cast.expert, 201,
                     json={"verdict": "approve", "comment": "legitimate purpose 合规"})
    assert opinion["opinions"] == 1 and opinion["state"] == "submitted"
    decided = w.call("POST", f"/scenarios/{scenario_id}/decision", cast.regulator,
                     json={"approve": True, "comment": "同意"})
    assert decided["state"] == "approved"

    seen = w.call("GET", f"/scenarios/{scenario_id}", cast.provider)
    assert seen["state"] == "approved" and seen["decision_comment"] == "同意"
    assert seen["operator_id"] == cast.operator.participant_id
    assert seen["requested"] == [{"dataset_id": dataset_id,
                                  "fields": ["taxpayer_id", "revenue"]}]
    assert seen["opinion_count"] == 1 and seen["version"] == 3
    assert [(o["expert_id"], o["verdict"], o["comment"]) for o in seen["opinions"]] == [
        (cast.expert.member_id, "approve", "legitimate purpose 合规")]

    assert ids(w.call("GET", "/scenarios?state=approved", cast.operator)) == [scenario_id]
    assert w.call("GET", "/scenarios?state=submitted", cast.operator) == []
    assert ids(w.call("GET", f"/scenarios?operator_id={cast.operator.participant_id}",
                      cast.regulator)) == [scenario_id]

    suspended = w.call("POST", f"/scenarios/{scenario_id}/suspension", cast.regulator,
                       json={"reason": "misuse reported"})
    assert suspended["state"] == "suspended"
    final = w.call("GET", f"/scenarios/{scenario_id}", cast.operator)
    assert final["state"] == "suspended" and final["suspension_reason"] == "misuse reported"


def test_the_regulator_rejects_a_scenario_with_a_reason(cast: Cast) -> None:
    w = cast.world
    scenario_id = submitted(cast, published(cast))
    w.call("POST", f"/scenarios/{scenario_id}/opinions", cast.expert, 201,
           json={"verdict": "reject"})
    made = w.call("POST", f"/scenarios/{scenario_id}/decision", cast.regulator,
                  json={"approve": False, "comment": "purpose too broad"})
    assert made["state"] == "rejected"
    seen = w.call("GET", f"/scenarios/{scenario_id}", cast.operator)
    assert seen["state"] == "rejected" and seen["decision_comment"] == "purpose too broad"
    assert seen["opinions"][0]["verdict"] == "reject"


def test_a_scenario_is_seen_only_by_its_operator_and_the_requested_providers(
        cast: Cast) -> None:
    w = cast.world
    a_data, b_data = published(cast), published(cast, cast.provider_b)
    only_a = submitted(cast, a_data)
    both = w.call("POST", "/scenarios", cast.operator, 201, json=scenario_body(
        a_data, requested=[{"dataset_id": a_data, "fields": ["region"]},
                           {"dataset_id": b_data, "fields": ["revenue"]}]))["scenario_id"]
    assert ids(w.call("GET", "/scenarios", cast.provider)) == [only_a, both]
    assert ids(w.call("GET", "/scenarios", cast.provider_b)) == [both]
    assert w.call("GET", "/scenarios", cast.demander) == []
    for party in (cast.provider_b, cast.demander):
        body = refused(w, "GET", f"/scenarios/{only_a}", party, 404)
        assert "credit scoring" not in str(body)


def test_unknown_scenario_is_404(cast: Cast) -> None:
    w = cast.world
    refused(w, "GET", "/scenarios/no-such-scenario", cast.operator, 404)
    refused(w, "POST", "/scenarios/no-such-scenario/opinions", cast.expert, 404,
            json={"verdict": "approve"})
    refused(w, "POST", "/scenarios", cast.operator, 404,
            json=scenario_body("no-such-dataset"))


def test_scenario_steps_need_their_roles(cast: Cast) -> None:
    w = cast.world
    dataset_id = published(cast)
    refused(w, "POST", "/scenarios", cast.provider, 403, json=scenario_body(dataset_id))
    scenario_id = submitted(cast, dataset_id)
    opinion = {"verdict": "approve", "comment": ""}
    refused(w, "POST", f"/scenarios/{scenario_id}/opinions", cast.operator, 403, json=opinion)
    # the regulator's admin is not an expert, the expert is not an admin
    refused(w, "POST", f"/scenarios/{scenario_id}/opinions", cast.regulator, 403, json=opinion)
    w.call("POST", f"/scenarios/{scenario_id}/opinions", cast.expert, 201, json=opinion)
    refused(w, "POST", f"/scenarios/{scenario_id}/decision", cast.expert, 403,
            json={"approve": True})
    refused(w, "POST", f"/scenarios/{scenario_id}/decision", cast.platform, 403,
            json={"approve": True})
    w.call("POST", f"/scenarios/{scenario_id}/decision", cast.regulator, json={"approve": True})
    refused(w, "POST", f"/scenarios/{scenario_id}/suspension", cast.operator, 403,
            json={"reason": "x"})


def test_invalid_scenario_fields_are_422_naming_the_field(cast: Cast) -> None:
    w = cast.world
    dataset_id = published(cast)
    secret = published(cast, classification="L4")
    body = refused(w, "POST", "/scenarios", cast.operator, 422,
                   json=scenario_body(dataset_id, circulation_mode="pigeon", requested=[]))
    assert named(body) == {"circulation_mode", "requested"}
    assert named(refused(w, "POST", "/scenarios", cast.operator, 422, json=scenario_body(
        dataset_id, fields=["salary"]))) == {"requested[0].fields"}
    assert named(refused(w, "POST", "/scenarios", cast.operator, 422, json=scenario_body(
        secret, circulation_mode="plaintext"))) == {"circulation_mode"}
    assert named(refused(w, "POST", "/scenarios", cast.operator, 422, json=scenario_body(
        dataset_id, fields=[""]))) == {"requested.0.fields.0"}
    scenario_id = submitted(cast, dataset_id)
    assert named(refused(w, "POST", f"/scenarios/{scenario_id}/opinions", cast.expert, 422,
                         json={"verdict": "maybe"})) == {"verdict"}
    assert named(refused(w, "POST", f"/scenarios/{scenario_id}/decision", cast.regulator, 422,
                         json={"approve": False, "comment": ""})) == {"comment"}
    assert named(refused(w, "POST", f"/scenarios/{scenario_id}/decision", cast.regulator, 422,
                         json={"comment": "no verdict"})) == {"approve"}


def test_scenario_commands_in_the_wrong_state_are_409(cast: Cast) -> None:
    w = cast.world
    draft = register(cast)
    refused(w, "POST", "/scenarios", cast.operator, 409, json=scenario_body(draft),
            error="dataset_not_published")
    scenario_id = submitted(cast, published(cast))
    refused(w, "POST", f"/scenarios/{scenario_id}/decision", cast.regulator, 409,
            json={"approve": True, "comment": "no opinions yet"})
    refused(w, "POST", f"/scenarios/{scenario_id}/suspension", cast.regulator, 409,
            json={"reason": "not approved yet"})
    w.call("POST", f"/scenarios/{scenario_id}/opinions", cast.expert, 201,
           json={"verdict": "approve"})
    refused(w, "POST", f"/scenarios/{scenario_id}/opinions", cast.expert, 409,
            json={"verdict": "reject"})
    w.call("POST", f"/scenarios/{scenario_id}/decision", cast.regulator, json={"approve": True})
    refused(w, "POST", f"/scenarios/{scenario_id}/decision", cast.regulator, 409,
            json={"approve": False, "comment": "changed my mind"})


# -- authorizations -----------------------------------------------------------------
def test_a_provider_grants_and_revokes_an_authorization(cast: Cast) -> None:
    w = cast.world
    dataset_id = published(cast)
    scenario_id = approved(cast, dataset_id)
    made = w.call("POST", "/authorizations", cast.provider, 201, json=grant_body(
        scenario_id, dataset_id,
        usage_policy={"processing_count": 100, "circulation_modes": ["ciphertext"],
                      "not_after": "2030-01-01T08:00:00+08:00"}))
    assert made["state"] == "granted"
    authorization_id = made["authorization_id"]

    for party in (cast.provider, cast.operator, cast.regulator):
        seen = w.call("GET", f"/authorizations/{authorization_id}", party)
        assert seen["state"] == "granted" and seen["scenario_id"] == scenario_id
    assert seen["provider_id"] == cast.provider.participant_id
    assert seen["operator_id"] == cast.operator.participant_id
    assert seen["datasets"] == [{"dataset_id": dataset_id, "fields": ["taxpayer_id"]}]
    assert seen["not_before"] == "2024-12-31T16:00:00Z"
    assert seen["usage_policy"] == {"processing_count": 100, "circulation_modes": ["ciphertext"],
                                    "not_after": "2030-01-01T00:00:00Z"}
    assert ids(w.call("GET", f"/authorizations?scenario_id={scenario_id}",
                      cast.operator)) == [authorization_id]
    assert ids(w.call("GET", "/authorizations?state=granted", cast.provider)) == [
        authorization_id]
    assert w.call("GET", "/authorizations?state=revoked", cast.provider) == []

    revoked = w.call("POST", f"/authorizations/{authorization_id}/revocation", cast.provider,
                     json={"reason": "contract ended"})
    assert revoked["state"] == "revoked"
    seen = w.call("GET", f"/authorizations/{authorization_id}", cast.operator)
    assert seen["state"] == "revoked" and seen["revocation_reason"] == "contract ended"
    assert seen["ended_at"] is not None and seen["version"] == 2


def test_the_platform_records_an_authorization_expiry(cast: Cast) -> None:
    w = cast.world
    _, _, authorization_id = granted(cast, **PAST)
    refused(w, "POST", f"/authorizations/{authorization_id}/expiry", cast.provider, 403)
    assert w.call("POST", f"/authorizations/{authorization_id}/expiry",
                  cast.platform)["state"] == "expired"
    assert w.call("GET", f"/authorizations/{authorization_id}",
                  cast.provider)["state"] == "expired"
    refused(w, "POST", f"/authorizations/{authorization_id}/expiry", cast.platform, 409)


def test_an_authorization_is_seen_only_by_its_provider_and_operator(cast: Cast) -> None:
    w = cast.world
    _, _, authorization_id = granted(cast)
    for party in (cast.provider_b, cast.demander):
        body = refused(w, "GET", f"/authorizations/{authorization_id}", party, 404)
        assert "taxpayer_id" not in str(body)
        assert w.call("GET", "/authorizations", party) == []
    assert ids(w.call("GET", "/authorizations", cast.platform)) == [authorization_id]


def test_unknown_authorization_is_404(cast: Cast) -> None:
    w = cast.world
    refused(w, "GET", "/authorizations/no-such-grant", cast.provider, 404)
    refused(w, "POST", "/authorizations/no-such-grant/revocation", cast.provider, 404,
            json={"reason": "x"})
    refused(w, "POST", "/authorizations", cast.provider, 404,
            json=grant_body("no-such-scenario", published(cast)))


def test_authorization_steps_need_their_roles(cast: Cast) -> None:
    w = cast.world
    dataset_id, scenario_id, authorization_id = granted(cast)
    refused(w, "POST", "/authorizations", cast.operator, 403,
            json=grant_body(scenario_id, dataset_id))
    # a provider may not grant another provider's dataset, nor revoke its grant
    refused(w, "POST", "/authorizations", cast.provider_b, 403,
            json=grant_body(scenario_id, dataset_id))
    refused(w, "POST", f"/authorizations/{authorization_id}/revocation", cast.provider_b, 403,
            json={"reason": "x"})
    refused(w, "POST", f"/authorizations/{authorization_id}/revocation", cast.regulator, 403,
            json={"reason": "x"})


def test_invalid_authorization_fields_are_422_naming_the_field(cast: Cast) -> None:
    w = cast.world
    dataset_id = published(cast)
    scenario_id = approved(cast, dataset_id)
    grant = grant_body(scenario_id, dataset_id)
    without_policy = {k: v for k, v in grant.items() if k != "usage_policy"}
    assert named(refused(w, "POST", "/authorizations", cast.provider, 422,
                         json={**without_policy, "datasets": []})) == {"datasets",
                                                                       "usage_policy"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"not_before": "yesterday"}, "not_before"),
        ({"not_before": "2025-01-01T00:00:00"}, "not_before"),
        ({"not_after": "2024-01-01T00:00:00Z"}, "not_after"),
        ({"usage_policy": {"telepathy": True}}, "usage_policy.telepathy"),
        ({"usage_policy": {"view_count": -1}}, "usage_policy.view_count"),
        ({"datasets": [{"dataset_id": dataset_id, "fields": ["region"]}]}, "datasets[0].fields")]
    for change, field in cases:
        body = refused(w, "POST", "/authorizations", cast.provider, 422, json={**grant, **change})
        assert named(body) == {field}, change
    _, _, authorization_id = granted(cast)
    assert named(refused(w, "POST", f"/authorizations/{authorization_id}/revocation",
                         cast.provider, 422, json={})) == {"reason"}


def test_authorization_commands_in_the_wrong_state_are_409(cast: Cast) -> None:
    w = cast.world
    dataset_id = published(cast)
    pending = submitted(cast, dataset_id)
    refused(w, "POST", "/authorizations", cast.provider, 409, json=grant_body(pending, dataset_id),
            error="scenario_not_approved")
    _, scenario_id, authorization_id = granted(cast)
    refused(w, "POST", f"/authorizations/{authorization_id}/expiry", cast.platform, 409)
    w.call("POST", f"/authorizations/{authorization_id}/revocation", cast.provider,
           json={"reason": "done"})
    refused(w, "POST", f"/authorizations/{authorization_id}/revocation", cast.provider, 409,
            json={"reason": "again"})
    w.call("POST", f"/scenarios/{scenario_id}/suspension", cast.regulator,
           json={"reason": "misuse"})
    refused(w, "POST", "/authorizations", cast.provider, 409, json=grant_body(
        scenario_id, published(cast)), error="scenario_suspended")


# -- rebuild ------------------------------------------------------------------------
def test_a_rebuild_gives_the_same_catalog_and_the_same_visibility(cast: Cast,
                                                                  container: Container) -> None:
    w = cast.world
    dataset_id, scenario_id, authorization_id = granted(cast)
    w.call("POST", f"/datasets/{register(cast)}/withdrawal", cast.provider, json={"reason": "x"})
    runner = container.runner
    runner.wait_for(head(w))
    before = runner.digests()
    assert {"datasets", "scenarios", "authorizations"} <= set(before)
    assert runner.rebuild() == head(w)
    assert runner.digests() == before
    assert w.call("GET", f"/scenarios/{scenario_id}", cast.provider)["state"] == "approved"
    assert ids(w.call("GET", "/authorizations", cast.operator)) == [authorization_id]
    refused(w, "GET", f"/scenarios/{scenario_id}", cast.provider_b, 404)
    assert ids(w.call("GET", "/datasets", cast.demander)) == [dataset_id]
