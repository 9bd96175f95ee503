"""Joint computations over HTTP (issue 14, white paper 6.1): three providers' node keys
registered (signed), a joint product's contract approved, each provider's node (its token
here) requesting its computation, the layout posted, each part masked in the test with
``core.secagg`` and real X25519 keys as a node masks it, and posted; the views, the events,
every refusal, and a provider's failure failing the joint with nothing delivered."""

from __future__ import annotations

import base64
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import func, select

from aggregation import store
from client.platform import Party
from core import secagg
from core.canonical import canonical_bytes
from domain.joint import joint_id
from projections.computations import deliveries
from runtime.build import Container
from tests.e2e.conftest import CODE, FIELDS, USED, Chain, World, head, list_product
from tests.e2e.test_market_api import proposal, refused

CODE_SHA256 = hashlib.sha256(CODE.encode()).hexdigest()
SITE = "joint-datasite"
DATA_SHA = hashlib.sha256(b"taxpayer_id,annual_revenue\n").hexdigest()
KEYS = ["91110000MA0001", "91110000MA0002", "91110000MA0003", "91110000MA0004"]
OUTPUT = {"type": "array", "items": {"type": "object", "properties": {
    "taxpayer_id": {"type": "string"}, "score": {"type": "integer"},
    "weight": {"type": "number"}}}}
JOINT = {"value_columns": ["score", "weight"], "min_providers": 3, "deadline_seconds": 600}


@dataclass
class Joint:
    """A listed joint product over three providers' datasets (in input order)."""

    providers: list[Party]
    datasets: list[str]
    product_id: str
    node_keys: dict[str, X25519PrivateKey] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [p.participant_id for p in self.providers]

    def public_keys(self) -> dict[str, str]:
        return {pid: secagg.public_key_text(k.public_key()) for pid, k in self.node_keys.items()}


def joint_market(world: World, chain: Chain, **joint: Any) -> Joint:
    """Two more providers beside the chain's, a scenario over the three datasets, each
    provider's grant, and a listed joint product (``joint`` changes its declaration)."""
    api = world.api
    providers, datasets = [chain.provider], [chain.dataset_id]
    for name in ("Power utility 电力公司", "Market regulator 市场监管局"):
        party = world.onboard("provider", name)
        ds = api.register_dataset(party, name=f"{name} records", description="x",
                                  source_system="core", fields=FIELDS)
        api.publish_dataset(party, ds)
        providers.append(party)
        datasets.append(ds)
    requested = [{"dataset_id": ds, "fields": USED} for ds in datasets]
    sc = api.propose_scenario(chain.operator, title="SME credit, joint", purpose="score SMEs",
                              sector="finance", requested=requested)
    api.give_opinion(chain.expert, sc, "approve", "proportionate")
    api.decide_scenario(world.regulator, sc, "approved")
    now = datetime.now(UTC)
    auths = [api.authorize(p, sc, [r], (now - timedelta(days=1), now + timedelta(days=365)),
                           {"processing_count": 10})
             for p, r in zip(providers, requested, strict=True)]
    product = list_product(world, chain, scenario_id=sc, authorization_ids=auths,
                           inputs=requested, output_schema=OUTPUT,
                           joint={**JOINT, **joint})
    return Joint(providers, datasets, product)


def with_node_keys(world: World, j: Joint) -> Joint:
    for provider in j.providers:
        key = secagg.new_node_key()
        view = world.api.register_node_key(provider, secagg.public_key_text(key.public_key()))
        assert view["node_key"]["public_key"] == secagg.public_key_text(key.public_key())
        j.node_keys[provider.participant_id] = key
    return j


def approved_order(world: World, chain: Chain, j: Joint) -> str:
    """An order of the joint product (no query) whose contract every party approved."""
    oid: str = world.call("POST", "/orders", chain.demander, 201, json={
        "product_id": j.product_id, "purpose": "credit decisions on SMEs"})["order_id"]
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json=proposal())
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    for party in (*j.providers, chain.operator):
        world.call("POST", f"/orders/{oid}/contract/approvals", party)
    return oid


def request(world: World, provider: Party, oid: str, execution: int = 1) -> dict[str, Any]:
    answer: dict[str, Any] = world.call("POST", "/computations", provider, 201, json={
        "contract_id": oid, "execution": execution, "datasite": SITE,
        "code_sha256": CODE_SHA256})
    return answer


def values(k: int) -> list[list[float]]:
    """Provider ``k``'s (score, weight) per layout key."""
    return [[100 * k + i, 0.25 * (k + i)] for i in range(len(KEYS))]


def masked(j: Joint, jid: str, k: int, rows: list[list[float]] | None = None,
           providers: list[str] | None = None, who: int | None = None,
           layout: list[str] | None = None) -> secagg.MaskedPart:
    """Provider ``k``'s part as its node masks it (``who``: masked with that provider's
    key and id instead; ``layout``: bound to that layout instead of ``KEYS``)."""
    who = k if who is None else who
    flat = [v for row in (rows if rows is not None else values(k)) for v in row]
    pid = j.ids[who]
    return secagg.mask(j.node_keys[pid], jid, pid, providers or j.ids, j.public_keys(),
                       secagg.to_fixed(flat), layout_sha256=hashlib.sha256(
                           canonical_bytes(KEYS if layout is None else layout)).hexdigest())


def part_body(j: Joint, k: int, part: secagg.MaskedPart, **changes: Any) -> dict[str, Any]:
    return {"header": dict(part.header), "body": base64.b64encode(part.body).decode(),
            "input_hashes": {j.datasets[k]: DATA_SHA}, "datasite": SITE, **changes}


def post_part(world: World, j: Joint, k: int, cid: str, part: secagg.MaskedPart,
              expect: int = 200, **changes: Any) -> dict[str, Any]:
    answer: dict[str, Any] = world.call("POST", f"/computations/{cid}/masked-part",
                                        j.providers[k], expect,
                                        json=part_body(j, k, part, **changes))
    return answer


def events_of(world: World, originator_id: str) -> list[dict[str, Any]]:
    page = world.call("GET", "/ledger/events?limit=1000", world.regulator)["events"]
    return [e for e in page if e["originator_id"] == originator_id]


def types(world: World) -> list[str]:
    return [e["type"] for e in world.call("GET", "/ledger/events?limit=1000",
                                          world.regulator)["events"]]


def stored_parts(container: Container, jid: str) -> list[str]:
    store.PARTS.ensure(container.engine)
    with container.engine.connect() as conn:
        return sorted(conn.execute(select(store.parts.c.provider_id).where(
            store.parts.c.joint_id == jid)).scalars())


def nothing_delivered(world: World, container: Container, cids: list[str]) -> None:
    assert "delivery.made" not in types(world)
    with container.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar() == 0
    for cid in cids:
        r = world.api.send("GET", f"/deliveries/{cid}/result", world.regulator)
        assert r.status_code in (404, 409), r.text


@dataclass
class Started:
    j: Joint
    oid: str
    jid: str
    cids: list[str]


def started(world: World, chain: Chain, *, layout: bool = True) -> Started:
    j = with_node_keys(world, joint_market(world, chain))
    oid = approved_order(world, chain, j)
    answers = [request(world, p, oid) for p in j.providers]
    jid = joint_id(oid, 1)
    assert [a["joint_id"] for a in answers] == [jid] * 3
    if layout:
        world.call("POST", f"/joint/{jid}/layout", j.providers[0], json={"keys": KEYS})
    return Started(j, oid, jid, [a["computation_id"] for a in answers])


# -- the joint product and the node keys ---------------------------------------------------
def test_a_joint_product_declares_its_output_and_takes_no_clear_query(
        world: World, chain: Chain) -> None:
    j = joint_market(world, chain)
    product = world.call("GET", f"/products/{j.product_id}", chain.demander)
    assert product["joint"] == JOINT
    made = world.api.send("POST", "/orders", chain.demander, json={
        "product_id": j.product_id, "purpose": "credit decisions",
        "query": {"field": "taxpayer_id", "values": ["91110000MA0001"]}})
    assert made.status_code == 422 and made.json()["fields"][0]["field"] == "query"
    assert "hidden queries only" in made.json()["fields"][0]["reason"]
    oid = approved_order(world, chain, j)
    r = refused(world, "POST", f"/orders/{oid}/queries", chain.demander, 422,
                {"query": {"field": "taxpayer_id", "values": ["91110000MA0001"]}})
    assert r["fields"][0]["field"] == "query"


@pytest.mark.parametrize(("joint", "field"), [
    ({"value_columns": ["taxpayer_id"]}, "joint.value_columns[0]"),
    ({"value_columns": ["nope"]}, "joint.value_columns[0]"),
    ({"value_columns": []}, "joint.value_columns"),
    ({"value_columns": ["score"], "min_providers": 4}, "joint.min_providers"),
    ({"value_columns": ["score"], "min_providers": 1}, "joint.min_providers"),
    ({"value_columns": ["score"], "deadline_seconds": 5}, "joint.deadline_seconds"),
    ({"value_columns": ["score"], "extra": 1}, "joint.extra"),
])
def test_a_joint_declaration_is_checked_naming_the_field(world: World, chain: Chain,
                                                         joint: dict[str, Any],
                                                         field: str) -> None:
    j = joint_market(world, chain)
    body = world.call("GET", f"/products/{j.product_id}", chain.operator)
    made = refused(world, "POST", "/products", chain.operator, 422, {
        "scenario_id": body["scenario_id"], "authorization_ids": body["authorization_ids"],
        "name": "another", "kind": "api", "code": CODE, "inputs": body["inputs"],
        "output_schema": OUTPUT, "key_column": "taxpayer_id", "price_fen": 1,
        "joint": joint})
    assert made["fields"][0]["field"] == field, made


def test_a_node_key_is_a_signed_decision_of_the_provider_s_own_member(
        world: World, chain: Chain) -> None:
    key = secagg.public_key_text(secagg.new_node_key().public_key())
    path = f"/participants/{chain.provider.participant_id}/node-key"
    view = world.api.register_node_key(chain.provider, key)
    assert view["node_key"]["key_id"] == secagg.node_key_id(key)
    event = world.call("GET", f"/ledger/events/{view['node_key']['seq']}", world.regulator)
    assert event["type"] == "participant.node_key_registered"
    assert event["payload"]["public_key"] == key and event["payload"]["signature"] is not None
    assert event["payload"]["signature"]["statement"]["command"] == "participant.node_key"
    seen = world.call("GET", f"/participants/{chain.provider.participant_id}", chain.demander)
    assert seen["node_key"] == view["node_key"]
    assert refused(world, "POST", path, chain.demander, 403, {"public_key": key})["rule"] == (
        "participant.node_key")
    other = world.onboard("provider", "Other provider 其他")
    refused(world, "POST", path, other, 403, {"public_key": key})
    for bad in ("A" * 44, base64.b64encode(bytes(32)).decode(), "not base64 at all, not at all"):
        r = refused(world, "POST", path, chain.provider, 422, {"public_key": bad})
        assert r["fields"][0]["field"] == "public_key"
    unsigned = world.client.post(path, headers=chain.provider.headers, json={"public_key": key})
    assert (unsigned.status_code, unsigned.json()["error"]) == (403, "signature_required")
    newer = secagg.public_key_text(secagg.new_node_key().public_key())
    assert world.api.register_node_key(chain.provider, newer)["node_key"]["public_key"] == newer


# -- the flow ------------------------------------------------------------------------------
def test_layout_then_every_part_recorded_and_nothing_delivered(
        world: World, chain: Chain, container: Container) -> None:
    s = started(world, chain, layout=False)
    j, jid = s.j, s.jid
    view = world.call("GET", f"/joint/{jid}", chain.demander)
    assert (view["state"], view["providers"], view["layout_provider"]) == (
        "started", j.ids, j.ids[0])
    assert (view["key_column"], view["value_columns"]) == ("taxpayer_id", ["score", "weight"])
    assert view["deadline"].endswith("Z") and view["parts"] == {} and view["queries"] == 0
    assert [x["id"] for x in world.call("GET", f"/joint?contract_id={s.oid}",
                                        chain.operator)] == [jid]
    world.call("GET", f"/joint/{jid}", world.onboard("demander", "Other bank"), 404)
    # a part before the layout: 409, nothing stored
    r = refused(world, "POST", f"/computations/{s.cids[0]}/masked-part", j.providers[0], 409,
                part_body(j, 0, masked(j, jid, 0)))
    assert r["error"] == "wrong_state" and stored_parts(container, jid) == []
    world.call("GET", f"/joint/{jid}/layout", j.providers[1], 409)
    # the layout: by the layout provider only, sorted and unique
    refused(world, "POST", f"/joint/{jid}/layout", j.providers[1], 403, {"keys": KEYS})
    refused(world, "POST", f"/joint/{jid}/layout", chain.demander, 403, {"keys": KEYS})
    bad = refused(world, "POST", f"/joint/{jid}/layout", j.providers[0], 422,
                  {"keys": [KEYS[1], KEYS[0]]})
    assert bad["fields"][0]["field"] == "keys[1]"
    made = world.call("POST", f"/joint/{jid}/layout", j.providers[0], json={"keys": KEYS})
    assert made["length"] == len(KEYS) and made["seqs"]
    again = world.call("POST", f"/joint/{jid}/layout", j.providers[0], json={"keys": KEYS})
    assert again["seqs"] == [] and again["layout_sha256"] == made["layout_sha256"]
    refused(world, "POST", f"/joint/{jid}/layout", j.providers[0], 409, {"keys": KEYS[:2]})
    got = world.call("GET", f"/joint/{jid}/layout", j.providers[2])
    assert got == {"keys": KEYS, "layout_sha256": made["layout_sha256"]}
    assert got["layout_sha256"] == hashlib.sha256(
        ("[" + ",".join(f'"{k}"' for k in KEYS) + "]").encode()).hexdigest()
    for outsider in (chain.demander, chain.operator, world.regulator):
        world.call("GET", f"/joint/{jid}/layout", outsider, 403)
    # the parts
    parts = [masked(j, jid, k) for k in range(3)]
    for k in range(3):
        answer = post_part(world, j, k, s.cids[k], parts[k])
        assert (answer["digest"], answer["state"], answer["existing"]) == (
            parts[k].digest(), "succeeded", False)
        assert answer["complete"] == (k == 2)
        if k == 1:  # the same part again, while the joint waits for the last one
            repeat = post_part(world, j, 1, s.cids[1], parts[1])
            assert repeat["existing"] and repeat["seqs"] == []
    view = world.call("GET", f"/joint/{jid}", world.regulator)
    assert view["parts"] == {j.ids[k]: parts[k].digest() for k in range(3)}
    assert view["length"] == len(KEYS) and view["layout_sha256"] == made["layout_sha256"]
    for k in range(3):
        computation = world.call("GET", f"/computations/{s.cids[k]}", chain.demander)
        assert (computation["state"], computation["result_sha256"],
                computation["result_rows"]) == ("succeeded", parts[k].digest(), len(KEYS))
    received = [e for e in events_of(world, jid) if e["type"] == "joint.part_received"]
    assert [(e["payload"]["provider_id"], e["payload"]["digest"], e["payload"]["length"])
            for e in received] == [(j.ids[k], parts[k].digest(), 2 * len(KEYS))
                                   for k in range(3)]
    assert [e["type"] for e in events_of(world, jid)][:2] == [
        "joint.started", "joint.layout_published"]
    assert stored_parts(container, jid) == sorted(j.ids)
    stored = store.get_parts(container.engine, jid, view["parts"])
    assert secagg.aggregate(stored.values(), jid, j.ids) == secagg.to_fixed(
        [sum(values(k)[i][c] for k in range(3)) for i in range(len(KEYS)) for c in range(2)])
    nothing_delivered(world, container, s.cids)
    # the parties see the joint's events in the log; a provider its peers' node keys
    seen = {e["type"] for e in world.call("GET", "/ledger/events?limit=1000",
                                          chain.demander)["events"]}
    assert {"joint.started", "joint.part_received"} <= seen
    peers = [e for e in world.call("GET", "/ledger/events?limit=1000", j.providers[2])["events"]
             if e["type"] == "participant.node_key_registered"]
    assert sorted(e["originator_id"] for e in peers) == sorted(j.ids)


def test_every_refused_part_stores_nothing_and_writes_nothing(
        world: World, chain: Chain, container: Container) -> None:
    s = started(world, chain)
    j, jid, cid = s.j, s.jid, s.cids[0]
    path = f"/computations/{cid}/masked-part"

    def part_refused(body: dict[str, Any], reason: str, party: Party | None = None) -> None:
        r = refused(world, "POST", path, party or j.providers[0], 409, body)
        assert (r["error"], r["reason"]) == ("part_refused", reason), r
        assert r["field"].startswith("header.") and stored_parts(container, jid) == []

    part_refused(part_body(j, 0, masked(j, joint_id(s.oid, 2), 0)), "execution")
    part_refused(part_body(j, 0, masked(j, jid, 0, providers=list(reversed(j.ids)))),
                 "providers")
    part_refused(part_body(j, 0, masked(j, jid, 0, who=1)), "unknown")
    # masked over another layout than the joint's: its masks would never cancel
    part_refused(part_body(j, 0, masked(j, jid, 0, layout=[*KEYS[:-1], "zz"])), "layout")
    part_refused(part_body(j, 0, masked(j, jid, 0, rows=values(0)[:-1])), "length")
    good = masked(j, jid, 0)
    tampered = bytes([good.body[0] ^ 1]) + good.body[1:]
    part_refused(part_body(j, 0, good, body=base64.b64encode(tampered).decode()), "body")
    short = part_body(j, 0, good, body=base64.b64encode(good.body[:-8]).decode())
    part_refused(short, "length")
    # not the computation's provider, not a provider; a plain result post
    assert refused(world, "POST", path, j.providers[1], 403, part_body(j, 0, good))
    assert refused(world, "POST", path, chain.demander, 403, part_body(j, 0, good))[
        "rule"] == "computation.masked_part"
    plain = refused(world, "POST", f"/computations/{cid}/result", j.providers[0], 409, {
        "result": [{"taxpayer_id": KEYS[0], "score": 1}], "input_hashes": {j.datasets[0]:
        DATA_SHA}, "result_rows": 1, "datasite": SITE})
    assert "masked part" in plain["detail"]
    not_base64 = refused(world, "POST", path, j.providers[0], 422,
                         part_body(j, 0, good, body="*not base64*"))
    assert not_base64["fields"][0]["field"] == "body"
    bad_hash = refused(world, "POST", path, j.providers[0], 422,
                       part_body(j, 0, good, input_hashes={"other": DATA_SHA}))
    assert bad_hash["fields"][0]["field"] == "input_hashes"
    assert stored_parts(container, jid) == []
    # one part per provider: another after it is refused, the same again is not
    post_part(world, j, 0, cid, good)
    other = masked(j, jid, 0, rows=[[1, 1.0]] * len(KEYS))
    part_refused_after = refused(world, "POST", path, j.providers[0], 409,
                                 part_body(j, 0, other))
    assert part_refused_after["reason"] == "duplicate"
    assert stored_parts(container, jid) == [j.ids[0]]
    assert post_part(world, j, 0, cid, good)["existing"]


def test_a_provider_s_failure_fails_the_joint_and_nothing_is_delivered(
        world: World, chain: Chain, container: Container) -> None:
    s = started(world, chain)
    j, jid = s.j, s.jid
    post_part(world, j, 0, s.cids[0], masked(j, jid, 0))
    failed = world.call("POST", f"/computations/{s.cids[1]}/failure", j.providers[1],
                        json={"reason": "the datasite is down"})
    assert failed["state"] == "failed"
    view = world.call("GET", f"/joint/{jid}", chain.demander)
    assert view["state"] == "failed" and view["reason"].startswith("provider_failed: ")
    assert j.ids[1] in view["reason"] and s.cids[1] in view["reason"]
    last = [e["type"] for e in events_of(world, jid)]
    assert last[-1] == "joint.failed"
    # after the failure: no part, no layout, nothing stored
    r = refused(world, "POST", f"/computations/{s.cids[2]}/masked-part", j.providers[2], 409,
                part_body(j, 2, masked(j, jid, 2)))
    assert r["error"] == "wrong_state" and "failed" in r["detail"]
    refused(world, "POST", f"/joint/{jid}/layout", j.providers[0], 409, {"keys": ["z"]})
    assert stored_parts(container, jid) == [j.ids[0]]
    world.call("POST", f"/computations/{s.cids[2]}/failure", j.providers[2],
               json={"reason": "gave up"})
    assert [e["type"] for e in events_of(world, jid)] == last  # failed once
    nothing_delivered(world, container, s.cids)


def test_a_part_after_the_contract_ended_fails_the_joint_policy_lapsed(
        world: World, chain: Chain, container: Container) -> None:
    s = started(world, chain)
    j, jid = s.j, s.jid
    world.call("POST", f"/orders/{s.oid}/contract/termination", chain.operator,
               json={"reason": "ended early"})
    before = head(world)
    r = world.api.send("POST", f"/computations/{s.cids[0]}/masked-part", j.providers[0],
                       json=part_body(j, 0, masked(j, jid, 0)))
    assert r.status_code == 409 and r.json()["detail"].startswith("policy_lapsed: ")
    assert head(world) == before + 2  # computation.failed, joint.failed
    view = world.call("GET", f"/joint/{jid}", world.regulator)
    assert view["state"] == "failed" and view["reason"].startswith("policy_lapsed: ")
    assert stored_parts(container, jid) == []
    nothing_delivered(world, container, s.cids)


def test_a_refused_request_starts_the_joint_failed(world: World, chain: Chain) -> None:
    j = with_node_keys(world, joint_market(world, chain))
    oid = approved_order(world, chain, j)
    made = world.call("POST", "/computations", j.providers[0], 201, json={
        "contract_id": oid, "execution": 1, "datasite": SITE, "code_sha256": "0" * 64})
    assert made["state"] == "failed" and made["joint_id"] == joint_id(oid, 1)
    view = world.call("GET", f"/joint/{joint_id(oid, 1)}", chain.demander)
    assert view["state"] == "failed" and "code_hash_mismatch" in view["reason"]


def test_the_aggregation_node_is_told_once_every_part_is_in(
        world: World, chain: Chain, container: Container) -> None:
    s = started(world, chain)
    j, jid = s.j, s.jid
    for k in range(3):
        post_part(world, j, k, s.cids[k], masked(j, jid, k))
    if getattr(container, "aggregator", None) is None:
        assert world.call("GET", f"/joint/{jid}", chain.demander)["state"] == "layout_published"
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        view = world.call("GET", f"/joint/{jid}", chain.demander)
        if view["state"] != "layout_published":
            break
        time.sleep(0.05)
    assert view["state"] == "published", view
    assert view["rows"] == len(KEYS)


def test_the_providers_nodes_requesting_and_posting_at_once_all_get_in(
        world: World, chain: Chain) -> None:
    """Three nodes at once on one joint execution: each command that met another's change
    of the joint is decided again, so none is refused for it."""
    j = with_node_keys(world, joint_market(world, chain))
    oid = approved_order(world, chain, j)
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda p: request(world, p, oid), j.providers))
    jid = joint_id(oid, 1)
    assert {a["joint_id"] for a in answers} == {jid}
    assert [e["type"] for e in events_of(world, jid)] == ["joint.started"]
    world.call("POST", f"/joint/{jid}/layout", j.providers[0], json={"keys": KEYS})
    parts = [masked(j, jid, k) for k in range(3)]
    with ThreadPoolExecutor(3) as pool:
        posted = list(pool.map(lambda k: post_part(world, j, k, answers[k]["computation_id"],
                                                   parts[k]), range(3)))
    assert [p["digest"] for p in posted] == [p.digest() for p in parts]
    assert sum(p["complete"] for p in posted) == 1
    view = world.call("GET", f"/joint/{jid}", world.regulator)
    assert view["parts"] == {j.ids[k]: parts[k].digest() for k in range(3)}


def test_the_sweep_drops_the_parts_and_layouts_no_event_records(
        world: World, chain: Chain, container: Container) -> None:
    s = started(world, chain)
    j, jid = s.j, s.jid
    kept = masked(j, jid, 0)
    post_part(world, j, 0, s.cids[0], kept)
    orphan = masked(j, jid, 1)  # stored, then the server crashed before recording it
    store.put_part(container.engine, jid, orphan)
    store.put_layout(container.engine, jid, "0" * 64, b'["x"]')
    assert store.sweep(container.engine, container.store) == 0  # younger than the grace
    with container.engine.begin() as conn:
        for table in (store.parts, store.layouts):
            conn.execute(table.update().values(stored_at=0.0))
    assert store.sweep(container.engine, container.store) == 2
    assert stored_parts(container, jid) == [j.ids[0]]
    assert world.call("GET", f"/joint/{jid}/layout", j.providers[1])["keys"] == KEYS


def test_a_part_after_the_joint_s_deadline_is_refused_and_fails_the_joint(
        world: World, chain: Chain, container: Container, clock: Any) -> None:
    """The deadline holds at the post, not only at the sweep: a new part at or after it
    is 409, stores nothing, and its refusal records the joint's failure (``missing``)."""
    s = started(world, chain)
    j, jid = s.j, s.jid
    post_part(world, j, 0, s.cids[0], masked(j, jid, 0))
    deadline = world.call("GET", f"/joint/{jid}", world.regulator)["deadline"]
    clock.move_to(datetime.fromisoformat(deadline) + timedelta(seconds=1))
    before = head(world)
    answer = world.api.send("POST", f"/computations/{s.cids[1]}/masked-part",
                            j.providers[1], json=part_body(j, 1, masked(j, jid, 1)))
    r = answer.json()
    assert (answer.status_code, r["error"]) == (409, "wrong_state"), r
    assert r["detail"] == (f"missing: providers {j.ids[1]}, {j.ids[2]} sent no part by the "
                           f"deadline {deadline}")
    assert head(world) == before + 1 and events_of(world, jid)[-1]["type"] == "joint.failed"
    view = world.call("GET", f"/joint/{jid}", chain.demander)
    assert (view["state"], view["reason"]) == ("failed", r["detail"])
    assert stored_parts(container, jid) == [j.ids[0]]
    # the computation was not failed: the joint was (as the deadline sweep does)
    comp = world.call("GET", f"/computations/{s.cids[1]}", j.providers[1])
    assert comp["state"] == "requested", comp
    nothing_delivered(world, container, s.cids)


def test_a_layout_the_hidden_table_or_the_part_cap_cannot_take_is_refused(
        world: World, chain: Chain, container: Container,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A key is a code of the hidden table: at most 256 bytes of UTF-8 (86 three-byte
    characters are 258); a layout whose parts would pass the part cap (MAX_PART_WORDS,
    here made 6 words: 3 keys of 2 value columns) is refused naming ``keys`` and the most
    keys. Nothing is stored or written; a layout that fits is then taken."""
    s = started(world, chain, layout=False)
    j, jid = s.j, s.jid
    path = f"/joint/{jid}/layout"
    before = head(world)
    long_key = refused(world, "POST", path, j.providers[0], 422,
                       {"keys": [*KEYS, "企" * 86]})
    assert long_key["fields"][0]["field"] == f"keys[{len(KEYS)}]", long_key
    monkeypatch.setattr("domain.joint.MAX_PART_WORDS", 6)
    too_many = refused(world, "POST", path, j.providers[0], 422, {"keys": KEYS})
    assert too_many["fields"][0]["field"] == "keys", too_many
    assert "at most 3 keys, not 4" in too_many["detail"], too_many
    assert head(world) == before
    assert world.call("GET", f"/joint/{jid}", world.regulator)["state"] == "started"
    monkeypatch.undo()
    world.call("POST", path, j.providers[0], json={"keys": [*KEYS, "企" * 85]})


@pytest.mark.parametrize("columns", range(1, 9))
def test_the_body_caps_take_every_part_and_layout_a_joint_allows(columns: int) -> None:
    """Every layout the ledger takes (at most MAX_PART_WORDS // columns keys) makes parts
    whose post fits the masked-part cap; a layout of MAX_KEYS credit codes fits the layout
    cap, in canonical JSON or with the standard library's default separators."""
    import json

    from api.edge import JOINT_LAYOUT_BODY_BYTES, JOINT_PART_BODY_BYTES, LimitBody
    from domain.joint import MAX_KEYS, MAX_PART_WORDS
    limits = LimitBody(lambda *a: None, 1 << 20, 1 << 20)  # type: ignore[arg-type]
    assert limits.bound("POST", "/computations/c/masked-part").limit == JOINT_PART_BODY_BYTES
    assert limits.bound("POST", "/joint/j/layout").limit == JOINT_LAYOUT_BODY_BYTES
    keys = min(MAX_KEYS, MAX_PART_WORDS // columns)
    words = keys * columns
    header = {"format": secagg.FORMAT, "execution_id": "x" * 36, "provider_id": "p" * 36,
              "providers": ["p" * 36] * secagg.MAX_PROVIDERS, "length": words,
              "body_sha256": "0" * 64, "layout_sha256": "0" * 64}
    around = json.dumps({"header": header, "body": "", "datasite": "d" * 200,
                         "input_hashes": {f"{i:036d}": "0" * 64 for i in range(50)}})
    assert 4 * -(-8 * words // 3) + len(around) <= JOINT_PART_BODY_BYTES
    code = "91110000MA01234567"  # 18 characters, as a unified social credit code
    canonical = len(b'{"keys":[]}') + MAX_KEYS * (len(code) + 3) - 1
    spaced = canonical + MAX_KEYS + 1  # json.dumps's ", " and ": "
    assert canonical < spaced <= JOINT_LAYOUT_BODY_BYTES
