"""The signed-decision statement and its Ed25519 check (core/decision.py)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core import decision as d
from core.canonical import canonical_bytes


def signed(key, version: int = 3, body: dict | None = None) -> dict:
    return d.signed_body(key, "scenario.decision", "s-1", version, "m-1",
                         body or {"approve": True, "comment": "ok"})


def test_a_signature_verifies_with_cryptography_alone_over_the_canonical_statement() -> None:
    key = d.new_private_key()
    body = signed(key)
    stmt = d.statement("scenario.decision", "s-1", 3, "m-1", body)
    raw = base64.b64decode(d.public_key_text(key.public_key()))
    Ed25519PublicKey.from_public_bytes(raw).verify(
        base64.b64decode(body["signature"]["value"]), canonical_bytes(stmt))
    assert body["signature"]["key_id"] == d.key_id(d.public_key_text(key.public_key()))
    assert "signature" not in stmt["body"]


@pytest.mark.parametrize("change", [
    {"aggregate_id": "s-2"}, {"aggregate_version": 4}, {"member_id": "m-2"},
    {"command": "contract.approval"}, {"body": {"approve": False, "comment": "ok"}}])
def test_a_signature_does_not_move_to_another_statement(change: dict) -> None:
    key = d.new_private_key()
    body = signed(key)
    fields = {"command": "scenario.decision", "aggregate_id": "s-1", "aggregate_version": 3,
              "member_id": "m-1", "body": body}
    fields.update(change)
    stmt = d.statement(**fields)
    assert not d.verifies(d.public_key_text(key.public_key()), stmt,
                          body["signature"]["value"])


def test_another_key_and_malformed_values_do_not_verify() -> None:
    key, other = d.new_private_key(), d.new_private_key()
    body = signed(key)
    stmt = d.statement("scenario.decision", "s-1", 3, "m-1", body)
    assert d.verifies(d.public_key_text(key.public_key()), stmt, body["signature"]["value"])
    assert not d.verifies(d.public_key_text(other.public_key()), stmt,
                          body["signature"]["value"])
    assert not d.verifies(d.public_key_text(key.public_key()), stmt, "not base64!")
    assert not d.verifies("AAAA", stmt, body["signature"]["value"])
    recorded = {"key_id": body["signature"]["key_id"], "statement": stmt,
                "value": body["signature"]["value"]}
    assert d.event_signature_verifies(d.public_key_text(key.public_key()), recorded)
    assert not d.event_signature_verifies(d.public_key_text(other.public_key()), recorded)
    assert not d.event_signature_verifies(d.public_key_text(key.public_key()), {})


def test_unknown_commands_and_bad_keys_are_named() -> None:
    with pytest.raises(d.DecisionFormatError, match="not a signed command"):
        d.statement("product.registration", "p", 1, "m", {})
    with pytest.raises(d.DecisionFormatError, match="Ed25519 public key"):
        d.key_id("AAAA")
    with pytest.raises(d.DecisionFormatError, match="PEM"):
        d.load_private_key(b"nonsense")
    key = d.new_private_key()
    assert d.load_private_key(d.private_key_pem(key)).public_key() == key.public_key()


def test_a_key_of_small_order_verifies_nothing() -> None:
    """With the identity point as the key, R = identity and S = 0 "verify" every statement
    in a plain Ed25519 check: such a key is refused whatever the signature."""
    identity = base64.b64encode(bytes([1]) + bytes(31)).decode()
    forged = base64.b64encode(bytes([1]) + bytes(63)).decode()
    stmt = d.statement("scenario.decision", "s-1", 3, "m-1", {"approve": True})
    assert d.weak_key(identity)
    assert not d.verifies(identity, stmt, forged)
    assert not d.event_signature_verifies(
        identity, {"key_id": d.key_id(identity), "statement": stmt, "value": forged})
