"""Sealed personal fields (密钥销毁, crypto-shredding): the envelope a field of an event that
names a natural person is stored in, and its seal and open with a subject's key.

An envelope is a JSON object, stored in the event's payload in place of the clear value::

    {"sealed": "aes-256-gcm-v1", "subject": "<subject id>", "key": "<key id>",
     "nonce": "<b64, 12 bytes>", "ct": "<b64: ciphertext and 16-byte tag>"}

The cipher is AES-256-GCM (``cryptography``) under a 256-bit key of the subject's own
(``key`` names it in the key store, ``privacy/keystore.py``: a key seals one subject's
values only); the additional authenticated data binds the subject, the key id and the
field's path (``event type`` + ``.`` + field name, e.g. ``participant.member_added.name``),
so an envelope moved to another subject or field does not open. The event's canonical
bytes hold only the envelope: leaves, proofs and checkpoints never depend on the clear
value, and once the key is destroyed nobody, the operator holding every file included, can
open it again; readers then show :data:`ERASED`. See docs/PRIVACY.md.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.canonical import canonical_bytes

SCHEME = "aes-256-gcm-v1"
#: a subject key's length in bytes (AES-256)
KEY_BYTES = 32
NONCE_BYTES = 12
#: random nonces made per read of the OS's generator (``_nonce``)
NONCE_BATCH = 1024
#: a key id: random bytes, as hex
KEY_ID_BYTES = 16
#: what a reader shows for a sealed value whose subject's key was destroyed
ERASED = "[erased]"
#: what a reader shows for an envelope its subject's key does not open (a damaged key store)
UNREADABLE = "[unreadable]"
#: the path of a member's name (participant.member_added): the one sealed field today
MEMBER_NAME = "participant.member_added.name"

#: a key id -> its key, or None once destroyed (or never made)
KeyLookup = Callable[[str], bytes | None]


class SealError(ValueError):
    """An envelope is malformed, or its key does not open it (wrong key, subject or path)."""


def new_key() -> tuple[str, bytes]:
    """A fresh key and its id: 32 and 16 bytes from the OS's generator."""
    return new_keys(1)[0]


def new_keys(count: int) -> list[tuple[str, bytes]]:
    """``count`` fresh keys and their ids (32 and 16 bytes each) from one read of the OS's
    generator: each ``os.urandom`` call releases the GIL, a thread switch when many
    threads seal at once (docs/BENCHMARKS.md, bench privacy)."""
    step = KEY_ID_BYTES + KEY_BYTES
    raw = os.urandom(count * step)
    return [(raw[i:i + KEY_ID_BYTES].hex(), raw[i + KEY_ID_BYTES:i + step])
            for i in range(0, count * step, step)]


#: random nonces read ahead, each handed out once (``deque.popleft`` is atomic); emptied in
#: a forked child, so that no two processes use the same ones
_NONCES: deque[bytes] = deque()
os.register_at_fork(after_in_child=_NONCES.clear)


def _nonce() -> bytes:
    """A random 12-byte nonce, never handed out twice: from nonces read ahead in batches
    of :data:`NONCE_BATCH` by one ``os.urandom`` call (each call releases the GIL, a
    thread switch when many threads seal at once: docs/BENCHMARKS.md, bench privacy)."""
    while True:
        try:
            return _NONCES.popleft()
        except IndexError:
            raw = os.urandom(NONCE_BYTES * NONCE_BATCH)
            _NONCES.extend(raw[i:i + NONCE_BYTES] for i in range(0, len(raw), NONCE_BYTES))


def _aad(subject: str, key_id: str, path: str) -> bytes:
    return canonical_bytes({"key": key_id, "path": path, "sealed": SCHEME, "subject": subject})


def seal(key_id: str, key: bytes, subject: str, path: str, value: str) -> dict[str, str]:
    """The envelope of ``value`` under key ``key_id``, bound to ``subject`` and ``path``
    (a random nonce of its own, ``_nonce``)."""
    nonce = _nonce()
    ct = AESGCM(key).encrypt(nonce, value.encode("utf-8"), _aad(subject, key_id, path))
    return {"sealed": SCHEME, "subject": subject, "key": key_id,
            "nonce": base64.b64encode(nonce).decode("ascii"),
            "ct": base64.b64encode(ct).decode("ascii")}


def is_envelope(value: Any) -> bool:
    """Whether ``value`` is a sealed envelope (of this scheme)."""
    return isinstance(value, Mapping) and value.get("sealed") == SCHEME \
        and isinstance(value.get("subject"), str) and isinstance(value.get("key"), str)


def subject_of(value: Any) -> str | None:
    """The subject an envelope is sealed for; None for anything else (a clear value)."""
    return str(value["subject"]) if is_envelope(value) else None


def key_id_of(value: Any) -> str | None:
    """The id of the key an envelope is sealed under; None for a clear value."""
    return str(value["key"]) if is_envelope(value) else None


def open_envelope(key: bytes, envelope: Mapping[str, Any], path: str) -> str:
    """The clear value of ``envelope`` (sealed at ``path``); SealError if it does not open."""
    if not is_envelope(envelope):
        raise SealError(f"not a {SCHEME} envelope")
    try:
        nonce = base64.b64decode(str(envelope.get("nonce")), validate=True)
        ct = base64.b64decode(str(envelope.get("ct")), validate=True)
        aad = _aad(str(envelope["subject"]), str(envelope["key"]), path)
        clear = AESGCM(key).decrypt(nonce, ct, aad)
        return clear.decode("utf-8")
    except (binascii.Error, InvalidTag, ValueError) as exc:
        raise SealError(f"the envelope of subject {envelope['subject']} does not open "
                        f"at {path}: {type(exc).__name__}") from None


def reveal(value: Any, path: str, key_of: KeyLookup) -> str:
    """What a reader shows for a stored field: a clear value as is (recorded before fields
    were sealed), an envelope opened with its key (``key_of`` its id), :data:`ERASED` once
    that key is destroyed, :data:`UNREADABLE` if the key does not open it."""
    if not is_envelope(value):
        return "" if value is None else str(value)
    key = key_of(str(value["key"]))
    if key is None:
        return ERASED
    try:
        return open_envelope(key, value, path)
    except SealError:
        return UNREADABLE
