"""The compact sparse Merkle tree's pure-Python twin of chain/_smt.c (same methods, same
results, same errors); chain/smt.py uses it where the C core is not built.

A subtree is None (empty), a leaf tuple ``(keyhash, valuehash, hash)`` or a node tuple
``(left, right, hash)``: the hash is always at [2], and a leaf's [0] is bytes.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from itertools import pairwise
from typing import Any

H = 32
DEPTH = 256
REC = 2 * H
EMPTY = bytes(H)
_TOP = 1 << (DEPTH - 1)
_sha256 = hashlib.sha256

Subtree = tuple[Any, Any, bytes] | None


def _bit(key: bytes, depth: int) -> int:
    return (key[depth >> 3] >> (7 - (depth & 7))) & 1


class Tree:
    """The compact sparse Merkle tree, changed by batch updates (see chain/smt.py)."""

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root: Subtree = None
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def root(self) -> bytes:
        return EMPTY if self._root is None else self._root[2]

    def update(self, records: Any) -> bytes:
        """Set sorted 64-byte (keyhash ‖ valuehash) records; return the new root."""
        records = memoryview(records).tobytes()  # any buffer, as the C core takes; keys bytes
        if len(records) % REC:
            raise ValueError("records must be 64 bytes each (key ‖ value)")
        keys = [records[i:i + H] for i in range(0, len(records), REC)]
        if any(a >= b for a, b in pairwise(keys)):
            raise ValueError("records must be in strictly increasing key order")
        if not keys:
            return self.root()
        ints = [int.from_bytes(k, "big") for k in keys]
        leaves = [(k, v, _sha256(b"\x00" + k + v).digest()) for k, v in
                  ((records[i:i + H], records[i + H:i + REC]) for i in range(0, len(records), REC))]
        added = [0]
        self._root = _put(self._root, 0, 0, ints, leaves, 0, len(leaves), added)
        self._size += added[0]
        return self.root()

    def get(self, key: bytes) -> bytes | None:
        _check_key(key)
        node, depth = self._root, 0
        while node is not None and type(node[0]) is not bytes:
            node = node[_bit(key, depth)]
            depth += 1
        return node[1] if node is not None and node[0] == key else None

    def prove(self, key: bytes) -> tuple[bytes, tuple[bytes, bytes] | None]:
        """(siblings concatenated top down, the other leaf (key, value) or None)."""
        _check_key(key)
        siblings: list[bytes] = []
        node, depth = self._root, 0
        while node is not None and type(node[0]) is not bytes:
            bit = _bit(key, depth)
            other = node[1 - bit]
            siblings.append(EMPTY if other is None else other[2])
            node = node[bit]
            depth += 1
        if node is None or node[0] == key:
            return b"".join(siblings), None
        return b"".join(siblings), (node[0], node[1])

    def items(self) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        stack = [self._root]
        while stack:
            node = stack.pop()
            if node is None:
                continue
            if type(node[0]) is bytes:
                out.append((node[0], node[1]))
            else:
                stack.append(node[1])
                stack.append(node[0])
        return out


def _check_key(key: Any) -> None:
    if not isinstance(key, bytes) or len(key) != H:
        raise ValueError("a key hash is 32 bytes")


def _put(node: Subtree, depth: int, base: int, ints: list[int], leaves: list[Any],
         lo: int, hi: int, added: list[int]) -> Subtree:
    """``node`` (the subtree at ``depth`` whose keys start with ``base``'s first ``depth``
    bits) with ``leaves[lo:hi]`` set; ``added[0]`` counts the new keys."""
    if node is None:
        added[0] += hi - lo
        return _build(depth, ints, leaves, lo, hi)
    if type(node[0]) is bytes:  # a leaf: replaced, or merged with the new ones
        if hi - lo == 1 and leaves[lo][0] == node[0]:
            return leaves[lo]
        old = int.from_bytes(node[0], "big")
        at = bisect_left(ints, old, lo, hi)
        if at < hi and ints[at] == old:
            added[0] += hi - lo - 1
            return _build(depth, ints, leaves, lo, hi)
        added[0] += hi - lo
        merged_ints = ints[lo:at] + [old] + ints[at:hi]
        merged = leaves[lo:at] + [node] + leaves[at:hi]
        return _build(depth, merged_ints, merged, 0, len(merged))
    half = base | (_TOP >> depth)
    mid = bisect_left(ints, half, lo, hi)
    left, right = node[0], node[1]
    if lo < mid:
        left = _put(left, depth + 1, base, ints, leaves, lo, mid, added)
    if mid < hi:
        right = _put(right, depth + 1, half, ints, leaves, mid, hi, added)
    return (left, right, _sha256(b"\x01" + (EMPTY if left is None else left[2])
                                 + (EMPTY if right is None else right[2])).digest())


def _build(depth: int, ints: list[int], leaves: list[Any], lo: int, hi: int) -> Subtree:
    """The subtree at ``depth`` holding exactly ``leaves[lo:hi]`` (sorted, sharing their
    first ``depth`` bits)."""
    if hi - lo == 1:
        return leaves[lo]
    # the first bit where the first and last keys differ: every level above it has one
    # child only (a node over the child and an empty sibling)
    split = DEPTH - (ints[lo] ^ ints[hi - 1]).bit_length()
    shift = DEPTH - 1 - split
    mid = bisect_left(ints, ((ints[lo] >> shift) | 1) << shift, lo, hi)
    left = _build(split + 1, ints, leaves, lo, mid)
    right = _build(split + 1, ints, leaves, mid, hi)
    assert left is not None and right is not None
    node: tuple[Any, Any, bytes] = (left, right, _sha256(b"\x01" + left[2] + right[2]).digest())
    for d in range(split - 1, depth - 1, -1):
        if (ints[lo] >> (DEPTH - 1 - d)) & 1:
            node = (None, node, _sha256(b"\x01" + EMPTY + node[2]).digest())
        else:
            node = (node, None, _sha256(b"\x01" + node[2] + EMPTY).digest())
    return node
