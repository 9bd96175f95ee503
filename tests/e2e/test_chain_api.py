"""The verifiable log over HTTP: an event's inclusion in an anchored checkpoint, checked offline."""

from __future__ import annotations

import base64

from chain.bls import WitnessPublicKey, aggregate, cosignatures, trust_witness
from chain.checkpoint import open_checkpoint
from chain.note import Verifier
from chain.verify import verify_consistency, verify_inclusion
from runtime.build import Container
from tests.e2e.conftest import World


def b64(text: str) -> bytes:
    return base64.b64decode(text)


def test_a_command_s_events_are_provably_in_an_anchored_checkpoint(
        world: World, container: Container) -> None:
    provider = world.onboard("provider", "Tax bureau")
    seqs = world.call("POST", "/datasets", provider, 201, json={
        "name": "tax", "description": "", "source_system": "s", "classification": "L2",
        "fields": [{"name": "a", "type": "string", "sensitivity": "public"}]})["seqs"]
    assert container.chain is not None
    head = int(world.client.get("/health").json()["head"])
    assert container.chain.wait_anchored(head, timeout=20) is not None

    # what a verifier holds: the log key and the witnesses' keys (checked by proof of possession)
    keys = world.client.get("/ledger/witnesses").json()
    log_key = Verifier.from_vkey(keys["log_vkey"])
    trusted = [trust_witness(WitnessPublicKey(w["name"], b64(w["public_key"]), b64(w["pop"])))
               for w in keys["witnesses"]]
    assert keys["quorum"] == 2 and len(trusted) == 2

    cp = world.client.get("/ledger/checkpoints/latest?anchored=true").json()
    checkpoint, _ = open_checkpoint(cp["cosigned"], [log_key], keys["origin"])
    signed = cosignatures(cp["cosigned"], trusted)
    assert sorted(s.name for s in signed) == cp["signers"] and len(signed) == 2
    assert aggregate([s.signature for s in signed]) == b64(cp["aggregate"])

    event = world.call("GET", f"/ledger/events?after={seqs[0] - 1}&limit=1", world.regulator)
    leaf = b64(event["events"][0]["leaf_hash"])
    proof = world.client.get(f"/ledger/proofs/inclusion?index={seqs[0] - 1}"
                             f"&size={checkpoint.size}").json()
    assert b64(proof["leaf_hash"]) == leaf
    verify_inclusion(leaf, seqs[0] - 1, checkpoint.size, [b64(h) for h in proof["proof"]],
                     checkpoint.root)

    # the log grows; the new checkpoint is consistent with the old one
    world.onboard("demander", "Bank")
    head2 = int(world.client.get("/health").json()["head"])
    assert container.chain.wait_anchored(head2, timeout=20) is not None
    cp2 = world.client.get("/ledger/checkpoints/latest?anchored=true").json()
    newer, _ = open_checkpoint(cp2["cosigned"], [log_key], keys["origin"])
    cons = world.client.get(f"/ledger/proofs/consistency?old={checkpoint.size}"
                            f"&new={newer.size}").json()
    verify_consistency(checkpoint.size, newer.size, [b64(h) for h in cons["proof"]],
                       checkpoint.root, newer.root)


def test_bad_proof_requests_are_422_naming_the_field(world: World) -> None:
    for path, field in (("/ledger/proofs/inclusion?index=5&size=3", "query.index"),
                        ("/ledger/proofs/consistency?old=1&new=100000", "query.new")):
        r = world.client.get(path)
        assert r.status_code == 422, r.text
        named = [f["field"] for f in r.json().get("fields", [])] or [r.json().get("field")]
        assert named == [field], r.text
    assert world.client.get("/ledger/checkpoints/999999").status_code == 404


def test_seqs_and_sizes_beyond_what_a_store_holds_are_422_naming_the_field(
        world: World) -> None:
    huge = 2**64  # no 64-bit integer holds it: the database must not be asked
    for path, field in ((f"/ledger/events?after={huge}", "query.after"),
                        (f"/ledger/events/{huge}", "path.seq"),
                        ("/ledger/events/0", "path.seq"),
                        (f"/ledger/checkpoints/{huge}", "path.size"),
                        (f"/ledger/checkpoints/{-huge}", "path.size"),
                        (f"/ledger/proofs/inclusion?index=0&size={huge}", "query.size"),
                        (f"/ledger/proofs/consistency?old=1&new={huge}", "query.new")):
        r = world.client.get(path, headers=world.regulator.headers)
        assert r.status_code == 422, (path, r.text)
        named = [f["field"] for f in r.json().get("fields", [])] or [r.json().get("field")]
        assert named == [field], (path, r.text)
    r = world.client.get(f"/ledger/events?after={2**63 - 1}", headers=world.regulator.headers)
    assert r.status_code == 200 and r.json()["events"] == []


def test_health_says_the_in_process_witnesses_are_not_independent(
        world: World, container: Container) -> None:
    said = world.client.get("/health").json()["witnesses"]
    assert said["independent"] is False and "in-process" in said["why"]
    # the trust document `dataledger chain trust` exports is what GET /ledger/witnesses shows
    assert container.chain is not None
    assert container.chain.trust_document() == world.client.get("/ledger/witnesses").json()
