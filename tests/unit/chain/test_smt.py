"""chain/smt.py: the compact sparse Merkle tree against a slow reference written from the
definition, on both cores; membership and absence proofs, and tampered proofs refused."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest

from chain import smt
from chain.verify import VerificationError

CORES = sorted(smt.IMPLEMENTATIONS)


def reference_root(values: dict[bytes, bytes], depth: int = 0) -> bytes:
    """The root by the definition, recomputed from scratch: an empty subtree is 32 zero
    bytes, one leaf is its leaf hash, anything else a node over the two halves."""
    if not values:
        return bytes(32)
    if len(values) == 1:
        (k, v), = values.items()
        return hashlib.sha256(b"\x00" + k + v).digest()
    halves: tuple[dict[bytes, bytes], dict[bytes, bytes]] = ({}, {})
    for k, v in values.items():
        halves[(int.from_bytes(k, "big") >> (255 - depth)) & 1][k] = v
    return hashlib.sha256(b"\x01" + reference_root(halves[0], depth + 1)
                          + reference_root(halves[1], depth + 1)).digest()


def h(text: Any) -> bytes:
    return hashlib.sha256(str(text).encode()).digest()


def test_the_implementations_present() -> None:
    assert "python" in smt.IMPLEMENTATIONS
    assert smt.IMPLEMENTATION in ("C", "pure Python")


@pytest.mark.parametrize("core", CORES)
def test_batches_of_random_keys_give_the_reference_root(core: str) -> None:
    rng = random.Random(13)
    tree = smt.SparseMerkleTree(core)
    assert tree.root() == bytes(32)
    model: dict[bytes, bytes] = {}
    keys = [h(i) for i in range(400)]
    for batch_size in (1, 2, 7, 50, 1, 120, 3, 200):
        batch = {rng.choice(keys): h(rng.random()) for _ in range(batch_size)}
        model.update(batch)
        assert tree.update(batch) == reference_root(model)
        assert len(tree) == len(model)
    assert tree.items() == sorted(model.items())
    for k in keys:
        assert tree.get(k) == model.get(k)


@pytest.mark.parametrize("core", CORES)
def test_keys_that_share_long_prefixes(core: str) -> None:
    """Keys differing only in their last bits: chains of nodes with one empty child."""
    base = int.from_bytes(h("base"), "big") & ~0xFF
    keys = [(base | i).to_bytes(32, "big") for i in (0, 1, 2, 128, 255)]
    tree = smt.SparseMerkleTree(core)
    model: dict[bytes, bytes] = {}
    for i, k in enumerate(keys):  # one at a time: each splits a leaf deep down
        model[k] = h(i)
        assert tree.update({k: h(i)}) == reference_root(model)
    model[keys[0]] = h("again")
    assert tree.update({keys[0]: h("again"), keys[3]: h("x")}) == reference_root(
        {**model, keys[3]: h("x")})


@pytest.mark.parametrize("core", CORES)
def test_a_batch_that_splits_a_leaf_and_sets_it(core: str) -> None:
    tree = smt.SparseMerkleTree(core)
    a, b = h("a"), bytearray(h("a"))
    b[31] ^= 1
    tree.update({a: h(1)})
    root = tree.update({a: h(2), bytes(b): h(3)})
    assert root == reference_root({a: h(2), bytes(b): h(3)})
    assert len(tree) == 2


def test_both_cores_agree() -> None:
    if len(CORES) < 2:
        pytest.skip("the C core is not built here")
    rng = random.Random(7)
    trees = [smt.SparseMerkleTree(c) for c in CORES]
    keys = [h(i) for i in range(3000)]
    for _ in range(30):
        batch = {rng.choice(keys): h(rng.random()) for _ in range(rng.randrange(1, 300))}
        roots = {t.update(batch) for t in trees}
        assert len(roots) == 1
    k = keys[5]
    assert trees[0].prove(k) == trees[1].prove(k)


@pytest.mark.parametrize("core", CORES)
def test_proofs_of_members_and_non_members_verify(core: str) -> None:
    rng = random.Random(3)
    tree = smt.SparseMerkleTree(core)
    model = {h(i): h(rng.random()) for i in range(300)}
    root = tree.update(model)
    for k, v in list(model.items())[:60]:
        proof = tree.prove(k)
        smt.verify_map_proof(root, k, v, proof)
        assert proof.leaf is None
        again = smt.MapProof.from_json(proof.to_json())
        smt.verify_map_proof(root, k, v, again)
    kinds = set()
    for i in range(1000, 1100):
        k = h(i)
        proof = tree.prove(k)
        smt.verify_map_proof(root, k, None, proof)
        kinds.add(proof.leaf is None)
    assert kinds == {True, False}  # absences by an empty slot and by another leaf


@pytest.mark.parametrize("core", CORES)
def test_the_empty_map_proves_every_absence(core: str) -> None:
    tree = smt.SparseMerkleTree(core)
    proof = tree.prove(h("x"))
    assert proof == smt.MapProof(())
    smt.verify_map_proof(bytes(32), h("x"), None, proof)
    with pytest.raises(VerificationError):
        smt.verify_map_proof(bytes(32), h("x"), h("v"), proof)


@pytest.fixture
def proved() -> tuple[bytes, dict[bytes, bytes], smt.SparseMerkleTree]:
    tree = smt.SparseMerkleTree()
    model = {h(i): h(-i) for i in range(500)}
    return tree.update(model), model, tree


def test_tampered_membership_proofs_fail(
        proved: tuple[bytes, dict[bytes, bytes], smt.SparseMerkleTree]) -> None:
    root, model, tree = proved
    k = h(17)
    v = model[k]
    proof = tree.prove(k)
    with pytest.raises(VerificationError, match="trusted root"):
        smt.verify_map_proof(root, k, h("other value"), proof)
    flipped = bytearray(proof.siblings[-1])
    flipped[0] ^= 1
    with pytest.raises(VerificationError):
        smt.verify_map_proof(root, k, v, smt.MapProof((*proof.siblings[:-1], bytes(flipped))))
    with pytest.raises(VerificationError):
        smt.verify_map_proof(root, k, v, smt.MapProof(proof.siblings[:-1]))
    with pytest.raises(VerificationError, match="absence"):  # a member claimed absent
        smt.verify_map_proof(root, k, None, proof)
    with pytest.raises(VerificationError, match="its own"):
        smt.verify_map_proof(root, k, None, smt.MapProof(proof.siblings, (k, v)))
    with pytest.raises(VerificationError):
        smt.verify_map_proof(root, k, v, smt.MapProof(proof.siblings, (k, h("forged"))))


def test_tampered_absence_proofs_fail(
        proved: tuple[bytes, dict[bytes, bytes], smt.SparseMerkleTree]) -> None:
    root, model, tree = proved
    absent = next(h(i) for i in range(1000, 2000) if tree.prove(h(i)).leaf is not None)
    proof = tree.prove(absent)
    assert proof.leaf is not None
    # the other leaf's value changed, or another leaf that is not on the path
    with pytest.raises(VerificationError):
        smt.verify_map_proof(root, absent, None, smt.MapProof(proof.siblings,
                                                              (proof.leaf[0], h("x"))))
    stranger = next(k for k in model if k[0] >> 7 != absent[0] >> 7)
    with pytest.raises(VerificationError, match="not on the key's path"):
        smt.verify_map_proof(root, absent, None,
                             smt.MapProof(proof.siblings, (stranger, model[stranger])))
    # claiming the slot empty where the other leaf sits
    with pytest.raises(VerificationError):
        smt.verify_map_proof(root, absent, None, smt.MapProof(proof.siblings))
    # a present key's proof offered as the absent key's
    member = next(iter(model))
    with pytest.raises(VerificationError):
        smt.verify_map_proof(root, absent, None, tree.prove(member))


@pytest.mark.parametrize(("doc", "field"), [
    ({}, "siblings list"),
    ({"siblings": ["AAAA"]}, r"map_proof.siblings\[0\]"),
    ({"siblings": [], "leaf": {"keyhash": "x", "valuehash": "y"}}, "map_proof.leaf.keyhash"),
    ({"siblings": [], "leaf": 3}, "map_proof.leaf"),
])
def test_malformed_proof_json_is_named(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(VerificationError, match=field):
        smt.MapProof.from_json(doc)


@pytest.mark.parametrize("core", CORES)
def test_bad_hashes_are_refused(core: str) -> None:
    tree = smt.SparseMerkleTree(core)
    with pytest.raises(ValueError, match="32 bytes"):
        tree.update({b"short": h(1)})
    with pytest.raises(ValueError, match="32 bytes"):
        tree.get(b"short")
    with pytest.raises(VerificationError):
        smt.verify_map_proof(bytes(32), h(1), None, smt.MapProof((b"x",)))


@pytest.mark.parametrize("core", CORES)
def test_the_raw_cores_agree_on_any_buffer_and_on_random_bytes(core: str) -> None:
    """Both cores take a batch as any bytes-like buffer (C reads it through the buffer
    protocol) and end in the same tree; random bytes are refused alike or accepted alike,
    and never leave a tree the other core would not have."""
    raw = smt.IMPLEMENTATIONS[core]()
    twin = smt.IMPLEMENTATIONS["python"]()
    first, second = bytes(32) + h(1), bytes(31) + b"\x01" + h(2)
    raw.update(bytearray(first))
    raw.update(memoryview(second))
    twin.update(first + second)
    assert raw.root() == twin.root() == reference_root({bytes(32): h(1),
                                                        bytes(31) + b"\x01": h(2)})
    assert raw.items() == twin.items() and all(type(k) is bytes for k, _ in raw.items())
    rng = random.Random(13)
    others = {name: make() for name, make in smt.IMPLEMENTATIONS.items()}
    for _ in range(3000):
        blob = rng.randbytes(rng.choice([0, 31, 32, 63, 64, 128, 192, 200]))
        method = rng.choice(["update", "get", "prove"])
        outcomes = set()
        for tree in others.values():
            try:
                outcomes.add(repr(getattr(tree, method)(blob)))
            except ValueError:
                outcomes.add("ValueError")
        assert len(outcomes) == 1, (method, blob.hex(), outcomes)
    assert len({t.root() for t in others.values()}) == 1
