"""RFC 6962 / RFC 9162 hashing with SHA-256 and domain-separation prefixes.

A leaf is hashed as SHA-256(0x00 || data) and an interior node as
SHA-256(0x01 || left || right), so that a leaf can never be passed off as an
interior node (second-preimage resistance). The root of the empty tree is
SHA-256 of the empty string.
"""

import hashlib
from typing import Final

HASH_SIZE: Final = 32
"""Length in bytes of every hash in the tree."""

LEAF_PREFIX: Final = b"\x00"
"""Domain-separation prefix of leaf hashes."""

NODE_PREFIX: Final = b"\x01"
"""Domain-separation prefix of interior node hashes."""

EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""Root hash of the tree with no leaves: SHA-256 of the empty string."""


def hash_leaf(data: bytes) -> bytes:
    """Return the leaf hash of ``data``: SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """Return the hash of the node with children ``left`` and ``right``.

    That is SHA-256(0x01 || left || right).
    """
    return hashlib.sha256(NODE_PREFIX + left + right).digest()
