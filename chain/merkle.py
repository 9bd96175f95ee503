"""The Merkle tree's bulk hashing: the C core when it is built, else the pure-Python twin.

Two functions do all the tree's SHA-256 work for appending and for reading tiles:

- :func:`append` extends a compact range by many leaves at once (leaf data hashed as
  SHA-256(0x00 ‖ data), or leaf hashes given) and returns the new leaves' hashes
  concatenated, the completed perfect subtrees from a given level up, and the new roots;
- :func:`subtree` hashes a perfect subtree from its leaf hashes (a node below the
  stored levels, recomputed from a tile).

``chain._merkle`` (chain/_merkle.c, linked against OpenSSL's libcrypto) is built by
``pip install`` when a C compiler and the OpenSSL headers are there; otherwise
``chain._merkle_py`` is used. Both give identical results (tests/unit/chain run both).
``DATALEDGER_MERKLE_CORE=python`` in the environment makes a process use the pure-Python
core even where the C one is built (to measure or rule it out). :data:`IMPLEMENTATION`
says which one this process uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import cast

from chain import _merkle_py

AppendFn = Callable[..., tuple[bytes, list[tuple[int, int, bytes]], list[bytes]]]
SubtreeFn = Callable[[bytes, int, int], bytes]


def _load_c() -> ModuleType | None:
    try:
        from chain import _merkle  # type: ignore[attr-defined]
    except ImportError:
        return None
    return cast(ModuleType, _merkle)


_C = _load_c()

#: the implementations available here, by name ("c" only when it was built)
IMPLEMENTATIONS: dict[str, ModuleType] = {"python": _merkle_py}
if _C is not None:
    IMPLEMENTATIONS["c"] = _C

_FORCED = os.environ.get("DATALEDGER_MERKLE_CORE", "").strip().lower() == "python"
_impl: ModuleType = _C if _C is not None and not _FORCED else _merkle_py

#: "C (OpenSSL 3.0.x ...)" or "pure Python": which implementation this process uses
IMPLEMENTATION: str = (f"C ({_C.OPENSSL_VERSION})" if _impl is _C and _C is not None
                       else "pure Python" + (" (DATALEDGER_MERKLE_CORE=python)"
                                             if _FORCED else ""))


def append(size: int, roots: Sequence[bytes], leaves: Iterable[bytes], *, hashed: bool = False,
           store_from: int = 1) -> tuple[bytes, list[tuple[int, int, bytes]], list[bytes]]:
    """Append ``leaves`` to the compact range (``size``, ``roots``).

    ``roots`` are the perfect-subtree roots of [0, size), largest first. ``leaves`` are
    leaf data, or 32-byte leaf hashes with ``hashed``. Returns ``(leaf_hashes, nodes,
    roots)``: the new leaves' hashes concatenated (32 bytes each), every perfect subtree
    completed whose level is >= ``store_from`` as ``(level, index, hash)`` in the order
    completed, and the new range's roots. Raises ValueError / TypeError on bad input.
    """
    fn = cast(AppendFn, _impl.append)
    return fn(size, roots, leaves, hashed=hashed, store_from=store_from)


def subtree(hashes: bytes, offset: int, level: int) -> bytes:
    """The root of the perfect subtree over leaf hashes ``offset .. offset + 2**level - 1``.

    ``hashes`` is leaf hashes concatenated (32 bytes each); 0 <= level <= 16.
    """
    return cast(SubtreeFn, _impl.subtree)(hashes, offset, level)
