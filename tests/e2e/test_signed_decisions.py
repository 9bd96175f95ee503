"""Signed decisions over HTTP (签名验签): a decision is refused and writes nothing unless it is
signed by a registered, unrevoked key of the deciding member, over this very body, on this
aggregate at its current version; a valid one verifies later from its event alone, with
the ``cryptography`` library; keys are rotated and revoked; the development mode lets an
unsigned decision through, and says so.

The decisions are signed here by hand (``core.decision.signed_body``), the other calls made
with bare tokens, so what is tested is the server, not the client's signing.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi.testclient import TestClient

from client.platform import Platform, bearer
from core import decision
from core.canonical import canonical_bytes
from core.tokens import hash_token, new_token
from domain import signing
from tests.e2e.conftest import ADMIN_TOKEN, FIELDS, USED

OPINION = {"verdict": "approve", "comment": "proportionate"}


@dataclass
class Member:
    """A member as it acts: its participant, its id, its token, its key."""

    participant_id: str
    member_id: str
    token: str
    key: Ed25519PrivateKey | None = None

    @property
    def key_id(self) -> str:
        assert self.key is not None
        return decision.key_id(decision.public_key_text(self.key.public_key()))


class Http:
    """The test app, called as a member; decisions signed by hand."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.api = Platform(client)  # type: ignore[arg-type]

    def post(self, path: str, who: Member, body: Any = None, expect: int = 200) -> Any:
        response = self.client.post(path, json=body, headers=bearer(who.token))
        assert response.status_code == expect, response.text
        return response.json()

    def get(self, path: str, who: Member) -> Any:
        response = self.client.get(path, headers=bearer(who.token))
        assert response.status_code == 200, response.text
        return response.json()

    def head(self) -> int:
        return int(self.client.get("/health").json()["head"])

    def give_key(self, who: Member) -> Member:
        who.key = decision.new_private_key()
        made = self.post(f"/participants/{who.participant_id}/keys", who,
                         {"public_key": decision.public_key_text(who.key.public_key())}, 201)
        assert made["key_id"] == who.key_id
        return who

    def signed(self, who: Member, command: str, aggregate_id: str, body: dict[str, Any], *,
               version: int | None = None, key: Ed25519PrivateKey | None = None
               ) -> dict[str, Any]:
        """``body`` signed by ``who`` (with ``key``, else its own) at ``version``, else at
        the aggregate's version read from its view."""
        if version is None:
            view = {"participant": "/participants/{}", "scenario": "/scenarios/{}",
                    "authorization": "/authorizations/{}", "order": "/orders/{}",
                    "product": "/products/{}"}[decision.COMMANDS[command]]
            version = int(self.get(view.format(aggregate_id), who)["version"])
        signer = key if key is not None else who.key
        assert signer is not None
        return decision.signed_body(signer, command, aggregate_id, version, who.member_id,
                                    body)

    def decide(self, path: str, who: Member, command: str, aggregate_id: str,
               body: dict[str, Any], expect: int = 200, **how: Any) -> Any:
        return self.post(path, who, self.signed(who, command, aggregate_id, body, **how),
                         expect)

    def refused(self, path: str, who: Member, body: Any, status: int,
                code: str | tuple[str, ...]) -> Any:
        """The request is answered ``status`` with ``code`` (one of them) and the log does
        not grow."""
        before = self.head()
        response = self.client.post(path, json=body, headers=bearer(who.token))
        codes = (code,) if isinstance(code, str) else code
        assert response.status_code == status and response.json()["error"] in codes, \
            response.text
        assert self.head() == before
        return response


@dataclass
class Market:
    http: Http
    platform: Member
    regulator: Member
    expert: Member
    expert2: Member
    provider: Member
    operator: Member
    dataset_id: str
    scenarios: list[str]

    def onboard(self, role: str, name: str) -> Member:
        """Registered by the platform (sent only the hash of the admin's token, made
        here), admitted (signed) by its judge, its admin keyed."""
        token = new_token()
        made = self.http.post("/participants", self.platform, {
            "name": name, "role": role, "credit_code": f"9111{role[:4].upper()}",
            "admin_name": f"{name} admin", "admin_token_hash": hash_token(token)}, 201)
        pid = made["participant_id"]
        judge = self.regulator if role == "operator" else self.platform
        self.http.decide(f"/participants/{pid}/admission", judge, "participant.admission",
                         pid, {"approve": True, "comment": "meets the criteria"})
        return self.http.give_key(Member(pid, made["member_id"], token))

    def member(self, admin: Member, roles: list[str]) -> Member:
        made = self.http.post(f"/participants/{admin.participant_id}/members", admin,
                              {"name": "+".join(roles), "roles": roles}, 201)
        return self.http.give_key(Member(admin.participant_id, made["member_id"],
                                         made["token"]))

    def opinion(self, expert: Member, scenario_id: str, expect: int = 201) -> Any:
        return self.http.decide(f"/scenarios/{scenario_id}/opinions", expert,
                                "scenario.opinion", scenario_id, OPINION, expect)

    def grant_body(self, scenario_id: str, days: int = 365) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {"scenario_id": scenario_id,
                "datasets": [{"dataset_id": self.dataset_id, "fields": USED}],
                "not_before": (now - timedelta(days=1)).isoformat(),
                "not_after": (now + timedelta(days=days)).isoformat(),
                "usage_policy": {"processing_count": 10}}

    def approved(self, scenario_id: str) -> None:
        self.opinion(self.expert, scenario_id)
        self.http.decide(f"/scenarios/{scenario_id}/decision", self.regulator,
                         "scenario.decision", scenario_id, {"approve": True, "comment": "ok"})


def _market(client: TestClient) -> Market:
    http = Http(client)
    me = client.get("/participants/me", headers=bearer(ADMIN_TOKEN)).json()
    platform = http.give_key(Member(me["participant"]["id"], me["member_id"], ADMIN_TOKEN))
    m = Market(http, platform, platform, platform, platform, platform, platform, "", [])
    m.regulator = m.onboard("regulator", "Data bureau")
    m.expert, m.expert2 = m.member(m.regulator, ["expert"]), m.member(m.regulator, ["expert"])
    m.provider = m.onboard("provider", "Tax bureau")
    m.operator = m.onboard("operator", "Data operator")
    m.dataset_id = http.api.register_dataset(m.provider.token, name="tax", description="",
                                             source_system="tax-core", fields=FIELDS)
    http.api.publish_dataset(m.provider.token, m.dataset_id)
    m.scenarios = [http.api.propose_scenario(
        m.operator.token, title=f"scoring {n}", purpose="credit scoring", sector="finance",
        requested=[{"dataset_id": m.dataset_id, "fields": USED}]) for n in (1, 2)]
    return m


@pytest.fixture
def market(client: TestClient) -> Market:
    return _market(client)


def test_a_signed_grant_verifies_later_from_its_event_alone(market: Market) -> None:
    http, provider, sid = market.http, market.provider, market.scenarios[0]
    market.approved(sid)
    body = market.grant_body(sid)
    made = http.decide("/authorizations", provider, "authorization.grant", sid, body, 201)
    event = http.get(f"/ledger/events/{made['seqs'][0]}", market.regulator)
    assert event["type"] == "authorization.granted"
    recorded = event["payload"]["signature"]
    statement = recorded["statement"]
    version = http.get(f"/scenarios/{sid}", provider)["version"]
    assert statement == {"format": decision.FORMAT, "command": "authorization.grant",
                         "aggregate_id": sid, "aggregate_version": version,
                         "member_id": provider.member_id, "body": body}
    # the key, from the member's key_registered event: the log alone, no platform code
    keys = [e["payload"] for e in http.get("/ledger/events?limit=1000", market.regulator)[
        "events"] if e["type"] == "participant.key_registered"
        and e["payload"]["key_id"] == recorded["key_id"]]
    assert [k["member_id"] for k in keys] == [provider.member_id]
    signed_bytes = json.dumps(statement, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode("utf-8")
    assert signed_bytes == canonical_bytes(statement)
    Ed25519PublicKey.from_public_bytes(base64.b64decode(keys[0]["public_key"])).verify(
        base64.b64decode(recorded["value"]), signed_bytes)  # raises unless it verifies
    assert decision.event_signature_verifies(keys[0]["public_key"], recorded)
    assert "signature" in json.loads(base64.b64decode(event["canonical"]))["payload"]


def test_an_unsigned_decision_is_refused_and_health_says_signatures_are_required(
        market: Market) -> None:
    sid = market.scenarios[0]
    market.http.refused(f"/scenarios/{sid}/opinions", market.expert, OPINION, 403,
                        "signature_required")
    assert market.http.client.get("/health").json()["unsigned_decisions"] == "required"


def test_a_decision_signed_with_another_members_key_is_refused(market: Market) -> None:
    http, sid = market.http, market.scenarios[0]
    # the other expert's key: not one of this member's
    stolen = http.signed(market.expert, "scenario.opinion", sid, OPINION,
                         key=market.expert2.key)
    http.refused(f"/scenarios/{sid}/opinions", market.expert, stolen, 403,
                 "signature_required")
    # this member's key id with the other's signature value
    own = http.signed(market.expert, "scenario.opinion", sid, OPINION)
    forged = dict(own, signature=dict(own["signature"], value=stolen["signature"]["value"]))
    http.refused(f"/scenarios/{sid}/opinions", market.expert, forged, 403, "signature_invalid")
    # what the other expert signed, sent with this member's token
    theirs = http.signed(market.expert2, "scenario.opinion", sid, OPINION)
    http.refused(f"/scenarios/{sid}/opinions", market.expert, theirs, 403,
                 "signature_required")


def test_a_decision_over_a_changed_body_is_refused(market: Market) -> None:
    http, sid = market.http, market.scenarios[0]
    market.approved(sid)
    signed = http.signed(market.provider, "authorization.grant", sid, market.grant_body(sid))
    for change in ({"usage_policy": {"processing_count": 1000000}},
                   {"not_after": market.grant_body(sid, days=3650)["not_after"]}):
        http.refused("/authorizations", market.provider, {**signed, **change}, 403,
                     "signature_invalid")
    http.post("/authorizations", market.provider, signed, 201)


def test_a_decision_replayed_onto_another_aggregate_or_version_is_refused(
        market: Market) -> None:
    http, (s1, s2) = market.http, market.scenarios
    signed = http.signed(market.expert, "scenario.opinion", s1, OPINION)
    http.refused(f"/scenarios/{s2}/opinions", market.expert, signed, 403, "signature_invalid")
    market.opinion(market.expert2, s1)  # the scenario moves on: version 2
    response = http.refused(f"/scenarios/{s1}/opinions", market.expert, signed, 409,
                            "stale_decision")
    assert response.headers["Retry-After"] == "0"
    assert "sign again at version 2" in response.json()["detail"]
    market.opinion(market.expert, s1)  # signed again on the current version


def test_a_signed_grant_counts_once_even_after_its_revocation(market: Market) -> None:
    """A grant signs the scenario, whose version a grant does not move: the same signed
    body again (after the first was revoked, too) is refused, so one signature never
    records two authorizations; a grant naming a new id goes through."""
    http, provider, sid = market.http, market.provider, market.scenarios[0]
    market.approved(sid)
    body = http.signed(provider, "authorization.grant", sid, market.grant_body(sid))
    first = http.post("/authorizations", provider, body, 201)["authorization_id"]
    http.refused("/authorizations", provider, body, 409, "decision_replayed")
    http.decide(f"/authorizations/{first}/revocation", provider, "authorization.revocation",
                first, {"reason": "no longer"})
    http.refused("/authorizations", provider, body, 409, "decision_replayed")
    chosen = "6f1d7c1e-5a43-4f7e-8a65-0d6b1f0f2a11"
    again = http.signed(provider, "authorization.grant", sid,
                        {**market.grant_body(sid), "authorization_id": chosen})
    assert http.post("/authorizations", provider, again, 201)["authorization_id"] == chosen
    http.refused("/authorizations", provider, again, 409, "decision_replayed")


def test_a_suspended_participants_member_decides_nothing(market: Market) -> None:
    http, sid = market.http, market.scenarios[0]
    market.approved(sid)
    made = http.decide("/authorizations", market.provider, "authorization.grant", sid,
                       market.grant_body(sid), 201)
    aid = made["authorization_id"]
    signed = http.signed(market.provider, "authorization.revocation", aid, {"reason": "done"})
    http.post(f"/participants/{market.provider.participant_id}/suspension", market.platform,
              {"reason": "fraud"})
    http.refused(f"/authorizations/{aid}/revocation", market.provider, signed, 409,
                 ("participant_suspended", "wrong_state"))


def test_the_signature_is_verified_off_the_event_loop(market: Market,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    where: list[str] = []

    def verifies(*args: Any) -> bool:
        try:
            asyncio.get_running_loop()
            where.append("event loop")
        except RuntimeError:
            where.append("worker thread")
        return decision.verifies(*args)

    monkeypatch.setattr(signing, "verifies", verifies)
    market.opinion(market.expert, market.scenarios[0])
    assert where == ["worker thread"]


def test_keys_rotate_and_revoke(market: Market) -> None:
    http, expert, sid = market.http, market.expert, market.scenarios[0]
    path = f"/participants/{expert.participant_id}"
    old_key, old_id = expert.key, expert.key_id
    early = http.signed(expert, "scenario.opinion", sid, OPINION)  # by the old key
    expert.key = decision.new_private_key()
    rotated = http.post(f"{path}/keys", expert, {
        "public_key": decision.public_key_text(expert.key.public_key()), "replaces": old_id},
        201)
    assert rotated["key_id"] == expert.key_id and len(rotated["seqs"]) == 2
    http.refused(f"/scenarios/{sid}/opinions", expert, early, 403, "key_revoked")
    keys = {k["key_id"]: k for m in http.get(path, market.regulator)["members"]
            if m["member_id"] == expert.member_id for k in m["keys"]}
    assert {k: v["state"] for k, v in keys.items()} == {old_id: "revoked",
                                                       expert.key_id: "active"}
    assert keys[old_id]["revocation_reason"] == f"replaced by {expert.key_id}"
    assert keys[expert.key_id]["public_key"] == decision.public_key_text(
        expert.key.public_key())
    # the old key is revoked: it cannot be replaced again, nor signs
    assert old_key is not None
    http.refused(f"/participants/{expert.participant_id}/keys/{old_id}/revocation",
                 expert, {"reason": "again"}, 409, "wrong_state")
    # another participant's admin may not revoke it; its own participant's admin may
    http.refused(f"{path}/keys/{expert.key_id}/revocation", market.provider,
                 {"reason": "not yours"}, 403, "forbidden")
    http.post(f"{path}/keys/{expert.key_id}/revocation", market.regulator, {"reason": "left"})
    http.refused(f"/scenarios/{sid}/opinions", expert,
                 http.signed(expert, "scenario.opinion", sid, OPINION), 403, "key_revoked")
    http.give_key(expert)  # a new key, and the expert signs again
    market.opinion(expert, sid)


def test_a_decision_body_states_its_signature_in_the_openapi_document(client: TestClient
                                                                     ) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("AdmissionDecision", "OpinionCreate", "ScenarioDecision",
                 "AuthorizationCreate", "Revocation", "ListingDecision", "ContractProposal",
                 "Termination", "SignedBody"):
        assert "signature" in schemas[name]["properties"], name
        assert "signature" not in schemas[name].get("required", []), name
    assert set(schemas["DecisionSignature"]["required"]) == {"key_id", "aggregate_version",
                                                             "value"}


class TestDevelopmentMode:
    """DATALEDGER_ALLOW_UNSIGNED_DECISIONS: unsigned decisions let through, never silently."""

    @pytest.fixture
    def settings_changes(self) -> dict[str, Any]:
        return {"allow_unsigned_decisions": True}

    def test_an_unsigned_decision_is_recorded_with_a_null_signature(
            self, market: Market) -> None:
        http, sid = market.http, market.scenarios[0]
        assert http.client.get("/health").json()["unsigned_decisions"] == "allowed"
        made = http.post(f"/scenarios/{sid}/opinions", market.expert, OPINION, 201)
        event = http.get(f"/ledger/events/{made['seqs'][0]}", market.regulator)
        assert event["payload"]["signature"] is None
        # a signature that is sent is checked all the same
        http.refused(f"/scenarios/{sid}/opinions", market.expert2,
                     {**http.signed(market.expert2, "scenario.opinion", sid, OPINION),
                      "comment": "changed"}, 403, "signature_invalid")

    def test_serve_warns_at_start(self, client: TestClient, container: Any,
                                  caplog: pytest.LogCaptureFixture) -> None:
        from api.app import UNSIGNED_WARNING, create_app

        with caplog.at_level("WARNING", logger="dataledger.api"), \
                TestClient(create_app(container)):
            pass
        assert UNSIGNED_WARNING in caplog.text
