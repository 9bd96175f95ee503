"""chain.bls: witness co-signatures, the two BLS backends proven byte-identical.

Vectors:

- Secret keys, messages and signatures of the Ethereum consensus BLS tests,
  which use this very ciphersuite (BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_):
  ethereum/bls12-381-tests ``main.py`` PRIVKEYS and the generated cases
  ``sign/sign_case_c82df61aa3ee60fb``, ``sign_case_d0e28d7e76eb6e9c``'s key's
  public key, ``sign_case_8cd3d4d0d9a5b265`` and ``sign_case_b23c...``.
- ``G1_wrong_order`` / ``G2_wrong_order`` of the same ``main.py``: points on
  the curve but outside the prime-order subgroup, compressed here.

py-ecc needs ~0.1 s to sign and ~0.3 s to verify, so its results are
computed once per module, and the tests that make py-ecc sign or verify are
marked ``slow`` (deselect with ``-m "not slow"``). The whole file runs in seconds.
"""

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from py_ecc.bls.ciphersuites import G2ProofOfPossession
from py_ecc.optimized_bls12_381.optimized_curve import curve_order

from chain.bls import (
    ALG_BLS,
    BlsBackend,
    BlspyBackend,
    PyEccBackend,
    TrustedWitness,
    WitnessKey,
    WitnessPublicKey,
    aggregate,
    cosign,
    cosignatures,
    default_backend,
    generate_secret_key,
    trust_witness,
    verify_aggregate,
    verify_cosignature,
    witness_key_id,
)
from chain.checkpoint import Checkpoint
from chain.note import Signer, open_note, parse_signature_line, sign_note
from chain.verify import VerificationError

slow = pytest.mark.slow

try:
    BLSPY: BlspyBackend | None = BlspyBackend()
except ImportError:
    BLSPY = None
needs_blspy = pytest.mark.skipif(BLSPY is None, reason="blspy is not installed")
PYECC = PyEccBackend()


def blspy() -> BlspyBackend:
    assert BLSPY is not None
    return BLSPY


def h(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


# ethereum/bls12-381-tests main.py PRIVKEYS[0:3], plus the extremes 1 and r - 1.
ETH_SK = [
    h("263dbd792f5b1be47ed85f8938c0f29586af0d3ac7b977f21c278fe1462040e3"),
    h("47b8192d77bf871b62e87859d653922725724a5c031afeabc60bcef5ff665138"),
    h("328388aff0d4a5b7dc9205abd374e7e98f3cd9f3418edb4eafda5fb16473d216"),
]
SECRET_KEYS = [*ETH_SK, (1).to_bytes(32, "big"), (curve_order - 1).to_bytes(32, "big")]
KEY_IDS = ["eth0", "eth1", "eth2", "one", "r-1"]

# (secret key, message, signature) of generated eth2 sign cases.
ETH_SIGN_CASES = [
    (
        ETH_SK[0],
        bytes(32),
        h(
            "b6ed936746e01f8ecf281f020953fbf1f01debd5657c4a383940b020b26507f6076334f91e2366c96e9ab279fb5158090352ea1c5b0c9274504f4f0e7053af24802e51e4568d164fe986834f41e55c8e850ce1f98458c0cfc9ab380b55285a55"
        ),
    ),
    (
        ETH_SK[1],
        bytes(32),
        h(
            "b23c46be3a001c63ca711f87a005c200cc550b9429d5f4eb38d74322144f1b63926da3388979e5321012fb1a0526bcd100b5ef5fe72628ce4cd5e904aeaa3279527843fae5ca9ca675f4f51ed8f83bbf7155da9ecc9663100a885d5dc6df96d9"
        ),
    ),
    (
        ETH_SK[2],
        bytes([0x56] * 32),
        h(
            "a4efa926610b8bd1c8330c918b7a5e9bf374e53435ef8b7ec186abf62e1b1f65aeaaeb365677ac1d1172a1f5b44b4e6d022c252c58486c0a759fbdc7de15a756acc4d343064035667a594b4c2a6f0b0b421975977f297dba63ee2f63ffe47bb6"
        ),
    ),
]
ETH_PK0 = h(
    "a491d1b0ecd9bb917989f0e74f0dea0422eac4a873e5e2644f368dffb9a6e20fd6e10c1b77654d067c0618f6e5a7f79a"
)
# SkToPk(1) is the compressed G1 generator.
G1_GENERATOR = h(
    "97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb"
)
G1_WRONG_ORDER = h(
    "a123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)
G2_WRONG_ORDER = h(
    "984e811f55e6f9d84d77d2f79102fd7ea7422f4759df5bf7f6331d550245e3f1bcf6a30e3b29110d85e0ca16f9f6ae7a"
    "197bfd0342bbc8bee2beced2f173e1a87be576379b343e93232d6cef98d84b1d696e5612ff283ce2cfdccb2cfb65fa0c"
)
G1_INFINITY = bytes([0xC0]) + bytes(47)
G2_INFINITY = bytes([0xC0]) + bytes(95)

BODY = Checkpoint(
    "example.com/dataledger", 1234, hashlib.sha256(b"root").digest(), ("time 2025-01-02T03:04:05Z",)
).marshal()
MESSAGE = BODY.encode()


@dataclass(frozen=True)
class Outputs:
    """What one backend computes for one secret key over MESSAGE."""

    public_key: bytes
    signature: bytes
    pop: bytes


def compute(backend: BlsBackend, secret_key: bytes) -> Outputs:
    return Outputs(
        backend.sk_to_pk(secret_key),
        backend.sign(secret_key, MESSAGE),
        backend.pop_prove(secret_key),
    )


@pytest.fixture(scope="module")
def pyecc_outputs() -> list[Outputs]:
    """py-ecc's outputs for every key, computed once (~1.2 s)."""
    return [compute(PYECC, sk) for sk in SECRET_KEYS]


@pytest.fixture(scope="module")
def witnesses() -> list[WitnessKey]:
    """Three witnesses with fixed secret keys, on the default backend."""
    return [WitnessKey(f"witness{i}.example", sk) for i, sk in enumerate(ETH_SK)]


@pytest.fixture(scope="module")
def trusted(witnesses: list[WitnessKey]) -> list[TrustedWitness]:
    return [trust_witness(w.published()) for w in witnesses]


# --- The published vectors ------------------------------------------------------


@pytest.mark.parametrize(
    "backend",
    [pytest.param(PYECC, id="py-ecc", marks=slow),
     pytest.param(BLSPY, id="blspy", marks=needs_blspy)],
)
def test_backends_reproduce_the_eth2_sign_vectors(backend: BlsBackend) -> None:
    assert backend.sk_to_pk(ETH_SK[0]) == ETH_PK0
    assert backend.sk_to_pk((1).to_bytes(32, "big")) == G1_GENERATOR
    for secret_key, message, signature in ETH_SIGN_CASES:
        assert backend.sign(secret_key, message) == signature


# --- Byte identity of the backends --------------------------------------------------


@slow
@needs_blspy
@pytest.mark.parametrize("index", range(len(SECRET_KEYS)), ids=KEY_IDS)
def test_backends_are_byte_identical(index: int, pyecc_outputs: list[Outputs]) -> None:
    assert compute(blspy(), SECRET_KEYS[index]) == pyecc_outputs[index]


@slow
@needs_blspy
@pytest.mark.parametrize("index", range(len(SECRET_KEYS)), ids=KEY_IDS)
def test_blspy_verifies_py_ecc_output(index: int, pyecc_outputs: list[Outputs]) -> None:
    out = pyecc_outputs[index]
    assert blspy().verify(out.public_key, MESSAGE, out.signature)
    assert blspy().pop_verify(out.public_key, out.pop)
    assert not blspy().verify(out.public_key, MESSAGE + b"x", out.signature)


@slow
@needs_blspy
@pytest.mark.parametrize("index", [0, 3, 4], ids=["eth0", "one", "r-1"])
def test_py_ecc_verifies_blspy_output(index: int) -> None:
    out = compute(blspy(), SECRET_KEYS[index])
    assert PYECC.verify(out.public_key, MESSAGE, out.signature)
    assert PYECC.pop_verify(out.public_key, out.pop)


@slow
@needs_blspy
def test_aggregates_are_byte_identical(pyecc_outputs: list[Outputs]) -> None:
    signatures = [out.signature for out in pyecc_outputs]
    for n in (1, 2, len(signatures)):
        assert PYECC.aggregate(signatures[:n]) == blspy().aggregate(signatures[:n])
    # Order does not matter: the aggregate is a sum.
    assert blspy().aggregate(signatures[::-1]) == PYECC.aggregate(signatures)


@slow
@needs_blspy
def test_each_backend_verifies_the_others_aggregate(pyecc_outputs: list[Outputs]) -> None:
    keys = [out.public_key for out in pyecc_outputs[:3]]
    signatures = [out.signature for out in pyecc_outputs[:3]]
    assert PYECC.fast_aggregate_verify(keys, MESSAGE, blspy().aggregate(signatures))
    assert blspy().fast_aggregate_verify(keys, MESSAGE, PYECC.aggregate(signatures))


def test_key_generation_is_ietf_keygen_not_blspy_key_gen() -> None:
    ikm = bytes(range(32))
    secret_key = generate_secret_key(ikm)
    assert int.from_bytes(secret_key, "big") == G2ProofOfPossession.KeyGen(ikm)
    if BLSPY is not None:
        import blspy as blspy_module  # type: ignore[import-not-found, import-untyped, unused-ignore]

        # The surprise this module guards against: same seed, different key.
        assert bytes(blspy_module.PopSchemeMPL.key_gen(ikm)) != secret_key
    assert generate_secret_key() != generate_secret_key()
    with pytest.raises(ValueError):
        generate_secret_key(bytes(31))


BACKENDS = [pytest.param(PYECC, id="py-ecc"), pytest.param(BLSPY, id="blspy", marks=needs_blspy)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "secret_key",
    [bytes(32), curve_order.to_bytes(32, "big"), bytes([0xFF]) * 32, bytes([1]) * 31, b""],
    ids=["zero", "r", "2**256-1", "31 bytes", "empty"],
)
def test_backends_refuse_secret_keys_outside_the_group(
    backend: BlsBackend, secret_key: bytes
) -> None:
    with pytest.raises(ValueError):
        backend.sk_to_pk(secret_key)
    with pytest.raises(ValueError):
        backend.sign(secret_key, MESSAGE)


@pytest.mark.parametrize(
    "backend", [pytest.param(PYECC, id="py-ecc", marks=slow), *BACKENDS[1:]])
def test_backends_refuse_points_outside_the_subgroup(backend: BlsBackend) -> None:
    secret_key = ETH_SK[0]
    signature = (BLSPY or PYECC).sign(secret_key, MESSAGE)
    assert not backend.pop_verify(G1_WRONG_ORDER, signature)
    assert not backend.pop_verify(G1_INFINITY, G2_INFINITY)
    assert not backend.fast_aggregate_verify([G1_WRONG_ORDER], MESSAGE, signature)
    assert not backend.verify(ETH_PK0, MESSAGE, G2_WRONG_ORDER)
    assert not backend.verify(ETH_PK0, MESSAGE, G2_INFINITY)
    assert not backend.verify(ETH_PK0[:47], MESSAGE, signature)
    assert not backend.fast_aggregate_verify([], MESSAGE, signature)
    for bad in ([signature, G2_WRONG_ORDER], [signature[:95]], []):
        with pytest.raises(ValueError):
            backend.aggregate(bad)


def test_default_backend_prefers_blspy() -> None:
    assert default_backend().name == ("blspy" if BLSPY is not None else "py-ecc")


# --- Proof of possession -------------------------------------------------------------


def test_trusts_a_witness_with_a_valid_proof(witnesses: list[WitnessKey]) -> None:
    published = witnesses[0].published()
    witness = trust_witness(published)
    assert (witness.name, witness.public_key) == (published.name, published.public_key)
    assert witness.key_id == published.key_id == witnesses[0].key_id


def test_refuses_a_proof_of_another_key(witnesses: list[WitnessKey]) -> None:
    mine, other = witnesses[0].published(), witnesses[1].published()
    with pytest.raises(VerificationError, match="proof of possession") as info:
        trust_witness(WitnessPublicKey(mine.name, mine.public_key, other.pop))
    assert mine.public_key.hex() in str(info.value)


def test_a_message_signature_of_the_key_is_no_proof(witnesses: list[WitnessKey]) -> None:
    # PopProve signs the public key under its own domain tag; Sign must not pass for it.
    key = witnesses[0]
    forged = WitnessPublicKey(key.name, key.public_key, key.sign(key.public_key))
    with pytest.raises(VerificationError):
        trust_witness(forged)


@pytest.mark.parametrize(
    ("public_key", "proof"),
    [(G1_WRONG_ORDER, G2_INFINITY), (G1_INFINITY, G2_INFINITY), (ETH_PK0, G2_WRONG_ORDER)],
    ids=["key outside subgroup", "infinity", "proof outside subgroup"],
)
def test_refuses_invalid_points_as_witness_keys(public_key: bytes, proof: bytes) -> None:
    with pytest.raises(VerificationError):
        trust_witness(WitnessPublicKey("w.example", public_key, proof))


@slow
def test_py_ecc_checks_proofs_too(witnesses: list[WitnessKey]) -> None:
    published = witnesses[2].published()
    assert trust_witness(published, PYECC).backend is PYECC
    with pytest.raises(VerificationError):
        trust_witness(WitnessPublicKey(published.name, published.public_key, G2_INFINITY), PYECC)


def test_published_witness_keys_round_trip_as_text(witnesses: list[WitnessKey]) -> None:
    published = witnesses[0].published()
    text = published.encode()
    assert text.startswith(f"witness0.example+{published.key_id:08x}+")
    assert WitnessPublicKey.parse(text) == published


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace("witness0.example", "witness1.example"),  # Key ID no longer matches.
        lambda t: t[:-4],
        lambda t: t.split("+", 1)[1],
        lambda t: "bad name" + t[t.index("+") :],
    ],
    ids=["renamed", "truncated", "no name", "space in name"],
)
def test_refuses_malformed_witness_key_text(
    mangle: Callable[[str], str], witnesses: list[WitnessKey]
) -> None:
    with pytest.raises(VerificationError):
        WitnessPublicKey.parse(mangle(witnesses[0].published().encode()))


# --- Co-signature lines ------------------------------------------------------------------


def test_cosignature_line_format_and_key_id(witnesses: list[WitnessKey]) -> None:
    witness = witnesses[0]
    line = cosign(BODY, witness)
    name, blob64 = line.removeprefix("\u2014 ").removesuffix("\n").split(" ")
    blob = base64.b64decode(blob64)
    digest = hashlib.sha256(b"witness0.example\n" + bytes([0xB1]) + witness.public_key).digest()
    assert ALG_BLS == 0xB1
    assert name == "witness0.example"
    assert blob[:4] == digest[:4]
    assert int.from_bytes(digest[:4], "big") == witness_key_id(name, witness.public_key)
    assert len(blob) == 4 + 96
    assert blob[4:] == witness.sign(MESSAGE)


def test_verifies_a_cosignature(witnesses: list[WitnessKey], trusted: list[TrustedWitness]) -> None:
    line = cosign(BODY, witnesses[1])
    signature = verify_cosignature(BODY, line, trusted)
    assert (signature.name, signature.key_id) == (witnesses[1].name, witnesses[1].key_id)
    assert verify_cosignature(BODY, line.rstrip("\n"), trusted) == signature


def test_refuses_a_cosignature_of_another_body(
    witnesses: list[WitnessKey], trusted: list[TrustedWitness]
) -> None:
    line = cosign(BODY, witnesses[0])
    other = BODY.replace("1234", "1235")
    with pytest.raises(VerificationError, match="invalid co-signature of witness witness0"):
        verify_cosignature(other, line, trusted)


def test_refuses_a_cosignature_of_an_unknown_witness(
    witnesses: list[WitnessKey], trusted: list[TrustedWitness]
) -> None:
    stranger = WitnessKey("witness0.example", (7).to_bytes(32, "big"))  # Same name, other key.
    with pytest.raises(VerificationError, match="unknown witness witness0.example"):
        verify_cosignature(BODY, cosign(BODY, stranger), trusted)


def test_refuses_a_tampered_cosignature(
    witnesses: list[WitnessKey], trusted: list[TrustedWitness]
) -> None:
    parsed = parse_signature_line(cosign(BODY, witnesses[0]).rstrip("\n"))
    flipped = bytearray(parsed.signature)
    flipped[50] ^= 0x01
    line = type(parsed)(parsed.name, parsed.key_id, bytes(flipped)).line()
    with pytest.raises(VerificationError):
        verify_cosignature(BODY, line, trusted)


def test_ed25519_verifiers_skip_cosignature_lines(witnesses: list[WitnessKey]) -> None:
    log = Signer("example.com/dataledger", bytes(range(32)))
    note = sign_note(BODY, [log]) + "".join(cosign(BODY, w) for w in witnesses)
    body, sigs = open_note(note, [log.verifier()])
    assert body == BODY
    assert [s.name for s in sigs] == ["example.com/dataledger"]


def test_open_note_verifies_cosignatures_through_trusted_witnesses(
    witnesses: list[WitnessKey], trusted: list[TrustedWitness]
) -> None:
    log = Signer("example.com/dataledger", bytes(range(32)))
    note = sign_note(BODY, [log]) + "".join(cosign(BODY, w) for w in witnesses)
    _, sigs = open_note(note, [log.verifier(), *trusted])
    assert len(sigs) == 4
    bad = note.replace(cosign(BODY, witnesses[2]), cosign(BODY + "x\n", witnesses[2]))
    with pytest.raises(VerificationError, match="invalid signature for key witness2"):
        open_note(bad, [log.verifier(), *trusted])


def test_collects_the_cosignatures_of_known_witnesses(
    witnesses: list[WitnessKey], trusted: list[TrustedWitness]
) -> None:
    log = Signer("example.com/dataledger", bytes(range(32)))
    stranger = WitnessKey("stranger.example", (7).to_bytes(32, "big"))
    lines = [cosign(BODY, w) for w in (witnesses[0], stranger, witnesses[2], witnesses[0])]
    note = sign_note(BODY, [log]) + "".join(lines)
    found = cosignatures(note, trusted)
    assert [s.name for s in found] == ["witness0.example", "witness2.example"]
    assert cosignatures(sign_note(BODY, [log]), trusted) == []


# --- Aggregation -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed(witnesses: list[WitnessKey]) -> tuple[list[bytes], list[bytes]]:
    """The witnesses' public keys and their signatures of BODY."""
    return [w.public_key for w in witnesses], [w.sign(MESSAGE) for w in witnesses]


def test_verifies_an_aggregate_of_all_witnesses(signed: tuple[list[bytes], list[bytes]]) -> None:
    keys, signatures = signed
    assert verify_aggregate(BODY, keys, aggregate(signatures))
    assert verify_aggregate(BODY, keys[::-1], aggregate(signatures))


def test_an_aggregate_missing_a_signer_fails(signed: tuple[list[bytes], list[bytes]]) -> None:
    keys, signatures = signed
    assert not verify_aggregate(BODY, keys, aggregate(signatures[:2]))
    assert verify_aggregate(BODY, keys[:2], aggregate(signatures[:2]))


def test_an_aggregate_of_another_body_fails(signed: tuple[list[bytes], list[bytes]]) -> None:
    keys, signatures = signed
    assert not verify_aggregate(BODY.replace("1234", "1235"), keys, aggregate(signatures))


def test_a_key_listed_twice_fails(signed: tuple[list[bytes], list[bytes]]) -> None:
    keys, signatures = signed
    doubled = aggregate([signatures[0], signatures[0]])
    assert not verify_aggregate(BODY, [keys[0], keys[0]], doubled)
    assert not verify_aggregate(BODY, [], doubled)


def test_aggregate_refuses_nothing_and_garbage(signed: tuple[list[bytes], list[bytes]]) -> None:
    with pytest.raises(VerificationError):
        aggregate([])
    with pytest.raises(VerificationError):
        aggregate([signed[1][0], G2_WRONG_ORDER])


@slow
def test_py_ecc_aggregate_checks(signed: tuple[list[bytes], list[bytes]]) -> None:
    keys, signatures = signed
    assert verify_aggregate(BODY, keys, aggregate(signatures, PYECC), PYECC)
    assert not verify_aggregate(BODY, keys, aggregate(signatures[:2], PYECC), PYECC)
    assert not verify_aggregate(BODY + "x\n", keys, aggregate(signatures, PYECC), PYECC)


def test_witness_keys_keep_their_secret(witnesses: list[WitnessKey]) -> None:
    assert witnesses[0].secret_key.hex() not in repr(witnesses[0])
    with pytest.raises(ValueError):
        WitnessKey("bad name", ETH_SK[0])
    with pytest.raises(ValueError):
        WitnessKey("w.example", bytes(32))
