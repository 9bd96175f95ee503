"""``dataledger audit replay`` over a log with joint computations and hidden queries (white
paper 6.1), on a SQLite file and on PostgreSQL: the providers' node keys registered (signed),
a joint execution published by the aggregation node and queried by the bank (within and
then beyond its query_count), a second contract's joint failed with a provider; exported
with ``dataledger export`` and replayed with exit 0, every step passed, the rule book with
signatures required finding nothing; and each party's self-proof on the joint verifies.
Events written to the store behind the domain's back are found at their seq."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from audit.rules import RuleBook
from audit.selfproof import verify_self_proof
from chain.trust import TrustedKeys
from client.hidden_query import hidden_query
from client.platform import PlatformError
from core import secagg
from domain.base import Actor, Context
from domain.computation import Computation, DeliveryMade
from domain.joint import JointExecution, JointQueried
from runtime.build import Container
from tests.e2e.conftest import World, head
from tests.e2e.joint_market import (
    CODE_SHA256,
    CODES,
    OUTSIDERS,
    SITE,
    SPLIT,
    JointMarket,
    joint_market,
    part_of,
    post_part,
    publish_layout,
    request_all,
    wait_for,
)

REPO = Path(__file__).parents[2]
JOINT_TYPES = {"participant.node_key_registered", "joint.started", "joint.layout_published",
               "joint.part_received", "joint.published", "joint.failed", "joint.queried"}


@pytest.fixture
def settings_changes() -> dict[str, Any]:
    return {"aggregation_sweep_seconds": 3600}


def published_and_queried(world: World) -> JointMarket:
    """The joint flow to its hidden queries: 5 codes, then 2 (the query_count of 7 is
    reached), then 1 more, refused and recorded."""
    jm = joint_market(world, usage_policy={"query_count": 7})
    request_all(jm)
    for pid, key in jm.keys.items():
        world.api.register_node_key(jm.provider(pid), secagg.public_key_text(key.public_key()))
    publish_layout(jm)
    for pid in jm.ids:
        post_part(jm, pid, part_of(jm, pid))
    assert wait_for(jm, ("published", "failed"))["state"] == "published"
    rows = hidden_query(world.api, jm.demander, jm.order_id, [*CODES[:3], *OUTSIDERS])
    assert [rows[c] is None for c in (*CODES[:3], *OUTSIDERS)] == [False] * 3 + [True] * 2
    hidden_query(world.api, jm.demander, jm.order_id, CODES[5:7])
    with pytest.raises(PlatformError) as refused:
        hidden_query(world.api, jm.demander, jm.order_id, CODES[9:10])
    assert refused.value.status == 409
    return jm


def failed_with_a_provider(world: World, jm: JointMarket) -> str:
    """A second contract on the product: its first provider starts the joint, the second
    fails its computation (the joint fails with it), the third then gives up too."""
    api = world.api
    order = api.place_order(jm.demander, jm.product_id, "a second round")
    api.propose_contract(jm.operator, order, usage_policy={"processing_count": 3},
                         price_fen=100, revenue_split=SPLIT)
    api.accept_contract(jm.demander, order)
    for party in (*jm.providers, jm.operator):
        api.approve_contract(party, order)
    made = [world.call("POST", "/computations", p, 201, json={
        "contract_id": order, "execution": 1, "datasite": SITE, "code_sha256": CODE_SHA256})
        for p in jm.providers]
    world.call("POST", f"/computations/{made[1]['computation_id']}/failure",
               jm.providers[1], json={"reason": "the datasite is down"})
    world.call("POST", f"/computations/{made[2]['computation_id']}/failure",
               jm.providers[2], json={"reason": "gave up"})
    view = world.call("GET", f"/joint/{made[0]['joint_id']}", jm.demander)
    assert view["state"] == "failed" and view["reason"].startswith("provider_failed: ")
    return str(made[0]["joint_id"])


def cli(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(data), "NO_COLOR": "1", "COLUMNS": "200"}
    for name in ("DATALEDGER_DATABASE_URL", "DATALEDGER_TOKEN"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)


def test_a_log_with_joint_computations_and_hidden_queries_replays_clean(
        world: World, container: Container, database_url: str, tmp_path: Path) -> None:
    jm = published_and_queried(world)
    failed = failed_with_a_provider(world, jm)
    last = head(world)
    assert container.chain is not None
    assert container.chain.wait_anchored(last, timeout=60) is not None
    entries = container.store.read(0, last + 1)
    types = {e.type_name for e in entries}
    assert JOINT_TYPES | {"usage.refused", "computation.failed"} <= types
    assert [f.as_dict() for f in RuleBook(require_signatures=True).run(entries)] == []

    trust = tmp_path / "trust.json"  # outside the data dir, as a regulator keeps it
    trust.write_text(json.dumps(container.chain.trust_document()))
    bundle, report = tmp_path / "bundle", tmp_path / "report.json"
    data = tmp_path / "var"
    done = cli("export", "--out", str(bundle), "--database", database_url, data=data)
    assert done.returncode == 0, done.stdout + done.stderr
    out = cli("audit", "replay", "--bundle", str(bundle), "--trust", str(trust),
              "--json", str(report), "--quiet", data=data)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(report.read_text())
    assert doc["ok"] is True and doc["failure"] is None
    status = {s["name"]: s["status"] for s in doc["steps"]}
    assert [status[n] for n in ("records", "tree", "signatures", "consistency", "index",
                                "business rules")] == ["passed"] * 6
    assert JOINT_TYPES <= set(doc["events_per_type"])
    assert doc["events_per_type"]["joint.queried"] == 2
    assert doc["events_per_type"]["joint.failed"] == 1

    # each party's self-proof on the published joint, and the bank's on the failed one
    keys = TrustedKeys.from_json(container.chain.trust_document())
    resource = f"joint:{jm.joint_id}"
    for party in (jm.demander, jm.operator, *jm.providers):
        verdict = verify_self_proof(world.api.self_proof(
            party, party.participant_id, resource, None, None), keys)
        seen = [e.type_name for e in verdict.events]
        assert seen[0] == "joint.started" and seen.count("joint.part_received") == 3, seen
        # the bank's two hidden queries and its refused one: every party sees how the
        # joint table made from the providers' data is used
        assert seen[-3:] == ["joint.queried", "joint.queried", "usage.refused"], seen
        assert "joint.published" in seen, seen
    bank = verify_self_proof(world.api.self_proof(
        jm.demander, jm.demander.participant_id, f"joint:{failed}", None, None), keys)
    assert [e.type_name for e in bank.events] == ["joint.started", "joint.failed"]


def test_a_query_and_a_delivery_written_behind_the_domain_are_found(
        world: World, container: Container) -> None:
    """Straight to the store, no permission or usage control: a hidden query beyond the
    contract's query_count, and a joint computation's result delivered to the bank."""
    jm = published_and_queried(world)
    store = container.store
    assert RuleBook().run(store.read(0, 1_000_000)) == []
    bank = Actor(jm.demander.participant_id, jm.demander.member_id, "demander", ("admin",))
    provider = jm.providers[0]
    tax = Actor(provider.participant_id, provider.member_id, "provider", ("admin",))

    def query(uow: Any, ctx: Context) -> dict[str, Any]:
        uow.get(JointExecution, jm.joint_id).trigger(
            JointQueried, ctx, contract_id=jm.order_id, demander_id=bank.participant_id,
            request_commitment="0" * 64, request_size=3, answer_hash="0" * 64)
        return {}

    def delivery(uow: Any, ctx: Context) -> dict[str, Any]:
        run = uow.get(Computation, jm.computations[provider.participant_id])
        run.trigger(DeliveryMade, ctx, demander_id=bank.participant_id,
                    result_sha256=run.result_sha256,  # its part's digest
                    delivered_sha256=run.result_sha256, watermark=None)
        return {}

    asked = container.ledger.execute(query, bank).seqs
    delivered = container.ledger.execute(delivery, tax).seqs
    found = [(f.seq, f.rule) for f in RuleBook().run(store.read(0, 1_000_000))]
    assert found == [(asked[0], "query_count"), (delivered[0], "delivery")]
