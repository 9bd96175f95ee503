"""The client signs decisions as the server checks them (client/signing.py, client/platform.py):
a fake server over ``httpx.MockTransport`` verifies each decision with ``core.decision``
exactly as ``domain/signing.py`` does, against the version its view shows."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from client import signing
from client.platform import Party, Platform
from core import decision as d


class FakeServer:
    """Answers a view GET with ``version`` and checks each signed POST like the server:
    the member's registered key, the version, the statement over the body as sent."""

    def __init__(self, version: int = 5) -> None:
        self.version = version
        self.keys: dict[str, str] = {}      # key id -> public key
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.stale_once = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET":
            if path == "/participants/me":
                return httpx.Response(200, json={"member_id": "m-me"})
            return httpx.Response(200, json={"id": path.rsplit("/", 1)[-1],
                                             "version": self.version})
        body = json.loads(request.content or b"null")
        self.posts.append((path, body))
        if path.endswith("/keys"):
            self.keys[d.key_id(body["public_key"])] = body["public_key"]
            return httpx.Response(201, json={})
        if path.endswith("/members"):
            return httpx.Response(201, json={"token": "t-new", "member_id": "m-new"})
        return self.decide(request, path, body)

    def decide(self, request: httpx.Request, path: str, body: Any) -> httpx.Response:
        made = signing.decision_of(request.method, path, body)
        if made is None or not isinstance(body, dict) or "signature" not in body:
            return httpx.Response(200, json={"signed": False})
        sig = d.SignedDecision.of(body["signature"])
        assert sig is not None
        if self.stale_once or sig.aggregate_version != self.version:
            self.stale_once, self.version = False, self.version + 1
            return httpx.Response(409, json={"error": "stale_decision", "detail": "again"})
        stmt = d.statement(made.command, made.aggregate_id, self.version, "m-1", body)
        if not d.verifies(self.keys[sig.key_id], stmt, sig.value):
            return httpx.Response(403, json={"error": "signature_invalid"})
        created = path.endswith("/opinions") or path == "/authorizations"
        return httpx.Response(201 if created else 200, json={
            "signed": True, "command": made.command, "authorization_id": "au-new"})


def keyed(server: FakeServer) -> tuple[Platform, Party]:
    api = Platform(httpx.Client(transport=httpx.MockTransport(server), base_url="http://x"))
    party = Party("p-1", "t-1", "provider", "m-1", key=d.new_private_key())
    api.register_key(party)
    return api, party


CALLS = [
    ("participant.admission", lambda api, p: api.admit(p, "pa-1")),
    ("scenario.opinion", lambda api, p: api.give_opinion(p, "sc-1", "approve", "fine")),
    ("scenario.decision", lambda api, p: api.decide_scenario(p, "sc-1", "ok")),
    ("authorization.revocation", lambda api, p: api.revoke_authorization(p, "au-1", "no")),
    ("product.listing_decision", lambda api, p: api.decide_listing(p, "pr-1", "ok")),
    ("contract.proposal", lambda api, p: api.propose_contract(
        p, "or-1", usage_policy={"processing_count": 1}, price_fen=1,
        revenue_split={"developer": 0, "operator": 0, "platform": 0, "provider": 10000})),
    ("contract.acceptance", lambda api, p: api.accept_contract(p, "or-1")),
    ("contract.approval", lambda api, p: api.approve_contract(p, "or-1")),
    ("contract.termination", lambda api, p: api.terminate_contract(p, "or-1", "over")),
]


@pytest.mark.parametrize(("command", "call"), CALLS, ids=[c for c, _ in CALLS])
def test_each_decision_method_signs_the_statement_the_server_checks(command: str,
                                                                   call: Any) -> None:
    server = FakeServer()
    api, party = keyed(server)
    assert call(api, party) == {"signed": True, "command": command,
                                "authorization_id": "au-new"}
    _, body = server.posts[-1]
    assert body["signature"]["key_id"] == party.key_id
    assert body["signature"]["aggregate_version"] == 5


def test_a_grant_is_signed_on_its_scenario_at_the_scenario_s_version() -> None:
    from datetime import UTC, datetime

    server = FakeServer(version=3)
    api, party = keyed(server)
    now = datetime.now(UTC)
    api.authorize(party, "sc-9", [{"dataset_id": "d", "fields": ["a"]}], (now, now),
                  {"processing_count": 1})
    _, body = server.posts[-1]
    assert body["signature"]["aggregate_version"] == 3 and body["scenario_id"] == "sc-9"


def test_a_stale_version_is_read_and_signed_again() -> None:
    server = FakeServer()
    api, party = keyed(server)
    server.stale_once = True
    assert api.decide_scenario(party, "sc-1", "ok")["signed"] is True
    versions = [b["signature"]["aggregate_version"] for _, b in server.posts[1:]]
    assert versions == [5, 6]


def test_a_party_without_a_key_and_a_bare_token_send_unsigned() -> None:
    server = FakeServer()
    api, _ = keyed(server)
    assert api.decide_scenario(Party("p-2", "t-2", member_id="m-2"), "sc-1", "ok") == {
        "signed": False}
    assert api.decide_scenario("t-3", "sc-1", "ok") == {"signed": False}


def test_a_body_with_no_canonical_form_goes_unsigned_for_the_server_to_refuse() -> None:
    server = FakeServer()
    api, party = keyed(server)
    answer = api.call("POST", "/orders/or-1/contract", party,
                      json={"usage_policy": {}, "price_fen": 1.5, "revenue_split": {}})
    assert answer == {"signed": False}


def test_the_routes_cover_every_signed_command_and_nothing_else() -> None:
    assert {r.command for r in signing.ROUTES} == set(d.COMMANDS)
    assert signing.decision_of("GET", "/scenarios/sc-1/decision", None) is None
    assert signing.decision_of("POST", "/scenarios/sc-1/suspension", {}) is None
    assert signing.decision_of("POST", "/orders/o-1/cancellation", {}) is None
    assert signing.decision_of("POST", "/authorizations", {"scenario_id": 7}) is None
    assert signing.decision_of("POST", "/orders/o-1/contract?x=1", {}) == signing.Decision(
        "contract.proposal", "o-1", "/orders/o-1")
    assert signing.decision_of("POST", "/deliveries/c-1/release-approvals", None) == (
        signing.Decision("delivery.release_approval", "c-1", "/computations/c-1"))


def test_onboarding_registers_the_admin_s_key_once_admitted_and_members_get_keys() -> None:
    server = FakeServer()
    api, platform = keyed(server)

    def onboarding(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/participants" and request.method == "POST":
            return httpx.Response(201, json={"participant_id": "p-new", "token": "t-a",
                                             "member_id": "m-a"})
        return server(request)

    api.http = httpx.Client(transport=httpx.MockTransport(onboarding), base_url="http://x")
    party = api.onboard(platform, "provider", "Tax", credit_code="1", judge=platform)
    paths = [p for p, _ in server.posts[1:]]
    assert paths == ["/participants/p-new/admission", "/participants/p-new/keys"]
    assert party.key is not None and party.key_registered
    member = api.add_member(party, "clerk", ["member"])
    assert member.key is not None and member.key_registered and member.key != party.key


def test_a_party_travels_with_its_key() -> None:
    party = Party("p-1", "t-1", "provider", "m-1", "Tax", d.new_private_key(), True)
    again = Party.of_wire(json.loads(json.dumps(party.wire())))
    assert again.key_id == party.key_id and again.key_registered
    assert again.wire() == party.wire()
    assert Party.of_wire(Party("p", "t").wire()).key is None


def test_an_id_a_url_cannot_hold_is_read_quoted() -> None:
    made = signing.decision_of("POST", "/authorizations", {"scenario_id": "sc\x00/x"})
    assert made == signing.Decision("authorization.grant", "sc\x00/x", "/scenarios/sc%00%2Fx")
