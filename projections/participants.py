"""Participants and their members (the members table also serves authentication)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import JSON, Column, Connection, String, Table, select, update

from core.record import LogEntry
from core.sealed import ERASED, MEMBER_NAME, is_envelope
from domain.participant import registered_key_id
from projections import base

#: opens stored names for a reader: (values as recorded, their path) -> what is shown
Names = Callable[[list[Any], str], list[str]]

participants = base.state_table(
    "rm_participants",
    Column("name", String, nullable=False),
    Column("role", String, nullable=False),
    Column("credit_code", String, nullable=False),
    Column("state", String, nullable=False),
    Column("registered_at", String, nullable=False),
    # a provider's compute-node key: {public_key, key_id, seq, signer_seq} (the seq of its
    # participant.node_key_registered, which a peer's node proves, and of the
    # participant.key_registered of the member key that signed it); null: none registered
    Column("node_key", JSON, nullable=True),
    # member key id -> the seq of its participant.key_registered (not shown)
    Column("key_seqs", JSON, nullable=True),
    stamped=False,
)

members = Table(
    "rm_members", base.METADATA,
    Column("member_id", String, primary_key=True),
    Column("participant_id", String, nullable=False, index=True),
    #: the name as recorded in clear (before names were sealed), "" when sealed, or
    #: "[erased]" once the member is erased
    Column("name", String, nullable=False),
    #: the envelope of the name (core.sealed), opened by the reader with the member's key;
    #: null when recorded in clear or erased
    Column("sealed_name", JSON, nullable=True),
    Column("roles", JSON, nullable=False),
    Column("token_hash", String, nullable=False, unique=True),
    #: the member's decision keys in the order registered: [{key_id, public_key, state
    #: (active | revoked), registered_at, revoked_at, revocation_reason}]
    Column("keys", JSON, nullable=False, default=list),
)


def _registered(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    base.insert_row(conn, participants,
        id=entry.originator_id, name=p["name"], role=p["role"], credit_code=p["credit_code"],
        state="pending", registered_at=p["at"], version=entry.version)


def _own_token_hash(conn: Connection, member_id: str, token_hash: str) -> str:
    """``token_hash``, unless another member holds it already (a hash the caller chose, the
    API's check raced): then a value no token hashes to, so the token authenticates its
    first holder only and the later member's token works for nobody."""
    holder = conn.execute(select(members.c.member_id).where(
        members.c.token_hash == token_hash)).scalar()
    return token_hash if holder in (None, member_id) else f"void:{member_id}"


def _member_added(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    name = p["name"]
    envelope = is_envelope(name)
    base.insert_row(conn, members,
        member_id=p["member_id"], participant_id=entry.originator_id,
        name="" if envelope else name, sealed_name=name if envelope else None,
        roles=p["member_roles"], token_hash=_own_token_hash(conn, p["member_id"], p["token_hash"]),
        keys=[])
    base.touch(conn, participants, entry, p)


def _subject_erased(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    """密钥销毁: the member's row keeps neither its name nor the name's envelope."""
    conn.execute(update(members).where(members.c.member_id == p["subject_id"])
                 .values(name=ERASED, sealed_name=None))


def _token_rotated(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    token_hash = _own_token_hash(conn, p["member_id"], p["token_hash"])
    conn.execute(update(members).where(members.c.member_id == p["member_id"])
                 .values(token_hash=token_hash))
    base.touch(conn, participants, entry, p)


def _seated(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    """The regulator seat has no view: its stream only makes a second regulator conflict."""


def _member_keys(conn: Connection, member_id: str) -> list[dict[str, Any]]:
    return list(conn.execute(select(members.c["keys"]).where(
        members.c.member_id == member_id)).scalar_one())


def _set_keys(conn: Connection, entry: LogEntry, p: dict[str, Any],
              keys: list[dict[str, Any]]) -> None:
    conn.execute(update(members).where(members.c.member_id == p["member_id"]).values(keys=keys))
    base.touch(conn, participants, entry, p)


def _key_registered(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    # version 1 carried no key id: computed as its upcaster does
    key_id = p.get("key_id") or registered_key_id(p["public_key"])
    keys = [k for k in _member_keys(conn, p["member_id"]) if k["key_id"] != key_id]
    _set_keys(conn, entry, p, [*keys, {
        "key_id": key_id, "public_key": p["public_key"], "state": "active",
        "registered_at": p["at"], "revoked_at": None, "revocation_reason": None}])
    conn.execute(update(participants).where(participants.c.id == entry.originator_id).values(
        key_seqs={**_key_seqs(conn, entry.originator_id), key_id: entry.seq}))


def _key_seqs(conn: Connection, participant_id: str) -> dict[str, int]:
    return dict(conn.execute(select(participants.c.key_seqs).where(
        participants.c.id == participant_id)).scalar() or {})


def _node_key_registered(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    signature = p.get("signature")
    signer = signature.get("key_id") if isinstance(signature, dict) else None
    base.touch(conn, participants, entry, p, node_key={
        "public_key": p["public_key"], "key_id": p["key_id"], "seq": entry.seq,
        "signer_seq": _key_seqs(conn, entry.originator_id).get(str(signer))})


def _key_revoked(conn: Connection, entry: LogEntry, p: dict[str, Any]) -> None:
    keys = [dict(k, state="revoked", revoked_at=p["at"], revocation_reason=p["reason"])
            if k["key_id"] == p["key_id"] else k for k in _member_keys(conn, p["member_id"])]
    _set_keys(conn, entry, p, keys)


class ParticipantsProjection(base.Projection):
    name = "participants"
    tables = (participants, members)

    def handlers(self) -> dict[str, base.EventHandler]:
        return {
            "participant.registered": _registered,
            "participant.admission_approved": base.transition(participants, "admitted"),
            "participant.admission_rejected": base.transition(participants, "rejected"),
            "participant.suspended": base.transition(participants, "suspended"),
            "participant.member_added": _member_added,
            "participant.member_token_rotated": _token_rotated,
            "participant.regulator_seated": _seated,
            "participant.key_registered": _key_registered,
            "participant.key_revoked": _key_revoked,
            "participant.node_key_registered": _node_key_registered,
            "privacy.subject_erased": _subject_erased,
        }


# -- queries ----------------------------------------------------------------------
def _participant_row(row: Any, with_members: list[dict[str, Any]] | None) -> dict[str, Any]:
    out = {k: row[k] for k in ("id", "name", "role", "credit_code", "state", "registered_at",
                               "version", "node_key")}
    if with_members is not None:
        out["members"] = with_members
    return out


def list_participants(conn: Connection, viewer_id: str, sees_all: bool,
                      role: str | None = None) -> list[dict[str, Any]]:
    """Admitted participants for everyone; every participant for the regulator and platform."""
    query = select(participants).order_by(participants.c.registered_at, participants.c.id)
    if not sees_all:
        query = query.where((participants.c.state == "admitted") | (participants.c.id == viewer_id))
    if role:
        query = query.where(participants.c.role == role)
    return [_participant_row(r, None) for r in conn.execute(query).mappings()]


def token_hash_in_use(conn: Connection, token_hash: str) -> bool:
    """Whether a member's bearer token hashes to ``token_hash``."""
    return conn.execute(select(members.c.member_id).where(
        members.c.token_hash == token_hash)).first() is not None


def participant_of_member(conn: Connection, subject_id: str) -> str | None:
    """The participant of member ``subject_id``, or None."""
    return conn.execute(select(members.c.participant_id).where(
        members.c.member_id == subject_id)).scalar()


def get_participant(conn: Connection, participant_id: str, viewer_id: str,
                    sees_all: bool, names: Names) -> dict[str, Any] | None:
    """One participant; its members only for itself, the regulator and the platform.
    ``names`` opens the members' sealed names (the key store's ``reveal_all``)."""
    row = conn.execute(select(participants).where(participants.c.id == participant_id)).mappings().first()
    if row is None:
        return None
    own = sees_all or participant_id == viewer_id
    if not own and row["state"] != "admitted":
        return None
    member_rows = None
    if own:
        rows = list(conn.execute(select(members).where(
            members.c.participant_id == participant_id).order_by(members.c.member_id)).mappings())
        shown = names([m["sealed_name"] if m["sealed_name"] is not None else m["name"]
                       for m in rows], MEMBER_NAME)
        member_rows = [{"member_id": m["member_id"], "name": name, "roles": m["roles"],
                        "keys": m["keys"]} for m, name in zip(rows, shown, strict=True)]
    return _participant_row(row, member_rows)
