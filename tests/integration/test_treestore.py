"""The persistent tree on a SQLite file and on PostgreSQL, against the in-memory reference.

Each test runs with each hashing core (C and pure Python) on each backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from anchoring.service import open_tree
from anchoring.treestore import MissingNodeError, TreeStore
from chain.compact import CompactRange
from chain.hasher import hash_leaf
from chain.proof import InMemoryTree
from chain.verify import verify_consistency, verify_inclusion
from events.url import DatabaseURL
from tests.unit.chain.tiled import IMPLS, using

DATA = [f"event {i}".encode() for i in range(300)]
LEAVES = [hash_leaf(d) for d in DATA]
REFERENCE = InMemoryTree(LEAVES)


@pytest.fixture(params=IMPLS)
def core(request: pytest.FixtureRequest) -> Iterator[str]:
    with using(request.param):
        yield request.param


@pytest.fixture
def url(database_url: str, tmp_path: Path, core: str) -> DatabaseURL:
    return DatabaseURL.parse(database_url)


@pytest.fixture
def tree(url: DatabaseURL, tmp_path: Path) -> Iterator[TreeStore]:
    t = open_tree(url, tmp_path)
    yield t
    t.close()


def test_roots_and_proofs_match_the_reference_at_every_size(tree: TreeStore) -> None:
    for start in range(0, 300, 37):
        tree.append_leaves(LEAVES[start:start + 37])
    assert tree.size() == 300
    for n in (1, 2, 3, 7, 8, 9, 64, 255, 256, 257, 300):
        assert tree.root(n) == REFERENCE.root(n)
        for i in {0, n // 2, n - 1}:
            proof = tree.inclusion_proof(i, n)
            assert proof == REFERENCE.inclusion_proof(i, n)
            verify_inclusion(LEAVES[i], i, n, proof, REFERENCE.root(n))
    for m, n in ((1, 300), (7, 8), (100, 257), (256, 300)):
        proof = tree.consistency_proof(m, n)
        verify_consistency(m, n, proof, REFERENCE.root(m), REFERENCE.root(n))


def test_a_reopened_tree_resumes_where_it_stopped(url: DatabaseURL, tmp_path: Path) -> None:
    first = open_tree(url, tmp_path)
    first.append_leaves(LEAVES[:100])
    first.close()
    again = open_tree(url, tmp_path)
    try:
        assert again.size() == 100
        again.append_leaves(LEAVES[100:])
        assert again.root() == REFERENCE.root(300)
    finally:
        again.close()


def test_a_second_integrator_with_a_stale_size_writes_nothing(tree: TreeStore) -> None:
    tree.append_leaves(LEAVES[:10])
    with pytest.raises(ValueError, match="expected 5"):
        tree.append_leaves(LEAVES[10:20], expected_size=5)
    with pytest.raises(ValueError, match="expected 5"):
        tree.append_leaf_data(DATA[10:20], expected_size=5)
    assert tree.size() == 10


def test_sizes_beyond_the_tree_are_refused(tree: TreeStore) -> None:
    tree.append_leaves(LEAVES[:10])
    with pytest.raises(ValueError):
        tree.root(11)
    with pytest.raises(MissingNodeError):
        tree.node(0, 10)


def test_leaf_data_hashed_by_the_tree_gives_the_same_tree(tree: TreeStore) -> None:
    for start in range(0, 300, 101):
        tree.append_leaf_data(DATA[start:start + 101])
    assert tree.size() == 300 and tree.root() == REFERENCE.root(300)
    assert tree.leaf_hashes(0, 300) == b"".join(LEAVES)
    assert tree.leaf_hashes(250, 260) == b"".join(LEAVES[250:260])
    assert [tree.node(0, i) for i in (0, 255, 256, 299)] == [LEAVES[i] for i in (0, 255, 256, 299)]
    assert tree.node(3, 33) == REFERENCE.get(3, 33) and tree.node(8, 0) == REFERENCE.get(8, 0)
    assert tree.compact_range().roots == CompactRange(300, [REFERENCE.get(8, 0),
                                                            REFERENCE.get(5, 8),
                                                            REFERENCE.get(3, 36),
                                                            REFERENCE.get(2, 74)]).roots
    between = tree.nodes_between([(0, 254, b""), (0, 258, b""), (2, 60, b""), (2, 70, b"")])
    assert between == {**{(0, i): LEAVES[i] for i in range(254, 259)},
                       **{(2, i): REFERENCE.get(2, i) for i in range(60, 71)}}
    with pytest.raises(MissingNodeError):
        tree.node(2, 75)  # leaves 300..303 are not there yet
    with pytest.raises(MissingNodeError):
        tree.node(8, 1)


def test_only_leaf_tiles_and_nodes_of_level_8_and_up_are_stored(tree: TreeStore) -> None:
    tree.append_leaves(LEAVES[:200])
    tree.append_leaves(LEAVES[200:])
    tiles = tree._q("SELECT idx, length(hashes) FROM chain_tiles ORDER BY idx")
    assert [tuple(t) for t in tiles] == [(0, 256 * 32), (1, 44 * 32)]
    levels = tree._q("SELECT level, idx FROM chain_nodes ORDER BY level, idx")
    assert [tuple(r) for r in levels] == [(8, 0)]


def test_two_stores_on_one_tree_take_turns_without_losing_a_leaf(
        url: DatabaseURL, tmp_path: Path) -> None:
    """Each store remembers the tip it wrote; when the other moved the tree, the write's
    guard refuses and the append is redone from what is stored."""
    a, b = open_tree(url, tmp_path), open_tree(url, tmp_path)
    try:
        assert a.append_leaf_data(DATA[:100]) == 100
        assert b.append_leaf_data(DATA[100:170]) == 170  # b reads the tree a wrote
        assert a.append_leaf_data(DATA[170:260]) == 260  # a's tip (100) is stale: redone
        with pytest.raises(ValueError, match="tree size is 260, expected 170"):
            b.append_leaf_data(DATA[260:], expected_size=170)
        assert b.append_leaf_data(DATA[260:], expected_size=260) == 300
        assert a.append_leaves([]) == b.append_leaves([]) == 300
        assert a.root() == b.root() == REFERENCE.root(300)
        assert a.leaf_hashes(0, 300) == b"".join(LEAVES)
    finally:
        a.close()
        b.close()


def test_a_batch_that_fails_halfway_writes_nothing(tree: TreeStore) -> None:
    tree.append_leaf_data(DATA[:100])
    bad: list[bytes] = [*DATA[100:200], "not bytes"]  # type: ignore[list-item]
    with pytest.raises(TypeError):
        tree.append_leaf_data(bad)
    assert tree.size() == 100 and tree.leaf_hashes(0, 300) == b"".join(LEAVES[:100])
    big = [f"more {i}".encode() for i in range(3000)]  # several chunks, the last one bad
    with pytest.raises(TypeError):
        tree.append_leaf_data([*big, None])  # type: ignore[list-item]
    assert tree.size() == 100 and tree.leaf_hashes(0, 4000) == b"".join(LEAVES[:100])
    assert tree.append_leaf_data(DATA[100:]) == 300 and tree.root() == REFERENCE.root(300)
