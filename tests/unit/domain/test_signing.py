"""Signed decisions checked by the domain (domain/signing.py): the member's registered,
unrevoked key, the aggregate's current version, the statement; keys rotated and revoked.

The store is built from events (not through the guards of other use cases), so these tests
look at the signature check alone; each refusal writes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core import decision
from core.canonical import canonical_bytes, decode
from core.event import Event
from domain.base import Context
from domain.errors import (
    DomainError,
    Forbidden,
    InvalidInput,
    KeyRevokedError,
    NotFound,
    SignatureInvalid,
    SignatureRequired,
    StaleDecision,
    WrongState,
)
from domain.participant import (
    AdmissionApproved,
    KeyRegistered,
    KeyRevoked,
    MemberAdded,
    ParticipantRegistered,
    ParticipantSuspended,
    register_key,
    registered_key_id,
    revoke_key,
)
from domain.scenario import Scenario, ScenarioSubmitted, decide_scenario, record_opinion
from domain.signing import Signed, verify_decision
from events.catalogue import catalogue
from tests.unit.fakes import MemoryUnitOfWork, ctx

AT = "2026-11-26T10:00:00Z"
SYSTEM = {"participant": "system", "member": "system", "role": "system"}
REG = "p-regulator"
ADMIN = ctx("regulator", REG, "m-admin", ("admin",), allow_unsigned=False)
EXPERT = ctx("regulator", REG, "m-expert", ("expert",), allow_unsigned=False)
OTHER_EXPERT = ctx("regulator", REG, "m-expert-2", ("expert",), allow_unsigned=False)
BODY = {"verdict": "approve", "comment": "proportionate"}


def _events(id: str, *made: tuple[type[Event], dict[str, Any]]) -> list[Event]:
    return [cls(originator_id=id, originator_version=n, at=AT, actor=SYSTEM, **fields)
            for n, (cls, fields) in enumerate(made, 1)]


def _public(key: Ed25519PrivateKey) -> str:
    return decision.public_key_text(key.public_key())


def _kid(key: Ed25519PrivateKey) -> str:
    return decision.key_id(_public(key))


@dataclasses.dataclass
class World:
    uow: MemoryUnitOfWork
    keys: dict[str, Ed25519PrivateKey]
    scenarios: tuple[str, str] = ("s-1", "s-2")


def _member(member_id: str, roles: list[str]) -> tuple[type[Event], dict[str, Any]]:
    return (MemberAdded, {"member_id": member_id, "name": member_id, "member_roles": roles,
                          "token_hash": f"h-{member_id}"})


def _key(member_id: str, key: Ed25519PrivateKey) -> tuple[type[Event], dict[str, Any]]:
    return (KeyRegistered, {"member_id": member_id, "public_key": _public(key),
                            "key_id": _kid(key)})


@pytest.fixture
def world() -> World:
    """An admitted regulator whose admin and two experts each registered a key, and two
    submitted scenarios."""
    keys = {m: Ed25519PrivateKey.generate() for m in ("m-admin", "m-expert", "m-expert-2")}
    streams: dict[str, list[Event]] = {REG: _events(
        REG, (ParticipantRegistered, {"name": "bureau", "role": "regulator",
                                      "credit_code": "x"}),
        (AdmissionApproved, {"comment": ""}),
        _member("m-admin", ["admin"]), _member("m-expert", ["expert"]),
        _member("m-expert-2", ["expert"]),
        *(_key(m, k) for m, k in keys.items()))}
    for sid in ("s-1", "s-2"):
        streams[sid] = _events(sid, (ScenarioSubmitted, {
            "operator_id": "p-operator", "title": "t", "purpose": "p", "sector": "finance",
            "requested": [{"dataset_id": "d-1", "fields": ["a"]}],
            "circulation_mode": "ciphertext"}))
    return World(MemoryUnitOfWork(streams), keys)


def _signed(key: Ed25519PrivateKey, *, command: str = "scenario.opinion",
            aggregate_id: str = "s-1", version: int = 1, member_id: str = "m-expert",
            body: dict[str, Any] | None = None, sent: dict[str, Any] | None = None) -> Signed:
    """What a route hands over: the signature of ``body`` and the body ``sent``."""
    wire = decision.signed_body(key, command, aggregate_id, version, member_id,
                                BODY if body is None else body)
    return Signed(decision.SignedDecision.of(wire["signature"]),
                  {k: v for k, v in (sent if sent is not None else wire).items()
                   if k != "signature"})


def _refused(w: World, error: type[DomainError], context: Context, signed: Signed | None,
             handler: Any = record_opinion, scenario_id: str = "s-1",
             **fields: Any) -> DomainError:
    """The decision is refused with ``error`` and writes nothing."""
    before = {k: len(v) for k, v in w.uow.streams.items()}
    with pytest.raises(error) as info:
        handler(w.uow, context, scenario_id, **(fields or BODY), signed=signed)
    assert w.uow.commit() == []
    assert {k: len(v) for k, v in w.uow.streams.items()} == before
    return info.value


def test_a_valid_signature_is_kept_in_the_event_and_verifies_from_it_alone(world: World) -> None:
    record_opinion(world.uow, EXPERT, "s-1", **BODY, signed=_signed(world.keys["m-expert"]))
    [event] = world.uow.commit()
    recorded = decode(canonical_bytes(event.payload()))["signature"]
    assert recorded["key_id"] == _kid(world.keys["m-expert"])
    assert recorded["statement"] == decision.statement("scenario.opinion", "s-1", 1,
                                                       "m-expert", BODY)
    assert decision.event_signature_verifies(_public(world.keys["m-expert"]), recorded)
    assert not decision.event_signature_verifies(_public(world.keys["m-admin"]), recorded)


def test_an_unsigned_decision_is_refused_unless_the_development_mode_lets_it_through(
        world: World) -> None:
    assert _refused(world, SignatureRequired, EXPERT, None).code == "signature_required"
    _refused(world, SignatureRequired, EXPERT, Signed(None, BODY))
    lenient = dataclasses.replace(EXPERT, allow_unsigned=True)
    record_opinion(world.uow, lenient, "s-1", **BODY)
    [event] = world.uow.commit()
    assert event.signature is None  # type: ignore[attr-defined]


def test_a_signature_sent_in_development_mode_is_still_checked(world: World) -> None:
    lenient = dataclasses.replace(EXPERT, allow_unsigned=True)
    _refused(world, SignatureInvalid, lenient,
             _signed(world.keys["m-expert"], sent={"verdict": "reject", "comment": "x"}),
             verdict="reject", comment="x")


def test_another_members_key_is_refused(world: World) -> None:
    # the other expert's key id: not a key of this member
    stolen = _signed(world.keys["m-expert-2"], member_id="m-expert")
    assert _refused(world, SignatureRequired, EXPERT, stolen).code == "signature_required"
    # this member's key id, but the value made by the other member's key
    own = _signed(world.keys["m-expert"])
    forged = _signed(world.keys["m-expert-2"], member_id="m-expert")
    mixed = Signed(dataclasses.replace(forged.signature, key_id=own.signature.key_id),  # type: ignore[arg-type]
                   forged.body)
    assert _refused(world, SignatureInvalid, EXPERT, mixed).code == "signature_invalid"


def test_a_decision_signed_for_another_member_is_refused(world: World) -> None:
    # the other expert signed a statement naming itself; this member replays it
    theirs = _signed(world.keys["m-expert-2"], member_id="m-expert-2")
    _refused(world, SignatureRequired, EXPERT, theirs)


def test_a_revoked_key_is_refused(world: World) -> None:
    revoke_key(world.uow, EXPERT, REG, _kid(world.keys["m-expert"]), reason="laptop lost")
    world.uow.commit()
    assert _refused(world, KeyRevokedError, EXPERT,
                    _signed(world.keys["m-expert"])).code == "key_revoked"


@pytest.mark.parametrize("sent", [
    {"verdict": "reject", "comment": "proportionate"},
    {"verdict": "approve", "comment": "proportionate", "extra": 1},
    {"verdict": "approve"},
], ids=["changed", "added", "removed"])
def test_a_signature_over_another_body_is_refused(world: World, sent: dict[str, Any]) -> None:
    _refused(world, SignatureInvalid, EXPERT, _signed(world.keys["m-expert"], sent=sent))


def test_a_signature_replayed_onto_another_aggregate_is_refused(world: World) -> None:
    _refused(world, SignatureInvalid, EXPERT, _signed(world.keys["m-expert"]),
             scenario_id="s-2")


def test_a_signature_for_another_command_is_refused(world: World) -> None:
    signed = _signed(world.keys["m-admin"], command="scenario.opinion", member_id="m-admin",
                     body={"approve": False, "comment": "no"})
    _refused(world, SignatureInvalid, ADMIN, signed, handler=decide_scenario,
             approve=False, comment="no")


def test_a_signature_on_another_version_is_refused_as_stale(world: World) -> None:
    record_opinion(world.uow, OTHER_EXPERT, "s-1", **BODY,
                   signed=_signed(world.keys["m-expert-2"], member_id="m-expert-2"))
    world.uow.commit()  # s-1 is at version 2 now
    err = _refused(world, StaleDecision, EXPERT, _signed(world.keys["m-expert"], version=1))
    assert err.code == "stale_decision" and err.retry_after == 0
    assert err.context["current_version"] == 2 and "sign again at version 2" in err.detail
    record_opinion(world.uow, EXPERT, "s-1", **BODY,
                   signed=_signed(world.keys["m-expert"], version=2))
    assert len(world.uow.commit()) == 1


def test_a_suspended_participants_member_signs_nothing(world: World) -> None:
    stream = world.uow.streams[REG]
    stream.append(ParticipantSuspended(originator_id=REG, originator_version=len(stream) + 1,
                                       at=AT, actor=SYSTEM, reason="fraud"))
    _refused(world, WrongState, EXPERT, _signed(world.keys["m-expert"]))


def test_a_command_on_an_aggregate_of_another_kind_is_a_programming_error(
        world: World) -> None:
    scenario = world.uow.get(Scenario, "s-1")
    with pytest.raises(ValueError, match="kind 'order', not 'scenario'"):
        verify_decision(world.uow, EXPERT, "contract.acceptance", scenario, None)


# -- keys ----------------------------------------------------------------------------------
def test_rotation_registers_the_new_key_and_revokes_the_old_in_one_command(
        world: World) -> None:
    old, new = world.keys["m-expert"], Ed25519PrivateKey.generate()
    answer = register_key(world.uow, EXPERT, REG, public_key=_public(new), replaces=_kid(old))
    registered, revoked = world.uow.commit()
    assert answer["key_id"] == _kid(new) == registered.key_id  # type: ignore[attr-defined]
    assert isinstance(revoked, KeyRevoked) and revoked.key_id == _kid(old)
    assert revoked.reason == f"replaced by {_kid(new)}"
    _refused(world, KeyRevokedError, EXPERT, _signed(old))
    record_opinion(world.uow, EXPERT, "s-1", **BODY, signed=_signed(new))
    assert len(world.uow.commit()) == 1


@pytest.mark.parametrize("public_key, replaces, field", [
    ("not a key", None, "public_key"),
    ("AAAA", None, "public_key"),
    (None, "ed25519:0000", "replaces"),
    ("own", None, "public_key"),
], ids=["not-base64", "short", "unknown-replaced", "already-registered"])
def test_a_bad_key_registration_is_refused(world: World, public_key: str | None,
                                           replaces: str | None, field: str) -> None:
    if public_key is None:
        public_key = _public(Ed25519PrivateKey.generate())
    elif public_key == "own":
        public_key = _public(world.keys["m-expert-2"])  # another member's: ids are unique
    with pytest.raises(InvalidInput) as info:
        register_key(world.uow, EXPERT, REG, public_key=public_key, replaces=replaces)
    assert info.value.field == field and world.uow.commit() == []


def test_a_key_is_revoked_by_its_member_or_its_participants_admin_only(world: World) -> None:
    kid = _kid(world.keys["m-expert"])
    with pytest.raises(Forbidden):
        revoke_key(world.uow, OTHER_EXPERT, REG, kid, reason="not mine")
    with pytest.raises(Forbidden):
        revoke_key(world.uow, ctx("regulator", "p-other", "m-x", ("admin",), allow_unsigned=False), REG, kid,
                   reason="another participant's admin")
    with pytest.raises(NotFound):
        revoke_key(world.uow, ADMIN, REG, "ed25519:" + "0" * 32, reason="no such key")
    assert world.uow.commit() == []
    assert revoke_key(world.uow, ADMIN, REG, kid, reason="left")["member_id"] == "m-expert"
    assert len(world.uow.commit()) == 1
    with pytest.raises(WrongState):
        revoke_key(world.uow, EXPERT, REG, kid, reason="again")


def test_a_version_1_key_registration_gets_its_key_id_from_the_key() -> None:
    key = Ed25519PrivateKey.generate()
    stored = {"at": AT, "actor": SYSTEM, "member_id": "m", "public_key": _public(key)}
    event = KeyRegistered.from_payload(REG, 4, stored)
    assert event.key_id == _kid(key)
    junk = KeyRegistered.from_payload(REG, 4, {**stored, "public_key": "junk"})
    assert junk.key_id == registered_key_id("junk") and junk.key_id.startswith("invalid:")


SIGNED_EVENTS = sorted(name for name, cls in catalogue().items()
                       if "signature" in {f.name for f in dataclasses.fields(cls)})


def test_every_decision_event_is_signed() -> None:
    assert SIGNED_EVENTS == sorted([
        "participant.admission_approved", "participant.admission_rejected",
        "participant.node_key_registered", "scenario.opinion_recorded", "scenario.approved", "scenario.rejected",
        "authorization.granted", "authorization.revoked", "product.listed",
        "product.listing_rejected", "contract.proposed", "contract.accepted",
        "contract.party_approved", "contract.terminated",
        *(n for n in SIGNED_EVENTS if n.startswith("delivery."))])


@pytest.mark.parametrize("type_name", SIGNED_EVENTS)
def test_a_decision_event_stored_before_signatures_reads_as_unsigned(type_name: str) -> None:
    cls = catalogue()[type_name]
    if cls.class_version == 1:
        return  # a decision event born signed: nothing stored before
    state: dict[str, Any] = {}
    getattr(cls, f"upcast_v{cls.class_version - 1}_v{cls.class_version}")(state)
    assert state == {"signature": None}
