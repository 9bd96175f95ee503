"""Signed decisions (签名验签), checked: the one function every decision's use case calls.

A decision (``core.decision.COMMANDS``) is signed by the member who makes it over a
statement of the command, the aggregate it decides on at its current version, the member
and the request body (``core.decision.statement``). Here the signature is checked against
the keys the member registered on its participant, and the event keeps what anyone needs
to verify it later without the platform: the key id, the whole statement and the value.
The refusals are domain errors, raised before anything is decided, so nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from core.decision import COMMANDS, SignedDecision, statement, verifies, weak_key
from domain.base import Aggregate, Context
from domain.errors import KeyRevokedError, SignatureInvalid, SignatureRequired, StaleDecision
from domain.participant import Participant
from domain.unit_of_work import UnitOfWork

#: what an aggregate calls just before it records a decision's event, once its own rules
#: passed: the event's ``signature`` (None: unsigned, in development mode), or it raises
Sign = Callable[[], dict[str, Any] | None]


@dataclass(frozen=True)
class Signed:
    """A decision's request as its member signed it: the signature (None: unsigned) and
    the body as sent, without its ``signature``."""

    signature: SignedDecision | None = None
    body: dict[str, Any] = field(default_factory=dict)


def verify_decision(uow: UnitOfWork, ctx: Context, command: str, aggregate: Aggregate,
                    signed: Signed | None) -> dict[str, Any] | None:
    """The ``signature`` record of the event deciding ``command`` on ``aggregate`` (at its
    current version): ``{"key_id", "statement", "value"}``; None for an unsigned decision
    let through in development mode (``ctx.allow_unsigned``).

    Refused (nothing decided): no signature, or a key the acting member never registered
    (SignatureRequired); a revoked key (KeyRevokedError); a signature made on another version of
    the aggregate (StaleDecision: sign again at the current one); a signature that does not
    verify over the statement (SignatureInvalid). A signature that is sent is checked in
    development mode too.
    """
    if COMMANDS.get(command) != aggregate.kind:
        raise ValueError(f"{command!r} decides on the aggregate kind "
                         f"{COMMANDS.get(command)!r}, not {aggregate.kind!r}")
    if signed is None or signed.signature is None:
        if ctx.allow_unsigned:
            return None
        raise SignatureRequired(f"{command} is a signed decision: send a signature by a key "
                                "the acting member registered (POST /participants/{id}/keys)",
                                command=command)
    signature, member_id = signed.signature, ctx.actor.member_id
    participant = uow.get(Participant, ctx.actor.participant_id)
    participant.require_admitted()
    key = participant.key_of(member_id, signature.key_id)
    if key is None:
        raise SignatureRequired(f"member {member_id} has no registered key "
                                f"{signature.key_id!r}", key_id=signature.key_id)
    if weak_key(key.public_key):  # stored before registration refused them
        raise SignatureInvalid(f"key {signature.key_id} of member {member_id} is a point of "
                               "small order, which anyone can sign with: it signs nothing",
                               key_id=signature.key_id)
    if key.state != "active":
        raise KeyRevokedError(f"key {signature.key_id} of member {member_id} was revoked; sign "
                         "with an active key", key_id=signature.key_id)
    if signature.aggregate_version != aggregate.version:
        raise StaleDecision(
            f"signed on {aggregate.kind} {aggregate.id} at version "
            f"{signature.aggregate_version}, which is at version {aggregate.version} now: "
            f"sign again at version {aggregate.version}", current_version=aggregate.version)
    stmt = statement(command, aggregate.id, aggregate.version, member_id, signed.body)
    if not verifies(key.public_key, stmt, signature.value):
        raise SignatureInvalid(f"the signature does not verify with key {signature.key_id} "
                               f"over the statement of {command} on {aggregate.kind} "
                               f"{aggregate.id} at version {aggregate.version} by member "
                               f"{member_id} with the body as sent",
                               key_id=signature.key_id)
    return {"key_id": signature.key_id, "statement": stmt, "value": signature.value}


def signature_check(uow: UnitOfWork, ctx: Context, command: str, aggregate: Aggregate,
                    signed: Signed | None) -> Sign:
    """:func:`verify_decision`, deferred: the aggregate calls it after its own rules (who
    may, in which state), just before its event, so a caller refused by those rules is told
    so (not that it could not sign an aggregate it may not see); the aggregate is still at
    the version the member signed."""
    return partial(verify_decision, uow, ctx, command, aggregate, signed)
