"""BLS co-signatures of checkpoints by witnesses (IETF BLS, proof-of-possession scheme).

Witnesses co-sign the checkpoint body with the BLS signature scheme of
draft-irtf-cfrg-bls-signature, ciphersuite
``BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_``: 48-byte public keys in G1,
96-byte signatures in G2. Because every witness signs the same body, the
platform can aggregate their signatures into one and check it with
FastAggregateVerify. That is only safe against rogue-key attacks if every
public key came with a proof of possession, so a witness publishes
(name, public key, PoP) as a :class:`WitnessPublicKey` and the platform
accepts it only through :func:`trust_witness`, which runs PopVerify.

A co-signature is a signed-note signature line::

    — <witness name> <base64(4-byte key ID || 96-byte BLS signature)>

with key ID = SHA-256(name || "\\n" || 0xB1 || 48-byte public key)[:4].
0xB1 is dataledger's own signature type byte (not assigned by C2SP), so
standard Ed25519 note verifiers skip these lines as unknown keys. A
:class:`TrustedWitness` is a :class:`chain.note.NoteVerifier`, so
:func:`chain.note.open_note` verifies co-signature lines too.

Two interchangeable backends implement the scheme: :class:`PyEccBackend`
(py-ecc, pure Python, the reference, ~0.1 s per signature and ~0.3 s per
verification) and :class:`BlspyBackend` (blspy, C++); the tests prove them
byte-identical. Secret keys are stored and exchanged as their 32-byte
big-endian bytes and never regenerated from seeds: blspy's ``key_gen`` is
not the IETF KeyGen, so the same seed gives different keys in each library.
"""

import base64
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, Protocol

from eth_typing import BLSPubkey, BLSSignature
from eth_utils.exceptions import ValidationError

_RECURSION_LIMIT = sys.getrecursionlimit()
from py_ecc.bls.ciphersuites import G2ProofOfPossession
from py_ecc.bls.g2_primitives import signature_to_G2, subgroup_check
from py_ecc.optimized_bls12_381.optimized_curve import curve_order

# py_ecc raises the interpreter's recursion limit to 100,000 when imported. In the server
# that turns a deeply nested JSON body into a C stack overflow (the process dies) instead
# of a RecursionError answered 4xx; the optimized BLS code used here needs no deep recursion.
sys.setrecursionlimit(_RECURSION_LIMIT)

from chain.note import (
    NamedKey,
    NoteSignature,
    check_note_body,
    format_signature_line,
    is_valid_key_name,
    key_id,
    parse_note,
    parse_signature_line,
)
from chain.verify import VerificationError

ALG_BLS: Final = 0xB1
"""dataledger's signature type byte for BLS12-381 co-signatures (PoP ciphersuite)."""

SECRET_KEY_SIZE: Final = 32
"""A secret key is a scalar 0 < sk < r, as 32 bytes big-endian."""

PUBLIC_KEY_SIZE: Final = 48
"""A public key is a compressed G1 point."""

SIGNATURE_SIZE: Final = 96
"""A signature (or proof of possession) is a compressed G2 point."""

_G1_INFINITY: Final = bytes([0xC0]) + bytes(PUBLIC_KEY_SIZE - 1)


class BlsBackend(Protocol):
    """The BLS PoP ciphersuite on bytes: secret keys 32 bytes, public keys 48, signatures 96.

    The verifying methods return False, never raise, for any malformed input.
    """

    name: str

    def sk_to_pk(self, secret_key: bytes) -> bytes:
        """SkToPk: the public key of ``secret_key``. Raises ValueError if it is not 0 < sk < r."""
        ...

    def sign(self, secret_key: bytes, message: bytes) -> bytes:
        """Sign: the signature of ``message``. Raises ValueError for a bad secret key."""
        ...

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Verify: whether ``signature`` is valid for ``message`` under ``public_key``."""
        ...

    def aggregate(self, signatures: Sequence[bytes]) -> bytes:
        """Aggregate: the sum of ``signatures``. Raises ValueError if empty or one is invalid."""
        ...

    def fast_aggregate_verify(
        self, public_keys: Sequence[bytes], message: bytes, signature: bytes
    ) -> bool:
        """FastAggregateVerify: whether ``signature`` aggregates all keys' signatures of ``message``."""
        ...

    def pop_prove(self, secret_key: bytes) -> bytes:
        """PopProve: the proof of possession of ``secret_key``."""
        ...

    def pop_verify(self, public_key: bytes, proof: bytes) -> bool:
        """PopVerify: whether ``proof`` proves possession of ``public_key``'s secret key."""
        ...


class PyEccBackend:
    """The reference backend: py-ecc's ``G2ProofOfPossession`` (pure Python, slow)."""

    name = "py-ecc"

    def sk_to_pk(self, secret_key: bytes) -> bytes:
        """SkToPk (see :class:`BlsBackend`)."""
        return bytes(G2ProofOfPossession.SkToPk(_scalar(secret_key)))

    def sign(self, secret_key: bytes, message: bytes) -> bytes:
        """Sign (see :class:`BlsBackend`)."""
        return bytes(G2ProofOfPossession.Sign(_scalar(secret_key), message))

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Verify (see :class:`BlsBackend`); KeyValidate included."""
        return bool(
            G2ProofOfPossession.Verify(BLSPubkey(public_key), message, BLSSignature(signature))
        )

    def aggregate(self, signatures: Sequence[bytes]) -> bytes:
        """Aggregate (see :class:`BlsBackend`)."""
        if not signatures:
            raise ValueError("cannot aggregate no signatures")
        try:
            # Aggregate itself only checks the curve; blspy also checks the subgroup.
            if not all(subgroup_check(signature_to_G2(BLSSignature(s))) for s in signatures):
                raise ValueError("a signature is not in the G2 subgroup")
            return bytes(G2ProofOfPossession.Aggregate([BLSSignature(s) for s in signatures]))
        except (ValidationError, ValueError, AssertionError) as exc:  # What py-ecc raises.
            raise ValueError(f"invalid signature to aggregate: {exc}") from exc

    def fast_aggregate_verify(
        self, public_keys: Sequence[bytes], message: bytes, signature: bytes
    ) -> bool:
        """FastAggregateVerify (see :class:`BlsBackend`)."""
        keys = [BLSPubkey(k) for k in public_keys]
        return bool(G2ProofOfPossession.FastAggregateVerify(keys, message, BLSSignature(signature)))

    def pop_prove(self, secret_key: bytes) -> bytes:
        """PopProve (see :class:`BlsBackend`)."""
        return bytes(G2ProofOfPossession.PopProve(_scalar(secret_key)))

    def pop_verify(self, public_key: bytes, proof: bytes) -> bool:
        """PopVerify (see :class:`BlsBackend`); KeyValidate included."""
        return bool(G2ProofOfPossession.PopVerify(BLSPubkey(public_key), BLSSignature(proof)))


class BlspyBackend:
    """The fast backend: blspy's ``PopSchemeMPL`` (Chia's C++ bls-signatures on blst)."""

    name = "blspy"

    def __init__(self) -> None:
        """Load blspy; raises ImportError if it is not installed."""
        import blspy  # type: ignore[import-not-found, import-untyped, unused-ignore]

        self._blspy: Any = blspy  # Compiled, without type stubs.
        self._scheme: Any = blspy.PopSchemeMPL

    def sk_to_pk(self, secret_key: bytes) -> bytes:
        """SkToPk (see :class:`BlsBackend`)."""
        return bytes(self._secret(secret_key).get_g1())

    def sign(self, secret_key: bytes, message: bytes) -> bytes:
        """Sign (see :class:`BlsBackend`)."""
        return bytes(self._scheme.sign(self._secret(secret_key), message))

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Verify (see :class:`BlsBackend`); KeyValidate included."""
        points = self._points([public_key], signature)
        return points is not None and bool(self._scheme.verify(points[0][0], message, points[1]))

    def aggregate(self, signatures: Sequence[bytes]) -> bytes:
        """Aggregate (see :class:`BlsBackend`)."""
        if not signatures:
            raise ValueError("cannot aggregate no signatures")
        try:
            points = [self._g2(s) for s in signatures]
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ValueError(f"invalid signature to aggregate: {exc}") from exc
        return bytes(self._scheme.aggregate(points))

    def fast_aggregate_verify(
        self, public_keys: Sequence[bytes], message: bytes, signature: bytes
    ) -> bool:
        """FastAggregateVerify (see :class:`BlsBackend`)."""
        points = self._points(public_keys, signature)
        if points is None or not points[0]:
            return False
        return bool(self._scheme.fast_aggregate_verify(points[0], message, points[1]))

    def pop_prove(self, secret_key: bytes) -> bytes:
        """PopProve (see :class:`BlsBackend`)."""
        return bytes(self._scheme.pop_prove(self._secret(secret_key)))

    def pop_verify(self, public_key: bytes, proof: bytes) -> bool:
        """PopVerify (see :class:`BlsBackend`); KeyValidate included."""
        points = self._points([public_key], proof)
        return points is not None and bool(self._scheme.pop_verify(points[0][0], points[1]))

    def _secret(self, secret_key: bytes) -> Any:
        """Return the blspy PrivateKey; blspy itself accepts 0, so check the range first."""
        _scalar(secret_key)
        return self._blspy.PrivateKey.from_bytes(secret_key)

    def _g2(self, signature: bytes) -> Any:
        """Parse a signature; blspy checks the encoding, the curve and the subgroup."""
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
            raise ValueError(f"signature must be {SIGNATURE_SIZE} bytes")
        return self._blspy.G2Element.from_bytes(signature)

    def _points(
        self, public_keys: Sequence[bytes], signature: bytes
    ) -> tuple[list[Any], Any] | None:
        """Parse the keys (KeyValidate: valid, not infinity) and the signature; None if bad."""
        if not all(_key_shape_ok(k) for k in public_keys):
            return None
        try:
            keys = [self._blspy.G1Element.from_bytes(k) for k in public_keys]
            return keys, self._g2(signature)
        except (ValueError, RuntimeError, TypeError):
            return None


@cache
def default_backend() -> BlsBackend:
    """Return the blspy backend when blspy is importable, else the py-ecc reference."""
    try:
        return BlspyBackend()
    except ImportError:
        return PyEccBackend()


def generate_secret_key(ikm: bytes | None = None) -> bytes:
    """Return a new 32-byte secret key from IETF KeyGen on ``ikm`` (>= 32 bytes; random if None).

    Store and exchange the returned bytes; never regenerate a key from
    ``ikm`` with another library (blspy's key_gen gives a different key).
    """
    material = os.urandom(32) if ikm is None else ikm
    if len(material) < 32:
        raise ValueError(f"KeyGen needs at least 32 bytes of key material, got {len(material)}")
    return G2ProofOfPossession.KeyGen(material).to_bytes(SECRET_KEY_SIZE, "big")


def witness_key_id(name: str, public_key: bytes) -> int:
    """Return the key ID of a witness: SHA-256(name || "\\n" || 0xB1 || public key)[:4]."""
    return key_id(name, bytes([ALG_BLS]) + public_key)


@dataclass(frozen=True)
class WitnessPublicKey:
    """What a witness publishes: its name, its BLS public key and its proof of possession.

    Not to be trusted before :func:`trust_witness` checked the proof.
    """

    name: str
    public_key: bytes
    pop: bytes

    @property
    def key_id(self) -> int:
        """The key ID of the witness's co-signature lines."""
        return witness_key_id(self.name, self.public_key)

    def encode(self) -> str:
        """Return ``<name>+<hex key ID>+<base64(0xB1 || public key || PoP)>``."""
        blob = base64.b64encode(bytes([ALG_BLS]) + self.public_key + self.pop).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{blob}"

    @classmethod
    def parse(cls, text: str) -> "WitnessPublicKey":
        """Parse the form written by :meth:`encode`; raises VerificationError if malformed.

        Checks the shape and the key ID only; :func:`trust_witness` checks the proof.
        """
        name, _, rest = text.partition("+")
        hex_id, _, blob64 = rest.partition("+")
        try:
            blob = base64.b64decode(blob64.encode("ascii"), validate=True)
        except ValueError:  # binascii.Error and UnicodeEncodeError are ValueErrors.
            blob = b""
        if not is_valid_key_name(name) or len(blob) != 1 + PUBLIC_KEY_SIZE + SIGNATURE_SIZE:
            raise VerificationError(f"malformed witness key {text!r}")
        if blob[0] != ALG_BLS:
            raise VerificationError(f"witness key {text!r} has type 0x{blob[0]:02x}, want 0xb1")
        key = cls(name, blob[1 : 1 + PUBLIC_KEY_SIZE], blob[1 + PUBLIC_KEY_SIZE :])
        if f"{key.key_id:08x}" != hex_id.lower() or len(hex_id) != 8:
            raise VerificationError(f"witness key {text!r}: key ID {hex_id!r} does not match")
        return key


class WitnessKey(NamedKey):
    """A witness's signing key: a name and a 32-byte BLS secret key. A NoteSigner."""

    def __init__(self, name: str, secret_key: bytes, backend: BlsBackend | None = None) -> None:
        """Create the key; raises ValueError for a bad name or a secret key not in (0, r)."""
        if not is_valid_key_name(name):
            raise ValueError(f"invalid witness name {name!r}")
        _scalar(secret_key)
        self._secret_key = secret_key
        self._backend = backend or default_backend()
        public_key = self._backend.sk_to_pk(secret_key)
        super().__init__(name, witness_key_id(name, public_key), public_key)

    @classmethod
    def generate(cls, name: str, backend: BlsBackend | None = None) -> "WitnessKey":
        """Return a fresh random key for ``name``."""
        return cls(name, generate_secret_key(), backend)

    @property
    def secret_key(self) -> bytes:
        """The 32-byte big-endian secret key: what to store."""
        return self._secret_key

    def sign(self, message: bytes) -> bytes:
        """Return the 96-byte BLS signature of ``message``."""
        return self._backend.sign(self._secret_key, message)

    def published(self) -> WitnessPublicKey:
        """Return what the witness publishes: name, public key and proof of possession."""
        return WitnessPublicKey(
            self._name, self._public_key, self._backend.pop_prove(self._secret_key)
        )

    def __repr__(self) -> str:
        """Show the public side only."""
        return f"WitnessKey({self._name!r}, {self._key_id:08x})"


@dataclass(frozen=True)
class TrustedWitness:
    """A witness public key whose proof of possession was checked. A NoteVerifier.

    Make one with :func:`trust_witness` only.
    """

    name: str
    public_key: bytes
    key_id: int
    backend: BlsBackend

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is this witness's BLS signature of ``message``."""
        return self.backend.verify(self.public_key, message, signature)


def trust_witness(published: WitnessPublicKey, backend: BlsBackend | None = None) -> TrustedWitness:
    """Check a witness's proof of possession; return the witness to trust.

    Raises VerificationError if the name is invalid or PopVerify fails (which
    includes KeyValidate: a valid G1 point in the subgroup, not infinity).
    """
    chosen = backend or default_backend()
    if not is_valid_key_name(published.name):
        raise VerificationError(f"invalid witness name {published.name!r}")
    if not chosen.pop_verify(published.public_key, published.pop):
        raise VerificationError(
            f"proof of possession of witness {published.name!r} does not verify: "
            f"public key {published.public_key.hex()}, proof {published.pop.hex()}"
        )
    return TrustedWitness(published.name, published.public_key, published.key_id, chosen)


def cosign(body: str, witness_key: WitnessKey) -> str:
    """Return the witness's co-signature line of the checkpoint ``body``, newline included.

    Appending it to the signed note of ``body`` gives a valid signed note.
    """
    check_note_body(body)
    signature = witness_key.sign(body.encode("utf-8"))
    return format_signature_line(witness_key.name, witness_key.key_id, signature)


def verify_cosignature(body: str, line: str, witnesses: Sequence[TrustedWitness]) -> NoteSignature:
    """Verify one co-signature line of ``body`` (its newline optional); return it parsed.

    Raises VerificationError if the line is malformed, is not from exactly
    one of ``witnesses`` (name and key ID), or its signature does not verify.
    """
    # 1. Parse the line.
    signature = parse_signature_line(line.removesuffix("\n"))
    # 2. It must come from a trusted witness.
    ident = (signature.name, signature.key_id)
    matches = [w for w in witnesses if (w.name, w.key_id) == ident]
    if len(matches) != 1:
        what = "unknown" if not matches else "ambiguous"
        raise VerificationError(f"{what} witness {signature.name}+{signature.key_id:08x}")
    # 3. Its signature must verify.
    _check(body.encode("utf-8"), signature, matches[0])
    return signature


def cosignatures(note_text: str, witnesses: Sequence[TrustedWitness]) -> list[NoteSignature]:
    """Return the verified co-signatures of ``witnesses`` in a signed note, one per witness.

    Lines of other keys are skipped, as in :func:`chain.note.open_note`;
    a repeated line of a witness is checked once. The result may be empty.
    Raises VerificationError if the note is malformed or a known witness's
    co-signature does not verify. Verify the log's signature separately.
    """
    body, lines = parse_note(note_text)
    message = body.encode("utf-8")
    known = {(w.name, w.key_id): w for w in witnesses}
    found: dict[tuple[str, int], NoteSignature] = {}
    for sig in lines:
        ident = (sig.name, sig.key_id)
        if ident in known and ident not in found:
            _check(message, sig, known[ident])
            found[ident] = sig
    return list(found.values())


def _check(message: bytes, signature: NoteSignature, witness: TrustedWitness) -> None:
    """Raise VerificationError unless ``signature`` is ``witness``'s signature of ``message``."""
    if not witness.verify(message, signature.signature):
        raise VerificationError(
            f"invalid co-signature of witness {signature.name}+{signature.key_id:08x}: "
            f"{signature.signature.hex()}"
        )


def aggregate(signatures: Sequence[bytes], backend: BlsBackend | None = None) -> bytes:
    """Return the aggregate of BLS signatures (of the same body, by distinct witnesses).

    Raises VerificationError if there are none or one is not a valid G2 point.
    """
    if not signatures:
        raise VerificationError("no signatures to aggregate")
    try:
        return (backend or default_backend()).aggregate(signatures)
    except ValueError as exc:
        raise VerificationError(str(exc)) from exc


def verify_aggregate(
    body: str,
    public_keys: Sequence[bytes],
    aggregate: bytes,
    backend: BlsBackend | None = None,
) -> bool:
    """Return whether ``aggregate`` holds a signature of ``body`` by every one of ``public_keys``.

    FastAggregateVerify. Requires keys whose proof of possession was checked
    (:func:`trust_witness`). False if there are no keys or a key is listed
    twice, which would let one witness count twice towards a quorum.
    """
    if not public_keys or len(set(public_keys)) != len(public_keys):
        return False
    chosen = backend or default_backend()
    return chosen.fast_aggregate_verify(public_keys, body.encode("utf-8"), aggregate)


def _scalar(secret_key: bytes) -> int:
    """Return the secret key as an integer; raise ValueError unless 32 bytes and 0 < sk < r."""
    if not isinstance(secret_key, bytes) or len(secret_key) != SECRET_KEY_SIZE:
        raise ValueError(f"BLS secret key must be {SECRET_KEY_SIZE} bytes")
    value = int.from_bytes(secret_key, "big")
    if not 0 < value < curve_order:
        raise ValueError("BLS secret key must be in (0, r)")
    return value


def _key_shape_ok(public_key: bytes) -> bool:
    """Return whether ``public_key`` is 48 bytes and not the point at infinity."""
    return (
        isinstance(public_key, bytes)
        and len(public_key) == PUBLIC_KEY_SIZE
        and public_key != _G1_INFINITY
    )
