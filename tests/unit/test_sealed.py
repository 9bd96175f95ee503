"""core/sealed.py: the envelope of a personal field, and what a reader shows."""

from __future__ import annotations

import base64
import json

import pytest

from core.canonical import canonical_bytes
from core.sealed import (
    ERASED,
    MEMBER_NAME,
    SCHEME,
    UNREADABLE,
    SealError,
    is_envelope,
    key_id_of,
    new_key,
    open_envelope,
    reveal,
    seal,
    subject_of,
)

NAME = "张伟 Zhang Wei"


def test_an_envelope_holds_no_clear_value_and_opens_with_its_key() -> None:
    kid, key = new_key()
    env = seal(kid, key, "m-1", MEMBER_NAME, NAME)
    assert set(env) == {"sealed", "subject", "key", "nonce", "ct"} and env["sealed"] == SCHEME
    assert env["key"] == kid and key_id_of(env) == kid and key_id_of(NAME) is None
    stored = canonical_bytes({"name": env})  # what the event's canonical bytes hold
    assert NAME.encode() not in stored and b"Zhang" not in stored
    assert len(base64.b64decode(env["nonce"])) == 12
    assert open_envelope(key, env, MEMBER_NAME) == NAME
    assert is_envelope(env) and subject_of(env) == "m-1"
    assert not is_envelope(NAME) and subject_of(NAME) is None


def test_two_seals_of_one_value_differ_and_the_key_is_256_bits() -> None:
    kid, key = new_key()
    assert len(key) == 32 and len(bytes.fromhex(kid)) == 16 and new_key()[0] != kid
    assert seal(kid, key, "m-1", MEMBER_NAME, NAME) != seal(kid, key, "m-1", MEMBER_NAME, NAME)


@pytest.mark.parametrize("change", ["key", "key_id", "subject", "path", "ct"])
def test_an_envelope_opens_only_with_its_key_subject_and_path(change: str) -> None:
    kid, key = new_key()
    env = seal(kid, key, "m-1", MEMBER_NAME, NAME)
    path = MEMBER_NAME
    if change == "key":
        key = new_key()[1]
    elif change == "key_id":  # named another key: the AAD binds the id
        env = {**env, "key": new_key()[0]}
    elif change == "subject":  # moved to another subject: the AAD binds it
        env = {**env, "subject": "m-2"}
    elif change == "path":  # moved to another field
        path = "participant.registered.name"
    else:
        ct = bytearray(base64.b64decode(env["ct"]))
        ct[0] ^= 1
        env = {**env, "ct": base64.b64encode(bytes(ct)).decode()}
    with pytest.raises(SealError):
        open_envelope(key, env, path)


def test_reveal_shows_clear_values_opened_envelopes_erased_and_unreadable() -> None:
    kid, key = new_key()
    env = json.loads(json.dumps(seal(kid, key, "m-1", MEMBER_NAME, NAME)))  # as read back
    keys = {kid: key}
    assert reveal(env, MEMBER_NAME, keys.get) == NAME
    assert reveal("recorded in clear", MEMBER_NAME, keys.get) == "recorded in clear"
    assert reveal(env, MEMBER_NAME, {}.get) == ERASED
    assert reveal(env, MEMBER_NAME, {kid: new_key()[1]}.get) == UNREADABLE
