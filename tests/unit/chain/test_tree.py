"""Properties of chain/ against an independent oracle, pymerkle 7.0.0.

pymerkle's ``InmemoryTree`` with its defaults is an RFC 9162 tree: SHA-256,
leaf hash SHA-256(0x00 || data), node hash SHA-256(0x01 || left || right),
root of the empty tree SHA-256(b""), and raw ``bytes`` entries hashed as they
are (``_encode_entry`` is the identity). ``test_pymerkle_is_configured_as_rfc9162``
pins this. Its indices count from one; its proofs carry the base hash first
and a ``rule``/``subset`` layout, converted to RFC 9162 lists below.
"""

import os
import subprocess
import sys
from collections.abc import Callable
from math import ceil, log2
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import ConsistencyProof, InclusionProof, InmemoryTree  # type: ignore[import-untyped]

from anchoring.tiles import TILE_WIDTH
from chain import merkle
from chain.compact import CompactRange, Node, range_nodes
from chain.hasher import EMPTY_ROOT, hash_children, hash_leaf
from chain.proof import InMemoryTree, consistency_proof, inclusion_proof, root_at
from chain.verify import VerificationError, verify_consistency, verify_inclusion
from tests.unit.chain.tiled import IMPLS, TiledTree, using

FAST = settings(max_examples=60, deadline=None)
MAX_LEAVES = 300

# --- helpers ---------------------------------------------------------------------------------


def _entries(n: int, salt: bytes) -> list[bytes]:
    """Return ``n`` distinct leaf entries (distinct leaves make every subtree hash distinct)."""
    return [salt + i.to_bytes(2, "big") for i in range(n)]


def _trees(entries: list[bytes]) -> tuple[InMemoryTree, InmemoryTree]:
    """Return our tree and pymerkle's over the same raw entries."""
    oracle = InmemoryTree(algorithm="sha256")
    for entry in entries:
        oracle.append_entry(entry)
    return InMemoryTree(hash_leaf(entry) for entry in entries), oracle


def _mth(leaf_hashes: list[bytes]) -> bytes:
    """RFC 6962 MTH by its recursive definition: a second, naive reference."""
    if len(leaf_hashes) <= 1:
        return leaf_hashes[0] if leaf_hashes else EMPTY_ROOT
    k = 1 << ((len(leaf_hashes) - 1).bit_length() - 1)
    return hash_children(_mth(leaf_hashes[:k]), _mth(leaf_hashes[k:]))


def _fold_rule(path: list[bytes], rule: list[int]) -> bytes:
    """Resolve a pymerkle path prefix as its ``compute_root`` does."""
    result = path[0]
    for bit, node in zip(rule, path[1:]):
        result = hash_children(result, node) if bit == 0 else hash_children(node, result)
    return result


def _from_pymerkle_inclusion(proof: InclusionProof) -> list[bytes]:
    """RFC 9162 inclusion proof from pymerkle's: drop the base (the leaf hash itself)."""
    return list(proof.path[1:])


def _from_pymerkle_consistency(proof: ConsistencyProof) -> list[bytes]:
    """RFC 9162 consistency proof from pymerkle's.

    pymerkle always starts with a base and, when the old size fills a left
    subtree exactly, descends into the right subtree leaf by leaf (``subset``
    0 entries) where RFC 9162 gives that subtree's root: fold those back into
    one hash. Equal sizes need no proof; a power-of-two old tree's own root is
    left out, as RFC 9162 does.
    """
    if proof.prior_size == proof.size:
        return []
    first = proof.subset.index(1)
    path = list(proof.path)
    if first:
        path = [path[first], _fold_rule(path[:first], proof.rule)] + path[first + 1 :]
    power_of_two = proof.prior_size & (proof.prior_size - 1) == 0
    return path[1:] if power_of_two else path


def _flip(value: bytes, bit: int) -> bytes:
    """Return ``value`` with one bit flipped (bit taken modulo its length)."""
    bit %= 8 * len(value)
    mutated = bytearray(value)
    mutated[bit // 8] ^= 1 << (bit % 8)
    return bytes(mutated)


def _flip_element(proof: list[bytes], k: int, bit: int) -> list[bytes]:
    """Return a copy of ``proof`` with one bit of element ``k`` flipped."""
    return proof[:k] + [_flip(proof[k], bit)] + proof[k + 1 :]


def _counting(get: Callable[[int, int], bytes]) -> tuple[Callable[[int, int], bytes], list[int]]:
    """Wrap a node getter; the returned list's single item counts the calls."""
    calls = [0]

    def counted(level: int, index: int) -> bytes:
        calls[0] += 1
        return get(level, index)

    return counted, calls


def _log_bound(size: int) -> int:
    """The promised bound on ``get`` calls: 2 * ceil(log2(size)) + 1."""
    return 2 * ceil(log2(size)) + 1


@st.composite
def leaf_entries(draw: st.DrawFn, min_size: int = 1) -> list[bytes]:
    """A random tree of min_size..MAX_LEAVES distinct raw entries."""
    n = draw(st.integers(min_size, MAX_LEAVES))
    return _entries(n, draw(st.binary(max_size=8)))


@st.composite
def tree_and_leaf(draw: st.DrawFn) -> tuple[list[bytes], int, int]:
    """Entries with a tree size in 1..n and a leaf index below it."""
    entries = draw(leaf_entries())
    size = draw(st.integers(1, len(entries)))
    return entries, draw(st.integers(0, size - 1)), size


@st.composite
def tree_and_sizes(draw: st.DrawFn) -> tuple[list[bytes], int, int]:
    """Entries with two tree sizes 1 <= size1 <= size2 <= n."""
    entries = draw(leaf_entries())
    size2 = draw(st.integers(1, len(entries)))
    return entries, draw(st.integers(1, size2)), size2


# --- the oracle agrees on hashing -------------------------------------------------------------


def test_pymerkle_is_configured_as_rfc9162() -> None:
    oracle = InmemoryTree(algorithm="sha256")
    assert (oracle.algorithm, oracle.security) == ("sha256", True)
    assert (oracle.leaf_prefix, oracle.node_prefix) == (b"\x00", b"\x01")
    assert oracle.hash_buff(b"data") == hash_leaf(b"data")
    assert oracle.hash_pair(b"l" * 32, b"r" * 32) == hash_children(b"l" * 32, b"r" * 32)
    assert oracle.get_root(0) == EMPTY_ROOT == InMemoryTree().root() == CompactRange().root()
    oracle.append_entry(b"data")
    assert oracle.get_leaf(1) == hash_leaf(b"data")


# --- roots ------------------------------------------------------------------------------------


@FAST
@given(leaf_entries())
def test_roots_agree_with_pymerkle_at_every_size(entries: list[bytes]) -> None:
    tree, oracle = _trees(entries)
    compact = CompactRange()
    for size, entry in enumerate(entries, start=1):
        compact.append(hash_leaf(entry))
        assert compact.root() == tree.root(size) == oracle.get_root(size)
    assert tree.root(0) == oracle.get_root(0) == EMPTY_ROOT


@FAST
@given(leaf_entries())
def test_roots_agree_with_the_recursive_definition(entries: list[bytes]) -> None:
    tree = InMemoryTree(hash_leaf(entry) for entry in entries)
    leaves = [hash_leaf(entry) for entry in entries]
    for size in {1, len(entries) // 3, len(entries) // 2, len(entries) - 1, len(entries)}:
        assert tree.root(size) == _mth(leaves[:size])


# --- proofs match pymerkle's and verify ---------------------------------------------------------


@FAST
@given(tree_and_leaf())
def test_inclusion_proof_matches_pymerkle_and_verifies(case: tuple[list[bytes], int, int]) -> None:
    entries, index, size = case
    tree, oracle = _trees(entries)
    proof = tree.inclusion_proof(index, size)
    theirs = oracle.prove_inclusion(index + 1, size)
    assert _from_pymerkle_inclusion(theirs) == proof
    verify_inclusion(hash_leaf(entries[index]), index, size, proof, oracle.get_root(size))


@FAST
@given(tree_and_sizes())
def test_consistency_proof_matches_pymerkle_and_verifies(
    case: tuple[list[bytes], int, int],
) -> None:
    entries, size1, size2 = case
    tree, oracle = _trees(entries)
    proof = tree.consistency_proof(size1, size2)
    theirs = oracle.prove_consistency(size1, size2)
    assert _from_pymerkle_consistency(theirs) == proof
    verify_consistency(size1, size2, proof, oracle.get_root(size1), oracle.get_root(size2))


def test_every_proof_of_a_small_tree_matches_pymerkle_and_verifies() -> None:
    entries = _entries(33, b"small")
    tree, oracle = _trees(entries)
    for size in range(1, len(entries) + 1):
        root = oracle.get_root(size)
        for index in range(size):
            proof = _from_pymerkle_inclusion(oracle.prove_inclusion(index + 1, size))
            assert proof == tree.inclusion_proof(index, size)
            verify_inclusion(tree.leaf_hash(index), index, size, proof, root)
        for size1 in range(1, size + 1):
            proof = _from_pymerkle_consistency(oracle.prove_consistency(size1, size))
            assert proof == tree.consistency_proof(size1, size)
            verify_consistency(size1, size, proof, oracle.get_root(size1), root)


# --- single-bit mutations fail ------------------------------------------------------------------
# Mutations of the tree size are not tested: a (size, root) pair is authenticated together by a
# checkpoint, and some other sizes legitimately share a proof shape (leaf 0 has equally shaped
# proofs in trees of 5 and 7 leaves), so only the proof, the roots, the leaf and the index are.


@FAST
@given(tree_and_leaf(), st.sampled_from(["proof", "root", "leaf", "index"]), st.data())
def test_any_single_bit_mutation_of_an_inclusion_proof_fails(
    case: tuple[list[bytes], int, int], target: str, data: st.DataObject
) -> None:
    entries, index, size = case
    tree = InMemoryTree(hash_leaf(entry) for entry in entries)
    leaf, proof, root = tree.leaf_hash(index), tree.inclusion_proof(index, size), tree.root(size)
    bit = data.draw(st.integers(0, 255), label="bit")
    if target == "proof" and proof:
        proof = _flip_element(proof, data.draw(st.integers(0, len(proof) - 1), label="k"), bit)
    elif target == "index":
        index ^= 1 << (bit % (size.bit_length() + 1))
    elif target == "leaf":
        leaf = _flip(leaf, bit)
    else:  # The root, or an empty proof's root.
        root = _flip(root, bit)
    with pytest.raises(VerificationError):
        verify_inclusion(leaf, index, size, proof, root)


@FAST
@given(tree_and_sizes(), st.sampled_from(["proof", "root1", "root2"]), st.data())
def test_any_single_bit_mutation_of_a_consistency_proof_fails(
    case: tuple[list[bytes], int, int], target: str, data: st.DataObject
) -> None:
    entries, size1, size2 = case
    tree = InMemoryTree(hash_leaf(entry) for entry in entries)
    proof, root1, root2 = tree.consistency_proof(size1, size2), tree.root(size1), tree.root(size2)
    bit = data.draw(st.integers(0, 255), label="bit")
    if target == "proof" and proof:
        proof = _flip_element(proof, data.draw(st.integers(0, len(proof) - 1), label="k"), bit)
    elif target == "root1":
        root1 = _flip(root1, bit)
    else:  # root2, or an empty proof's root2.
        root2 = _flip(root2, bit)
    with pytest.raises(VerificationError):
        verify_consistency(size1, size2, proof, root1, root2)


# --- CompactRange --------------------------------------------------------------------------------


def _perfect_subtrees_ending_at(size: int) -> set[tuple[int, int]]:
    """The (level, index) of every perfect subtree whose last leaf is leaf ``size - 1``."""
    return {
        (level, (size >> level) - 1)
        for level in range(size.bit_length())
        if size % (1 << level) == 0
    }


@FAST
@given(leaf_entries(min_size=0))
def test_append_reports_each_perfect_subtree_once_with_its_hash(entries: list[bytes]) -> None:
    leaves = [hash_leaf(entry) for entry in entries]
    compact, reported = CompactRange(), []
    for size, leaf in enumerate(leaves, start=1):
        created = compact.append(leaf)
        assert created[0] == (0, size - 1, leaf)
        assert {(level, index) for level, index, _ in created} == _perfect_subtrees_ending_at(size)
        reported += created
    ids = [(level, index) for level, index, _ in reported]
    n = len(leaves)
    assert len(ids) == len(set(ids))
    assert set(ids) == {(l, i) for l in range(n.bit_length()) for i in range(n >> l)}
    for level, index, node in reported:
        assert node == _mth(leaves[index << level : (index + 1) << level])


@FAST
@given(leaf_entries(min_size=0), st.data())
def test_resuming_from_size_and_roots_gives_identical_nodes_and_roots(
    entries: list[bytes], data: st.DataObject
) -> None:
    leaves = [hash_leaf(entry) for entry in entries]
    split = data.draw(st.integers(0, len(leaves)), label="split")
    whole, first = CompactRange(), CompactRange()
    for leaf in leaves[:split]:
        whole.append(leaf)
        first.append(leaf)
    resumed = CompactRange(first.size, first.roots)
    assert resumed.nodes() == whole.nodes() == _frontier(whole)
    for leaf in leaves[split:]:
        assert resumed.append(leaf) == whole.append(leaf)
        assert resumed.root() == whole.root() and resumed.roots == whole.roots


def _frontier(compact: CompactRange) -> list[Node]:
    """The frontier nodes recomputed from range_nodes and the roots."""
    ids = range_nodes(0, compact.size)
    return [(level, index, root) for (level, index), root in zip(ids, compact.roots)]


@pytest.mark.parametrize(("size", "roots"), [(3, [b"\x00" * 32]), (2, []), (-1, []), (1, [b"x"])])
def test_resuming_with_wrong_roots_is_refused(size: int, roots: list[bytes]) -> None:
    with pytest.raises(ValueError):
        CompactRange(size, roots)


def test_append_refuses_a_hash_of_the_wrong_length() -> None:
    with pytest.raises(ValueError):
        CompactRange().append(b"short")


# --- O(log n) reads ------------------------------------------------------------------------------


@FAST
@given(tree_and_leaf(), st.data())
def test_proofs_read_only_log_n_nodes(
    case: tuple[list[bytes], int, int], data: st.DataObject
) -> None:
    entries, index, size = case
    tree = InMemoryTree(hash_leaf(entry) for entry in entries)
    size1 = data.draw(st.integers(1, size), label="size1")
    for build in (
        lambda get: inclusion_proof(index, size, get),
        lambda get: consistency_proof(size1, size, get),
        lambda get: root_at(size, get),
    ):
        get, calls = _counting(tree.get)
        build(get)
        assert calls[0] <= _log_bound(size)


def test_read_bound_is_tight_enough_to_mean_something() -> None:
    tree = InMemoryTree(hash_leaf(entry) for entry in _entries(MAX_LEAVES, b"big"))
    worst = 0
    for index in range(MAX_LEAVES):
        get, calls = _counting(tree.get)
        inclusion_proof(index, MAX_LEAVES, get)
        worst = max(worst, calls[0])
    assert worst <= _log_bound(MAX_LEAVES) < MAX_LEAVES // 10


# --- preconditions ------------------------------------------------------------------------------


@pytest.mark.parametrize(("index", "size"), [(5, 5), (-1, 5), (0, 0), (0, 9)])
def test_inclusion_proof_refuses_bad_ranges(index: int, size: int) -> None:
    tree = InMemoryTree(hash_leaf(entry) for entry in _entries(8, b""))
    with pytest.raises(ValueError):
        tree.inclusion_proof(index, size)


@pytest.mark.parametrize(("size1", "size2"), [(0, 5), (6, 5), (-1, 5), (1, 9)])
def test_consistency_proof_refuses_bad_ranges(size1: int, size2: int) -> None:
    tree = InMemoryTree(hash_leaf(entry) for entry in _entries(8, b""))
    with pytest.raises(ValueError):
        tree.consistency_proof(size1, size2)


def test_building_beyond_the_stored_nodes_is_refused() -> None:
    tree = InMemoryTree(hash_leaf(entry) for entry in _entries(8, b""))
    with pytest.raises(ValueError):
        inclusion_proof(3, 12, tree.get)
    with pytest.raises(ValueError):
        root_at(-1, tree.get)
    with pytest.raises(ValueError):
        tree.root(9)
    with pytest.raises(ValueError):
        tree.leaf_hash(8)


# --- the hashing cores (C and pure Python) and the tiled layout ----------------------------------
# Every test below runs once per core (tests/unit/chain/tiled.py: "c" is skipped, with the
# reason, where the extension was not built). Trees span two leaf tiles (up to 600 leaves).

TILED_MAX = 600


@st.composite
def tiled_entries(draw: st.DrawFn, min_size: int = 1) -> list[bytes]:
    """A random tree of min_size..TILED_MAX distinct raw entries."""
    n = draw(st.integers(min_size, TILED_MAX))
    return _entries(n, draw(st.binary(max_size=8)))


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(tiled_entries(), st.integers(1, 300), st.data())
def test_core_tiled_tree_agrees_with_pymerkle(impl: str, entries: list[bytes], chunk: int,
                                              data: st.DataObject) -> None:
    oracle = InmemoryTree(algorithm="sha256")
    for entry in entries:
        oracle.append_entry(entry)
    n = len(entries)
    with using(impl):
        tree = TiledTree(entries, chunk=chunk)
        assert tree.size == n
        sizes = {1, n, data.draw(st.integers(1, n), label="size")}
        for size in sizes:
            assert tree.root(size) == oracle.get_root(size)
            index = data.draw(st.integers(0, size - 1), label="index")
            proof = tree.inclusion_proof(index, size)
            assert proof == _from_pymerkle_inclusion(oracle.prove_inclusion(index + 1, size))
            verify_inclusion(hash_leaf(entries[index]), index, size, proof, oracle.get_root(size))
            size1 = data.draw(st.integers(1, size), label="size1")
            proof = tree.consistency_proof(size1, size)
            assert proof == _from_pymerkle_consistency(oracle.prove_consistency(size1, size))


@pytest.mark.parametrize("impl", IMPLS)
def test_core_every_proof_across_a_tile_boundary_matches_the_reference(impl: str) -> None:
    entries = _entries(TILE_WIDTH + 40, b"edge")
    reference = InMemoryTree(hash_leaf(entry) for entry in entries)
    with using(impl):
        tree = TiledTree(entries, chunk=64)
        for size in (1, 2, 255, 256, 257, 296):
            assert tree.root(size) == reference.root(size)
            for index in range(0, size, 7):
                assert tree.inclusion_proof(index, size) == reference.inclusion_proof(index, size)
            for size1 in range(1, size + 1, 5):
                assert (tree.consistency_proof(size1, size)
                        == reference.consistency_proof(size1, size))


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(leaf_entries(min_size=0), st.data(), st.booleans())
def test_core_append_completes_the_same_nodes_as_compact_range(
        impl: str, entries: list[bytes], data: st.DataObject, hashed: bool) -> None:
    leaves = [hash_leaf(entry) for entry in entries]
    split = data.draw(st.integers(0, len(leaves)), label="split")
    reference, expected = CompactRange(), []
    for leaf in leaves:
        expected += reference.append(leaf)
    given_leaves = leaves if hashed else entries
    with using(impl):
        first, nodes1, roots = merkle.append(0, [], given_leaves[:split], hashed=hashed,
                                             store_from=0)
        second, nodes2, roots = merkle.append(split, roots, given_leaves[split:], hashed=hashed,
                                              store_from=0)
        assert first + second == b"".join(leaves)
        assert nodes1 + nodes2 == expected
        assert roots == list(reference.roots)
        store_from = data.draw(st.integers(1, 9), label="store_from")
        hashes, upper, roots = merkle.append(0, [], given_leaves, hashed=hashed,
                                             store_from=store_from)
        assert hashes == b"".join(leaves) and roots == list(reference.roots)
        assert upper == [node for node in expected if node[0] >= store_from]


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(st.integers(0, 8), st.integers(0, 40), st.binary(max_size=4))
def test_core_subtree_is_the_recursive_definition(impl: str, level: int, extra: int,
                                                  salt: bytes) -> None:
    leaves = [hash_leaf(entry) for entry in _entries((1 << level) + extra, salt)]
    offset = extra // 2
    with using(impl):
        got = merkle.subtree(b"".join(leaves), offset, level)
    assert got == _mth(leaves[offset:offset + (1 << level)])


@pytest.mark.parametrize("impl", IMPLS)
def test_core_refuses_what_it_cannot_hash(impl: str) -> None:
    h = hash_leaf(b"x")
    with using(impl):
        for size, roots in ((3, [h]), (2, []), (1, [b"short"]), (-1, [])):
            with pytest.raises(ValueError):
                merkle.append(size, roots, [b"a"])
        with pytest.raises(ValueError):
            merkle.append(0, [], [b"short"], hashed=True)
        with pytest.raises(TypeError):
            merkle.append(0, [], ["text"])  # type: ignore[list-item]
        with pytest.raises(ValueError):
            merkle.append((1 << 63) - 1, [h] * 63, [b"a"])
        with pytest.raises(ValueError):
            merkle.append(0, [], [b"a"], store_from=-1)
        for hashes, offset, level in ((h, 0, 1), (h * 3, 2, 1), (h[:31], 0, 0), (h, -1, 0),
                                      (h, 0, 17), (h, 0, -1)):
            with pytest.raises(ValueError):
                merkle.subtree(hashes, offset, level)


@pytest.mark.skipif("c" not in merkle.IMPLEMENTATIONS, reason="the C core is not built")
@FAST
@given(st.lists(st.binary(max_size=300), max_size=600), st.integers(0, 2**40), st.data())
def test_c_and_python_cores_give_identical_results(leaves: list[bytes], size: int,
                                                   data: st.DataObject) -> None:
    roots = [hash_leaf(i.to_bytes(8, "big")) for i in range(size.bit_count())]
    store_from = data.draw(st.integers(0, 10), label="store_from")
    c, py = merkle.IMPLEMENTATIONS["c"], merkle.IMPLEMENTATIONS["python"]
    assert (c.append(size, roots, leaves, store_from=store_from)
            == py.append(size, roots, leaves, store_from=store_from))
    hashes = b"".join(hash_leaf(leaf) for leaf in leaves)
    if leaves:
        level = data.draw(st.integers(0, (len(leaves)).bit_length() - 1), label="level")
        offset = data.draw(st.integers(0, len(leaves) - (1 << level)), label="offset")
        assert c.subtree(hashes, offset, level) == py.subtree(hashes, offset, level)


def test_the_process_reports_which_core_it_uses() -> None:
    if os.environ.get("DATALEDGER_MERKLE_CORE") == "python":
        assert merkle.IMPLEMENTATION.startswith("pure Python")
    else:
        assert merkle.IMPLEMENTATION == (
            "pure Python" if "c" not in merkle.IMPLEMENTATIONS
            else f"C ({merkle.IMPLEMENTATIONS['c'].OPENSSL_VERSION})")


_PROBE = """
import sys
{block}
from chain import merkle
from chain.proof import InMemoryTree
from chain.hasher import hash_leaf
data = [i.to_bytes(2, "big") * (i % 50) for i in range(700)]
hashes, nodes, roots = merkle.append(0, [], data)
tree = InMemoryTree(hash_leaf(d) for d in data)
assert hashes == b"".join(hash_leaf(d) for d in data) and roots == list(tree._range.roots)
print(merkle.IMPLEMENTATION, sorted(merkle.IMPLEMENTATIONS))
"""


@pytest.mark.parametrize(("block", "env", "expected"), [
    ("sys.modules['chain._merkle'] = None  # as if it was never built", {},
     "pure Python ['python']"),
    ("", {"DATALEDGER_MERKLE_CORE": "python"}, "pure Python (DATALEDGER_MERKLE_CORE=python)"),
])
def test_without_the_c_core_the_pure_python_one_is_used(block: str, env: dict[str, str],
                                                        expected: str) -> None:
    clean = {k: v for k, v in os.environ.items() if k != "DATALEDGER_MERKLE_CORE"}
    out = subprocess.run([sys.executable, "-c", _PROBE.format(block=block)],
                         env={**clean, **env}, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[3], timeout=60)
    assert out.stdout.startswith(expected), out.stdout + out.stderr
