"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys.

A port of golang.org/x/mod ``sumdb/note``. A signed note is a text ending in
a newline, a blank line, then one or more signature lines::

    — <key name> <base64(4-byte key ID || signature)>\\n

The key ID is the first four bytes (big-endian) of SHA-256(key name || "\\n"
|| signature type byte || public key); for Ed25519 the type byte is 0x01 and
the signature is Ed25519 over the UTF-8 bytes of the text. Keys are exchanged
in the x/mod formats: a verifier key ``<name>+<hex key ID>+<base64(0x01 ||
public key)>`` and a signer key ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01
|| 32-byte seed)>``.

:func:`open_note` verifies like the reference ``note.Open``: signature lines
from unknown keys (name and key ID not both known) are skipped, a bad
signature from a known key fails the whole note, and a note that no known
key signed fails. Any signer and verifier that follow :class:`NoteSigner` /
:class:`NoteVerifier` can take part, so :mod:`chain.bls` witness keys sign
and verify through the same functions.
"""

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from chain.verify import VerificationError

ALG_ED25519: Final = 0x01
"""Signature type byte of Ed25519 note signatures."""

SIGNATURE_PREFIX: Final = "\u2014 "
"""Every signature line starts with an em dash (U+2014) and a space."""

MAX_SIGNATURES: Final = 100
"""More signature lines than this make a note malformed (as in x/mod; C2SP asks for >= 16)."""

_ED25519_KEY_SIZE: Final = 32
_HEX_KEY_ID = re.compile(r"[0-9a-fA-F]{8}")


class NoteSigner(Protocol):
    """A key that signs note texts: its name, its key ID and its signing function."""

    @property
    def name(self) -> str:
        """The key name written in the signature line."""
        ...

    @property
    def key_id(self) -> int:
        """The 32-bit key ID written before the signature."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Return the signature of ``message`` (without the key ID)."""
        ...


class NoteVerifier(Protocol):
    """A known public key: the (name, key ID) it answers to and its verifying function."""

    @property
    def name(self) -> str:
        """The key name of the signature lines it verifies."""
        ...

    @property
    def key_id(self) -> int:
        """The 32-bit key ID of the signature lines it verifies."""
        ...

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` (without the key ID) is valid for ``message``."""
        ...


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note: key name, key ID and the raw signature bytes."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """Return the signature line, newline included."""
        return format_signature_line(self.name, self.key_id, self.signature)


def key_id(name: str, type_and_key: bytes) -> int:
    """Return the key ID of ``name`` with ``type_and_key`` (type byte || public key).

    That is the first four bytes, big-endian, of SHA-256(name || "\\n" ||
    type_and_key).
    """
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + type_and_key).digest()
    return int.from_bytes(digest[:4], "big")


def is_valid_key_name(name: str) -> bool:
    """Return whether ``name`` is a valid key name: non-empty, no Unicode spaces, no '+'."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def format_signature_line(name: str, key_id: int, signature: bytes) -> str:
    """Return the signature line ``— <name> <base64(key ID || signature)>\\n``.

    Requires a valid key name and 0 <= key_id < 2**32.
    """
    if not is_valid_key_name(name):
        raise ValueError(f"invalid key name {name!r}")
    blob = key_id.to_bytes(4, "big") + signature
    return f"{SIGNATURE_PREFIX}{name} {base64.b64encode(blob).decode('ascii')}\n"


class NamedKey:
    """A key as notes name it: its key name, its key ID and its public key.

    The key ID is SHA-256(name || "\\n" || signature type byte || public key)[:4]
    (:func:`key_id`); Ed25519 note keys and BLS witness keys both are one.
    """

    def __init__(self, name: str, key_id: int, public_key: bytes) -> None:
        """Name the key; the caller has checked ``name`` and computed ``key_id``."""
        self._name = name
        self._key_id = key_id
        self._public_key = public_key

    @property
    def name(self) -> str:
        """The key name of its signature lines."""
        return self._name

    @property
    def key_id(self) -> int:
        """The 32-bit key ID of its signature lines."""
        return self._key_id

    @property
    def public_key(self) -> bytes:
        """The raw public key (32 bytes for Ed25519, 48 for BLS)."""
        return self._public_key


class Verifier(NamedKey):
    """An Ed25519 note verifier: a key name and a 32-byte Ed25519 public key."""

    def __init__(self, name: str, public_key: bytes) -> None:
        """Create the verifier of ``name`` for the raw 32-byte ``public_key``."""
        if not is_valid_key_name(name):
            raise ValueError(f"invalid key name {name!r}")
        if len(public_key) != _ED25519_KEY_SIZE:
            raise ValueError(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")
        super().__init__(name, key_id(name, bytes([ALG_ED25519]) + public_key), public_key)
        self._key = Ed25519PublicKey.from_public_bytes(public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> "Verifier":
        """Parse a verifier key ``<name>+<hex key ID>+<base64(0x01 || public key)>``.

        Raises ValueError if it is malformed, not Ed25519, or its key ID does
        not match its name and key.
        """
        name, rest = _chop(vkey)
        hex_id, key64 = _chop(rest)
        key = _decode_key(vkey, name, hex_id, key64)
        verifier = cls(name, key)
        if verifier.key_id != int(hex_id, 16):
            raise ValueError(f"verifier key {vkey!r}: key ID {hex_id} does not match the key")
        return verifier

    @property
    def vkey(self) -> str:
        """The verifier key string ``<name>+<hex key ID>+<base64(0x01 || public key)>``."""
        blob = base64.b64encode(bytes([ALG_ED25519]) + self._public_key).decode("ascii")
        return f"{self._name}+{self._key_id:08x}+{blob}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is a valid Ed25519 signature of ``message``."""
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        """Show the verifier key."""
        return f"Verifier({self.vkey!r})"


class Signer:
    """An Ed25519 note signer: a key name and a 32-byte Ed25519 private key seed."""

    def __init__(self, name: str, seed: bytes) -> None:
        """Create the signer of ``name`` from the 32-byte Ed25519 private key ``seed``."""
        if len(seed) != _ED25519_KEY_SIZE:
            raise ValueError(f"Ed25519 seed must be 32 bytes, got {len(seed)}")
        self._seed = seed
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._verifier = Verifier(name, self._key.public_key().public_bytes_raw())

    @classmethod
    def from_key(cls, skey: str) -> "Signer":
        """Parse a signer key ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>``.

        Raises ValueError if it is malformed, not Ed25519, or its key ID does
        not match the public key derived from the seed.
        """
        private, rest = _chop(skey)
        key_word, rest = _chop(rest)
        name, rest = _chop(rest)
        hex_id, key64 = _chop(rest)
        if (private, key_word) != ("PRIVATE", "KEY"):
            raise ValueError("signer key must start with PRIVATE+KEY+")
        seed = _decode_key("signer key", name, hex_id, key64)
        signer = cls(name, seed)
        if signer.key_id != int(hex_id, 16):
            raise ValueError(f"signer key of {name!r}: key ID {hex_id} does not match the key")
        return signer

    @property
    def name(self) -> str:
        """The key name."""
        return self._verifier.name

    @property
    def key_id(self) -> int:
        """The key ID of the matching public key."""
        return self._verifier.key_id

    @property
    def skey(self) -> str:
        """The signer key string ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>``."""
        blob = base64.b64encode(bytes([ALG_ED25519]) + self._seed).decode("ascii")
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{blob}"

    def verifier(self) -> Verifier:
        """Return the matching verifier."""
        return self._verifier

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(message)

    def __repr__(self) -> str:
        """Show the public side only."""
        return f"Signer({self._verifier.vkey!r})"


def generate_ed25519(name: str) -> tuple[str, str]:
    """Generate a fresh Ed25519 key for ``name``; return (signer key, verifier key) strings."""
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    signer = Signer(name, seed)
    return signer.skey, signer.verifier().vkey


def sign_note(body: str, signers: Sequence[NoteSigner]) -> str:
    """Return the signed note: ``body``, a blank line, one signature line per signer.

    Requires a body that ends in a newline and has no control characters
    other than newlines, and at least one signer with a valid key name.
    Raises ValueError otherwise.
    """
    check_note_body(body)
    if not signers:
        raise ValueError("a signed note needs at least one signer")
    message = body.encode("utf-8")
    lines = [format_signature_line(s.name, s.key_id, s.sign(message)) for s in signers]
    return body + "\n" + "".join(lines)


def check_note_body(body: str) -> None:
    """Raise ValueError unless ``body`` can be a note text.

    It must end in a newline and contain no control characters other than
    newlines (and so be encodable as UTF-8).
    """
    if not body.endswith("\n"):
        raise ValueError("note text must end with a newline")
    if _has_control_chars(body):
        raise ValueError("note text has a control character other than newline")


def parse_note(text: str) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and its signature lines, verifying nothing.

    Returns (body, signatures), the body with its final newline. Raises
    VerificationError if the note is malformed: control characters, no blank
    line before the signatures, no signature, a line that is not a
    signature line, a bad key name or base64, or more than MAX_SIGNATURES.
    """
    # 1. Valid UTF-8 with no control characters other than newline.
    if _has_control_chars(text):
        raise VerificationError("malformed note: control character or invalid UTF-8")
    # 2. The signatures follow the last blank line and end with a newline.
    split = text.rfind("\n\n")
    if split < 0:
        raise VerificationError("malformed note: no blank line before the signatures")
    body, block = text[: split + 1], text[split + 2 :]
    if not block.endswith("\n"):
        raise VerificationError("malformed note: no signature, or no final newline")
    # 3. Every remaining line is a signature line.
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise VerificationError(
            f"malformed note: {len(lines)} signature lines, more than {MAX_SIGNATURES}"
        )
    return body, [parse_signature_line(line) for line in lines]


def open_note(text: str, verifiers: Sequence[NoteVerifier]) -> tuple[str, list[NoteSignature]]:
    """Verify a signed note against the known keys; return (body, verified signatures).

    Lines whose (name, key ID) is not a known key are skipped, as the spec
    requires; a repeated line of one known key is checked once. Raises
    VerificationError if the note is malformed, two verifiers share a name
    and key ID, a known key's signature does not verify, or no known key
    signed the note.
    """
    # 1. Parse; reject malformed notes before any cryptography.
    body, signatures = parse_note(text)
    message = body.encode("utf-8")
    # 2. Verify every line of a known key; skip the others.
    known = _index_verifiers(verifiers)
    verified: list[NoteSignature] = []
    seen: set[tuple[str, int]] = set()
    for sig in signatures:
        ident = (sig.name, sig.key_id)
        candidates = known.get(ident)
        if candidates is None or ident in seen:
            continue
        if len(candidates) > 1:
            raise VerificationError(f"ambiguous key {sig.name}+{sig.key_id:08x}")
        seen.add(ident)
        if not candidates[0].verify(message, sig.signature):
            raise VerificationError(f"invalid signature for key {sig.name}+{sig.key_id:08x}")
        verified.append(sig)
    # 3. At least one known key must have signed.
    if not verified:
        names = ", ".join(f"{s.name}+{s.key_id:08x}" for s in signatures)
        raise VerificationError(f"note has no verifiable signatures (signed by: {names})")
    return body, verified


def _index_verifiers(
    verifiers: Sequence[NoteVerifier],
) -> dict[tuple[str, int], list[NoteVerifier]]:
    """Group the verifiers by (name, key ID); more than one in a group is ambiguous."""
    known: dict[tuple[str, int], list[NoteVerifier]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_id), []).append(v)
    return known


def parse_signature_line(line: str) -> NoteSignature:
    """Parse a signature line ``— <name> <base64(key ID || signature)>``, without its newline.

    Verifies nothing. Raises VerificationError if the line is malformed.
    """
    if _has_control_chars(line) or "\n" in line:
        raise VerificationError(f"malformed note: control character in {line!r}")
    if not line.startswith(SIGNATURE_PREFIX):
        raise VerificationError(f"malformed note: not a signature line: {line!r}")
    name, _, blob64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not is_valid_key_name(name):
        raise VerificationError(f"malformed note: invalid key name {name!r}")
    blob = _b64decode(blob64)
    if blob is None or len(blob) < 5:
        raise VerificationError(f"malformed note: bad signature of {name!r}: {blob64!r}")
    return NoteSignature(name, int.from_bytes(blob[:4], "big"), blob[4:])


def _has_control_chars(text: str) -> bool:
    """Return whether ``text`` has a control character other than newline or is not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return any(c < " " and c != "\n" for c in text)


def _b64decode(text: str) -> bytes | None:
    """Decode standard, padded base64; return None if it is not."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def _chop(text: str) -> tuple[str, str]:
    """Split ``text`` at its first '+', as x/mod's ``chop``; ("text", "") without one."""
    before, _, after = text.partition("+")
    return before, after


def _decode_key(what: str, name: str, hex_id: str, key64: str) -> bytes:
    """Check the name and hex key ID of a key string; return its Ed25519 key bytes."""
    if not is_valid_key_name(name) or not _HEX_KEY_ID.fullmatch(hex_id):
        raise ValueError(f"{what}: malformed name or key ID")
    key = _b64decode(key64)
    if not key:
        raise ValueError(f"{what}: malformed base64 key")
    if key[0] != ALG_ED25519:
        raise ValueError(f"{what}: unknown key type 0x{key[0]:02x}, want Ed25519 (0x01)")
    if len(key) != 1 + _ED25519_KEY_SIZE:
        raise ValueError(f"{what}: Ed25519 key must be 32 bytes, got {len(key) - 1}")
    return key[1:]
