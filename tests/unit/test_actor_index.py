"""core/actor_index.py: which events index under which keys, the values and their chain,
and the fold's root against the sparse Merkle tree recomputed by hand."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from chain import smt
from core.actor_index import (
    CHAIN_START,
    IndexFold,
    IndexRules,
    IndexValue,
    index_key_hash,
    key_bytes,
    next_value,
    stateless_keys,
)
from core.canonical import canonical_bytes
from core.record import LogEntry


def entry(seq: int, type_name: str, oid: str, actor: str | None, **payload: Any) -> LogEntry:
    if actor is not None:
        payload["actor"] = {"participant": actor, "member": f"{actor}-m", "role": "x"}
    payload.setdefault("at", "2026-01-01T00:00:00Z")
    return LogEntry(seq, oid, 1, type_name, canonical_bytes(payload))


def story() -> list[LogEntry]:
    """Provider P owns dataset D; operator O gets an authorization and registers product X
    over D; demander Q orders X, the contract is approved, P computes and delivers."""
    return [
        entry(1, "dataset.registered", "D", "P", owner_id="P", name="d"),
        entry(2, "dataset.data_loaded", "D", "P", rows=3, sha256="0" * 64),
        entry(3, "authorization.granted", "A", "P", provider_id="P", operator_id="O",
              scenario_id="S", datasets=[{"dataset_id": "D", "fields": ["x"]}]),
        entry(4, "product.registered", "X", "O", operator_id="O",
              inputs=[{"dataset_id": "D", "fields": ["x"]}]),
        entry(5, "order.placed", "R", "Q", demander_id="Q", product_id="X", operator_id="O"),
        entry(6, "contract.party_approved", "R", "P", party_id="P"),
        entry(7, "contract.approved", "R", "platform"),
        entry(8, "computation.requested", "C", "platform", contract_id="R", demander_id="Q",
              provider_id="P", operator_id="O", product_id="X", dataset_ids=["D"]),
        entry(9, "computation.succeeded", "C", "P", result_sha256="1" * 64),
        entry(10, "delivery.made", "C", "platform", demander_id="Q"),
        entry(11, "delivery.accessed", "U", "Q", contract_id="R", computation_id="C"),
        entry(12, "contract.terminated", "R", "Q", reason="done"),
        entry(13, "authorization.revoked", "A", "P", reason="r"),
        entry(14, "participant.suspended", "Q", "platform"),
    ]


def test_the_keys_of_each_event() -> None:
    rules = IndexRules()
    keys = {e.seq: rules.keys(e) for e in story()}
    assert keys[1] == [("P", "dataset:D")]
    assert keys[2] == [("P", "dataset:D")]
    assert keys[3] == [("P", "authorization:A"), ("P", "dataset:D"), ("O", "dataset:D")]
    assert keys[4] == [("O", "product:X"), ("O", "dataset:D"), ("P", "dataset:D")]
    assert keys[5] == [("Q", "order:R"), ("Q", "dataset:D"), ("P", "dataset:D")]
    assert keys[6] == [("P", "order:R"), ("Q", "order:R"), ("Q", "dataset:D"), ("P", "dataset:D")]
    assert keys[7] == [("platform", "order:R"), ("Q", "order:R"), ("Q", "dataset:D"),
                       ("P", "dataset:D")]
    for seq in (8, 10):
        assert keys[seq] == [("platform", "computation:C"), ("Q", "dataset:D"),
                             ("P", "dataset:D")]
    assert keys[9] == [("P", "computation:C"), ("Q", "dataset:D"), ("P", "dataset:D")]
    assert keys[11] == [("Q", "computation:C"), ("Q", "dataset:D"), ("P", "dataset:D")]
    assert keys[12] == [("Q", "order:R"), ("Q", "dataset:D"), ("P", "dataset:D")]
    assert keys[13] == [("P", "authorization:A"), ("P", "dataset:D"), ("O", "dataset:D")]
    assert keys[14] == [("platform", "participant:Q")]


def test_stateless_keys_are_what_the_event_alone_shows() -> None:
    events = {e.seq: e for e in story()}
    assert stateless_keys(events[8]) == [("platform", "computation:C"), ("Q", "dataset:D"),
                                         ("P", "dataset:D")]
    assert stateless_keys(events[7]) == [("platform", "order:R")]  # its parties need state
    rules = IndexRules()
    for e in story():  # always a subset of the full keys
        assert set(stateless_keys(e)) <= set(rules.keys(e))


def test_an_event_without_an_actor_indexes_only_under_its_parties() -> None:
    rules = IndexRules()
    e = entry(1, "dataset.registered", "D", None, owner_id="P")
    assert rules.keys(e) == [("P", "dataset:D")]


def test_the_value_canonical_form_and_its_chain() -> None:
    value = IndexValue(3, 42, hashlib.sha256(b"c").digest())
    assert value.canonical() == canonical_bytes(
        {"count": 3, "head_seq": 42, "chain": base64.b64encode(value.chain).decode()})
    assert value.hash() == hashlib.sha256(value.canonical()).digest()
    assert IndexValue.from_json(value.to_json()) == value
    e1, e2 = story()[:2]
    v1 = next_value(None, e1)
    assert v1 == IndexValue(1, 1, hashlib.sha256(
        b"dataledger-index-chain\x00" + CHAIN_START + e1.leaf_hash()).digest())
    v2 = next_value(v1, e2)
    assert (v2.count, v2.head_seq) == (2, 2)
    assert v2.chain == hashlib.sha256(b"dataledger-index-chain\x00" + v1.chain
                                      + e2.leaf_hash()).digest()


@pytest.mark.parametrize(("doc", "field"), [
    ([], "value"), ({"count": 0, "head_seq": 1, "chain": ""}, "value.count"),
    ({"count": 1, "head_seq": "1", "chain": ""}, "value.head_seq"),
    ({"count": 1, "head_seq": 1, "chain": "AAAA"}, "value.chain"),
])
def test_a_malformed_value_is_named(doc: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        IndexValue.from_json(doc)


@pytest.mark.parametrize(("actor", "resource"), [
    ("P", "dataset:D"), ('q"uote', "dataset:x"), ("back\\slash", "r"), ("tab\t", "r"),
    ("数据", "dataset:集"), ("", ""), ("a\u007f", "r"),
])
def test_key_bytes_are_the_canonical_array(actor: str, resource: str) -> None:
    assert key_bytes(actor, resource) == canonical_bytes([actor, resource])


def test_the_key_hash() -> None:
    assert key_bytes("P", "dataset:D") == b'["P","dataset:D"]'
    assert index_key_hash("P", "dataset:D") == hashlib.sha256(
        b"dataledger-index-key\x00" + b'["P","dataset:D"]').digest()


def test_the_fold_root_is_the_map_of_the_values_recomputed() -> None:
    fold = IndexFold()
    by_key: dict[tuple[str, str], list[LogEntry]] = {}
    rules = IndexRules()
    roots = []
    for e in story():
        fold.apply(e)
        for key in rules.keys(e):
            by_key.setdefault(key, []).append(e)
        if e.seq % 5 == 0:
            roots.append(fold.root())
    assert fold.size == 14
    # recomputed by hand: each key's chain over its events, the map built in one batch
    tree = smt.SparseMerkleTree("python")
    expected = {}
    for key, events in by_key.items():
        chain = CHAIN_START
        for e in events:
            chain = hashlib.sha256(b"dataledger-index-chain\x00" + chain + e.leaf_hash()).digest()
        expected[index_key_hash(*key)] = IndexValue(len(events), events[-1].seq, chain).hash()
    assert fold.root() == tree.update(expected)
    assert len(set(roots)) == len(roots)
    with pytest.raises(ValueError, match="seq 14"):
        fold.apply(story()[0])


def joint_story() -> list[LogEntry]:
    """After :func:`story`: provider P2 owns D2; operator O's joint product XJ reads D and
    D2; demander Q's contract RJ on it; P's computation starts joint J; P's part, the
    publication by the system actor, Q's hidden query and one refused; P2's node key."""
    return [*story(),
            entry(15, "dataset.registered", "D2", "P2", owner_id="P2", name="d2"),
            entry(16, "product.registered", "XJ", "O", operator_id="O",
                  inputs=[{"dataset_id": "D", "fields": ["x"]},
                          {"dataset_id": "D2", "fields": ["x"]}]),
            entry(17, "order.placed", "RJ", "Q", demander_id="Q", product_id="XJ",
                  operator_id="O"),
            entry(18, "computation.requested", "CJ", "P", contract_id="RJ", demander_id="Q",
                  provider_id="P", operator_id="O", product_id="XJ", dataset_ids=["D"]),
            entry(19, "joint.started", "J", "P", contract_id="RJ", execution=1,
                  product_id="XJ", demander_id="Q", providers=["P", "P2"]),
            entry(20, "joint.part_received", "J", "P", provider_id="P", computation_id="CJ"),
            entry(21, "joint.published", "J", "system", rows=3),
            entry(22, "joint.queried", "J", "Q", contract_id="RJ", demander_id="Q",
                  request_size=2),
            entry(23, "usage.refused", "RJ-usage", "Q", contract_id="RJ", computation_id="J"),
            entry(24, "participant.node_key_registered", "P2", "P2", public_key="k"),
            entry(25, "participant.node_key_registered", "P2", "P", public_key="k")]


JOINT_KEYS = [("Q", "joint:J"), ("P", "joint:J"), ("P2", "joint:J"), ("O", "joint:J"),
              ("Q", "dataset:D"), ("P", "dataset:D"), ("Q", "dataset:D2"), ("P2", "dataset:D2")]


def test_a_joint_executions_events_index_under_its_contracts_parties() -> None:
    rules = IndexRules()
    keys = {e.seq: rules.keys(e) for e in joint_story()}
    assert keys[19] == [("P", "joint:J"), *(k for k in JOINT_KEYS if k != ("P", "joint:J"))]
    assert keys[20] == [("P", "joint:J"), *(k for k in JOINT_KEYS if k != ("P", "joint:J")),
                        ("P", "computation:CJ")]
    assert keys[21] == [("system", "joint:J"), *JOINT_KEYS]
    assert keys[22] == [*JOINT_KEYS, ("Q", "order:RJ")]  # the actor Q first, as a party
    assert keys[23] == [("Q", "computation:J"), *JOINT_KEYS]  # a refused hidden query
    assert keys[24] == [("P2", "participant:P2")]
    # registered by another provider's member: under the actor and the provider alike
    assert keys[25] == [("P", "participant:P2"), ("P2", "participant:P2")]


def test_a_joint_events_stateless_keys_are_what_it_names() -> None:
    events = {e.seq: e for e in joint_story()}
    # the started event names the demander and the providers; the operator needs state
    assert stateless_keys(events[19]) == [("P", "joint:J"), ("Q", "joint:J"),
                                          ("P2", "joint:J")]
    assert stateless_keys(events[20]) == [("P", "joint:J"), ("P", "computation:CJ")]
    assert stateless_keys(events[22]) == [("Q", "joint:J"), ("Q", "order:RJ")]
    assert stateless_keys(events[25]) == [("P", "participant:P2"), ("P2", "participant:P2")]
    rules = IndexRules()
    for e in joint_story():
        assert set(stateless_keys(e)) <= set(rules.keys(e))


def test_the_self_proof_verifier_takes_a_joint_parties_events_and_no_others() -> None:
    """audit/selfproof.py step 4: an event the rules file under a joint party from earlier
    events passes on its kind (steps 5 and 6 bind it); one of another joint does not."""
    from datetime import UTC, datetime

    from audit.selfproof import ProvenEvent, SelfProofError, _indexing

    def proven(*seqs: int) -> list[ProvenEvent]:
        events = {e.seq: e for e in joint_story()}
        return [ProvenEvent(s, events[s].type_name, datetime(2026, 1, 1, tzinfo=UTC),
                            events[s]) for s in seqs]

    _indexing(proven(19, 20, 21, 22, 23), "O", "joint:J")  # the operator, a party
    _indexing(proven(19, 20, 21, 22), "P2", "dataset:D2")
    with pytest.raises(SelfProofError, match="seq 21"):
        _indexing(proven(21), "O", "joint:K")
    with pytest.raises(SelfProofError, match="seq 24"):
        _indexing(proven(24), "O", "joint:J")
