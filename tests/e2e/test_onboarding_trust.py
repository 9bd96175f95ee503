"""The platform is not trusted with another participant's identity (DESIGN.md section 8):
one regulator per platform, which nobody suspends; a new participant's first admin token is
made by the participant (the platform gets its hash only); a member rotates its own token,
and the old one stops working at once. The regressions of the review's probes
(test_probe_reg.py, test_probe_sign.py::test_platform_acts_as_regulator_…)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from client.platform import Party, Platform, bearer
from core.tokens import hash_token, new_token
from domain import participant as uc
from domain.application import ConflictError
from domain.base import Actor
from runtime.build import PLATFORM_ADMIN_ID, PLATFORM_ID, Container
from tests.e2e.conftest import ADMIN_TOKEN, World, head


def onboarding(role: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "role": role, "credit_code": "91110000MA01SHADOW",
            "admin_name": "admin", **extra}


def refused(world: World, method: str, path: str, token: str, status: int, error: str,
            body: Any = None) -> dict[str, Any]:
    """The request is refused with ``status`` ``error`` and writes nothing."""
    before = head(world)
    r = world.client.request(method, path, headers=bearer(token), json=body)
    assert (r.status_code, r.json().get("error")) == (status, error), r.text
    assert head(world) == before, f"{method} {path} wrote to the log"
    answer: dict[str, Any] = r.json()
    return answer


# -- one regulator per platform ------------------------------------------------------------
@pytest.mark.parametrize("extra", [{}, {"admin_token_hash": hash_token(new_token())}],
                         ids=["server-token", "own-token"])
def test_the_platform_cannot_make_a_second_regulator(world: World,
                                                     extra: dict[str, Any]) -> None:
    answer = refused(world, "POST", "/participants", ADMIN_TOKEN, 409, "regulator_exists",
                     onboarding("regulator", "Shadow bureau", **extra))
    assert world.regulator.participant_id in answer["detail"]
    names = {p["name"] for p in world.call("GET", "/participants", world.regulator)}
    assert "Shadow bureau" not in names


def test_nobody_suspends_the_regulator(world: World) -> None:
    path = f"/participants/{world.regulator.participant_id}/suspension"
    for who in (world.platform, world.regulator):
        answer = refused(world, "POST", path, who.token, 403, "regulator_not_suspendable",
                         {"reason": "x"})
        assert answer["rule"] == "participant.suspension"
    me = world.call("GET", "/participants/me", world.regulator)
    assert me["participant"]["state"] == "admitted"


def test_a_rejected_regulator_frees_the_seat(client: TestClient) -> None:
    api = Platform(client)
    platform = api.give_key(api.party(ADMIN_TOKEN))
    wrong = api.onboard(platform, "regulator", "Wrong bureau", credit_code="9111", judge=None)
    r = client.post("/participants", headers=bearer(ADMIN_TOKEN),
                    json=onboarding("regulator", "Data bureau"))
    assert (r.status_code, r.json()["error"]) == (409, "regulator_exists")
    api.call("POST", f"/participants/{wrong.participant_id}/admission", platform,
             json={"approve": False, "comment": "not the bureau the law names"})
    right = api.onboard(platform, "regulator", "Data bureau", credit_code="9112",
                        judge=platform)
    assert api.me(right)["participant"]["state"] == "admitted"


def test_two_racing_regulator_registrations_conflict_on_the_seat(container: Container) -> None:
    """Both decided before either is stored (each saw a free seat): the second append
    conflicts on the seat's version, and nothing of it is written."""
    ledger = container.ledger
    actor = Actor(PLATFORM_ID, PLATFORM_ADMIN_ID, "platform", ("admin",))

    def decided(name: str) -> Any:
        made = ledger._prepare(uc.register_participant, actor, (), {
            "name": name, "role": "regulator", "credit_code": "9111", "admin_name": "a",
            "admin_token_hash": hash_token(new_token())}, None, False)
        assert isinstance(made, tuple)  # decided, not a replayed answer
        return made

    first, second = decided("Data bureau"), decided("Shadow bureau")
    ledger.committer.commit(*first)
    before = container.store.max_seq()
    with pytest.raises(ConflictError):
        ledger.committer.commit(*second)
    assert container.store.max_seq() == before


# -- the first admin's token: the participant's own ---------------------------------------
def test_onboarding_with_a_token_hash_answers_no_token(world: World) -> None:
    token = new_token()  # made by the new participant; the platform is sent its hash
    made = world.call("POST", "/participants", world.platform, 201,
                      json=onboarding("provider", "Tax bureau", admin_token_hash=hash_token(token)))
    assert made.get("token") is None and made["token_seen_by_platform"] is False
    assert token not in str(made)
    me = world.call("GET", "/participants/me", Party(made["participant_id"], token))
    assert me["member_id"] == made["member_id"] and me["member_roles"] == ["admin"]
    # no event holds the token either: only its hash
    events = world.api.events(world.regulator)
    assert token not in str(events)


def test_onboarding_without_a_token_hash_says_the_platform_saw_it(world: World) -> None:
    made = world.call("POST", "/participants", world.platform, 201,
                      json=onboarding("provider", "Tax bureau"))
    assert made["token"].startswith("dl_") and made["token_seen_by_platform"] is True


@pytest.mark.parametrize("bad", ["A" * 64, "0" * 63, "g" * 64, hash_token("x") + "0"])
def test_a_malformed_token_hash_is_422(world: World, bad: str) -> None:
    answer = refused(world, "POST", "/participants", ADMIN_TOKEN, 422, "invalid_input",
                     onboarding("provider", "Tax bureau", admin_token_hash=bad))
    assert [f["field"] for f in answer["fields"]] == ["admin_token_hash"]


def test_a_token_hash_in_use_is_refused(world: World) -> None:
    answer = refused(world, "POST", "/participants", ADMIN_TOKEN, 422, "invalid_input",
                     onboarding("provider", "Tax bureau",
                                admin_token_hash=hash_token(world.regulator.token)))
    assert [f["field"] for f in answer["fields"]] == ["token_hash"]
    me = world.call("GET", "/participants/me", world.regulator)
    assert me["participant"]["id"] == world.regulator.participant_id


def test_every_party_of_the_client_holds_a_token_the_platform_never_saw(world: World) -> None:
    provider = world.onboard("provider", "Tax bureau")
    seen = [e for e in world.api.events(world.regulator)
            if e["type"] == "participant.member_added"
            and e["originator_id"] == provider.participant_id]
    assert [e["payload"]["token_hash"] for e in seen] == [hash_token(provider.token)]


# -- rotation: a member's own ---------------------------------------------------------------
def rotation(party: Party) -> str:
    return f"/participants/{party.participant_id}/members/{party.member_id}/token"


def test_a_rotated_token_stops_working_at_once(world: World) -> None:
    provider = world.onboard("provider", "Tax bureau")
    old = provider.token
    world.call("GET", "/participants/me", provider)  # the old token, cached by the server
    world.api.rotate_token(provider)
    r = world.client.get("/participants/me", headers=bearer(old))
    assert (r.status_code, r.json()["error"]) == (401, "unauthenticated")
    assert world.call("GET", "/participants/me", provider)["member_id"] == provider.member_id
    world.call("POST", f"/participants/{provider.participant_id}/members", provider, 201,
               json={"name": "clerk", "roles": ["member"]})  # the new one runs commands


def test_an_admin_rotates_its_members_token_and_a_pending_participant_its_own(
        world: World) -> None:
    provider = world.onboard("provider", "Tax bureau")
    clerk = world.member(provider, "compute node", ["member"])
    old = clerk.token
    world.api.rotate_token(provider, clerk)
    assert world.client.get("/participants/me", headers=bearer(old)).status_code == 401
    assert world.call("GET", "/participants/me", clerk)["member_id"] == clerk.member_id
    # a member (not an admin) rotates no one else's
    refused(world, "POST", rotation(provider), clerk.token, 403, "forbidden",
            {"token_hash": hash_token(new_token())})
    pending = world.onboard("demander", "Bank", admit=False)
    world.api.rotate_token(pending)
    assert world.call("GET", "/participants/me", pending)["member_id"] == pending.member_id


def test_the_platform_cannot_rotate_another_participants_member_token(world: World) -> None:
    """The probe: with the regulator admin's token the platform could act as it; now it
    never had that token, and it cannot give the member one it knows either."""
    for target in (world.regulator, world.onboard("provider", "Tax bureau")):
        for who in (world.platform, world.regulator):
            if who is target:
                continue
            answer = refused(world, "POST", rotation(target), who.token, 403,
                             "separation_of_duties", {"token_hash": hash_token(new_token())})
            assert answer["rule"] == "participant.token_rotation"
        assert world.call("GET", "/participants/me", target)["member_id"] == target.member_id


def test_a_rotation_to_a_hash_in_use_is_refused(world: World) -> None:
    provider = world.onboard("provider", "Tax bureau")
    refused(world, "POST", rotation(provider), provider.token, 422, "invalid_input",
            {"token_hash": hash_token(world.platform.token)})
    refused(world, "POST", rotation(provider), provider.token, 422, "invalid_input",
            {"token_hash": "not a hash"})
    assert world.call("GET", "/participants/me", provider)["member_id"] == provider.member_id
