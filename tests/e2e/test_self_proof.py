"""The clean self-proof (清白自证) over HTTP, checked offline against the trust document:
an honest proof verifies, and each lie a dishonest prover or operator could tell is caught,
naming the step. On a SQLite file and on PostgreSQL, through the test app's real chain."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from audit.selfproof import SelfProofError, verify_self_proof
from chain.checkpoint import INDEX, Checkpoint, hash_extension, sign_checkpoint
from chain.note import parse_note
from chain.smt import SparseMerkleTree
from chain.trust import TrustedKeys
from cli.main import main as dataledger
from client.platform import Party, PlatformError
from core.actor_index import index_key_hash, next_value
from core.canonical import canonical_bytes, decode
from core.record import LogEntry
from runtime.build import Container
from tests.e2e.conftest import FIELDS, Chain, Clock, World, build_chain


def anchored(world: World, container: Container) -> int:
    """Wait until an anchored checkpoint covers the log's head; its size."""
    head = int(world.client.get("/health").json()["head"])
    assert container.chain is not None
    cp = container.chain.wait_anchored(head, timeout=30)
    assert cp is not None, "no anchored checkpoint in 30 s"
    return cp.size


def trust(world: World) -> TrustedKeys:
    return TrustedKeys.from_json(world.client.get("/ledger/witnesses").json())


def prove(world: World, who: Party, actor: Party, resource: str, **period: str) -> Any:
    return world.api.self_proof(who, actor.participant_id, resource, period.get("start"),
                                period.get("end"))


def fails(doc: Any, keys: TrustedKeys, step: int, words: str) -> SelfProofError:
    with pytest.raises(SelfProofError) as caught:
        verify_self_proof(doc, keys)
    assert caught.value.step == step, str(caught.value)
    assert words in str(caught.value), str(caught.value)
    return caught.value


def cut_at(doc: Any) -> str:
    """The time its checkpoint was cut: where the sentence's period ends at the latest."""
    when = Checkpoint.unmarshal(parse_note(doc["checkpoint"]["note"])[0]).time
    assert when is not None
    return when.isoformat().replace("+00:00", "Z")


def entries(doc: Any) -> list[LogEntry]:
    return [LogEntry.from_canonical(base64.b64decode(e["canonical"])) for e in doc["events"]]


@pytest.fixture
def setup(world: World, chain: Chain, container: Container) -> tuple[Chain, str, int]:
    """The chain's provider, its dataset as a resource, anchored."""
    return chain, f"dataset:{chain.dataset_id}", anchored(world, container)


def test_an_honest_proof_verifies_and_says_exactly_what_the_provider_did(
        world: World, setup: tuple[Chain, str, int], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    chain, resource, size = setup
    doc = prove(world, chain.provider, chain.provider, resource)
    verdict = verify_self_proof(doc, trust(world))
    # registered, published, and the authorization granted over it
    seqs = [e.seq for e in verdict.events]
    assert len(seqs) >= 3 and seqs == sorted(seqs) and doc["tree_size"] >= size
    types = [e.type_name for e in verdict.events]
    assert types[:2] == ["dataset.registered", "dataset.published"], types
    assert "authorization.granted" in types, types
    assert verdict.sentence() == (
        f"participant {chain.provider.participant_id} caused exactly these {len(seqs)} "
        f"events on dataset {chain.dataset_id} between the start of the log and "
        f"{cut_at(doc)}; the log up to size {doc['tree_size']} holds no other")

    # the same through `dataledger audit verify-proof`, exit 0 and the sentence
    proof, keys = tmp_path / "proof.json", tmp_path / "trust.json"
    proof.write_text(json.dumps(doc))
    keys.write_text(json.dumps(world.client.get("/ledger/witnesses").json()))
    assert dataledger(["audit", "verify-proof", str(proof), "--trust", str(keys)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(verdict.sentence() + "."), out
    assert all(f"seq {s} " in out for s in seqs), out


def test_the_period_reports_the_events_whose_at_lies_within(
        world: World, setup: tuple[Chain, str, int]) -> None:
    chain, resource, _ = setup
    everything = verify_self_proof(prove(world, chain.provider, chain.provider, resource),
                                   trust(world))
    second = everything.events[1]
    start = second.at.isoformat().replace("+00:00", "Z")
    doc = prove(world, chain.provider, chain.provider, resource, start=start)
    verdict = verify_self_proof(doc, trust(world))
    assert [e.seq for e in verdict.events] == [e.seq for e in everything.events]  # all proven
    assert [e.seq for e in verdict.within] == [e.seq for e in everything.events[1:]]
    assert f"caused exactly these {len(everything.events) - 1} events" in verdict.sentence()
    assert f"between {start} and {cut_at(doc)}" in verdict.sentence()


def test_dropping_one_of_the_actor_s_events_fails(
        world: World, setup: tuple[Chain, str, int], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    chain, resource, _ = setup
    doc = prove(world, chain.provider, chain.provider, resource)
    keys = trust(world)
    for k in (0, 1, len(doc["events"]) - 1):  # the first, a middle one, the last
        dropped = copy.deepcopy(doc)
        del dropped["events"][k]
        fails(dropped, keys, 5, "recomputed from the events")
    every = copy.deepcopy(doc)
    every["events"] = []
    fails(every, keys, 5, "the proof shows none")

    dropped = copy.deepcopy(doc)
    del dropped["events"][1]
    proof, trust_file = tmp_path / "proof.json", tmp_path / "trust.json"
    proof.write_text(json.dumps(dropped))
    trust_file.write_text(json.dumps(world.client.get("/ledger/witnesses").json()))
    assert dataledger(["audit", "verify-proof", str(proof), "--trust", str(trust_file)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"FAILED: {proof}: step 5 (chain): the count recomputed"), out


def test_changing_an_event_s_time_fails(world: World, setup: tuple[Chain, str, int]) -> None:
    chain, resource, _ = setup
    doc = prove(world, chain.provider, chain.provider, resource)
    changed = copy.deepcopy(doc)
    record = decode(base64.b64decode(changed["events"][0]["canonical"]))
    record["payload"]["at"] = "2020-01-01T00:00:00.000000Z"  # "long before the leak"
    changed["events"][0]["canonical"] = base64.b64encode(canonical_bytes(record)).decode()
    fails(changed, trust(world), 3, f"seq {record['seq']} is not in the log")


def test_an_event_dated_after_the_checkpoint_over_it_fails(
        world: World, setup: tuple[Chain, str, int], container: Container,
        clock: Clock) -> None:
    """A ledger clock a day ahead (or an operator dating an event forward, where a period
    asked would not show it): the event's ``at`` is later than the checkpoint cut after it."""
    chain, _, _ = setup
    clock.move_to(datetime.now(UTC) + timedelta(days=1))
    dataset = world.api.register_dataset(chain.provider, name="ahead", description="dated ahead",
                                         source_system="tax-core", fields=FIELDS)
    anchored(world, container)
    doc = prove(world, chain.provider, chain.provider, f"dataset:{dataset}")
    [seq] = [e["seq"] for e in doc["events"]]
    fails(doc, trust(world), 3, f"seq {seq}: its at ")
    assert "is later than the time of checkpoint" in str(fails(doc, trust(world), 3, "seq"))


def test_a_proof_hung_on_a_checkpoint_of_another_log_fails(
        world: World, setup: tuple[Chain, str, int], tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from runtime.build import build
    from runtime.settings import Settings
    from tests.e2e.conftest import ADMIN_TOKEN

    chain, resource, _ = setup
    doc = prove(world, chain.provider, chain.provider, resource)
    other = build(Settings(data_dir=tmp_path / "other", admin_token=ADMIN_TOKEN,
                           database_url=f"sqlite:///{tmp_path / 'other.db'}",
                           checkpoint_every_seconds=0.3))
    try:
        with TestClient(create_app(container=other)) as client:
            elsewhere = World(client)
            theirs = build_chain(elsewhere)
            anchored(elsewhere, other)
            their_doc = prove(elsewhere, theirs.provider, theirs.provider,
                              f"dataset:{theirs.dataset_id}")
            their_cp = client.get("/ledger/checkpoints/latest?anchored=true").json()
            assert verify_self_proof(their_doc, trust(elsewhere)).events  # honest there
    finally:
        other.close()
    keys = trust(world)
    # the other log's whole proof, held to this log's keys
    fails(their_doc, keys, 2, "not a checkpoint of the trusted log")
    # this proof's events hung on the other log's checkpoint
    hung = copy.deepcopy(doc)
    hung["checkpoint"], hung["tree_size"] = their_cp, their_cp["size"]
    fails(hung, keys, 2, "not a checkpoint of the trusted log")


def test_a_stale_index_entry_fails(world: World, container: Container,
                                   setup: tuple[Chain, str, int]) -> None:
    chain, resource, _ = setup
    old = prove(world, chain.provider, chain.provider, resource)
    world.call("PATCH", f"/datasets/{chain.dataset_id}", chain.provider,
               json={"description": "annual filings, 2024 added"})
    anchored(world, container)
    new = prove(world, chain.provider, chain.provider, resource)
    keys = trust(world)
    assert new["tree_size"] > old["tree_size"]
    assert len(verify_self_proof(new, keys).events) == len(old["events"]) + 1
    assert verify_self_proof(old, keys).events  # the old proof still holds at its size

    # the old proof passed off with the newer size
    newer_size = copy.deepcopy(old)
    newer_size["tree_size"] = new["tree_size"]
    fails(newer_size, keys, 2, f"claims size {new['tree_size']}")
    # ... and hung on the newer checkpoint: its inclusion proofs are of the older tree
    hung = copy.deepcopy(old)
    hung["checkpoint"], hung["tree_size"] = new["checkpoint"], new["tree_size"]
    fails(hung, keys, 3, "is not in the log at size")
    # ... with the older events re-proven in the newer tree: the older value is not the root's
    reproven = copy.deepcopy(new)
    reproven["events"] = new["events"][:-1]
    reproven["entry"], reproven["map_proof"] = old["entry"], old["map_proof"]
    fails(reproven, keys, 6, "does not lead to the checkpoint's index root")


def test_an_index_root_that_omits_an_event_fails(
        world: World, container: Container, setup: tuple[Chain, str, int]) -> None:
    chain, resource, _ = setup
    doc = prove(world, chain.provider, chain.provider, resource)
    keys = trust(world)
    # the operator's lie: an index in which the provider never touched the dataset's
    # authorization (one event left out), re-proven in a map of its own
    kept = [e for e in entries(doc) if e.type_name != "authorization.granted"]
    assert len(kept) == len(doc["events"]) - 1
    value = None
    for entry in kept:
        value = next_value(value, entry)
    assert value is not None
    keyhash = index_key_hash(chain.provider.participant_id, resource)
    forged_map = SparseMerkleTree()
    forged_root = forged_map.update({keyhash: value.hash()})
    lie = copy.deepcopy(doc)
    lie["events"] = [e for e in doc["events"]
                     if LogEntry.from_canonical(base64.b64decode(e["canonical"])).type_name
                     != "authorization.granted"]
    lie["entry"] = {"keyhash": base64.b64encode(keyhash).decode(),
                    "value": {"count": value.count, "head_seq": value.head_seq,
                              "chain": base64.b64encode(value.chain).decode()}}
    lie["map_proof"] = forged_map.prove(keyhash).to_json()
    fails(lie, keys, 6, "does not lead to the checkpoint's index root")

    # the operator re-signs the checkpoint with the forged root under its own log key: the
    # witnesses' co-signatures are of the true checkpoint
    assert container.chain is not None
    signer = container.chain.checkpointer.signer
    body, _ = parse_note(doc["checkpoint"]["note"])
    true_cp = Checkpoint.unmarshal(body)
    forged_cp = Checkpoint(true_cp.origin, true_cp.size, true_cp.root, tuple(
        hash_extension(INDEX, forged_root) if line.startswith(INDEX + " ")
        else line for line in true_cp.extensions))
    resigned = sign_checkpoint(forged_cp, [signer])
    witness_lines = doc["checkpoint"]["cosigned"][len(doc["checkpoint"]["note"]):]
    lie["checkpoint"] = {**doc["checkpoint"], "note": resigned, "cosigned": resigned}
    fails(lie, keys, 2, "the quorum is 2")
    lie["checkpoint"]["cosigned"] = resigned + witness_lines
    fails(lie, keys, 2, "invalid co-signature")


def test_an_actor_with_no_events_on_the_resource_gets_a_verifying_none(
        world: World, setup: tuple[Chain, str, int]) -> None:
    chain, resource, _ = setup
    doc = prove(world, chain.demander, chain.demander, resource)
    assert doc["entry"] is None and doc["events"] == []
    verdict = verify_self_proof(doc, trust(world))
    assert verdict.events == ()
    assert verdict.sentence() == (
        f"participant {chain.demander.participant_id} caused no event on dataset "
        f"{chain.dataset_id} between the start of the log and {cut_at(doc)}; the log up to size "
        f"{doc['tree_size']} holds none")
    # a "none" forged for an actor that did act fails: its key is in the map
    provider = prove(world, chain.provider, chain.provider, resource)
    claimed_none = {**provider, "entry": None, "events": [], "map_proof": doc["map_proof"]}
    fails(claimed_none, trust(world), 6, "its absence does not lead")


def test_who_may_ask_a_bank_about_another_403_the_regulator_about_anyone(
        world: World, setup: tuple[Chain, str, int]) -> None:
    chain, resource, _ = setup
    with pytest.raises(PlatformError) as refused:
        prove(world, chain.demander, chain.provider, resource)
    assert refused.value.status == 403, refused.value
    assert json.loads(refused.value.body)["error"] == "forbidden"
    with pytest.raises(PlatformError) as refused:
        prove(world, world.platform, chain.provider, resource)
    assert refused.value.status == 403, refused.value
    doc = prove(world, world.regulator, chain.provider, resource)
    assert len(verify_self_proof(doc, trust(world)).events) >= 3
    none = prove(world, world.regulator, chain.demander, resource)
    assert verify_self_proof(none, trust(world)).events == ()


def test_bad_parameters_are_422_naming_the_field(world: World, chain: Chain) -> None:
    me = chain.provider.participant_id
    for query, field in ((f"actor={me}&resource=dataset", "query.resource"),
                         (f"actor={me}&resource=dataset:x&from=yesterday", "query.from"),
                         (f"actor={me}&resource=dataset:x&to=2025-01-01", "query.to"),
                         ("resource=dataset:x", "query.actor")):
        r = world.client.get(f"/forensics/self-proof?{query}", headers=chain.provider.headers)
        assert r.status_code == 422, r.text
        named = [f["field"] for f in r.json().get("fields", [])] or [r.json().get("field")]
        assert named == [field], r.text


def test_an_event_that_is_not_the_actor_s_on_the_resource_fails(
        world: World, setup: tuple[Chain, str, int]) -> None:
    chain, resource, _ = setup
    doc = prove(world, chain.provider, chain.provider, resource)
    # the operator's scenario submission: in the log, but not the provider's on the dataset
    submitted = next(e for e in world.api.events(world.regulator)
                     if e["type"] == "scenario.submitted")
    path = world.client.get(f"/ledger/proofs/inclusion?index={submitted['seq'] - 1}"
                            f"&size={doc['tree_size']}").json()
    planted = copy.deepcopy(doc)
    planted["events"] = sorted([*doc["events"], {
        "seq": submitted["seq"], "canonical": submitted["canonical"],
        "inclusion": path["proof"]}], key=lambda e: e["seq"])
    fails(planted, trust(world), 4, f"seq {submitted['seq']} (scenario.submitted) does not "
          f"index under participant {chain.provider.participant_id} and {resource}")
