"""Verifying RFC 9162 inclusion and consistency proofs, with no database.

A port of transparency-dev/merkle ``proof/verify.go`` (RFC 6962 hashing with
SHA-256). Anyone holding a proof, the sizes and the roots can run it: it needs
nothing but :mod:`chain.hasher`. Every failed check raises
:class:`VerificationError` with a message that says what failed.

Sizes and indices are non-negative integers (``uint64`` in the reference); a
negative value fails verification like any other bad range.
"""

from collections.abc import Sequence

from chain.hasher import HASH_SIZE, hash_children


class VerificationError(Exception):
    """A proof, size, index or hash failed verification.

    For a root mismatch, ``size`` is the tree size at which it happened,
    ``expected`` the root the caller gave and ``computed`` the root the proof
    leads to; they are None for other failures.
    """

    def __init__(
        self,
        message: str,
        *,
        size: int | None = None,
        expected: bytes | None = None,
        computed: bytes | None = None,
    ) -> None:
        """Create the error; the keyword arguments carry the evidence of a root mismatch."""
        super().__init__(message)
        self.size = size
        self.expected = expected
        self.computed = computed


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``proof`` shows leaf ``index`` with ``leaf_hash`` in the tree (``size``, ``root``).

    Requires 0 <= index < size. Raises VerificationError if anything fails.
    """
    # 1. Recompute the root from the leaf and its proof (checks ranges and sizes).
    computed = root_from_inclusion_proof(leaf_hash, index, size, proof)
    # 2. The recomputed root must be the one the caller trusts.
    _check_hash("root", root)
    _verify_match(size, computed, root)


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Return the root that ``proof`` leads to for leaf ``index`` of a tree of ``size``.

    Requires 0 <= index < size. Raises VerificationError if the index, the
    hash lengths or the proof length are wrong.
    """
    # 1. The leaf must exist in a tree of this size.
    if not 0 <= index < size:
        raise VerificationError(f"leaf index {index} out of range for tree size {size}")
    # 2. Every hash must be a SHA-256 digest.
    _check_hash("leaf hash", leaf_hash)
    _check_proof_hashes(proof)
    # 3. The proof length is fixed by (index, size).
    inner, border = _decomp_incl_proof(index, size)
    _check_proof_size(len(proof), inner + border)
    # 4. Hash up to where the paths to `index` and `size - 1` meet, then along the right border.
    computed = _chain_inner(leaf_hash, proof[:inner], index)
    return _chain_border_right(computed, proof[inner:])


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that ``proof`` shows the tree (``size1``, ``root1``) is a prefix of (``size2``, ``root2``).

    Requires 0 < size1 <= size2; equal sizes need an empty proof and equal
    roots (compared as bytes). A proof from the empty tree (size1 == 0) is
    meaningless and is refused, whatever the proof. Raises VerificationError
    if anything fails.
    """
    # 1-4. Recompute the new root from the old one and the proof; this also checks the old root.
    computed = root_from_consistency_proof(size1, size2, proof, root1)
    # 5. The recomputed new root must be the one the caller was given.
    if size1 != size2:
        _check_hash("root2", root2)
    _verify_match(size2, computed, root2)


def root_from_consistency_proof(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> bytes:
    """Return the root at ``size2`` that ``proof`` leads to from (``size1``, ``root1``).

    Also checks that the proof leads back to ``root1``. Requires
    0 < size1 <= size2. Raises VerificationError if anything fails.
    """
    # 1. Sizes: the old tree is not empty and not bigger than the new one.
    _check_sizes(size1, size2)
    # 2. Equal sizes: nothing to prove, the roots must simply be equal.
    if size1 == size2:
        if proof:
            raise VerificationError(f"size1 == size2 == {size1}, but the proof is not empty")
        return root1
    # 3. Every hash must be a SHA-256 digest, and the proof must have the right length.
    _check_hash("root1", root1)
    _check_proof_hashes(proof)
    seed, path, inner, mask = _split_consistency_proof(size1, size2, proof, root1)
    # 4. The proof must lead back to root1 ...
    computed1 = _chain_border_right(_chain_inner_right(seed, path[:inner], mask), path[inner:])
    _verify_match(size1, computed1, root1)
    # ... and forward to the new root.
    return _chain_border_right(_chain_inner(seed, path[:inner], mask), path[inner:])


def _check_sizes(size1: int, size2: int) -> None:
    """Raise unless 0 < size1 <= size2."""
    if size1 < 0 or size2 < size1:
        raise VerificationError(f"invalid tree sizes: size1 {size1}, size2 {size2}")
    if size1 == 0:
        raise VerificationError(
            "a consistency proof from the empty tree (size1 == 0) is meaningless"
        )


def _split_consistency_proof(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> tuple[bytes, Sequence[bytes], int, int]:
    """Return (seed, path, inner, mask) of a consistency proof with 0 < size1 < size2.

    The proof is the root of the biggest perfect subtree ending at size1 (the
    seed; left out when it is root1 itself, i.e. size1 is a power of two)
    followed by a suffix of the inclusion proof of leaf size1 - 1 in size2.
    """
    if not proof:
        raise VerificationError(f"empty consistency proof from size {size1} to {size2}")
    inner, border = _decomp_incl_proof(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1  # Trailing zeros of size1.
    inner -= shift  # The proof starts at level `shift`.
    seed, start = (root1, 0) if size1 == 1 << shift else (proof[0], 1)
    _check_proof_size(len(proof), start + inner + border)
    return seed, proof[start:], inner, (size1 - 1) >> shift


def _decomp_incl_proof(index: int, size: int) -> tuple[int, int]:
    """Split the inclusion proof of ``index`` in ``size`` into (inner, border) lengths.

    ``inner`` hashes lead up to where the paths to leaves ``index`` and
    ``size - 1`` diverge; ``border`` hashes are left siblings above it.
    """
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    """Hash ``seed`` with ``proof``, on the side given by each bit of ``index``."""
    for i, sibling in enumerate(proof):
        if (index >> i) & 1 == 0:
            seed = hash_children(seed, sibling)
        else:
            seed = hash_children(sibling, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    """Like :func:`_chain_inner`, but only with left siblings: the subtree's earlier version."""
    for i, sibling in enumerate(proof):
        if (index >> i) & 1 == 1:
            seed = hash_children(sibling, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    """Hash ``seed`` with left siblings along the right border of the tree."""
    for sibling in proof:
        seed = hash_children(sibling, seed)
    return seed


def _check_hash(what: str, value: bytes) -> None:
    """Raise unless ``value`` is a HASH_SIZE-byte hash."""
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        got = len(value) if isinstance(value, bytes) else type(value).__name__
        raise VerificationError(f"{what} must be {HASH_SIZE} bytes, got {got}")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    """Raise unless every proof element is a HASH_SIZE-byte hash."""
    for i, node in enumerate(proof):
        _check_hash(f"proof[{i}]", node)


def _check_proof_size(got: int, want: int) -> None:
    """Raise unless the proof has the length its sizes call for."""
    if got != want:
        raise VerificationError(f"wrong proof size {got}, want {want}")


def _verify_match(size: int, computed: bytes, expected: bytes) -> None:
    """Raise a VerificationError carrying both roots unless they are equal."""
    if computed != expected:
        raise VerificationError(
            f"root mismatch at tree size {size}: computed {computed.hex()}, "
            f"expected {expected.hex()}",
            size=size,
            expected=expected,
            computed=computed,
        )
