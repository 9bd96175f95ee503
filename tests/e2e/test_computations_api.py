"""Computations and deliveries over HTTP, as a provider's compute node drives them after
``contract.approved``: one computation per (contract, execution, provider), policy refusals
recorded as failed computations, the result's hash in the log and its bytes for the demander
only."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.deps import Commands
from client.platform import Party
from core.canonical import canonical_bytes
from delivery import results
from domain import computation as uc
from domain.computation import computation_id
from runtime.build import Container
from tests.e2e.conftest import (
    CODE,
    FIELDS,
    USED,
    Chain,
    Clock,
    World,
    head,
    list_product,
)
from tests.e2e.test_market_api import (
    accepted_contract,
    approved_contract,
    place,
    policy,
    proposal,
    refused,
)
from tests.e2e.watermarked import delivery_made, watermarked

CODE_SHA256 = hashlib.sha256(CODE.encode()).hexdigest()
SITE = "tax-bureau-datasite"
DATA_SHA = hashlib.sha256(b"taxpayer_id,annual_revenue\n").hexdigest()
RESULT = [{"firm": "A", "score": 812}, {"firm": "B", "score": 655}]


def ask(contract_id: str, execution: int = 1, **changes: Any) -> dict[str, Any]:
    return {"contract_id": contract_id, "execution": execution, "datasite": SITE,
            "code_sha256": CODE_SHA256, **changes}


def report(chain: Chain, result: Any = RESULT) -> dict[str, Any]:
    return {"result": result, "input_hashes": {chain.dataset_id: DATA_SHA},
            "result_rows": len(result), "datasite": SITE}


QUERY = {"field": "taxpayer_id", "values": ["91110000MA01", "91110000MA02"]}


def ask_next(world: World, chain: Chain, oid: str, expect: int) -> None:
    """The demander asks for execution ``expect`` (a query)."""
    made = world.call("POST", f"/orders/{oid}/queries", chain.demander, 201,
                      json={"query": QUERY})
    assert made["execution"] == expect


def events_of(world: World, originator_id: str) -> list[dict[str, Any]]:
    page = world.call("GET", "/ledger/events?limit=1000", world.regulator)["events"]
    return [e for e in page if e["originator_id"] == originator_id]


#: the refusal codes of a usage control, recorded with a usage.refused as well
USAGE_CODES = ("count_exhausted", "outside_contract_window", "unknown_constraint",
               "circulation_mode_not_allowed")


def recorded(world: World, party: Party, code: str, body: dict[str, Any]) -> dict[str, Any]:
    """A policy refusal: 201, state failed, reason ``code: …``; computation.requested
    and computation.failed are written (and usage.refused for a usage control's refusal);
    asking again answers 200 with the same, writing nothing."""
    before = head(world)
    made = world.call("POST", "/computations", party, 201, json=body)
    cid = made["computation_id"]
    assert (made["state"], made["existing"]) == ("failed", False), made
    assert made["reason"].startswith(f"{code}: "), made["reason"]
    assert set(made) == {"computation_id", "contract_id", "execution", "state", "existing",
                         "reason", "seqs", "joint_id"}
    assert made["joint_id"] is None  # a plain product
    # a usage control's refusal (a policy key: the count, the window) is a usage.refused too
    usage = [("usage.refused", cid)] if code in USAGE_CODES else []
    n = 2 + len(usage)
    assert made["seqs"] == list(range(before + 1, before + n + 1)) and head(world) == before + n
    written = world.call("GET", f"/ledger/events?after={before}&limit=10", world.regulator)
    assert [(e["type"], e["originator_id"]) for e in written["events"]] == [
        ("computation.requested", cid), ("computation.failed", cid), *usage]
    assert written["events"][1]["payload"]["reason"] == made["reason"]
    again = world.call("POST", "/computations", party, 200, json=body)
    assert again == {**made, "existing": True, "seqs": []}
    assert head(world) == before + n
    seen = world.call("GET", f"/computations/{cid}", party)
    assert seen["state"] == "failed" and seen["failure_reason"] == made["reason"]
    assert seen["reason"] == made["reason"]
    return dict(made)


def test_a_node_runs_execution_one_once_and_the_demander_gets_the_result(
        world: World, chain: Chain, container: Container) -> None:
    loaded = world.call("POST", f"/datasets/{chain.dataset_id}/data-loaded", chain.provider,
                        json={"rows": 2, "schema": [{"name": "taxpayer_id", "type": "string"},
                                                    {"name": "annual_revenue", "type": "int"}],
                              "sha256": DATA_SHA, "mock_rows": 2})
    assert loaded["sha256"] == DATA_SHA and len(loaded["seqs"]) == 1
    _, oid = approved_contract(world, chain)

    made = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))
    cid = made["computation_id"]
    assert (made["state"], made["existing"], made["execution"]) == ("requested", False, 1)
    assert len(made["seqs"]) == 1 and made["reason"] is None
    before = head(world)
    again = world.call("POST", "/computations", chain.provider, 200, json=ask(oid))
    assert again["computation_id"] == cid and again["existing"] is True
    assert again["seqs"] == [] and head(world) == before
    # a restarted node sending an Idempotency-Key gets the same answer either way
    # (whether the store keeps a key for a command that wrote nothing differs by backend)
    keyed = {**chain.provider.headers, "Idempotency-Key": "node-1-exec-1"}
    for _ in range(2):
        r = world.client.post("/computations", json=ask(oid), headers=keyed)
        assert r.status_code == 200 and r.json()["computation_id"] == cid
        assert r.json()["existing"] is True and r.json()["seqs"] == []
    assert head(world) == before
    assert [e["type"] for e in events_of(world, cid)] == ["computation.requested"]

    for party in (chain.provider, chain.demander, chain.operator, world.regulator):
        seen = world.call("GET", f"/computations/{cid}", party)
        assert seen["state"] == "requested" and seen["contract_id"] == oid
    assert [c["id"] for c in world.call("GET", f"/computations?contract_id={oid}",
                                        chain.demander)] == [cid]
    refused(world, "GET", f"/deliveries/{cid}/result", chain.demander, 409)

    posted = world.call("POST", f"/computations/{cid}/result", chain.provider,
                        json=report(chain))
    digest = hashlib.sha256(canonical_bytes(RESULT)).hexdigest()
    assert posted["state"] == "succeeded" and posted["result_sha256"] == digest
    assert len(posted["seqs"]) == 2
    same = world.call("POST", f"/computations/{cid}/result", chain.provider,
                      json=report(chain))
    assert same["existing"] is True and same["seqs"] == []

    got = world.client.get(f"/deliveries/{cid}/result", headers=chain.demander.headers)
    assert got.status_code == 200, got.text
    # the demander is served the result watermarked for this delivery, whose digest the log
    # records (delivery.made's delivered_sha256)
    assert watermarked(json.loads(got.content), RESULT)
    served = delivery_made(world, cid)
    assert served["result_sha256"] == digest and served["watermark"]["cells"] == 2
    assert hashlib.sha256(got.content).hexdigest() == served["delivered_sha256"]
    assert got.headers["X-Result-SHA256"] == served["delivered_sha256"]
    assert got.headers["Content-Digest"] == (
        f"sha-256=:{base64.b64encode(bytes.fromhex(served['delivered_sha256'])).decode()}:")

    logged = events_of(world, cid)
    assert [e["type"] for e in logged] == [
        "computation.requested", "computation.succeeded", "delivery.made"]
    succeeded = logged[1]["payload"]
    assert succeeded["result_sha256"] == digest and succeeded["code_sha256"] == CODE_SHA256
    assert succeeded["input_hashes"] == {chain.dataset_id: DATA_SHA}
    assert logged[2]["payload"]["demander_id"] == chain.demander.participant_id
    assert "score" not in json.dumps(logged)  # the result itself is never in the log

    for party in (chain.operator, world.regulator):
        assert world.client.get(f"/deliveries/{cid}/result",
                                headers=party.headers).status_code == 200
    # the platform runs the market; it is no party to its results
    refused(world, "GET", f"/deliveries/{cid}/result", world.platform, 403)
    refused(world, "GET", f"/deliveries/{cid}/result", chain.provider, 404)
    other = world.onboard("demander", "Another bank 另一家银行")
    refused(world, "GET", f"/deliveries/{cid}/result", other, 404)
    refused(world, "GET", f"/computations/{cid}", other, 404)
    assert world.call("GET", "/computations", other) == []
    seen = world.call("GET", f"/computations/{cid}", chain.demander)
    assert seen["state"] == "succeeded" and seen["result_sha256"] == digest
    assert seen["result_rows"] == 2

    # rebuilding the read models gives the same state and keeps the stored result
    runner = container.runner
    assert runner.wait_for(head(world))
    digests = runner.digests()
    runner.rebuild()
    assert runner.digests() == digests
    again_got = world.client.get(f"/deliveries/{cid}/result", headers=chain.demander.headers)
    assert again_got.status_code == 200 and again_got.content == got.content


def delivered(world: World, chain: Chain, cid: str) -> bytes:
    """The bytes the demander fetches for delivery ``cid`` (200, digest headers checked)."""
    got = world.client.get(f"/deliveries/{cid}/result", headers=chain.demander.headers)
    assert got.status_code == 200, got.text
    assert got.headers["X-Result-SHA256"] == hashlib.sha256(got.content).hexdigest()
    return got.content


def test_a_crash_right_after_the_result_is_recorded_loses_no_bytes(
        world: World, chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 between the commit of computation.succeeded + delivery.made and the end of the
    request: the bytes were stored before the commit, so the delivery serves them although
    the node, finding its execution succeeded on restart, never posts again."""
    _, oid = approved_contract(world, chain)
    cid = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))["computation_id"]
    run = Commands.run

    async def killed_after_commit(self: Commands, handler: Any, *args: Any,
                                  **kwargs: Any) -> Any:
        done = await run(self, handler, *args, **kwargs)
        if handler is uc.record_success:
            raise RuntimeError("kill -9")
        return done

    monkeypatch.setattr(Commands, "run", killed_after_commit)
    r = world.client.post(f"/computations/{cid}/result", json=report(chain),
                          headers=chain.provider.headers)
    assert r.status_code == 500
    monkeypatch.undo()
    assert [e["type"] for e in events_of(world, cid)] == [
        "computation.requested", "computation.succeeded", "delivery.made"]
    restarted = world.call("POST", "/computations", chain.provider, 200, json=ask(oid))
    assert (restarted["existing"], restarted["state"]) == (True, "succeeded")
    assert watermarked(json.loads(delivered(world, chain, cid)), RESULT)


def test_a_delivery_recorded_without_its_bytes_gets_them_when_the_result_is_posted_again(
        world: World, chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivery recorded without its bytes (the order of older versions: commit, then
    store): posting the same result again writes nothing to the log and stores the bytes."""
    _, oid = approved_contract(world, chain)
    cid = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))["computation_id"]
    monkeypatch.setattr(results, "put", lambda *args: None)
    first = world.call("POST", f"/computations/{cid}/result", chain.provider,
                       json=report(chain))
    monkeypatch.undo()
    assert first["state"] == "succeeded" and len(first["seqs"]) == 2
    body = refused(world, "GET", f"/deliveries/{cid}/result", chain.demander, 409)
    assert "not stored" in body["detail"]
    before = head(world)
    again = world.call("POST", f"/computations/{cid}/result", chain.provider,
                       json=report(chain))
    assert (again["existing"], again["seqs"], head(world)) == (True, [], before)
    assert watermarked(json.loads(delivered(world, chain, cid)), RESULT)


def test_no_other_post_changes_the_bytes_the_demander_fetches(
        world: World, chain: Chain, container: Container) -> None:
    """Another provider's post for the computation (403) and the provider's own post of
    other bytes after success (409) are refused before anything is stored: the delivery
    serves the bytes the log recorded, and no others are kept."""
    second, ds2, oid = two_provider_contract(world, chain)
    cid = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))["computation_id"]
    forged = [{"firm": "A", "score": 1}]
    forged_sha = hashlib.sha256(canonical_bytes(forged)).hexdigest()
    for report_ in (report(chain, forged), {**report(chain, forged), "datasite": "si-datasite",
                                            "input_hashes": {ds2: DATA_SHA}}):
        refused(world, "POST", f"/computations/{cid}/result", second, 403, json=report_)
    world.call("POST", f"/computations/{cid}/result", chain.provider, json=report(chain))
    assert watermarked(json.loads(delivered(world, chain, cid)), RESULT)
    refused(world, "POST", f"/computations/{cid}/result", second, 403,
            json=report(chain, forged))
    refused(world, "POST", f"/computations/{cid}/result", chain.provider, 409,
            json=report(chain, forged))
    assert watermarked(json.loads(delivered(world, chain, cid)), RESULT)
    # neither the requester's refused bytes nor another provider's are kept
    assert results.get(container.engine, cid, forged_sha) is None
    other = [{"firm": "B", "score": 2}]
    refused(world, "POST", f"/computations/{cid}/result", second, 403,
            json=report(chain, other))
    assert results.get(container.engine, cid,
                       hashlib.sha256(canonical_bytes(other)).hexdigest()) is None
    refused(world, "POST", "/computations/no-such-computation/result", chain.provider, 404,
            json=report(chain, other))
    refused(world, "POST", f"/computations/{oid}/result", chain.provider, 404,
            json=report(chain, other))  # an id of another kind of aggregate


def test_a_failed_execution_then_the_next_one(world: World, chain: Chain) -> None:
    _, oid = approved_contract(world, chain)
    cid = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))["computation_id"]
    refused(world, "POST", f"/computations/{cid}/failure", chain.demander, 403,
            json={"reason": "x"})
    failed = world.call("POST", f"/computations/{cid}/failure", chain.provider,
                        json={"reason": "the datasite ran out of memory"})
    assert failed["state"] == "failed"
    refused(world, "POST", f"/computations/{cid}/result", chain.provider, 409,
            json=report(chain))
    refused(world, "GET", f"/deliveries/{cid}/result", chain.demander, 409)
    body = refused(world, "POST", "/computations", chain.provider, 409, json=ask(oid, 2))
    assert "not asked for" in body["detail"]
    ask_next(world, chain, oid, 2)
    second = world.call("POST", "/computations", chain.provider, 201, json=ask(oid, 2))
    assert second["execution"] == 2 and second["computation_id"] != cid


def test_a_contract_not_yet_approved_is_recorded_as_refused(world: World, chain: Chain) -> None:
    _, oid = accepted_contract(world, chain)
    made = recorded(world, chain.provider, "contract_not_approved", ask(oid))
    assert oid in made["reason"] and "accepted" in made["reason"]


def test_code_that_is_not_the_listed_one_is_recorded_as_refused(
        world: World, chain: Chain) -> None:
    _, oid = approved_contract(world, chain)
    other = hashlib.sha256(b"other code").hexdigest()
    made = recorded(world, chain.provider, "code_hash_mismatch", ask(oid, code_sha256=other))
    assert other in made["reason"] and CODE_SHA256 in made["reason"]
    # the same execution with another code: an invalid request, nothing written
    body = refused(world, "POST", "/computations", chain.provider, 422, json=ask(oid))
    assert body["fields"][0]["field"] == "code_sha256"


def test_a_delisted_product_is_recorded_as_refused(world: World, chain: Chain) -> None:
    pid, oid = approved_contract(world, chain)
    world.call("POST", f"/products/{pid}/delisting", world.platform, json={"reason": "recall"})
    made = recorded(world, chain.provider, "product_not_listed", ask(oid))
    assert pid in made["reason"]


def test_refusals_write_nothing(world: World, chain: Chain) -> None:
    _, oid = approved_contract(world, chain)
    other = world.onboard("provider", "Another bureau 另一个局")
    for party in (chain.demander, chain.operator, world.regulator, other):
        refused(world, "POST", "/computations", party, 403, json=ask(oid))
    refused(world, "POST", "/computations", chain.provider, 409, json=ask(oid, 2))  # not asked
    ask_next(world, chain, oid, 2)
    refused(world, "POST", "/computations", chain.provider, 409, json=ask(oid, 2))  # gap
    refused(world, "POST", "/computations", chain.provider, 422, json=ask(oid, -1))
    refused(world, "POST", "/computations", chain.provider, 422, json=ask(oid, datasite=""))
    refused(world, "POST", "/computations", chain.provider, 422,
            json=ask(oid, code_sha256="abc"))
    refused(world, "POST", "/computations", chain.provider, 404, json=ask("nope"))

    cid = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))["computation_id"]
    refused(world, "POST", f"/computations/{cid}/result", chain.demander, 403,
            json=report(chain))
    body = refused(world, "POST", f"/computations/{cid}/result", chain.provider, 422,
                   json=report(chain, [{"score": 0.5}]))
    assert body["fields"][0]["field"].startswith("result")
    refused(world, "POST", f"/computations/{cid}/result", chain.provider, 422,
            json={**report(chain), "input_hashes": {chain.dataset_id: "nothex"}})
    refused(world, "POST", f"/computations/{cid}/result", chain.provider, 422,
            json={**report(chain), "datasite": "elsewhere"})
    refused(world, "POST", "/computations/nope/result", chain.provider, 404,
            json=report(chain))
    refused(world, "GET", f"/deliveries/{cid}/result", chain.demander, 409)
    refused(world, "GET", "/deliveries/nope/result", chain.demander, 404)


def test_a_terminated_contract_runs_nothing(world: World, chain: Chain) -> None:
    _, oid = approved_contract(world, chain)
    world.call("POST", f"/orders/{oid}/contract/termination", world.regulator,
               json={"reason": "the regulator ends it"})
    made = recorded(world, chain.provider, "contract_terminated", ask(oid))
    assert oid in made["reason"]
    assert [c["state"] for c in world.call("GET", "/computations", world.regulator)] == [
        "failed"]


def test_processing_count_one_refuses_after_one_success_or_while_one_runs(
        world: World, chain: Chain) -> None:
    product_id = list_product(world, chain)
    oid = place(world, chain, product_id)
    terms = proposal(usage_policy={**policy(), "processing_count": 1})
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json=terms)
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)
    cid = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))["computation_id"]
    world.call("POST", f"/computations/{cid}/failure", chain.provider, json={"reason": "oom"})
    ask_next(world, chain, oid, 2)  # a failed execution does not count
    # execution 2, asked for, counts (its node will request it): no execution 3
    body = refused(world, "POST", f"/orders/{oid}/queries", chain.demander, 409,
                   json={"query": QUERY})
    assert body["detail"].startswith("count_exhausted: the contract's processing_count 1 "
                                     "is used up") and "executions 2)" in body["detail"]
    second = world.call("POST", "/computations", chain.provider, 201, json=ask(oid, 2))
    assert second["state"] == "requested"
    # one in flight counts: two running at once could both succeed past the count
    refused(world, "POST", f"/orders/{oid}/queries", chain.demander, 409, json={"query": QUERY})
    world.call("POST", f"/computations/{second['computation_id']}/result", chain.provider,
               json=report(chain))
    refused(world, "POST", f"/orders/{oid}/queries", chain.demander, 409, json={"query": QUERY})
    refused(world, "POST", "/computations", chain.provider, 409, json=ask(oid, 3))


def test_a_processing_count_of_zero_is_recorded_as_refused(world: World,
                                                           chain: Chain) -> None:
    """Execution 1 comes with the approval itself: beyond a count of 0, its request is
    recorded as refused (count_exhausted)."""
    product_id = list_product(world, chain)
    oid = place(world, chain, product_id)
    terms = proposal(usage_policy={**policy(), "processing_count": 0})
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json=terms)
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)
    made = recorded(world, chain.provider, "count_exhausted", ask(oid))
    assert oid in made["reason"] and made["execution"] == 1


def test_a_revoked_authorization_stops_new_executions(world: World, chain: Chain) -> None:
    _, oid = approved_contract(world, chain)
    world.call("POST", f"/authorizations/{chain.authorization_id}/revocation", chain.provider,
               json={"reason": "consent withdrawn"})
    made = recorded(world, chain.provider, "authorization_revoked", ask(oid))
    assert chain.dataset_id in made["reason"] and chain.authorization_id in made["reason"]


def test_a_suspended_scenario_stops_new_executions(world: World, chain: Chain) -> None:
    _, oid = approved_contract(world, chain)
    world.call("POST", f"/scenarios/{chain.scenario_id}/suspension", world.regulator,
               json={"reason": "complaints under investigation"})
    made = recorded(world, chain.provider, "scenario_suspended", ask(oid))
    assert chain.scenario_id in made["reason"] and oid in made["reason"]


def refused_on_restart(world: World, party: Party, code: str, body: dict[str, Any],
                       cid: str) -> dict[str, Any]:
    """The execution ``cid`` was requested before the policy changed; the node, restarted,
    asks again: 200, ``existing: true``, state failed with ``code``; only computation.failed
    is written, and asking once more writes nothing."""
    before = head(world)
    again = world.call("POST", "/computations", party, 200, json=body)
    assert again["computation_id"] == cid and again["existing"] is True, again
    assert again["state"] == "failed" and again["reason"].startswith(f"{code}: "), again
    assert again["seqs"] == [before + 1] and head(world) == before + 1
    assert [e["type"] for e in events_of(world, cid)] == [
        "computation.requested", "computation.failed"]
    assert events_of(world, cid)[1]["payload"]["reason"] == again["reason"]
    assert world.call("POST", "/computations", party, 200, json=body) == {**again, "seqs": []}
    assert head(world) == before + 1
    seen = world.call("GET", f"/computations/{cid}", party)
    assert seen["state"] == "failed" and seen["reason"] == again["reason"]
    return dict(again)


POLICY_CHANGES = {
    "contract_terminated": lambda world, chain, oid: world.call(
        "POST", f"/orders/{oid}/contract/termination", world.regulator,
        json={"reason": "the regulator ends it"}),
    "authorization_revoked": lambda world, chain, oid: world.call(
        "POST", f"/authorizations/{chain.authorization_id}/revocation", chain.provider,
        json={"reason": "consent withdrawn"}),
    "scenario_suspended": lambda world, chain, oid: world.call(
        "POST", f"/scenarios/{chain.scenario_id}/suspension", world.regulator,
        json={"reason": "complaints under investigation"}),
}


@pytest.mark.parametrize("code", list(POLICY_CHANGES))
def test_a_node_restarting_after_the_policy_changed_does_not_run_the_code(
        world: World, chain: Chain, code: str) -> None:
    """A node crashed after requesting execution 1; meanwhile the policy changed. Asked
    again, the ledger checks the requested execution again and records the refusal."""
    _, oid = approved_contract(world, chain)
    made = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))
    assert made["state"] == "requested"
    POLICY_CHANGES[code](world, chain, oid)
    again = refused_on_restart(world, chain.provider, code, ask(oid), made["computation_id"])
    named = chain.authorization_id if code == "authorization_revoked" else oid
    assert named in again["reason"]
    refused(world, "POST", f"/computations/{made['computation_id']}/result", chain.provider,
            409, json=report(chain))


def test_an_expired_authorization_is_recorded_as_refused(world: World, chain: Chain,
                                                        clock: Clock) -> None:
    now = datetime.now(UTC)
    end = now + timedelta(seconds=3)
    short = world.call("POST", "/authorizations", chain.provider, 201, json={
        "scenario_id": chain.scenario_id,
        "datasets": [{"dataset_id": chain.dataset_id, "fields": USED}],
        "not_before": (now - timedelta(days=1)).isoformat(), "not_after": end.isoformat(),
        "usage_policy": {}})["authorization_id"]
    product_id = list_product(world, chain, authorization_ids=[short])
    oid = place(world, chain, product_id)
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json=proposal())
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)
    clock.move_to(end + timedelta(seconds=0.05))
    made = recorded(world, chain.provider, "authorization_expired", ask(oid))
    assert short in made["reason"] and chain.dataset_id in made["reason"]


def two_provider_contract(world: World, chain: Chain) -> tuple[Party, str, str]:
    """An approved contract on a product whose inputs belong to the chain's provider and to a
    second provider: (second provider, its dataset id, contract id)."""
    second = world.onboard("provider", "Social security bureau 社保局")
    ds2 = world.call("POST", "/datasets", second, 201, json={
        "name": "Employer contributions", "description": "monthly filings",
        "source_system": "si-core", "classification": "L3", "fields": FIELDS})["dataset_id"]
    world.call("POST", f"/datasets/{ds2}/publication", second)
    requested = [{"dataset_id": d, "fields": USED} for d in (chain.dataset_id, ds2)]
    sc = world.call("POST", "/scenarios", chain.operator, 201, json={
        "title": "SME credit scoring, two sources", "purpose": "score small firms for loans",
        "sector": "finance", "requested": requested,
        "circulation_mode": "ciphertext"})["scenario_id"]
    world.call("POST", f"/scenarios/{sc}/opinions", chain.expert, 201,
               json={"verdict": "approve", "comment": "proportionate"})
    world.call("POST", f"/scenarios/{sc}/decision", world.regulator,
               json={"approve": True, "comment": "approved"})
    now = datetime.now(UTC)
    auths = [world.call("POST", "/authorizations", party, 201, json={
        "scenario_id": sc, "datasets": [{"dataset_id": d, "fields": USED}],
        "not_before": (now - timedelta(days=1)).isoformat(),
        "not_after": (now + timedelta(days=30)).isoformat(),
        "usage_policy": {}})["authorization_id"]
        for party, d in ((chain.provider, chain.dataset_id), (second, ds2))]
    # the second provider's dataset first: computations keep the product's input order
    product_id = list_product(world, chain, scenario_id=sc, authorization_ids=auths,
                              inputs=requested[::-1])
    oid = place(world, chain, product_id)
    made = world.call("POST", f"/orders/{oid}/contract", chain.operator, json=proposal())
    assert set(made["required_approvals"]) == {chain.provider.participant_id,
                                               second.participant_id,
                                               chain.operator.participant_id}
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    for party in (chain.provider, second, chain.operator):
        world.call("POST", f"/orders/{oid}/contract/approvals", party)
    return second, str(ds2), oid


def test_each_input_provider_runs_its_own_computation(world: World, chain: Chain) -> None:
    second, ds2, oid = two_provider_contract(world, chain)
    first = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))
    # execution numbers run per provider: the first provider's execution 1 is not the second's
    refused(world, "POST", "/computations", second, 409, json=ask(oid, 2, datasite="si-datasite"))
    other = world.call("POST", "/computations", second, 201,
                       json=ask(oid, datasite="si-datasite"))
    assert first["computation_id"] != other["computation_id"]
    assert first["computation_id"] == computation_id(oid, 1, chain.provider.participant_id)
    assert other["computation_id"] == computation_id(oid, 1, second.participant_id)
    assert (first["state"], other["state"]) == ("requested", "requested")
    mine = world.call("GET", f"/computations/{first['computation_id']}", chain.provider)
    theirs = world.call("GET", f"/computations/{other['computation_id']}", second)
    assert mine["dataset_ids"] == [chain.dataset_id] and theirs["dataset_ids"] == [ds2]
    assert (mine["provider_id"], theirs["provider_id"]) == (chain.provider.participant_id,
                                                            second.participant_id)
    # each provider sees its own computation, not the other's
    refused(world, "GET", f"/computations/{other['computation_id']}", chain.provider, 404)
    seen = world.call("GET", f"/computations?contract_id={oid}", chain.demander)
    assert {c["id"] for c in seen} == {first["computation_id"], other["computation_id"]}
    # input hashes are those of the provider's own datasets only
    refused(world, "POST", f"/computations/{other['computation_id']}/result", second, 422,
            json={**report(chain), "datasite": "si-datasite",
                  "input_hashes": {chain.dataset_id: DATA_SHA, ds2: DATA_SHA}})
    done = world.call("POST", f"/computations/{other['computation_id']}/result", second,
                      json={**report(chain), "datasite": "si-datasite",
                            "input_hashes": {ds2: DATA_SHA}})
    assert done["state"] == "succeeded"
    # the second provider's repeat finds its own computation
    again = world.call("POST", "/computations", second, 200,
                       json=ask(oid, datasite="si-datasite"))
    assert again["computation_id"] == other["computation_id"] and again["existing"] is True


def test_data_loaded_only_by_the_owner(world: World, chain: Chain) -> None:
    body = {"rows": 2, "schema": [{"name": "a", "type": "int"}], "sha256": DATA_SHA,
            "mock_rows": 1}
    other: Party = world.onboard("provider", "Another bureau 另一个局")
    refused(world, "POST", f"/datasets/{chain.dataset_id}/data-loaded", other, 403, json=body)
    refused(world, "POST", f"/datasets/{chain.dataset_id}/data-loaded", chain.provider, 422,
            json={**body, "sha256": "abc"})
    refused(world, "POST", "/datasets/nope/data-loaded", chain.provider, 404, json=body)
