"""Every usage control over HTTP, fail closed: each allows up to its limit, refuses past it
and still refuses after the server restarts on the same database (the counters are a read
model of ``delivery.accessed`` events); a contract looser than its authorization, or with a
key the server does not know, is refused at proposal, and an unknown key written by a newer
writer refuses use; a designated-user contract's result is refused to another member of the
demander; a held derivative is released only once every input provider approved."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from client.platform import Party
from domain.base import Actor, Context, new_id
from domain.delivery import access_result
from domain.errors import ConcurrencyConflict
from domain.order import ContractProposed, Order
from domain.usage import Meter, usage_id
from runtime.build import Container, build
from runtime.settings import Settings
from tests.e2e.conftest import (
    ADMIN_TOKEN,
    FIELDS,
    USED,
    Chain,
    Clock,
    World,
    head,
    list_product,
    product_body,
)
from tests.e2e.test_computations_api import DATA_SHA, ask, report
from tests.e2e.test_market_api import SPLIT, invalid, place
from tests.e2e.watermarked import watermarked

NOW = datetime.now(UTC)


class Server:
    """The API on one database and data dir, which a test can restart (the container is
    built again, as ``dataledger serve`` would be)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.container: Container
        self.client: TestClient
        self.start()

    def start(self) -> None:
        self.container = build(self.settings)
        self.client = TestClient(create_app(container=self.container),
                                 raise_server_exceptions=False)
        self.client.__enter__()

    def stop(self) -> None:
        self.client.__exit__(None, None, None)
        self.container.close()

    def restart(self, world: World) -> None:
        """Stop, start on the same database; ``world`` talks to the new one."""
        self.stop()
        self.start()
        world.client = self.client
        world.api.http = self.client


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    s = Server(Settings(data_dir=tmp_path / "var", database_url=database_url,
                        admin_token=ADMIN_TOKEN, checkpoint_every_seconds=0.3))
    yield s
    s.stop()


@pytest.fixture
def client(server: Server) -> TestClient:
    return server.client


def policy(**changes: Any) -> dict[str, Any]:
    """A contract policy within the chain's authorization ({"processing_count": 100})."""
    return {"processing_count": 10, "not_before": (NOW - timedelta(minutes=5)).isoformat(),
            "not_after": (NOW + timedelta(days=90)).isoformat(),
            "circulation_modes": ["plaintext"], **changes}


def contract(world: World, chain: Chain, usage_policy: dict[str, Any],
             product_id: str | None = None) -> str:
    """An approved contract under ``usage_policy`` on a listed product of the chain."""
    oid = place(world, chain, product_id or list_product(world, chain))
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json={
        "usage_policy": usage_policy, "price_fen": 1_000, "revenue_split": dict(SPLIT)})
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)
    return oid


def delivered(world: World, chain: Chain, oid: str, provider: Party | None = None,
              execution: int = 1) -> str:
    """The provider's node runs the execution and posts its result: the delivery id."""
    who = provider or chain.provider
    made = world.call("POST", "/computations", who, 201, json=ask(oid, execution))
    assert made["state"] == "requested", made
    cid: str = made["computation_id"]
    inputs = world.call("GET", f"/computations/{cid}", who)["dataset_ids"]
    world.call("POST", f"/computations/{cid}/result", who,
               json={**report(chain), "input_hashes": {d: DATA_SHA for d in inputs}})
    return cid


def fetch(world: World, cid: str, who: Party, kind: str = "download") -> Any:
    """One access: the response (the bytes for a download, the JSON for a view)."""
    path = f"/deliveries/{cid}/result" if kind == "download" else f"/deliveries/{cid}/view"
    return world.client.get(path, headers=who.headers)


def refused(world: World, cid: str, who: Party, code: str, kind: str = "download",
            status: int = 409) -> dict[str, Any]:
    """The access is refused with ``code``, and the refusal is recorded: exactly one
    usage.refused on the contract's usage stream."""
    before = head(world)
    r = fetch(world, cid, who, kind)
    assert (r.status_code, r.json()["error"]) == (status, code), r.text
    events = world.call("GET", f"/ledger/events?after={before}", world.regulator)["events"]
    assert [e["type"] for e in events] == ["usage.refused"]
    payload: dict[str, Any] = events[0]["payload"]
    assert payload["action"] == kind and payload["reason"].startswith(f"{code}: ")
    return payload


def usage_of(world: World, chain: Chain, oid: str) -> dict[str, int]:
    counted: dict[str, int] = world.call("GET", f"/orders/{oid}", chain.demander)["usage"]
    return counted


# -- the counts -----------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "key"), [("download", "download_count"),
                                           ("view", "view_count")])
def test_a_count_allows_up_to_its_limit_refuses_past_it_and_across_a_restart(
        world: World, chain: Chain, server: Server, kind: str, key: str) -> None:
    oid = contract(world, chain, policy(**{key: 2}))
    cid = delivered(world, chain, oid)
    for _ in range(2):
        r = fetch(world, cid, chain.demander, kind)
        assert r.status_code == 200, r.text
    if kind == "view":
        assert watermarked(r.json()["result"], report(chain)["result"])
        assert r.json()["views_used"] == 2
    payload = refused(world, cid, chain.demander, f"{key}_exhausted", kind)
    assert (payload["rule"], payload["limit"], payload["used"]) == (key, 2, 2)
    # supervision reads are recorded, not counted nor refused
    assert fetch(world, cid, world.regulator, kind).status_code == 200
    used = f"{kind}s_used"
    assert usage_of(world, chain, oid)[used] == 2 and usage_of(world, chain, oid)["refused"] == 1
    server.restart(world)
    refused(world, cid, chain.demander, f"{key}_exhausted", kind)
    counted = usage_of(world, chain, oid)
    assert (counted[used], counted["refused"]) == (2, 2)
    other = "view" if kind == "download" else "download"
    assert fetch(world, cid, chain.demander, other).status_code == 200  # the other count
    stream = world.call("GET", "/ledger/events?limit=1000", world.regulator)["events"]
    mine = [e for e in stream if e["originator_id"] == usage_id(oid)]
    assert [e["type"] for e in mine] == [
        "delivery.accessed", "delivery.accessed", "usage.refused", "delivery.accessed",
        "usage.refused", "delivery.accessed"]
    assert [e["payload"]["counted"] for e in mine if e["type"] == "delivery.accessed"] == [
        True, True, False, True]
    assert mine[0]["payload"]["member_id"] == chain.demander.member_id


def test_an_idempotency_key_does_not_replay_an_access(world: World, chain: Chain) -> None:
    """A repeated GET with one Idempotency-Key is a new access each time: counted, and
    refused past the limit (it never replays the first "allowed")."""
    oid = contract(world, chain, policy(download_count=1, view_count=1))
    cid = delivered(world, chain, oid)
    for kind in ("download", "view"):
        path = f"/deliveries/{cid}/result" if kind == "download" else f"/deliveries/{cid}/view"
        headers = {**chain.demander.headers, "Idempotency-Key": f"same-{kind}"}
        first, again = (world.client.get(path, headers=headers) for _ in range(2))
        assert first.status_code == 200, first.text
        assert (again.status_code, again.json()["error"]) == (409, f"{kind}_count_exhausted")
        assert "Idempotent-Replayed" not in again.headers
    counted = usage_of(world, chain, oid)
    assert (counted["downloads_used"], counted["views_used"], counted["refused"]) == (1, 1, 2)


def test_two_accesses_decided_on_the_same_counters_are_not_both_stored(
        world: World, chain: Chain, server: Server) -> None:
    """The append refuses an access decided on counters another access moved since: one
    download left, two decided at once, one stored; decided again, the other is refused."""
    cid = delivered(world, chain, contract(world, chain, policy(download_count=1)))
    actor = Actor(chain.demander.participant_id, chain.demander.member_id, "demander",
                  ("admin",))
    ledger = server.container.ledger
    first = ledger.execute(access_result, actor, cid, kind="download", meter=Meter())
    assert first.body["allowed"]
    with pytest.raises(ConcurrencyConflict):
        ledger.execute(access_result, actor, cid, kind="download", meter=Meter())
    refused(world, cid, chain.demander, "download_count_exhausted")


def test_the_processing_count_holds_across_a_restart(world: World, chain: Chain,
                                                     server: Server) -> None:
    oid = contract(world, chain, policy(processing_count=2))
    delivered(world, chain, oid)
    query = {"field": "taxpayer_id", "values": ["91110000MA01"]}
    world.call("POST", f"/orders/{oid}/queries", chain.demander, 201, json={"query": query})
    delivered(world, chain, oid, execution=2)
    server.restart(world)
    r = world.client.post(f"/orders/{oid}/queries", headers=chain.demander.headers,
                          json={"query": query})
    assert r.status_code == 409 and "count_exhausted" in r.json()["detail"], r.text
    assert usage_of(world, chain, oid)["processings_used"] == 2


def test_the_usage_window_refuses_outside_it_across_a_restart(
        world: World, chain: Chain, server: Server) -> None:
    end = NOW + timedelta(days=3)
    oid = contract(world, chain, policy(not_after=end.isoformat()))
    cid = delivered(world, chain, oid)
    assert fetch(world, cid, chain.demander).status_code == 200
    clock = Clock()
    clock.move_to(end + timedelta(seconds=1))
    server.container.ledger.clock = clock
    payload = refused(world, cid, chain.demander, "outside_contract_window")
    assert payload["rule"] == "usage_window"
    server.restart(world)
    server.container.ledger.clock = clock
    refused(world, cid, chain.demander, "outside_contract_window")
    clock.move_to(end - timedelta(days=1))
    assert fetch(world, cid, chain.demander).status_code == 200


def test_a_lapsed_grant_neither_refuses_nor_records_anything_for_a_delivered_result(
        world: World, chain: Chain) -> None:
    """A grant is no usage control of the contract: once its authorization is revoked, a
    result delivered while it held is still read, recorded as an access, and no refusal
    is recorded (the hidden query, which is refused for a lapsed grant, records none
    either: docs/HIDDEN_QUERY.md)."""
    oid = contract(world, chain, policy())
    cid = delivered(world, chain, oid)
    world.api.revoke_authorization(chain.provider, chain.authorization_id, "withdrawn")
    before = head(world)
    assert fetch(world, cid, chain.demander).status_code == 200
    events = world.call("GET", f"/ledger/events?after={before}", world.regulator)["events"]
    assert [e["type"] for e in events] == ["delivery.accessed"]


def test_a_designated_users_result_is_refused_to_another_member_of_the_demander(
        world: World, chain: Chain, server: Server) -> None:
    colleague = world.member(chain.demander, "loan officer 信贷员", ["member"])
    oid = contract(world, chain, policy(designated_users=[chain.demander.member_id]))
    cid = delivered(world, chain, oid)
    assert fetch(world, cid, chain.demander).status_code == 200
    payload = refused(world, cid, colleague, "not_designated_user", status=403)
    assert (payload["rule"], payload["limit"]) == ("designated_users",
                                                   [chain.demander.member_id])
    assert payload["member_id"] == colleague.member_id
    server.restart(world)
    refused(world, cid, colleague, "not_designated_user", "view", status=403)
    assert fetch(world, cid, chain.demander, "view").status_code == 200


def test_designated_users_must_be_members_of_the_demander(world: World,
                                                          chain: Chain) -> None:
    oid = place(world, chain, list_product(world, chain))
    body = {"usage_policy": policy(designated_users=[chain.operator.member_id]),
            "price_fen": 1, "revenue_split": dict(SPLIT)}
    assert invalid(world, f"/orders/{oid}/contract", chain.operator, body) == {
        "usage_policy.designated_users"}


def test_a_contract_without_plaintext_circulation_gets_no_plaintext_result(
        world: World, chain: Chain) -> None:
    oid = contract(world, chain, policy(circulation_modes=["ciphertext"]))
    made = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))
    assert made["state"] == "failed"
    assert made["reason"].startswith("circulation_mode_not_allowed: "), made["reason"]
    events = world.call("GET", f"/ledger/events?after={made['seqs'][0] - 1}",
                        world.regulator)["events"]
    assert [e["type"] for e in events] == ["computation.requested", "computation.failed",
                                           "usage.refused"]
    assert (events[2]["payload"]["rule"], events[2]["payload"]["limit"]) == (
        "circulation_modes", ["ciphertext"])


# -- the authorization bounds the contract -------------------------------------------------
def bounded_product(world: World, chain: Chain, auth_policy: dict[str, Any]) -> str:
    """A listed product over a second authorization of the chain's scenario, granted with
    ``auth_policy``."""
    requested = [{"dataset_id": chain.dataset_id, "fields": USED}]
    auth = world.api.authorize(chain.provider, chain.scenario_id, requested,
                               (NOW - timedelta(days=1), NOW + timedelta(days=365)),
                               auth_policy)
    return list_product(world, chain, authorization_ids=[auth])


AUTH_POLICY = {"processing_count": 5, "download_count": 3, "provider_may_terminate": True,
               "circulation_modes": ["plaintext"], "allowed_fields": USED}


@pytest.mark.parametrize(("changes", "field"), [
    ({"processing_count": 6}, "usage_policy.processing_count"),
    ({"download_count": None}, "usage_policy.download_count"),
    ({"provider_may_terminate": False}, "usage_policy.provider_may_terminate"),
    ({"circulation_modes": ["plaintext", "ciphertext"]}, "usage_policy.circulation_modes"),
    ({"allowed_fields": [*USED, "industry"]}, "usage_policy.allowed_fields"),
])
def test_a_contract_looser_than_its_authorization_is_refused_naming_the_key(
        world: World, chain: Chain, changes: dict[str, Any], field: str) -> None:
    product = bounded_product(world, chain, AUTH_POLICY)
    oid = place(world, chain, product)
    strict = policy(processing_count=5, download_count=3, provider_may_terminate=True,
                    allowed_fields=USED)
    terms = {k: v for k, v in {**strict, **changes}.items() if v is not None}
    assert invalid(world, f"/orders/{oid}/contract", chain.operator, {
        "usage_policy": terms, "price_fen": 1, "revenue_split": dict(SPLIT)}) == {field}
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json={
        "usage_policy": strict, "price_fen": 1, "revenue_split": dict(SPLIT)})


def test_allowed_fields_must_cover_what_the_product_reads(world: World, chain: Chain) -> None:
    oid = place(world, chain, list_product(world, chain))
    body = {"usage_policy": policy(allowed_fields=["taxpayer_id"]), "price_fen": 1,
            "revenue_split": dict(SPLIT)}
    refusal = world.api.send("POST", f"/orders/{oid}/contract", chain.operator, json=body)
    assert refusal.status_code == 422, refusal.text
    assert "annual_revenue" in refusal.text and "usage_policy.allowed_fields" in refusal.text
    body["usage_policy"] = policy(allowed_fields=USED)
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json=body)


def test_a_product_reading_more_than_its_authorizations_allowed_fields_is_refused(
        world: World, chain: Chain) -> None:
    requested = [{"dataset_id": chain.dataset_id, "fields": USED}]
    auth = world.api.authorize(chain.provider, chain.scenario_id, requested,
                               (NOW - timedelta(days=1), NOW + timedelta(days=365)),
                               {"processing_count": 5, "allowed_fields": ["taxpayer_id"]})
    assert invalid(world, "/products", chain.operator,
                   product_body(chain, authorization_ids=[auth])) == {"inputs[0].fields"}


# -- unknown keys ------------------------------------------------------------------------
def test_an_unknown_key_is_refused_at_proposal(world: World, chain: Chain) -> None:
    oid = place(world, chain, list_product(world, chain))
    assert invalid(world, f"/orders/{oid}/contract", chain.operator, {
        "usage_policy": policy(geo_fence="cn-east"), "price_fen": 1,
        "revenue_split": dict(SPLIT)}) == {"usage_policy.geo_fence"}


def test_an_unknown_key_from_a_newer_writer_refuses_use(world: World, chain: Chain,
                                                        server: Server) -> None:
    oid = place(world, chain, list_product(world, chain))
    operator = world.api.me(chain.operator)
    actor = Actor(chain.operator.participant_id, operator["member_id"], "operator", ("admin",))

    def newer_writer(uow: Any, ctx: Context) -> dict[str, Any]:
        """A contract.proposed as a newer server would write it: a key this one lacks."""
        order = uow.get(Order, oid)
        order.trigger(ContractProposed, ctx, usage_policy={**policy(), "geo_fence": "cn-east"},
                      price_fen=1, revenue_split=dict(SPLIT), signature=None,
                      required_approvals=sorted([chain.provider.participant_id,
                                                 chain.operator.participant_id]))
        return {"id": new_id()}

    server.container.ledger.execute(newer_writer, actor)
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)
    made = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))
    assert made["state"] == "failed" and made["reason"].startswith("unknown_constraint: ")
    assert "geo_fence" in made["reason"]


# -- a held derivative ---------------------------------------------------------------------
def two_provider_product(world: World, chain: Chain) -> tuple[str, Party]:
    """A listed product over the chain provider's dataset and a second provider's, in a
    scenario of their own: (product id, the second provider)."""
    api = world.api
    second = world.onboard("provider", "Social security bureau 社保局")
    ds2 = api.register_dataset(second, name="Social security records", description="x",
                               source_system="ss-core", fields=FIELDS)
    api.publish_dataset(second, ds2)
    requested = [{"dataset_id": chain.dataset_id, "fields": USED},
                 {"dataset_id": ds2, "fields": USED}]
    sc = api.propose_scenario(chain.operator, title="SME credit, joint",
                              purpose="score small firms", sector="finance",
                              requested=requested)
    api.give_opinion(chain.expert, sc, "approve", "proportionate")
    api.decide_scenario(world.regulator, sc, "approved")
    window = (NOW - timedelta(days=1), NOW + timedelta(days=365))
    auths = [api.authorize(chain.provider, sc, requested[:1], window, {"processing_count": 10}),
             api.authorize(second, sc, requested[1:], window, {"processing_count": 10})]
    product = list_product(world, chain, scenario_id=sc, authorization_ids=auths,
                           inputs=requested)
    return product, second


def test_a_held_derivative_is_released_only_after_every_input_provider_approved(
        world: World, chain: Chain) -> None:
    product, second = two_provider_product(world, chain)
    oid = place(world, chain, product)
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json={
        "usage_policy": policy(derivatives_need_approval=True), "price_fen": 1,
        "revenue_split": dict(SPLIT)})
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    for party in (chain.provider, second, chain.operator):
        world.call("POST", f"/orders/{oid}/contract/approvals", party)
    first = delivered(world, chain, oid)
    theirs = delivered(world, chain, oid, second)
    payload = refused(world, first, chain.demander, "release_pending")
    assert sorted(payload["limit"]) == sorted([chain.provider.participant_id,
                                               second.participant_id])
    release = f"/deliveries/{first}/release-approvals"
    world.call("POST", release, second, 403)  # not its part
    world.call("POST", release, chain.demander, 403)
    done = world.call("POST", release, chain.provider)
    assert done["pending_releases"] == [second.participant_id] and not done["released"]
    world.call("POST", release, chain.provider, 409)  # once
    refused(world, theirs, chain.demander, "release_pending")
    done = world.call("POST", f"/deliveries/{theirs}/release-approvals", second)
    assert done["released"] and done["pending_releases"] == []
    assert fetch(world, first, chain.demander).status_code == 200
    assert fetch(world, theirs, chain.demander, "view").status_code == 200
    events = world.call("GET", "/ledger/events?limit=1000", world.regulator)["events"]
    approvals = [e for e in events if e["type"] == "delivery.release_approved"]
    assert [(e["originator_id"], e["payload"]["provider_id"]) for e in approvals] == [
        (first, chain.provider.participant_id), (theirs, second.participant_id)]
    assert all(e["payload"]["signature"] is not None for e in approvals)


def test_a_contract_holding_no_derivative_has_nothing_to_release(world: World,
                                                                 chain: Chain) -> None:
    cid = delivered(world, chain, contract(world, chain, policy()))
    world.call("POST", f"/deliveries/{cid}/release-approvals", chain.provider, 409)
