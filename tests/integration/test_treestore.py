"""The persistent tree on a SQLite file and on PostgreSQL, against the in-memory reference."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.hasher import hash_leaf
from chain.proof import InMemoryTree
from chain.service import open_tree
from chain.treestore import MissingNodeError, TreeStore
from chain.verify import verify_consistency, verify_inclusion
from events.store import DatabaseURL

LEAVES = [hash_leaf(f"event {i}".encode()) for i in range(300)]
REFERENCE = InMemoryTree(LEAVES)


@pytest.fixture
def url(database_url: str, tmp_path: Path) -> DatabaseURL:
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
    assert tree.size() == 10


def test_sizes_beyond_the_tree_are_refused(tree: TreeStore) -> None:
    tree.append_leaves(LEAVES[:10])
    with pytest.raises(ValueError):
        tree.root(11)
    with pytest.raises(MissingNodeError):
        tree.node(0, 10)
