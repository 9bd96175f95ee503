"""The pure-Python twin of chain/_merkle.c: same functions, same results, same errors.

Used by :mod:`chain.merkle` when the C extension was not built (no C compiler or no
OpenSSL headers at install time). About 3–4× slower per leaf than the C core.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
MAX_SUBTREE_LEVEL = 16
_MAX = (1 << 63) - 1


def _u63(value: object, what: str) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{what} must be an int")
    if not 0 <= value <= _MAX:
        raise ValueError(f"{what} must be between 0 and 2**63 - 1")
    return value


def append(size: int, roots: Sequence[bytes], leaves: Iterable[bytes], *, hashed: bool = False,
           store_from: int = 1) -> tuple[bytes, list[tuple[int, int, bytes]], list[bytes]]:
    """Append leaves to the compact range (size, roots); return (leaf_hashes, nodes, roots).

    See ``chain._merkle.append``: ``leaf_hashes`` is the new leaves' hashes concatenated,
    ``nodes`` every completed perfect subtree of level >= store_from as (level, index,
    hash), ``roots`` the new range's roots, largest first.
    """
    size = _u63(size, "size")
    if store_from < 0:
        raise ValueError("store_from must be >= 0")
    stack = list(roots)
    if len(stack) != size.bit_count():
        raise ValueError(f"size {size} needs {size.bit_count()} roots, got {len(stack)}")
    for root in stack:
        if not isinstance(root, bytes) or len(root) != HASH_SIZE:
            raise ValueError(f"subtree root must be {HASH_SIZE} bytes, got {root!r}")
    items = tuple(leaves)
    if len(items) > _MAX - size:
        raise ValueError("the tree would grow beyond 2**63 - 1 leaves")
    for k, leaf in enumerate(items):
        if not isinstance(leaf, bytes):
            raise TypeError(f"leaf {k} must be bytes, got {type(leaf).__name__}")
        if hashed and len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, got {leaf!r}")
    sha256 = hashlib.sha256
    out: list[bytes] = []
    nodes: list[tuple[int, int, bytes]] = []
    for leaf in items:
        node = leaf if hashed else sha256(b"\x00" + leaf).digest()
        out.append(node)
        index, level = size, 0
        if store_from == 0:
            nodes.append((0, index, node))
        while index & 1:
            node = sha256(b"\x01" + stack.pop() + node).digest()
            level += 1
            index >>= 1
            if level >= store_from:
                nodes.append((level, index, node))
        stack.append(node)
        size += 1
    return b"".join(out), nodes, stack


def subtree(hashes: bytes | bytearray | memoryview, offset: int, level: int) -> bytes:
    """The hash of the perfect subtree over leaf hashes offset .. offset + 2**level - 1.

    ``hashes`` is leaf hashes concatenated, 32 bytes each. Requires 0 <= level <= 16.
    """
    if not 0 <= level <= MAX_SUBTREE_LEVEL:
        raise ValueError(f"level must be between 0 and {MAX_SUBTREE_LEVEL}, got {level}")
    data = bytes(hashes)
    count = 1 << level
    if len(data) % HASH_SIZE or offset < 0 or offset + count > len(data) // HASH_SIZE:
        raise ValueError(f"no subtree of {count} leaf hashes at {offset} in {len(data)} bytes")
    start = offset * HASH_SIZE
    layer = [data[start + i * HASH_SIZE:start + (i + 1) * HASH_SIZE] for i in range(count)]
    sha256 = hashlib.sha256
    while len(layer) > 1:
        layer = [sha256(b"\x01" + layer[i] + layer[i + 1]).digest()
                 for i in range(0, len(layer), 2)]
    return layer[0]
