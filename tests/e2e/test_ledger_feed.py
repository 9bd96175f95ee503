"""``GET /ledger/events`` for every participant: each pages through the whole log and gets
exactly the events it may see (the rule of ``GET /ledger/events/{seq}``), in seq order;
``next_after`` moves on past what it may not see."""

from __future__ import annotations

from typing import Any

from client.platform import Party
from runtime.build import Container
from tests.e2e.conftest import Chain, World, head, list_product
from tests.e2e.test_market_api import approved_contract, place


def page_through(world: World, party: Party, limit: int) -> list[dict[str, Any]]:
    """Every event ``party`` gets by following ``next_after`` from 0 up to the head."""
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = world.call("GET", f"/ledger/events?after={after}&limit={limit}", party)
        assert all(after < e["seq"] <= page["next_after"] for e in page["events"])
        out += page["events"]
        if page["next_after"] >= page["head"]:
            return out
        assert page["next_after"] > after, "the scan must move on"
        after = page["next_after"]


def test_each_participant_pages_through_the_log_and_sees_exactly_its_events(
        world: World, chain: Chain) -> None:
    _, oid = approved_contract(world, chain)
    stranger = world.onboard("provider", "Another bureau 另一个局")
    end = head(world)
    everything = page_through(world, world.regulator, 1000)
    assert [e["seq"] for e in everything] == list(range(1, end + 1))

    for party in (chain.provider, chain.demander, chain.operator):
        got = page_through(world, party, 7)
        seqs = [e["seq"] for e in got]
        assert seqs == sorted(set(seqs))
        expected = [e for e in everything if world.client.get(
            f"/ledger/events/{e['seq']}", headers=party.headers).status_code == 200]
        assert got == expected
    provider_sees = page_through(world, chain.provider, 1000)
    contract = [e["type"] for e in provider_sees if e["originator_id"] == oid]
    assert contract[0] == "order.placed" and "contract.approved" in contract
    assert any(e["originator_id"] == chain.dataset_id for e in provider_sees)
    assert not any(e["type"].startswith("participant.") for e in provider_sees)

    assert page_through(world, stranger, 5) == []
    first = world.call("GET", "/ledger/events?after=0&limit=5", stranger)
    assert first["events"] == [] and first["next_after"] == 5  # nothing visible, still moves
    other_bank = world.onboard("demander", "Another bank 另一家银行")
    assert page_through(world, other_bank, 1000) == []
    assert page_through(world, world.platform, 1000)[:end] == everything


def test_input_providers_see_a_placed_order_and_its_trial_others_do_not(
        world: World, chain: Chain, container: Container) -> None:
    """The owners of the product's input datasets are granted the order at placement (they
    run the trial, execution 0, on order.trial_granted): before any contract is proposed."""
    _, approved_oid = approved_contract(world, chain)
    oid = place(world, chain, list_product(world, chain))
    world.call("POST", f"/orders/{oid}/trial", chain.operator)
    stranger = world.onboard("provider", "Another bureau 另一个局")
    other_bank = world.onboard("demander", "Another bank 另一家银行")

    feed = page_through(world, chain.provider, 1000)
    assert [e["type"] for e in feed if e["originator_id"] == oid] == [
        "order.placed", "order.trial_granted"]
    assert world.call("GET", f"/orders/{oid}", chain.provider)["trial_granted"] is True
    assert {o["id"] for o in world.call("GET", "/orders", chain.provider)} == {
        oid, approved_oid}
    for party in (stranger, other_bank):
        assert page_through(world, party, 1000) == []
        assert world.client.get(f"/orders/{oid}", headers=party.headers).status_code == 404
        assert world.call("GET", "/orders", party) == []
    for seq in (e["seq"] for e in feed if e["originator_id"] == oid):
        assert world.client.get(f"/ledger/events/{seq}",
                                headers=stranger.headers).status_code == 404

    runner = container.runner
    assert runner.wait_for(head(world))
    digests = runner.digests()
    runner.rebuild()
    assert runner.digests() == digests
    assert page_through(world, chain.provider, 1000) == feed
    assert page_through(world, stranger, 1000) == []
