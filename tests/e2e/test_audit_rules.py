"""The regulator's rule book (audit/rules/) over the stored log of a real server, on a
SQLite file and on PostgreSQL: the whole lifecycle breaks no rule, signatures required; an
approval written to the store behind the domain's back, by a provider that is no party to
the contract, is found at its seq."""

from __future__ import annotations

from typing import Any

from audit.rules import RuleBook
from domain.base import Actor, Context
from domain.order import ContractPartyApproved, Order
from runtime.build import Container
from tests.e2e.conftest import Chain, World
from tests.e2e.test_lifecycle import (
    test_the_whole_lifecycle_then_a_rebuild_gives_the_same_read_models as lifecycle,
)
from tests.e2e.test_market_api import accepted_contract


def findings(container: Container, **options: Any) -> list[tuple[int, str]]:
    book = RuleBook(**options)
    return [(f.seq, f.rule) for f in book.run(container.store.read(0, 1_000_000))]


def test_the_whole_lifecycle_breaks_no_rule(world: World, container: Container) -> None:
    lifecycle(world, container)
    assert container.store.max_seq() > 50
    assert findings(container, require_signatures=True) == []


def test_an_approval_written_behind_the_domain_by_no_party_is_found(
        world: World, chain: Chain, container: Container) -> None:
    _, oid = accepted_contract(world, chain)
    power = world.onboard("provider", "Power utility 供电公司")
    assert findings(container) == []
    actor = Actor(power.participant_id, power.member_id, "provider", ("admin",))

    def forged(uow: Any, ctx: Context) -> dict[str, Any]:
        """Straight to the store: no permission, no party check, no signature."""
        uow.get(Order, oid).trigger(ContractPartyApproved, ctx, party_id=power.participant_id,
                                    signature=None)
        return {}

    seqs = container.ledger.execute(forged, actor).seqs
    assert findings(container) == [(seqs[0], "party")]
    assert findings(container, require_signatures=True) == [(seqs[0], "party"),
                                                              (seqs[0], "signature_missing")]
