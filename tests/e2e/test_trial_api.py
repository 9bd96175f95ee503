"""The trial (试用) over HTTP: execution 0 of ``POST /computations``, run by the input
providers' nodes on their datasites' mock data once ``order.trial_granted`` is recorded and
before the contract is approved; its result is delivered to the demander like any other.
The input providers see the order from placement (their feed: tests/e2e/test_ledger_feed.py)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from domain.computation import computation_id
from runtime.build import Container
from tests.e2e.conftest import Chain, World, head, list_product
from tests.e2e.test_computations_api import (
    DATA_SHA,
    RESULT,
    ask,
    events_of,
    recorded,
    refused_on_restart,
    report,
    two_provider_contract,
)
from tests.e2e.test_market_api import place, proposal, refused
from tests.e2e.watermarked import delivery_made, watermarked

MOCK_SHA = hashlib.sha256(b"taxpayer_id,annual_revenue\nMOCK-1,1000\n").hexdigest()


def trial_order(world: World, chain: Chain) -> str:
    """A placed order (no contract proposed) whose operator granted a trial."""
    oid = place(world, chain, list_product(world, chain))
    world.call("POST", f"/orders/{oid}/trial", chain.operator)
    return oid


def mock_report(chain: Chain, result: Any = RESULT) -> dict[str, Any]:
    return {**report(chain, result), "input_hashes": {chain.dataset_id: MOCK_SHA}}


def test_a_granted_trial_runs_on_mock_data_and_the_demander_gets_the_result(
        world: World, chain: Chain, container: Container) -> None:
    # the private data's hash is recorded: the trial's mock hashes are not checked against it
    world.call("POST", f"/datasets/{chain.dataset_id}/data-loaded", chain.provider,
               json={"rows": 2, "schema": [{"name": "taxpayer_id", "type": "string"}],
                     "sha256": DATA_SHA, "mock_rows": 1})
    oid = trial_order(world, chain)
    seen = world.call("GET", f"/orders/{oid}", chain.provider)  # before any proposal
    assert seen["state"] == "placed" and seen["trial_granted"] is True
    granted = [e for e in events_of(world, oid) if e["type"] == "order.trial_granted"]
    assert seen["trial_seq"] == granted[0]["seq"]

    made = world.call("POST", "/computations", chain.provider, 201, json=ask(oid, 0))
    cid = made["computation_id"]
    assert cid == computation_id(oid, 0, chain.provider.participant_id)
    assert (made["state"], made["execution"], made["existing"], made["reason"]) == (
        "requested", 0, False, None)
    again = world.call("POST", "/computations", chain.provider, 200, json=ask(oid, 0))
    assert again == {**made, "existing": True, "seqs": []}

    refused(world, "POST", f"/computations/{cid}/result", chain.provider, 422,
            json={**mock_report(chain), "input_hashes": {"another-dataset": MOCK_SHA}})
    posted = world.call("POST", f"/computations/{cid}/result", chain.provider,
                        json=mock_report(chain))
    assert posted["state"] == "succeeded" and len(posted["seqs"]) == 2
    logged = events_of(world, cid)
    assert [e["type"] for e in logged] == [
        "computation.requested", "computation.succeeded", "delivery.made"]
    assert logged[0]["payload"]["execution"] == 0
    assert logged[1]["payload"]["input_hashes"] == {chain.dataset_id: MOCK_SHA}

    got = world.client.get(f"/deliveries/{cid}/result", headers=chain.demander.headers)
    assert got.status_code == 200, got.text
    assert watermarked(json.loads(got.content), RESULT)
    assert got.headers["X-Result-SHA256"] == delivery_made(world, cid)["delivered_sha256"]
    for party in (chain.demander, chain.provider, chain.operator):
        view = world.call("GET", f"/computations/{cid}", party)
        assert (view["execution"], view["trial"], view["state"]) == (0, True, "succeeded")
    listed = world.call("GET", f"/computations?contract_id={oid}", chain.demander)
    assert [(c["id"], c["trial"]) for c in listed] == [(cid, True)]

    # the order goes on as usual: execution 1 is not the trial and is not counted with it
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json=proposal())
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)
    first = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))
    assert first["state"] == "requested" and first["execution"] == 1
    view = world.call("GET", f"/computations/{first['computation_id']}", chain.demander)
    assert view["trial"] is False
    # the trial already ran; asked for again after approval it is the same, nothing written
    assert world.call("POST", "/computations", chain.provider, 200,
                      json=ask(oid, 0))["computation_id"] == cid

    runner = container.runner
    assert runner.wait_for(head(world))
    digests = runner.digests()
    runner.rebuild()
    assert runner.digests() == digests
    assert world.call("GET", f"/orders/{oid}", chain.provider)["trial_seq"] == seen["trial_seq"]


def test_a_trial_not_granted_is_recorded_as_refused(world: World, chain: Chain) -> None:
    oid = place(world, chain, list_product(world, chain))
    made = recorded(world, chain.provider, "trial_not_granted", ask(oid, 0))
    assert oid in made["reason"] and made["execution"] == 0
    refused(world, "GET", f"/deliveries/{made['computation_id']}/result", chain.demander, 409)


def test_a_trial_after_approval_is_recorded_as_refused(world: World, chain: Chain) -> None:
    oid = trial_order(world, chain)
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json=proposal())
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)
    made = recorded(world, chain.provider, "trial_after_approval", ask(oid, 0))
    assert oid in made["reason"] and "approved" in made["reason"]


def test_a_trial_requested_before_approval_is_not_run_after_it(
        world: World, chain: Chain) -> None:
    """A node crashed after requesting the trial; the contract was approved meanwhile. Asked
    again, the ledger checks the requested trial again and records trial_after_approval."""
    oid = trial_order(world, chain)
    made = world.call("POST", "/computations", chain.provider, 201, json=ask(oid, 0))
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json=proposal())
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)
    again = refused_on_restart(world, chain.provider, "trial_after_approval", ask(oid, 0),
                               made["computation_id"])
    assert again["execution"] == 0


def test_a_trial_checks_the_code_and_the_listing(world: World, chain: Chain) -> None:
    oid = trial_order(world, chain)
    other = hashlib.sha256(b"other code").hexdigest()
    recorded(world, chain.provider, "code_hash_mismatch", ask(oid, 0, code_sha256=other))
    oid2 = trial_order(world, chain)
    pid = world.call("GET", f"/orders/{oid2}", chain.demander)["product_id"]
    world.call("POST", f"/products/{pid}/delisting", world.platform, json={"reason": "recall"})
    recorded(world, chain.provider, "product_not_listed", ask(oid2, 0))


def test_only_an_input_provider_asks_for_the_trial(world: World, chain: Chain) -> None:
    oid = trial_order(world, chain)
    other = world.onboard("provider", "Another bureau 另一个局")
    for party in (other, chain.demander, chain.operator, world.regulator):
        refused(world, "POST", "/computations", party, 403, json=ask(oid, 0))
    refused(world, "POST", "/computations", chain.provider, 404, json=ask("nope", 0))
    refused(world, "POST", "/computations", chain.provider, 422, json=ask(oid, -1))
    # execution 1 still needs the approved contract: before the proposal, no party yet
    refused(world, "POST", "/computations", chain.provider, 403, json=ask(oid))
    world.call("POST", "/computations", chain.provider, 201, json=ask(oid, 0))
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json=proposal())
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    recorded(world, chain.provider, "contract_not_approved", ask(oid))


def test_each_input_provider_runs_its_own_trial(world: World, chain: Chain) -> None:
    second, ds2, oid = two_provider_contract(world, chain)  # approved: build a fresh order
    pid = world.call("GET", f"/orders/{oid}", chain.demander)["product_id"]
    trial = place(world, chain, pid)
    for party in (chain.provider, second):
        assert world.call("GET", f"/orders/{trial}", party)["state"] == "placed"
    world.call("POST", f"/orders/{trial}/trial", world.platform)
    mine = world.call("POST", "/computations", chain.provider, 201, json=ask(trial, 0))
    theirs = world.call("POST", "/computations", second, 201,
                        json=ask(trial, 0, datasite="si-datasite"))
    assert mine["computation_id"] != theirs["computation_id"]
    done = world.call("POST", f"/computations/{theirs['computation_id']}/result", second,
                      json={**mock_report(chain), "datasite": "si-datasite",
                            "input_hashes": {ds2: MOCK_SHA}})
    assert done["state"] == "succeeded"
    refused(world, "GET", f"/computations/{theirs['computation_id']}", chain.provider, 404)
    assert world.client.get(f"/deliveries/{theirs['computation_id']}/result",
                            headers=chain.demander.headers).status_code == 200
