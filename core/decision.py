"""Signed decisions (签名验签): the statement a deciding member signs, and its Ed25519 check.

A decision (an admission, an expert opinion, a scenario decision, a grant, a revocation, a
listing decision, a contract proposal, acceptance, approval or termination, a release
approval) is signed by the member who makes it, over a *statement*: the command's name,
the aggregate it decides on and that aggregate's version when the member decided, the
member, and the request body as sent (without its ``signature``). The statement's
canonical JSON bytes (``core/canonical.py``) are what is signed, so a signature cannot be
moved to another aggregate, another state of the same aggregate, another member or another
body. The event keeps the whole statement, the key id and the signature: anyone holding
the member's registered public key (a ``participant.key_registered`` event) verifies it
with this module alone, without the platform.

The wire form, in a request body: ``"signature": {"key_id": …, "aggregate_version": N,
"value": <base64 of the 64-byte signature>}``; in an event: ``"signature": {"key_id": …,
"statement": {…}, "value": …}``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from core.canonical import canonical_bytes

#: the statement's format tag: a statement of another format or version never verifies
FORMAT = "dataledger.decision.v1"

#: every signed command, by name: the aggregate whose id and version the statement names
COMMANDS: dict[str, str] = {
    "participant.admission": "participant",
    "participant.node_key": "participant",
    "scenario.opinion": "scenario",
    "scenario.decision": "scenario",
    "authorization.grant": "scenario",
    "authorization.revocation": "authorization",
    "product.listing_decision": "product",
    "contract.proposal": "order",
    "contract.acceptance": "order",
    "contract.approval": "order",
    "contract.termination": "order",
    "delivery.release_approval": "computation",
}


#: the encodings of the Ed25519 points of small order (the sign bit cleared; libsodium's
#: blocklist): with such a public key, a signature can be made for a statement without any
#: private key (with the identity point, one fixed value verifies for every statement)
_P = 2**255 - 19
SMALL_ORDER_KEYS = frozenset(bytes.fromhex(h) for h in (
    "00" * 32, "01" + "00" * 31,
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    (_P - 1).to_bytes(32, "little").hex(), _P.to_bytes(32, "little").hex(),
    (_P + 1).to_bytes(32, "little").hex()))


def weak_key(public_key: str) -> bool:
    """True for a registered key text that is a point of small order, whose "signatures"
    anyone can make: such a key signs nothing (refused at registration and at use)."""
    try:
        raw = bytearray(base64.b64decode(public_key, validate=True))
    except (binascii.Error, ValueError):
        return False
    if len(raw) != 32:
        return False
    raw[31] &= 0x7F
    return bytes(raw) in SMALL_ORDER_KEYS



class DecisionFormatError(ValueError):
    """A key, a signature or a statement that is not well formed (names what)."""


def statement(command: str, aggregate_id: str, aggregate_version: int, member_id: str,
              body: Mapping[str, Any]) -> dict[str, Any]:
    """The statement a member signs for ``command`` on ``aggregate_id`` at
    ``aggregate_version``; ``body`` is the request body without its ``signature``."""
    if command not in COMMANDS:
        raise DecisionFormatError(f"{command!r} is not a signed command "
                                  f"(known: {', '.join(COMMANDS)})")
    return {"format": FORMAT, "command": command, "aggregate_id": aggregate_id,
            "aggregate_version": aggregate_version, "member_id": member_id,
            "body": {k: v for k, v in body.items() if k != "signature"}}


def statement_bytes(stmt: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: the statement's canonical JSON."""
    return canonical_bytes(dict(stmt))


def public_key_text(key: Ed25519PublicKey) -> str:
    """A public key as registered on the ledger: base64 of its 32 raw bytes."""
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


@functools.lru_cache(maxsize=4096)
def load_public_key(text: str) -> Ed25519PublicKey:
    """The public key of its registered text (DecisionFormatError if it is not one); the
    keys in use are kept loaded (a key object is immutable)."""
    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise DecisionFormatError("not an Ed25519 public key (base64 of 32 raw bytes)") from None


def key_id(public_key: str) -> str:
    """The id of a registered public key: ``ed25519:`` and the first 32 hex digits of the
    SHA-256 of its raw bytes."""
    load_public_key(public_key)
    raw = base64.b64decode(public_key)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:32]


def new_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """A private key as a member keeps it (unencrypted PKCS#8 PEM: protect the file)."""
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """A private key from its PKCS#8 PEM (DecisionFormatError if it is not an Ed25519 one)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise DecisionFormatError("not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise DecisionFormatError("not an Ed25519 private key")
    return key


def sign(key: Ed25519PrivateKey, stmt: Mapping[str, Any]) -> str:
    """The base64 signature of ``stmt`` by ``key``."""
    return base64.b64encode(key.sign(statement_bytes(stmt))).decode()


def verifies(public_key: str, stmt: Mapping[str, Any], signature: str) -> bool:
    """True if ``signature`` (base64) is ``public_key``'s over ``stmt``; False for any
    signature that does not verify or is not well formed, and for a key of small order
    (:func:`weak_key`), whose signatures anyone can make."""
    if weak_key(public_key):
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
        load_public_key(public_key).verify(raw, statement_bytes(stmt))
    except (binascii.Error, ValueError, DecisionFormatError, InvalidSignature):
        return False
    return True


@dataclass(frozen=True)
class SignedDecision:
    """A request's signature: which key, the aggregate version it was made on, the value."""

    key_id: str
    aggregate_version: int
    value: str

    @classmethod
    def of(cls, wire: Mapping[str, Any] | None) -> SignedDecision | None:
        """From a request body's ``signature`` object (None if absent)."""
        if wire is None:
            return None
        return cls(str(wire["key_id"]), int(wire["aggregate_version"]), str(wire["value"]))

    def wire(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "aggregate_version": self.aggregate_version,
                "value": self.value}


def signed_body(key: Ed25519PrivateKey, command: str, aggregate_id: str,
                aggregate_version: int, member_id: str,
                body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with its ``signature`` added: what an integrator sends for a decision."""
    stmt = statement(command, aggregate_id, aggregate_version, member_id, body)
    kid = key_id(public_key_text(key.public_key()))
    return {**stmt["body"], "signature": SignedDecision(
        kid, aggregate_version, sign(key, stmt)).wire()}


def event_signature_verifies(public_key: str, recorded: Mapping[str, Any]) -> bool:
    """True if an event's recorded ``signature`` (key id, statement, value) verifies under
    ``public_key`` and names that key."""
    try:
        return (key_id(public_key) == recorded["key_id"]
                and verifies(public_key, recorded["statement"], recorded["value"]))
    except (KeyError, TypeError, DecisionFormatError):
        return False
