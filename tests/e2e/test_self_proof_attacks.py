"""Attacks on the clean self-proof (issue 13): a proof that would say more than
its checkpoint covers, a "none" proven for a look-alike key, and a period the verifier could
never read. Real proofs from the test app's chain, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest

from audit.selfproof import verify_self_proof
from runtime.build import Container
from tests.e2e.conftest import Chain, World
from tests.e2e.test_self_proof import anchored, cut_at, fails, prove, trust


def test_an_old_proof_says_nothing_past_its_checkpoint(
        world: World, chain: Chain, container: Container) -> None:
    resource = f"dataset:{chain.dataset_id}"
    anchored(world, container)
    old = prove(world, chain.provider, chain.provider, resource)
    world.call("PATCH", f"/datasets/{chain.dataset_id}", chain.provider,
               json={"description": "touched after the old checkpoint"})
    anchored(world, container)
    new = verify_self_proof(prove(world, chain.provider, chain.provider, resource),
                            trust(world))
    touched = new.events[-1]
    assert touched.seq > old["tree_size"]
    # the suspect hands the old proof, its period stretched over the later event
    stretched = {**copy.deepcopy(old),
                 "to": (touched.at + timedelta(days=1)).isoformat().replace("+00:00", "Z")}
    verdict = verify_self_proof(stretched, trust(world))
    sentence = verdict.sentence()
    assert verdict.end is not None and verdict.end < touched.at, sentence
    assert f"and {cut_at(old)}" in sentence and stretched["to"] not in sentence, sentence
    # no period: "now" is not what an old checkpoint can speak for either
    assert "now" not in verify_self_proof(old, trust(world)).sentence()
    # a period that starts after the checkpoint was cut: the proof cannot speak of it
    later = {**copy.deepcopy(old), "from": stretched["to"], "to": None}
    fails(later, trust(world), 2, "after the checkpoint")


def named(r: Any) -> list[str]:
    """The fields a 422 names."""
    assert r.status_code == 422, r.text
    return [f["field"] for f in r.json().get("fields", [])] or [r.json().get("field")]


@pytest.mark.parametrize("lookalike", ["dataset:{id}\u200b", "dataset:{id}\u00a0",
                                       "dataset:{id}\u0301"])
def test_a_none_for_a_look_alike_resource_is_refused(
        world: World, chain: Chain, container: Container, lookalike: str) -> None:
    anchored(world, container)
    resource = lookalike.format(id=chain.dataset_id)
    r = world.client.get(f"/forensics/self-proof?actor={chain.provider.participant_id}"
                         f"&resource={quote(resource)}", headers=world.regulator.headers)
    assert named(r) == ["query.resource"], r.text
    # the same document made by hand from an honest "none" about another key
    honest = prove(world, world.regulator, chain.demander, f"dataset:{chain.dataset_id}")
    forged = {**honest, "actor": chain.provider.participant_id, "resource": resource}
    fails(forged, trust(world), 1, "resource")
    forged = {**honest, "actor": chain.provider.participant_id + "\u200b"}
    fails(forged, trust(world), 1, "actor")


@pytest.mark.parametrize("when", ["2025-02-30T00:00:00Z", "2025-01-01T25:00:00Z"])
def test_a_period_no_verifier_can_read_is_422(world: World, chain: Chain, when: str) -> None:
    me = chain.provider.participant_id
    r = world.client.get(f"/forensics/self-proof?actor={me}&resource=dataset:x&to={when}",
                         headers=chain.provider.headers)
    assert named(r) == ["query.to"], r.text
