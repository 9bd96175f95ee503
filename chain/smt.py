"""A compact sparse Merkle tree over 256-bit key hashes: the per-actor index's map.

The tree has 2**256 leaf slots, one per key hash, read from the most significant bit (0:
left, 1: right). Stored compactly, as Diem's Jellyfish Merkle tree and the Laurie-Kasper
compact sparse Merkle tree do (Trillian's map hashed every one of the 256 levels, an
empty subtree by its height):

- an empty subtree hashes to :data:`EMPTY` (32 zero bytes: no SHA-256 output);
- a subtree holding exactly one leaf hashes to that leaf's hash, wherever the leaf sits
  below (the *shortcut*): leaf = SHA-256(0x00 ‖ keyhash ‖ valuehash);
- any other subtree is a node: SHA-256(0x01 ‖ left ‖ right).

So a leaf sits at the depth where its key hash first differs from every other key hash,
about log2(n) for n leaves, and a proof is the siblings down to it (:class:`MapProof`).
Absence is proved by the path ending in an empty slot, or in the one other leaf that
occupies the shortcut (its key hash, sharing the path's prefix, and value hash).

:class:`SparseMerkleTree` updates many keys at once (:meth:`~SparseMerkleTree.update`),
rehashing only the paths from the changed leaves up, each shared node once, in the C core
(chain/_smt.c, OpenSSL's SHA-256) when it is built, else in its pure-Python twin
(chain/_smt_py.py; same results). :func:`verify_map_proof` is pure Python and needs only
the root it trusts. docs/INDEX.md describes the format.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final, cast

from chain import _smt_py
from chain.verify import VerificationError

HASH_SIZE: Final = 32
DEPTH: Final = 256
"""Bits of a key hash: the depth of the full tree."""

EMPTY: Final = bytes(32)
"""The hash of an empty subtree (and the root of the empty map)."""

KEY_PREFIX: Final = b"dataledger-index-key\x00"
"""Domain separation of key hashes: keyhash = SHA-256(KEY_PREFIX ‖ canonical key bytes)."""

_LEAF = b"\x00"
_NODE = b"\x01"
_sha256 = hashlib.sha256


def key_hash(key: bytes) -> bytes:
    """The key hash of a key's canonical bytes: its slot in the tree."""
    return _sha256(KEY_PREFIX + key).digest()


def leaf_hash(keyhash: bytes, valuehash: bytes) -> bytes:
    """A leaf: SHA-256(0x00 ‖ keyhash ‖ valuehash)."""
    return _sha256(_LEAF + keyhash + valuehash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """A node: SHA-256(0x01 ‖ left ‖ right)."""
    return _sha256(_NODE + left + right).digest()


def _bit(keyhash: bytes, depth: int) -> int:
    """The bit of ``keyhash`` that chooses the branch below ``depth`` (0: left)."""
    return (keyhash[depth >> 3] >> (7 - (depth & 7))) & 1


@dataclass(frozen=True)
class MapProof:
    """The siblings along a key hash's path, from the root's children down to the slot
    where the path ends, and the other leaf found there when it is not the key's own.

    ``leaf`` is ``(keyhash, valuehash)`` of the leaf occupying the slot, or None when the
    slot is empty or holds the key's own leaf (whose value the verifier is given).
    """

    siblings: tuple[bytes, ...]
    leaf: tuple[bytes, bytes] | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"siblings": [b64, ...], "leaf": {"keyhash": b64, "valuehash": b64} | null}``."""
        b64 = base64.b64encode
        return {"siblings": [b64(s).decode() for s in self.siblings],
                "leaf": None if self.leaf is None else
                {"keyhash": b64(self.leaf[0]).decode(), "valuehash": b64(self.leaf[1]).decode()}}

    @classmethod
    def from_json(cls, doc: Any, where: str = "map_proof") -> MapProof:
        """Parse :meth:`to_json`'s form; VerificationError names the bad field."""
        if not isinstance(doc, dict) or not isinstance(doc.get("siblings"), list):
            raise VerificationError(f"{where}: must be an object with a siblings list")
        siblings = tuple(_b64_hash(s, f"{where}.siblings[{i}]")
                         for i, s in enumerate(doc["siblings"]))
        leaf = doc.get("leaf")
        if leaf is None:
            return cls(siblings)
        if not isinstance(leaf, dict):
            raise VerificationError(f"{where}.leaf: must be an object or null")
        return cls(siblings, (_b64_hash(leaf.get("keyhash"), f"{where}.leaf.keyhash"),
                              _b64_hash(leaf.get("valuehash"), f"{where}.leaf.valuehash")))


def _b64_hash(text: Any, where: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != HASH_SIZE:
        raise VerificationError(f"{where}: must be base64 of 32 bytes")
    return raw


def verify_map_proof(root: bytes, keyhash: bytes, valuehash: bytes | None,
                     proof: MapProof) -> None:
    """Check that the map of ``root`` holds ``keyhash`` with ``valuehash`` (None: that it
    holds no value for ``keyhash``). Raises VerificationError saying what is off."""
    if len(root) != HASH_SIZE or len(keyhash) != HASH_SIZE:
        raise VerificationError("root and key hash must be 32 bytes")
    depth = len(proof.siblings)
    if depth > DEPTH or any(len(s) != HASH_SIZE for s in proof.siblings):
        raise VerificationError(f"map proof: {depth} siblings (at most {DEPTH} of 32 bytes)")
    if valuehash is not None:
        if proof.leaf is not None and proof.leaf != (keyhash, valuehash):
            raise VerificationError("map proof: its leaf is not the key's with this value")
        slot = leaf_hash(keyhash, valuehash)
    elif proof.leaf is None:
        slot = EMPTY
    else:
        other, other_value = proof.leaf
        if len(other) != HASH_SIZE or len(other_value) != HASH_SIZE:
            raise VerificationError("map proof: the other leaf's hashes must be 32 bytes")
        if other == keyhash:
            raise VerificationError("map proof: the key is present (the leaf found is its own)")
        if _common_prefix(other, keyhash) < depth:
            raise VerificationError("map proof: the other leaf is not on the key's path")
        slot = leaf_hash(other, other_value)
    computed = slot
    for d in range(depth - 1, -1, -1):
        sibling = proof.siblings[d]
        computed = node_hash(sibling, computed) if _bit(keyhash, d) else node_hash(
            computed, sibling)
    if computed != root:
        what = "membership" if valuehash is not None else "absence"
        raise VerificationError(f"map proof of {what} does not lead to the trusted root")


def _common_prefix(a: bytes, b: bytes) -> int:
    """How many leading bits ``a`` and ``b`` share."""
    x = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return DEPTH - x.bit_length()


def _load_c() -> ModuleType | None:
    try:
        from chain import _smt  # type: ignore[attr-defined]
    except ImportError:
        return None
    return cast(ModuleType, _smt)


_C = _load_c()

#: the cores available here, by name ("c" only when chain/_smt.c was built)
IMPLEMENTATIONS: dict[str, Any] = {"python": _smt_py.Tree}
if _C is not None:
    IMPLEMENTATIONS["c"] = _C.Tree

_FORCED = os.environ.get("DATALEDGER_MERKLE_CORE", "").strip().lower() == "python"

#: "C" or "pure Python": which core new trees use in this process
IMPLEMENTATION: str = "C" if _C is not None and not _FORCED else "pure Python"


class SparseMerkleTree:
    """The compact sparse Merkle tree in memory, updated in batches; see the module doc.

    ``core`` picks "c" or "python" (tests compare them); by default the C core when it is
    built, unless ``DATALEDGER_MERKLE_CORE=python``. Keys are never removed: the index
    only grows.
    """

    __slots__ = ("_tree",)

    def __init__(self, core: str | None = None) -> None:
        name = core or ("c" if IMPLEMENTATION == "C" else "python")
        if name not in IMPLEMENTATIONS:
            raise ValueError(f"no {name!r} core here (have {sorted(IMPLEMENTATIONS)})")
        self._tree = IMPLEMENTATIONS[name]()

    def __len__(self) -> int:
        """How many keys hold a value."""
        return len(self._tree)

    def root(self) -> bytes:
        """The root hash (:data:`EMPTY` for the empty map)."""
        return cast(bytes, self._tree.root())

    def update(self, values: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]) -> bytes:
        """Set many keyhash → valuehash at once (a key given twice: the last wins); return
        the new root.

        Only the nodes on the paths from the changed leaves to the root are rehashed, each
        once. Raises ValueError for a hash that is not 32 bytes.
        """
        pairs = dict(values.items() if isinstance(values, Mapping) else values)
        for k, v in pairs.items():
            if type(k) is not bytes or type(v) is not bytes or len(k) != HASH_SIZE \
                    or len(v) != HASH_SIZE:
                raise ValueError("key and value hashes must be 32 bytes")
        return cast(bytes, self._tree.update(b"".join(k + pairs[k] for k in sorted(pairs))))

    def get(self, keyhash: bytes) -> bytes | None:
        """The value hash held for ``keyhash``, or None."""
        return cast("bytes | None", self._tree.get(keyhash))

    def prove(self, keyhash: bytes) -> MapProof:
        """The proof of ``keyhash``'s value, or of its absence (:func:`verify_map_proof`)."""
        joined, other = self._tree.prove(keyhash)
        siblings = tuple(joined[i:i + HASH_SIZE] for i in range(0, len(joined), HASH_SIZE))
        return MapProof(siblings, None if other is None else (other[0], other[1]))

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every (keyhash, valuehash), in key hash order."""
        return cast("list[tuple[bytes, bytes]]", self._tree.items())
