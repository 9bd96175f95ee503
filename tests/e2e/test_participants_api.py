"""Participants over HTTP: onboarding, admission, members, and the errors a client sees."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from client.platform import Platform, bearer
from runtime.build import Container
from tests.e2e.conftest import ADMIN_TOKEN, World, head


def test_the_platform_onboards_and_admits_a_provider(world: World) -> None:
    provider = world.onboard("provider", "Tax bureau 税务局")
    seen = world.call("GET", f"/participants/{provider.participant_id}", provider)
    assert seen["state"] == "admitted" and seen["role"] == "provider"
    assert [m["name"] for m in seen["members"]] == ["provider admin"]


def test_missing_or_unknown_token_is_401(world: World) -> None:
    assert world.client.get("/participants").status_code == 401
    r = world.client.get("/participants", headers=bearer("dl_nope"))
    assert r.status_code == 401 and r.json()["error"] == "unauthenticated"


def test_a_provider_may_not_onboard_participants(world: World) -> None:
    provider = world.onboard("provider", "Tax bureau")
    before = head(world)
    r = world.client.post("/participants", headers=provider.headers, json={
        "name": "x", "role": "demander", "credit_code": "1", "admin_name": "a"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert head(world) == before


def test_invalid_fields_are_422_naming_the_field(world: World) -> None:
    before = head(world)
    r = world.client.post("/participants", headers=bearer(ADMIN_TOKEN), json={
        "name": "", "role": "bank", "credit_code": "1", "admin_name": "a"})
    assert r.status_code == 422
    assert {f["field"] for f in r.json()["fields"]} == {"name", "role"}
    assert head(world) == before


def test_only_the_regulator_admits_an_operator(world: World) -> None:
    operator = world.onboard("operator", "Operator Co.", admit=False)
    before = head(world)
    r = world.api.send("POST", f"/participants/{operator.participant_id}/admission",
                       world.platform, json={"approve": True})  # signed: only the role is wrong
    assert r.status_code == 403
    assert head(world) == before


def test_deciding_admission_twice_is_409(world: World) -> None:
    provider = world.onboard("provider", "Tax bureau")
    before = head(world)
    r = world.api.send("POST", f"/participants/{provider.participant_id}/admission",
                       world.platform, json={"approve": False, "comment": "x"})
    assert r.status_code == 409 and r.json()["error"] == "wrong_state"
    assert head(world) == before


def test_unknown_participant_is_404(world: World) -> None:
    r = world.api.send("POST", "/participants/nope/admission", world.platform,
                       json={"approve": True})
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_a_pending_participant_is_hidden_from_others(world: World) -> None:
    pending = world.onboard("demander", "Bank", admit=False)
    other = world.onboard("provider", "Tax bureau")
    r = world.client.get(f"/participants/{pending.participant_id}", headers=other.headers)
    assert r.status_code == 404
    ids = [p["id"] for p in world.call("GET", "/participants", other)]
    assert pending.participant_id not in ids
    assert pending.participant_id in [p["id"] for p in world.call("GET", "/participants",
                                                                   world.regulator)]


def test_a_new_member_token_works_at_once(world: World) -> None:
    provider = world.onboard("provider", "Tax bureau")
    clerk = world.member(provider, "clerk", ["member"])
    me = world.call("GET", "/participants/me", clerk)
    assert me["member_id"] == clerk.member_id and me["member_roles"] == ["member"]


def test_a_replayed_idempotency_key_returns_the_first_answer_and_writes_nothing(
        world: World) -> None:
    body = {"name": "Bank", "role": "demander", "credit_code": "9111", "admin_name": "a"}
    headers = {**world.platform.headers, "Idempotency-Key": "onboard-bank-1"}
    first = world.client.post("/participants", headers=headers, json=body)
    after_first = head(world)
    again = world.client.post("/participants", headers=headers, json=body)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["participant_id"] == first.json()["participant_id"]
    assert again.json()["seqs"] == first.json()["seqs"]
    assert head(world) == after_first
    changed = world.client.post("/participants", headers=headers, json={**body, "name": "Other"})
    assert changed.status_code == 422 and changed.json()["error"] == "idempotency_key_reused"
    assert head(world) == after_first


def test_a_value_the_log_cannot_hold_is_422_and_writes_nothing(world: World) -> None:
    before = head(world)
    r = world.client.post("/participants", headers=world.platform.headers, json={
        "name": "Tax\u0000bureau", "role": "provider", "credit_code": "9111", "admin_name": "a"})
    assert r.status_code == 422 and [f["field"] for f in r.json()["fields"]] == ["name"]
    assert head(world) == before
    # /health reports the projections' position without waiting for them: give them time
    deadline = time.monotonic() + 5
    while world.client.get("/health").json()["projected"] < before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert world.client.get("/health").json()["projected"] == before


def test_an_unknown_token_while_the_read_models_lag_does_not_stall_the_server(
        container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a token miss the server waits for the read models (a token it just issued may not
    be projected yet): the wait must not hold the event loop that serves everyone else."""
    import asyncio

    import httpx

    def lagging(seq: int, timeout: float = 5.0) -> bool:
        time.sleep(1.0)  # the read models are behind (a background process restarting)
        return False

    monkeypatch.setattr(container.runner, "wait_for", lagging)
    container.ledger.last_seq = container.runner.position + 1
    transport = httpx.ASGITransport(app=create_app(container=container))

    async def both() -> tuple[list[str], int]:
        done: list[str] = []
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            async def unknown() -> int:
                r = await client.get("/participants/me", headers=bearer("dl_" + "x" * 40))
                done.append("unknown token")
                return r.status_code

            async def noop() -> None:
                await asyncio.sleep(0.2)  # the unknown token's request is waiting by now
                await client.get("/noop")
                done.append("noop")

            status, _ = await asyncio.gather(unknown(), noop())
        return done, status

    done, status = asyncio.run(both())
    assert done == ["noop", "unknown token"] and status == 401


def test_a_token_projected_just_after_its_first_lookup_is_found(
        world: World, container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first lookup misses (the member was not projected yet); by the time the server
    asks whether the read models lag, they no longer do: it must look again, not say 401."""
    from api import deps

    provider = world.onboard("provider", "Tax bureau")
    assert container.runner.wait_for(container.ledger.last_seq, 10)
    real, calls = deps._lookup_uncached, []

    def projected_late(c: Container, token_hash: str) -> object:
        calls.append(token_hash)
        return None if len(calls) == 1 else real(c, token_hash)

    monkeypatch.setattr(deps, "_lookup_uncached", projected_late)
    r = world.client.get("/participants/me", headers=provider.headers)
    assert r.status_code == 200 and len(calls) == 2


def test_a_nul_in_a_path_is_404(world: World) -> None:
    r = world.client.get("/participants/a%00b", headers=world.platform.headers)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_a_nul_in_a_query_parameter_is_422_naming_it(world: World) -> None:
    r = world.client.get("/authorizations?state=active&scenario_id=a%00b",
                         headers=world.platform.headers)
    assert r.status_code == 422 and r.json()["error"] == "invalid_input"
    assert r.json()["fields"] == [{"field": "query.scenario_id",
                                   "reason": "must not contain the NUL character"}]
    # an escaped "%00" is three plain characters, not a NUL
    r = world.client.get("/authorizations?scenario_id=%2500", headers=world.platform.headers)
    assert r.status_code == 200 and r.json() == []


def test_a_nul_in_an_id_of_a_command_body_is_404_and_writes_nothing(world: World) -> None:
    provider = world.onboard("provider", "Tax bureau")
    before = head(world)
    r = world.api.send("POST", "/authorizations", provider, json={
        "scenario_id": "sc\u0000x", "datasets": [{"dataset_id": "d", "fields": ["a"]}],
        "not_before": "2025-01-01T00:00:00+08:00", "not_after": "2026-01-01T00:00:00+08:00",
        "usage_policy": {}})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert head(world) == before


def test_the_raw_log_shows_a_participant_only_what_it_may_see(world: World) -> None:
    provider = world.onboard("provider", "Tax bureau")
    mine = world.client.get("/ledger/events", headers=provider.headers)
    assert mine.status_code == 200 and mine.json()["events"] == []  # participant events: none
    assert mine.json()["next_after"] == head(world)
    whole = world.client.get("/ledger/events", headers=world.regulator.headers)
    assert whole.status_code == 200 and len(whole.json()["events"]) == head(world)
    assert world.client.get("/ledger/events").status_code == 401


def test_a_regulator_sees_everything_only_once_admitted(client: TestClient) -> None:
    # a platform whose one regulator is still pending (World admits its regulator at once)
    api = Platform(client)
    platform = api.give_key(api.party(ADMIN_TOKEN))
    provider = api.onboard(platform, "provider", "Tax bureau", credit_code="9111P",
                           judge=platform)
    regulator = api.onboard(platform, "regulator", "Data bureau", credit_code="9111R",
                            judge=None)
    # pending, it sees what any participant sees: no other tenant's events
    assert api.call("GET", "/ledger/events", regulator)["events"] == []
    seen = {p["id"] for p in api.call("GET", "/participants", regulator)}
    assert provider.participant_id in seen and regulator.participant_id in seen
    api.admit(platform, regulator)
    everything = int(client.get("/health").json()["head"])
    assert len(api.call("GET", "/ledger/events", regulator)["events"]) == everything