"""A public key that is an Ed25519 point of small order signs nothing: with the identity
point, one fixed value "verifies" over every statement, so anyone (the platform writing
behind the API included) could make the member's decisions. Refused at registration, and
at use for such a key stored before."""

from __future__ import annotations

import base64

import pytest

from core import decision
from core.decision import SMALL_ORDER_KEYS, weak_key
from domain.errors import InvalidInput, SignatureInvalid
from domain.participant import KeyRegistered, register_key
from domain.scenario import record_opinion
from domain.signing import Signed
from tests.unit.domain import test_signing
from tests.unit.domain.test_signing import (
    BODY,
    EXPERT,
    REG,
    World,
    _refused,
)

world = test_signing.world  # the fixture: an admitted regulator whose members hold keys

#: the identity point: R = identity, S = 0 verifies over any message
IDENTITY = base64.b64encode(bytes([1]) + bytes(31)).decode()
FORGED = base64.b64encode(bytes([1]) + bytes(63)).decode()


def _texts() -> list[str]:
    out = []
    for raw in SMALL_ORDER_KEYS:
        for sign in (0, 0x80):
            b = bytearray(raw)
            b[31] |= sign
            out.append(base64.b64encode(bytes(b)).decode())
    return out


def test_the_identity_key_would_verify_a_forgery_over_any_statement() -> None:
    """A plain Ed25519 check accepts the forgery for every statement; core.decision (the
    server's and an auditor's check) refuses the key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(IDENTITY))
    for body in ({"verdict": "approve"}, {"verdict": "reject"}):
        stmt = decision.statement("scenario.opinion", "s-1", 1, "m-expert", body)
        raw_key.verify(base64.b64decode(FORGED), decision.statement_bytes(stmt))
        assert not decision.verifies(IDENTITY, stmt, FORGED)


@pytest.mark.parametrize("text", _texts())
def test_a_small_order_key_is_refused_at_registration(world: World, text: str) -> None:
    assert weak_key(text)
    before = len(world.uow.streams[REG])
    with pytest.raises(InvalidInput) as info:
        register_key(world.uow, EXPERT, REG, public_key=text)
    assert info.value.field == "public_key"
    assert world.uow.commit() == [] and len(world.uow.streams[REG]) == before


def test_a_real_key_is_not_weak() -> None:
    assert not weak_key(decision.public_key_text(decision.new_private_key().public_key()))


def test_a_stored_small_order_key_signs_no_decision(world: World) -> None:
    kid = decision.key_id(IDENTITY)
    stream = world.uow.streams[REG]
    stream.append(KeyRegistered(
        originator_id=REG, originator_version=len(stream) + 1, at="2026-11-26T10:00:00Z",
        actor={"participant": "system", "member": "system", "role": "system"},
        member_id="m-expert", public_key=IDENTITY, key_id=kid))
    forged = Signed(decision.SignedDecision(kid, 1, FORGED), dict(BODY))
    _refused(world, SignatureInvalid, EXPERT, forged, record_opinion)
