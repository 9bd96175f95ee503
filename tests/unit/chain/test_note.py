"""chain.note against the published vectors of golang.org/x/mod/sumdb/note and the spec.

Vectors (copied verbatim):

- PeterNeumann and EnochRoot: golang.org/x/mod ``sumdb/note/note_test.go``
  (TestSign, TestOpen, TestNewVerifier; also the package doc's example).
  Ed25519 is deterministic, so signing the text with the published signer
  key must give the published note byte for byte.
- A real checkpoint of sum.golang.org with its public verifier key, and four
  signer/verifier key pairs: transparency-dev/formats ``log/note_test.go``
  (TestSumDBNoteParsing, the logVK/logSK... variables).
"""

import base64
import hashlib

import pytest

from chain.note import (
    MAX_SIGNATURES,
    NoteSignature,
    Signer,
    Verifier,
    generate_ed25519,
    key_id,
    open_note,
    parse_note,
    sign_note,
)
from chain.verify import VerificationError

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "\u2014 EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)
PETER_NOTE = TEXT + "\n" + PETER_SIG

SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n"
    "6476701\n"
    "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n"
    "\n"
    "\u2014 sum.golang.org "
    "Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n"
)

# (signer key, verifier key) pairs of transparency-dev/formats log/note_test.go.
FORMATS_KEYS = [
    (
        "PRIVATE+KEY+Log+2271c621+AdEIq9FLRQni54Wg68T96VJO+iayOaulswav2DUMKgvQ",
        "Log+2271c621+AemuH5ooBpEPcr+W8onrjA1NfuzBVHdezakU81Ekarvs",
    ),
    (
        "PRIVATE+KEY+Known+451c786d+AQPRoE2+Z+Ed1HaHBA9F/FfracvcZ2rDU39kCecMEoci",
        "Known+451c786d+AXAQ0T7lbwuY4ABJ9/MYY9bWV3hmSyOGVt2x42NkmdUH",
    ),
    (
        "PRIVATE+KEY+KnownAgain+4893b26c+ARhZda/l25zjGZswYLDZsLNRzNpmv5wYTN9IoTr1OJ2+",
        "KnownAgain+4893b26c+AQ+LR7BFF/F/dkpIBjBpSvT0crkteizuUkavAoGeaYMj",
    ),
    (
        "PRIVATE+KEY+Unknown+fdbb2e08+Aav2knTC6orbhXX8pMWuNiWgO+Wwk2DB+h1eU2Q1W1nU",
        "Unknown+fdbb2e08+AWgRIYZ+8x1Vl+1Q+sR8zciNHiYI1SdlBjNw+RV0rots",
    ),
]


def peter() -> Verifier:
    return Verifier.from_vkey(PETER_VKEY)


def enoch() -> Verifier:
    return Verifier.from_vkey(ENOCH_VKEY)


# --- Published vectors -------------------------------------------------------


def test_signing_the_published_text_gives_the_published_note_byte_for_byte() -> None:
    assert sign_note(TEXT, [Signer.from_key(PETER_SKEY)]) == PETER_NOTE


def test_opens_the_published_note() -> None:
    body, sigs = open_note(PETER_NOTE, [peter()])
    assert body == TEXT
    assert [(s.name, s.key_id) for s in sigs] == [("PeterNeumann", 0xC74F20A3)]
    assert sigs[0].line() == PETER_SIG


def test_key_id_is_sha256_of_name_newline_type_and_key() -> None:
    public_key = base64.b64decode(PETER_VKEY.split("+", 2)[2])
    assert public_key[0] == 0x01 and len(public_key) == 33
    digest = hashlib.sha256(b"PeterNeumann\n" + public_key).digest()
    assert key_id("PeterNeumann", public_key) == int.from_bytes(digest[:4], "big") == 0xC74F20A3
    assert peter().key_id == 0xC74F20A3
    assert peter().vkey == PETER_VKEY


def test_published_signer_key_derives_the_published_verifier_key() -> None:
    signer = Signer.from_key(PETER_SKEY)
    assert signer.verifier().vkey == PETER_VKEY
    assert signer.skey == PETER_SKEY


@pytest.mark.parametrize(("skey", "vkey"), FORMATS_KEYS)
def test_formats_key_pairs_match(skey: str, vkey: str) -> None:
    # Several of these have a '+' inside the base64 key.
    assert Signer.from_key(skey).verifier().vkey == vkey
    assert Verifier.from_vkey(vkey).vkey == vkey


def test_opens_a_real_sum_golang_org_checkpoint() -> None:
    body, sigs = open_note(SUMDB_NOTE, [Verifier.from_vkey(SUMDB_VKEY)])
    assert body == "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n"
    assert [(s.name, s.key_id) for s in sigs] == [("sum.golang.org", 0x033DE0AE)]


def test_both_published_signatures_verify_when_both_keys_are_known() -> None:
    _, sigs = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter(), enoch()])
    assert [s.name for s in sigs] == ["PeterNeumann", "EnochRoot"]


# --- Unknown keys --------------------------------------------------------------


def test_skips_signature_lines_of_unknown_keys() -> None:
    body, sigs = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter()])
    assert body == TEXT
    assert [s.name for s in sigs] == ["PeterNeumann"]


def test_skips_a_line_that_shares_a_name_but_not_the_key_id() -> None:
    other_key = Signer("PeterNeumann", bytes(32))
    note = sign_note(TEXT, [other_key]) + PETER_SIG
    _, sigs = open_note(note, [peter()])
    assert [(s.name, s.key_id) for s in sigs] == [("PeterNeumann", 0xC74F20A3)]


@pytest.mark.parametrize(
    "verifiers", [[], [Verifier.from_vkey(FORMATS_KEYS[0][1])]], ids=["no keys", "other key"]
)
def test_refuses_a_note_signed_only_by_unknown_keys(verifiers: list[Verifier]) -> None:
    with pytest.raises(VerificationError, match="no verifiable signatures"):
        open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, verifiers)


def test_refuses_ambiguous_verifiers_for_a_used_key() -> None:
    with pytest.raises(VerificationError, match="ambiguous key EnochRoot\\+af0cfe78"):
        open_note(TEXT + "\n" + ENOCH_SIG, [enoch(), peter(), enoch()])
    # Unused duplicates do not matter, as in x/mod.
    open_note(TEXT + "\n" + PETER_SIG, [enoch(), peter(), enoch()])


def test_repeated_lines_of_one_key_count_once() -> None:
    _, sigs = open_note(TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG, [peter()])
    assert len(sigs) == 1


# --- Tampering ----------------------------------------------------------------


@pytest.mark.parametrize("position", range(len(TEXT)))
def test_changing_any_byte_of_the_body_fails(position: int) -> None:
    body = TEXT.encode()
    tampered = body[:position] + bytes([body[position] ^ 0x01]) + body[position + 1 :]
    with pytest.raises(VerificationError):
        open_note(tampered.decode() + "\n" + PETER_SIG, [peter()])


@pytest.mark.parametrize("position", range(4 + 64))
def test_changing_any_byte_of_the_signature_fails(position: int) -> None:
    blob = bytearray(base64.b64decode(PETER_SIG.split()[-1]))
    blob[position] ^= 0x01
    line = f"\u2014 PeterNeumann {base64.b64encode(blob).decode()}\n"
    # A changed key ID makes the line an unknown key's, so nothing verifies.
    with pytest.raises(VerificationError):
        open_note(TEXT + "\n" + line, [peter()])


def test_a_bad_signature_from_a_known_key_fails_the_whole_note() -> None:
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]  # From x/mod TestOpen.
    with pytest.raises(
        VerificationError, match="invalid signature for key PeterNeumann\\+c74f20a3"
    ):
        open_note(TEXT + "\n" + bad, [peter()])
    with pytest.raises(VerificationError, match="invalid signature"):
        open_note(TEXT + "\n" + ENOCH_SIG + bad, [peter(), enoch()])


# --- Malformed notes (x/mod TestOpen badMsgs and more) ----------------------------


@pytest.mark.parametrize(
    ("desc", "note"),
    [
        ("text only", TEXT),
        ("no signature after the blank line", TEXT + "\n"),
        ("no final newline", TEXT + "\n" + PETER_SIG[:-1]),
        ("control character", "\x01" + TEXT + "\n" + PETER_SIG),
        ("carriage return", TEXT.replace("\n", "\r\n", 1) + "\n" + PETER_SIG),
        ("lone surrogate", "\udcff" + TEXT + "\n" + PETER_SIG),
        ("space in the name", TEXT + "\n\u2014 Bad Name " + PETER_SIG.split()[-1] + "\n"),
        ("plus in the name", TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Peter+Neumann")),
        ("line after the signatures", TEXT + "\n" + PETER_SIG + "Unexpected line.\n"),
        ("hyphen instead of em dash", TEXT + "\n" + PETER_SIG.replace("\u2014", "-")),
        ("unpadded base64", TEXT + "\n" + PETER_SIG.replace("=\n", "\n")),
        ("signature too short", TEXT + "\n\u2014 PeterNeumann AAAAAA==\n"),
        ("too many signatures", TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1)),
    ],
)
def test_refuses_malformed_notes(desc: str, note: str) -> None:
    with pytest.raises(VerificationError, match="malformed note"):
        open_note(note, [peter()])


def test_accepts_up_to_max_signatures() -> None:
    _, sigs = open_note(TEXT + "\n" + PETER_SIG * MAX_SIGNATURES, [peter()])
    assert len(sigs) == 1


def test_the_text_is_split_at_the_last_blank_line() -> None:
    text = "one\n\ntwo\n"
    note = sign_note(text, [Signer.from_key(PETER_SKEY)])
    body, _ = open_note(note, [peter()])
    assert body == text


def test_parse_note_verifies_nothing() -> None:
    body, sigs = parse_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG)
    assert body == TEXT
    assert sigs[1] == NoteSignature(
        "EnochRoot", 0xAF0CFE78, base64.b64decode(ENOCH_SIG.split()[-1])[4:]
    )


# --- Keys -------------------------------------------------------------------------


def _manglings(key: str) -> list[str]:
    """Every proper substring and every one-character increment (x/mod TestNewVerifier)."""
    subs = [key[i:j] for i in range(len(key)) for j in range(i + 1, len(key) + 1)]
    bumps = [key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :] for i in range(len(key))]
    return [k for k in subs + bumps if k != key]


def test_refuses_every_mangled_verifier_key() -> None:
    accepted = []
    for mangled in _manglings(PETER_VKEY):
        try:
            Verifier.from_vkey(mangled)
        except ValueError:
            continue
        accepted.append(mangled)
    assert accepted == []


def test_refuses_every_mangled_signer_key() -> None:
    accepted = []
    for mangled in _manglings(PETER_SKEY):
        try:
            Signer.from_key(mangled)
        except ValueError:
            continue
        accepted.append(mangled)
    assert accepted == []


@pytest.mark.parametrize(
    "vkey",
    [
        # From x/mod TestNewVerifier: wrong key length / unknown algorithm, key ID adjusted.
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+0xc74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_refuses_other_key_types_and_lengths(vkey: str) -> None:
    with pytest.raises(ValueError):
        Verifier.from_vkey(vkey)


def test_generated_keys_sign_and_verify() -> None:
    skey, vkey = generate_ed25519("example.com/log")
    assert skey.startswith("PRIVATE+KEY+example.com/log+")
    signer, verifier = Signer.from_key(skey), Verifier.from_vkey(vkey)
    assert (signer.name, signer.key_id) == (verifier.name, verifier.key_id)
    body, sigs = open_note(sign_note("hello\n", [signer]), [verifier])
    assert body == "hello\n" and len(sigs) == 1
    assert "PRIVATE" not in repr(signer)


def test_two_signers_give_two_lines_in_order() -> None:
    log, other = Signer.from_key(PETER_SKEY), Signer.from_key(FORMATS_KEYS[0][0])
    note = sign_note(TEXT, [log, other])
    _, sigs = open_note(note, [peter(), other.verifier()])
    assert [s.name for s in sigs] == ["PeterNeumann", "Log"]


@pytest.mark.parametrize(
    ("body", "signers"),
    [
        ("no final newline", [Signer.from_key(PETER_SKEY)]),
        ("tab\there\n", [Signer.from_key(PETER_SKEY)]),
        ("no signers\n", []),
    ],
)
def test_sign_note_refuses_bad_input(body: str, signers: list[Signer]) -> None:
    with pytest.raises(ValueError):
        sign_note(body, signers)


def test_refuses_a_bad_signer_name() -> None:
    with pytest.raises(ValueError, match="invalid key name"):
        Signer("bad name", bytes(32))
