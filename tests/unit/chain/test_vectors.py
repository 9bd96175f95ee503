"""chain.verify against the RFC 6962 proof vectors of transparency-dev/merkle.

The vectors live in tests/testdata/rfc6962/ (Apache-2.0, see LICENSE and
README.md there). Each JSON file has ``desc`` and ``wantErr``; a correct
verifier accepts exactly the files with ``"wantErr": false``. Hashes are
base64 and a null proof means an empty one.

Only ``inclusion/`` and ``consistency/`` are used. ``subtreeinclusion/`` and
``subtreeconsistency/`` are left out on purpose: they test the subtree-proof
API of tiled logs (proofs over an arbitrary leaf range [start, end)), which
chain/ does not implement.
"""

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from chain.hasher import EMPTY_ROOT, hash_leaf
from chain.proof import InMemoryTree
from chain.verify import (
    VerificationError,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from tests.unit.chain.tiled import IMPLS, TiledTree, using

VECTORS = Path(__file__).resolve().parents[2] / "testdata" / "rfc6962"

# (wantErr false, wantErr true) per kind, as shipped at transparency-dev/merkle 417fb0c.
# Asserted so that a missing or truncated directory fails instead of passing with 0 cases.
EXPECTED_COUNTS = {"inclusion": (6, 92), "consistency": (6, 92)}

# The 8-leaf tree of the RFC 6962 reference tests, and its root at each size 1..8.
REFERENCE_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
REFERENCE_ROOTS = [
    bytes.fromhex(h)
    for h in [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]


def _files(kind: str) -> list[Path]:
    """Return the vector files of one kind, sorted."""
    return sorted((VECTORS / kind).rglob("*.json"))


def _ids(paths: list[Path]) -> list[str]:
    """Return test ids: each file's path under the vector directory."""
    return [str(path.relative_to(VECTORS)) for path in paths]


def _load(path: Path) -> dict[str, Any]:
    """Return a vector file's JSON object."""
    vector: dict[str, Any] = json.loads(path.read_text())
    return vector


def _b64(value: str) -> bytes:
    """Decode a base64 hash (Go's encoding of []byte)."""
    return base64.b64decode(value)


def _proof(vector: dict[str, Any]) -> list[bytes]:
    """Decode a vector's proof; Go writes an empty proof as null."""
    return [_b64(node) for node in vector["proof"] or []]


INCLUSION = _files("inclusion")
CONSISTENCY = _files("consistency")
HAPPY_INCLUSION = [p for p in INCLUSION if p.name == "happy-path.json"]
HAPPY_CONSISTENCY = [p for p in CONSISTENCY if p.name == "happy-path.json"]


@pytest.mark.parametrize("kind", sorted(EXPECTED_COUNTS))
def test_vector_directory_holds_the_expected_number_of_files(kind: str) -> None:
    want_err = [_load(path)["wantErr"] for path in _files(kind)]
    counts = (want_err.count(False), want_err.count(True))
    assert counts == EXPECTED_COUNTS[kind], f"{VECTORS / kind}: (ok, err) = {counts}"


def test_vector_license_and_readme_are_shipped() -> None:
    assert (VECTORS / "LICENSE").is_file()
    assert (VECTORS / "README.md").is_file()


@pytest.mark.parametrize("path", INCLUSION, ids=_ids(INCLUSION))
def test_inclusion_vector(path: Path) -> None:
    vector = _load(path)
    args = (_b64(vector["leafHash"]), vector["leafIdx"], vector["treeSize"], _proof(vector))
    root = _b64(vector["root"])
    if vector["wantErr"]:
        with pytest.raises(VerificationError):
            verify_inclusion(*args, root)
    else:
        verify_inclusion(*args, root)
        assert root_from_inclusion_proof(*args) == root


@pytest.mark.parametrize("path", CONSISTENCY, ids=_ids(CONSISTENCY))
def test_consistency_vector(path: Path) -> None:
    vector = _load(path)
    args = (vector["size1"], vector["size2"], _proof(vector))
    roots = (_b64(vector["root1"]), _b64(vector["root2"]))
    if vector["wantErr"]:
        with pytest.raises(VerificationError):
            verify_consistency(*args, *roots)
    else:
        verify_consistency(*args, *roots)


def test_hasher_known_answers() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert hash_leaf(b"") == REFERENCE_ROOTS[0]


def test_reference_tree_roots_at_every_size() -> None:
    tree = InMemoryTree(hash_leaf(leaf) for leaf in REFERENCE_LEAVES)
    assert [tree.root(size) for size in range(1, 9)] == REFERENCE_ROOTS
    assert tree.root(0) == EMPTY_ROOT


@pytest.mark.parametrize("path", HAPPY_INCLUSION, ids=_ids(HAPPY_INCLUSION))
def test_builder_reproduces_happy_inclusion_vector(path: Path) -> None:
    vector = _load(path)
    index, size = vector["leafIdx"], vector["treeSize"]
    tree = InMemoryTree(hash_leaf(leaf) for leaf in REFERENCE_LEAVES[:size])
    assert tree.leaf_hash(index) == _b64(vector["leafHash"])
    assert tree.root() == _b64(vector["root"])
    assert tree.inclusion_proof(index) == _proof(vector)


@pytest.mark.parametrize("path", HAPPY_CONSISTENCY, ids=_ids(HAPPY_CONSISTENCY))
def test_builder_reproduces_happy_consistency_vector(path: Path) -> None:
    vector = _load(path)
    size1, size2 = vector["size1"], vector["size2"]
    tree = InMemoryTree(hash_leaf(leaf) for leaf in REFERENCE_LEAVES[:size2])
    assert (tree.root(size1), tree.root()) == (_b64(vector["root1"]), _b64(vector["root2"]))
    assert tree.consistency_proof(size1) == _proof(vector)


def test_root_mismatch_carries_both_roots() -> None:
    tree = InMemoryTree(hash_leaf(leaf) for leaf in REFERENCE_LEAVES)
    wrong = REFERENCE_ROOTS[6]
    with pytest.raises(VerificationError, match="root mismatch at tree size 8") as caught:
        verify_inclusion(tree.leaf_hash(3), 3, 8, tree.inclusion_proof(3), wrong)
    assert (caught.value.expected, caught.value.computed) == (wrong, REFERENCE_ROOTS[7])
    assert caught.value.size == 8


def test_consistency_checks_root1_even_when_it_is_not_the_seed() -> None:
    # The vectors' "wrong root1" is not 32 bytes; a well-formed wrong root1 must fail too.
    tree = InMemoryTree(hash_leaf(leaf) for leaf in REFERENCE_LEAVES)
    proof = tree.consistency_proof(6, 8)
    with pytest.raises(VerificationError, match="root mismatch at tree size 6") as caught:
        verify_consistency(6, 8, proof, REFERENCE_ROOTS[4], REFERENCE_ROOTS[7])
    assert (caught.value.expected, caught.value.computed) == (
        REFERENCE_ROOTS[4],
        REFERENCE_ROOTS[5],
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_each_core_reproduces_the_reference_tree_and_the_happy_vectors(impl: str) -> None:
    with using(impl):
        tree = TiledTree(REFERENCE_LEAVES, chunk=3)
        assert [tree.root(size) for size in range(1, 9)] == REFERENCE_ROOTS
        hashed = TiledTree([hash_leaf(leaf) for leaf in REFERENCE_LEAVES], chunk=5, hashed=True)
        assert [hashed.root(size) for size in range(1, 9)] == REFERENCE_ROOTS
        for path in HAPPY_INCLUSION:
            vector = _load(path)
            index, size = vector["leafIdx"], vector["treeSize"]
            assert tree.root(size) == _b64(vector["root"])
            assert tree.inclusion_proof(index, size) == _proof(vector)
        for path in HAPPY_CONSISTENCY:
            vector = _load(path)
            size1, size2 = vector["size1"], vector["size2"]
            assert tree.root(size1) == _b64(vector["root1"])
            assert tree.consistency_proof(size1, size2) == _proof(vector)
