"""Building inclusion and consistency proofs from stored perfect subtrees.

Proof building is kept apart from verification (:mod:`chain.verify`), as in
transparency-dev/merkle. The builders read the tree through a *node getter*
``get(level, index) -> bytes`` that returns the hash of the PERFECT subtree
``(level, index)``, covering leaves ``[index * 2**level, (index + 1) * 2**level)``
(see :mod:`chain.compact`). A store that keeps the nodes returned by
:meth:`chain.compact.CompactRange.append` can serve every such node.

A proof for a tree whose size is not a power of two also needs *ephemeral*
nodes: subtrees along the right edge that are not perfect yet. They are never
stored; each is computed by folding the O(log n) perfect subtrees that cover
it (transparency-dev's ``proof.Nodes`` with ``Ephem``). Every function here
therefore calls ``get`` O(log n) times: at most 2 * ceil(log2(size)) + 1.
"""

from collections.abc import Callable, Iterable

from chain.compact import CompactRange, NodeID, fold, range_nodes, trailing_zeros
from chain.hasher import EMPTY_ROOT

NodeGetter = Callable[[int, int], bytes]
"""``get(level, index)``: the hash of a perfect subtree of the tree."""


def root_at(size: int, get: NodeGetter) -> bytes:
    """Return the root of the tree made of the first ``size`` leaves.

    Folds, right to left, the perfect subtrees that cover [0, size): one per
    set bit of ``size``. Requires 0 <= size <= the stored size. The empty
    tree's root is EMPTY_ROOT.
    """
    if size < 0:
        raise ValueError(f"tree size {size} is negative")
    return _range_hash(0, size, get) if size else EMPTY_ROOT


def inclusion_proof(index: int, size: int, get: NodeGetter) -> list[bytes]:
    """Return the RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

    Hashes come from the leaf up to the root. Requires 0 <= index < size and
    size <= the stored size.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} out of range for tree size {size}")
    return _path(0, index, size, get)


def consistency_proof(size1: int, size2: int, get: NodeGetter) -> list[bytes]:
    """Return the RFC 9162 consistency proof from tree size ``size1`` to ``size2``.

    Requires 0 < size1 <= size2 and size2 <= the stored size. The proof is
    empty when size1 == size2. A proof from the empty tree is meaningless and
    :func:`chain.verify.verify_consistency` refuses it, so size1 == 0 raises.
    """
    if not 0 < size1 <= size2:
        raise ValueError(f"consistency needs 0 < size1 <= size2, got {size1} and {size2}")
    if size1 == size2:
        return []
    # The biggest perfect subtree that ends at size1 seeds the proof; it is
    # left out when it is the whole old tree, which the verifier already has.
    level = trailing_zeros(size1)
    index = (size1 - 1) >> level
    seed = [get(level, index)] if index else []
    return seed + _path(level, index, size2, get)


def nodes_read(compute: Callable[[NodeGetter], object]) -> list[NodeID]:
    """Return the perfect subtrees ``compute`` reads through its getter, in the order asked.

    ``compute`` runs once on a getter that records each ``(level, index)`` and answers a
    zero hash: the functions above ask for the same nodes whatever the hashes are, so a
    store can read them all at once and then compute for real (with ``root_at``,
    ``inclusion_proof`` or ``consistency_proof`` at a given size).
    """
    asked: list[NodeID] = []

    def record(level: int, index: int) -> bytes:
        asked.append((level, index))
        return bytes(32)

    compute(record)
    return asked


def _path(level: int, index: int, size: int, get: NodeGetter) -> list[bytes]:
    """Return the inclusion proof of the perfect node (level, index) in a tree of ``size``.

    The proof has three parts: the siblings up to the ``fork`` node, where the
    path to the node leaves the path to leaf ``size``; the (possibly
    ephemeral) node covering the leaves right of the fork; and the perfect
    subtrees covering the leaves left of the fork, lowest first.
    """
    inner = (index ^ (size >> level)).bit_length() - 1
    fork_level, fork_index = level + inner, index >> inner
    begin, end = fork_index << fork_level, (fork_index + 1) << fork_level
    proof = [get(level + i, (index >> i) ^ 1) for i in range(inner)]
    if end < size:
        proof.append(_range_hash(end, size, get))
    proof.extend(_hashes(reversed(range_nodes(0, begin)), get))
    return proof


def _range_hash(begin: int, end: int, get: NodeGetter) -> bytes:
    """Return the RFC 6962 hash of the leaves [begin, end), with begin < end."""
    return fold(_hashes(range_nodes(begin, end), get))


def _hashes(ids: Iterable[NodeID], get: NodeGetter) -> list[bytes]:
    """Return the hashes of the given perfect subtrees, in order."""
    return [get(level, index) for level, index in ids]


class InMemoryTree:
    """A whole tree in memory: leaf hashes plus every perfect node.

    Built with :class:`chain.compact.CompactRange`, it stores exactly the
    nodes a persistent store would, and serves them through :meth:`get`. For
    tests and small uses.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        """Build the tree from ``leaf_hashes`` (32 bytes each), in order."""
        self._range = CompactRange()
        self._leaves: list[bytes] = []
        self._nodes: dict[NodeID, bytes] = {}
        for leaf_hash in leaf_hashes:
            self.append(leaf_hash)

    @property
    def size(self) -> int:
        """Return the number of leaves."""
        return self._range.size

    def leaf_hash(self, index: int) -> bytes:
        """Return the hash of leaf ``index``. Requires 0 <= index < size."""
        if not 0 <= index < self.size:
            raise ValueError(f"leaf index {index} out of range for tree size {self.size}")
        return self._leaves[index]

    def append(self, leaf_hash: bytes) -> int:
        """Append a leaf hash and return its index."""
        for level, index, node in self._range.append(leaf_hash):
            self._nodes[(level, index)] = node
        self._leaves.append(leaf_hash)
        return self.size - 1

    def get(self, level: int, index: int) -> bytes:
        """Return the hash of the perfect subtree (level, index).

        Requires the subtree to lie within [0, size); raises ValueError if not.
        """
        try:
            return self._nodes[(level, index)]
        except KeyError:
            raise ValueError(
                f"no perfect subtree ({level}, {index}) in tree of size {self.size}"
            ) from None

    def root(self, size: int | None = None) -> bytes:
        """Return the root at ``size`` (default: current size). Requires 0 <= size <= self.size."""
        size = self.size if size is None else size
        self._check_size(size)
        return root_at(size, self.get)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Return the inclusion proof of leaf ``index`` at ``size`` (default: current size)."""
        size = self.size if size is None else size
        self._check_size(size)
        return inclusion_proof(index, size, self.get)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Return the consistency proof from ``size1`` to ``size2`` (default: current size)."""
        size2 = self.size if size2 is None else size2
        self._check_size(size2)
        return consistency_proof(size1, size2, self.get)

    def _check_size(self, size: int) -> None:
        """Raise ValueError unless 0 <= size <= self.size."""
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} out of range for stored size {self.size}")
