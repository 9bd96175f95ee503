"""Compact ranges: the perfect subtrees that cover a prefix of the log.

A tree of ``size`` leaves is covered by one perfect subtree per set bit of
``size``, largest (leftmost) first: its "frontier". Appending a leaf merges
equal-sized subtrees the way adding 1 to a binary counter carries, so an
append costs O(1) hashes amortized and O(log n) at worst, and it completes
exactly the perfect subtrees that end at the new leaf. A store that saves the
nodes returned by :meth:`CompactRange.append` therefore saves every perfect
node of the tree exactly once, and can serve any proof from them.

Nodes are named ``(level, index)``: the perfect subtree of height ``level``
covering leaves ``[index * 2**level, (index + 1) * 2**level)``; level 0 holds
the leaves themselves.
"""

from collections.abc import Sequence

from chain.hasher import EMPTY_ROOT, HASH_SIZE, hash_children

NodeID = tuple[int, int]
"""A perfect subtree as ``(level, index)``."""

Node = tuple[int, int, bytes]
"""A perfect subtree with its hash: ``(level, index, hash)``."""


def trailing_zeros(n: int) -> int:
    """Return the number of trailing zero bits of ``n``. Requires n > 0."""
    return (n & -n).bit_length() - 1


def range_nodes(begin: int, end: int) -> list[NodeID]:
    """Return the perfect subtrees that exactly cover leaves [begin, end).

    They come left to right, each the largest aligned subtree that starts
    where the previous one ends: the canonical, minimal decomposition (at most
    two subtrees per level). Requires 0 <= begin <= end.
    """
    if not 0 <= begin <= end:
        raise ValueError(f"invalid leaf range [{begin}, {end})")
    nodes: list[NodeID] = []
    while begin < end:
        level = _largest_level(begin, end)
        nodes.append((level, begin >> level))
        begin += 1 << level
    return nodes


def _largest_level(begin: int, end: int) -> int:
    """Return the level of the largest perfect subtree in [begin, end) starting at ``begin``."""
    level = (end - begin).bit_length() - 1
    if begin:
        level = min(level, trailing_zeros(begin))
    return level


def fold(hashes: Sequence[bytes]) -> bytes:
    """Hash adjacent subtree roots, given left to right, into one root.

    Folds right to left, as RFC 6962 does for a range that is not a perfect
    subtree: fold([a, b, c]) == hash_children(a, hash_children(b, c)).
    Requires a non-empty sequence.
    """
    if not hashes:
        raise ValueError("cannot fold an empty list of hashes")
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = hash_children(left, result)
    return result


def _check_hash(what: str, value: bytes) -> None:
    """Raise ValueError unless ``value`` is a HASH_SIZE-byte hash."""
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ValueError(f"{what} must be {HASH_SIZE} bytes, got {value!r}")


class CompactRange:
    """The perfect-subtree roots of the leaves [0, size), for O(log n) appends."""

    def __init__(self, size: int = 0, roots: Sequence[bytes] = ()) -> None:
        """Resume a range of ``size`` leaves from its subtree ``roots``.

        ``roots`` are the hashes of ``range_nodes(0, size)``, left to right
        (largest subtree first), as :attr:`roots` returns them. Requires
        size >= 0, one root per set bit of ``size``, and 32-byte hashes.
        """
        if size < 0 or len(roots) != size.bit_count():
            raise ValueError(
                f"size {size} needs {max(size, 0).bit_count()} roots, got {len(roots)}"
            )
        for root in roots:
            _check_hash("subtree root", root)
        self._size = size
        self._roots = list(roots)

    @property
    def size(self) -> int:
        """Return the number of leaves covered."""
        return self._size

    @property
    def roots(self) -> tuple[bytes, ...]:
        """Return the perfect-subtree roots, largest (leftmost) first."""
        return tuple(self._roots)

    def nodes(self) -> list[Node]:
        """Return the frontier as ``(level, index, hash)``, leftmost first."""
        ids = range_nodes(0, self._size)
        return [(level, index, h) for (level, index), h in zip(ids, self._roots)]

    def append(self, leaf_hash: bytes) -> list[Node]:
        """Append one leaf and return the perfect subtrees it completes.

        The list starts with the leaf itself, ``(0, old_size, leaf_hash)``,
        and goes up one level per merge. Over the life of a log every node
        ``(level, index)`` is returned by exactly one append. Requires a
        32-byte ``leaf_hash``.
        """
        _check_hash("leaf hash", leaf_hash)
        level, index, node = 0, self._size, leaf_hash
        created: list[Node] = [(level, index, node)]
        while index & 1:  # A right child: its left sibling is the last root.
            node = hash_children(self._roots.pop(), node)
            level, index = level + 1, index >> 1
            created.append((level, index, node))
        self._roots.append(node)
        self._size += 1
        return created

    def root(self) -> bytes:
        """Return the RFC 6962 root of the leaves [0, size); EMPTY_ROOT if none."""
        return fold(self._roots) if self._roots else EMPTY_ROOT
