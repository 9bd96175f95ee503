"""Signed decisions (签名验签), replayed: where a decision event carries a ``signature``
(class version 2, docs/SIGNING.md), it verifies under a key its member registered and had
not revoked at that seq (``core.decision.event_signature_verifies``); its statement is this
event's: the command, the aggregate it decided on at the version that aggregate had, the
acting member, and a body that says what the event records once normalized the way the
server normalizes (instants in UTC, a usage policy's lists as sets, its privacy budget as a
decimal); and no signature is
used twice. An unsigned decision (version 1, or ``null`` in development mode) is a finding
only for a rule book made with ``require_signatures``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from audit.rules.model import SYSTEM, Ev, Finding, Malformed, State, instant
from core.decision import FORMAT, event_signature_verifies

#: the namespace of an authorization id derived from its grant's signature (docs/SIGNING.md)
GRANT_IDS = uuid.UUID("5b0c4a5e-4f0b-4d4e-9a57-6f7e0d9c1a21")
TIME_KEYS = ("not_before", "not_after")
#: the policy keys that are amounts of ε: decimal text or an integer, compared as decimals
AMOUNT_KEYS = ("privacy_budget",)

#: what a body must say: (the event's field, the body's field, its default when not sent,
#: how values compare); no event field: the default is the value the event type implies
Field = tuple[str | None, str, Any, Callable[[Any], Any]]


def _same(value: Any) -> Any:
    return value


def _when(value: Any) -> datetime | str:
    try:
        return instant(value)
    except Malformed:
        return f"not an instant: {value!r}"


def _amount(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return value
    try:
        return Decimal(value)
    except InvalidOperation:
        return value


def policy_form(value: Any) -> Any:
    """A usage policy as compared: instants as instants, lists as sets, amounts of ε as
    decimals."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in TIME_KEYS:
            out[key] = _when(item)
        elif key in AMOUNT_KEYS:
            out[key] = _amount(item)
        elif isinstance(item, list):
            out[key] = frozenset(map(str, item))
        else:
            out[key] = item
    return out


def _approve(flag: bool) -> Field:
    return None, "approve", flag, _same


def _text(event_field: str, body_field: str) -> Field:
    return event_field, body_field, "", _same


#: decision event type -> (command, the fields its body says)
DECISIONS: dict[str, tuple[str, tuple[Field, ...]]] = {
    "participant.admission_approved": ("participant.admission",
                                       (_approve(True), _text("comment", "comment"))),
    "participant.admission_rejected": ("participant.admission",
                                       (_approve(False), _text("reason", "comment"))),
    "participant.node_key_registered": ("participant.node_key",
                                        (("public_key", "public_key", None, _same),)),
    "scenario.opinion_recorded": ("scenario.opinion",
                                  (("verdict", "verdict", None, _same),
                                   _text("comment", "comment"))),
    "scenario.approved": ("scenario.decision", (_approve(True), _text("comment", "comment"))),
    "scenario.rejected": ("scenario.decision", (_approve(False), _text("reason", "comment"))),
    "authorization.granted": ("authorization.grant", (
        ("scenario_id", "scenario_id", None, _same),
        ("datasets", "datasets", None, _same),
        ("not_before", "not_before", None, _when),
        ("not_after", "not_after", None, _when),
        ("usage_policy", "usage_policy", None, policy_form))),
    "authorization.revoked": ("authorization.revocation", (_text("reason", "reason"),)),
    "product.listed": ("product.listing_decision",
                       (_approve(True), _text("comment", "comment"))),
    "product.listing_rejected": ("product.listing_decision",
                                 (_approve(False), _text("reason", "comment"))),
    "contract.proposed": ("contract.proposal", (
        ("usage_policy", "usage_policy", None, policy_form),
        ("price_fen", "price_fen", None, _same),
        ("revenue_split", "revenue_split", None, _same))),
    "contract.accepted": ("contract.acceptance", ()),
    "contract.party_approved": ("contract.approval", ()),
    "contract.terminated": ("contract.termination", (_text("reason", "reason"),)),
    "delivery.release_approved": ("delivery.release_approval", ()),
}


class Signatures:
    """The signature rules, with the signatures seen so far (a digest each)."""

    def __init__(self, require: bool = False) -> None:
        self.require = require
        self.seen: set[bytes] = set()

    def findings(self, s: State, ev: Ev) -> list[Finding]:
        decision = DECISIONS.get(ev.type)
        if decision is None:
            return []
        signature = ev.payload.get("signature")
        if signature is None:
            if self.require and ev.role != SYSTEM:  # the server founds the platform unsigned
                return [Finding(ev.seq, "signature_missing", f"{ev.type} signed by its member",
                                "no signature (unsigned, development mode or class version 1)")]
            return []
        if not isinstance(signature, dict) or not isinstance(signature.get("statement"), dict):
            return [Finding(ev.seq, "signature_invalid", "a signature {key_id, statement, "
                            "value}", f"{str(signature)[:200]}")]
        command, fields = decision
        out = self._key(s, ev, signature)
        out += statement_findings(s, ev, command, fields, signature["statement"])
        digest = hashlib.sha256(str(signature.get("value")).encode()).digest()[:16]
        if digest in self.seen:
            out.append(Finding(ev.seq, "signature_replayed", "a signature used by one "
                               "decision only", f"the signature {signature.get('value')} "
                               "was used before"))
        self.seen.add(digest)
        return out

    @staticmethod
    def _key(s: State, ev: Ev, signature: dict[str, Any]) -> list[Finding]:
        """The member's registered, unrevoked key, and the value verifying under it."""
        kid = signature.get("key_id")
        who = s.participants.get(ev.participant)
        key = None if who is None else who.keys.get(str(kid))
        if key is None or key.member != ev.member:
            return [Finding(ev.seq, "signature_key", f"a key member {ev.member} registered",
                            f"key {kid} is not one of its keys")]
        if not key.active:
            return [Finding(ev.seq, "signature_key", f"key {kid} not revoked at this seq",
                            "it was revoked before")]
        if not event_signature_verifies(key.public_key, signature):
            return [Finding(ev.seq, "signature_invalid", f"a signature that verifies under "
                            f"key {kid} over its statement", "it does not verify")]
        return []


def _aggregate(s: State, ev: Ev, command: str) -> tuple[str, int]:
    """The aggregate a decision event's statement must name, and its version then."""
    if command == "authorization.grant":
        scenario_id = str(ev.payload.get("scenario_id"))
        sc = s.scenarios.get(scenario_id)
        return scenario_id, (0 if sc is None else sc.version)
    return ev.id, ev.version - 1


def statement_findings(s: State, ev: Ev, command: str, fields: tuple[Field, ...],
                       stmt: dict[str, Any]) -> list[Finding]:
    """The statement is this event's (see the module); one finding naming what differs."""
    aggregate_id, version = _aggregate(s, ev, command)
    wanted = {"format": FORMAT, "command": command, "aggregate_id": aggregate_id,
              "aggregate_version": version, "member_id": ev.member}
    off = [f"{k}={stmt.get(k)!r} (the event's: {v!r})" for k, v in wanted.items()
           if stmt.get(k) != v]
    body = stmt.get("body")
    if not isinstance(body, dict):
        off.append("body is not an object")
        body = {}
    off += _body(ev, fields, body, command)
    if not off:
        return []
    return [Finding(ev.seq, "statement_mismatch", f"the signed statement of {command} on "
                    f"{aggregate_id} at version {version} by member {ev.member}, saying "
                    "what the event records", "; ".join(off))]


def _body(ev: Ev, fields: tuple[Field, ...], body: dict[str, Any], command: str) -> list[str]:
    off: list[str] = []
    known = {f[1] for f in fields}
    if command == "authorization.grant":
        known.add("authorization_id")
        chosen = body.get("authorization_id")
        derived = str(uuid.uuid5(GRANT_IDS, str(ev.payload.get("signature", {}).get("value"))))
        if chosen is not None and _uuid(chosen) != ev.id:
            off.append(f"body.authorization_id={chosen!r} (the event's: {ev.id!r})")
        elif chosen is None and derived != ev.id:
            off.append(f"authorization {ev.id} is not the one its signature derives")
    extra = sorted(set(body) - known)
    if extra:
        off.append(f"body fields {extra} the decision does not have")
    for event_field, body_field, default, form in fields:
        if event_field is None:  # a value the event's type implies (approve: true/false)
            sent, recorded = body.get(body_field), default
        else:
            sent, recorded = body.get(body_field, default), ev.payload.get(event_field)
        if sent is None or form(sent) != form(recorded):
            off.append(f"body.{body_field}={sent!r} (the event's: {recorded!r})")
    return off


def _uuid(value: Any) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(value)
