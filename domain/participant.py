"""Participant: an organization on the platform, its admission (准入审核) and members."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.decision import DecisionFormatError, load_public_key, weak_key
from core.decision import key_id as decision_key_id
from core.event import Event
from core.sealed import MEMBER_NAME
from core.secagg import check_node_key, node_key_id
from domain.base import MEMBER_ROLES, ROLES, Aggregate, Context, applies, new_id
from domain.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    ParticipantNotAdmitted,
    ParticipantSuspendedError,
    RegulatorExists,
    RegulatorNotSuspendable,
    SeparationOfDuties,
    WrongState,
)
from domain.permissions import SYSTEM, permit
from domain.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from domain.signing import Sign, Signed


@dataclass(frozen=True, kw_only=True)
class ParticipantRegistered(Event):
    """The platform onboarded an organization (入驻) in one of the six roles; pending admission."""

    type_name = "participant.registered"
    name: str
    role: str
    credit_code: str


@dataclass(frozen=True, kw_only=True)
class AdmissionApproved(Event):
    """Admission review passed (准入审核): the participant may act."""

    type_name = "participant.admission_approved"
    class_version = 2
    comment: str = ""
    #: the deciding member's signature (core.decision); null: unsigned (development mode)
    signature: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 was not signed."""
        state["signature"] = None


@dataclass(frozen=True, kw_only=True)
class AdmissionRejected(Event):
    """Admission review failed; terminal."""

    type_name = "participant.admission_rejected"
    class_version = 2
    reason: str
    #: the deciding member's signature (core.decision); null: unsigned (development mode)
    signature: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 was not signed."""
        state["signature"] = None


@dataclass(frozen=True, kw_only=True)
class MemberAdded(Event):
    """A member (user) joined; ``token_hash`` is SHA-256 of its bearer token, never the token.
    ``name`` names a natural person: from version 2 it is sealed under the member's own key
    (``core.sealed`` envelope, subject = ``member_id``), so erasing that key erases it."""

    type_name = "participant.member_added"
    class_version = 2
    member_id: str
    #: the envelope of the member's name (a clear string: version 1, or a Ledger without
    #: a key store)
    name: str | dict[str, str]
    member_roles: list[str]
    token_hash: str

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 held the name in clear: it stays so (its bytes are in the tree)."""


@dataclass(frozen=True, kw_only=True)
class MemberTokenRotated(Event):
    """A member's bearer token was replaced; the old one stops working."""

    type_name = "participant.member_token_rotated"
    member_id: str
    token_hash: str


@dataclass(frozen=True, kw_only=True)
class KeyRegistered(Event):
    """A member registered an Ed25519 public key (base64 of its 32 raw bytes) for decision
    signatures; ``key_id`` names it in each signature (``core.decision.key_id``). A member
    may hold several keys."""

    type_name = "participant.key_registered"
    class_version = 2
    member_id: str
    public_key: str
    key_id: str

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 had no key id: it is computed from the key."""
        state["key_id"] = registered_key_id(state["public_key"])


@dataclass(frozen=True, kw_only=True)
class KeyRevoked(Event):
    """A member's key was revoked (by the member or its participant's admin, or replaced
    by a newer key): decisions signed with it are refused from now on."""

    type_name = "participant.key_revoked"
    member_id: str
    key_id: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class NodeKeyRegistered(Event):
    """A provider's member registered its compute node's X25519 public key (base64 of its
    32 raw bytes; ``key_id`` = ``x25519:`` and 32 hex digits of its SHA-256): the key its
    peers agree masks with in a joint computation (core/secagg.py). A signed decision
    (``participant.node_key``); a new registration replaces the old one."""

    type_name = "participant.node_key_registered"
    public_key: str
    key_id: str
    #: the deciding member's signature (core.decision); null: unsigned (development mode)
    signature: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class RegulatorSeated(Event):
    """The participant registered as the platform's regulator took the one regulator seat
    (a stream of its own, ``REGULATOR_SEAT_ID``): while its holder is not rejected, a
    second regulator is refused, and two racing registrations meet on its version."""

    type_name = "participant.regulator_seated"
    participant_id: str


@dataclass(frozen=True, kw_only=True)
class ParticipantSuspended(Event):
    """The regulator or platform suspended the participant; terminal."""

    type_name = "participant.suspended"
    reason: str


def registered_key_id(public_key: str) -> str:
    """The id of a registered key; a key stored before keys were checked that is no Ed25519
    key gets an ``invalid:`` id (it verifies nothing, but stays listed)."""
    try:
        return decision_key_id(public_key)
    except DecisionFormatError:
        digest = hashlib.sha256(public_key.encode("utf-8")).hexdigest()[:32]
        return f"invalid:{digest}"


@dataclass
class MemberKey:
    """A registered decision key: its public key and whether it is active or revoked."""

    public_key: str
    state: str = "active"


@dataclass
class Member:
    #: as recorded: an envelope (core.sealed) or a clear name; the domain never opens it
    name: str | dict[str, str]
    roles: list[str]
    token_hash: str
    #: key id -> the member's registered decision keys, active or revoked
    keys: dict[str, MemberKey] = field(default_factory=dict)


class Participant(Aggregate):
    """pending → admitted | rejected; admitted → suspended. Rejected and suspended are terminal."""

    kind = "participant"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.state = "new"
        self.name = ""
        self.role = ""
        self.credit_code = ""
        self.members: dict[str, Member] = {}
        #: a provider's registered compute-node key (``public_key_text``), or None
        self.node_key: str | None = None

    # -- decide ---------------------------------------------------------------
    @classmethod
    def register(cls, id: str, ctx: Context, *, name: str, role: str, credit_code: str) -> Participant:
        if role not in ROLES:
            raise InvalidInput("role", f"must be one of {', '.join(ROLES)}")
        if role == "platform":
            raise InvalidInput("role", "there is one platform operator; it is created at first start")
        agg = cls(id)
        agg.trigger(ParticipantRegistered, ctx, name=name, role=role, credit_code=credit_code)
        return agg

    def decide_admission(self, ctx: Context, *, approve: bool, comment: str,
                         sign: Sign = lambda: None) -> None:
        # Operators are selected by the government (白皮书 5.1.1): the regulator admits them.
        if self.role == "operator" and ctx.actor.role != "regulator":
            raise Forbidden("participant.admission: an operator is admitted by the regulator "
                            "only", rule="participant.admission")
        self.require_state(["pending"], "decide admission")
        if approve:
            self.trigger(AdmissionApproved, ctx, comment=comment, signature=sign())
        else:
            if not comment:
                raise InvalidInput("comment", "a rejection needs a reason")
            self.trigger(AdmissionRejected, ctx, reason=comment, signature=sign())

    def add_member(self, ctx: Context, *, member_id: str, name: str, member_roles: list[str],
                   token_hash: str) -> None:
        """Add a member (who may is checked by the use cases: the platform makes only the
        first admin, at onboarding; the participant's own admins the others)."""
        self.require_state(["pending", "admitted"], "add a member")
        bad = [r for r in member_roles if r not in MEMBER_ROLES]
        if bad or not member_roles:
            raise InvalidInput("roles", f"each must be one of {', '.join(MEMBER_ROLES)}")
        if "expert" in member_roles and self.role != "regulator":
            raise InvalidInput("roles", "experts (专家组) are members of the regulator")
        self._require_unused(token_hash)
        self.trigger(MemberAdded, ctx, member_id=member_id,
                     name=ctx.personal(member_id, MEMBER_NAME, name),
                     member_roles=sorted(set(member_roles)), token_hash=token_hash)

    def rotate_token(self, ctx: Context, *, member_id: str, token_hash: str) -> None:
        """Replace a member's token hash: by the member itself or its participant's admin
        (the server's own actor at start, for the platform admin); never another
        participant, the platform included (403 ``separation_of_duties``)."""
        permit(ctx.actor, "participant.token_rotation")
        if ctx.actor.role != SYSTEM and ctx.actor.participant_id != self.id:
            raise SeparationOfDuties(
                f"participant.token_rotation: only participant {self.id}'s own members "
                "rotate its tokens; no other participant, the platform included",
                rule="participant.token_rotation")
        self._require_member(member_id)
        self._require_unused(token_hash)
        own_admin = ctx.actor.participant_id == self.id and "admin" in ctx.actor.member_roles
        if ctx.actor.role != SYSTEM and ctx.actor.member_id != member_id and not own_admin:
            raise Forbidden("participant.token_rotation: a member rotates its own token, its "
                            "participant's admins those of its members",
                            rule="participant.token_rotation")
        self.require_state(["pending", "admitted"], "rotate a token")
        self.trigger(MemberTokenRotated, ctx, member_id=member_id, token_hash=token_hash)

    def register_key(self, ctx: Context, *, member_id: str, public_key: str,
                     replaces: str | None = None) -> str:
        """The member registers a key (its id returned); with ``replaces`` (rotation) its
        active key of that id is revoked in the same command."""
        self._require_member(member_id)
        if ctx.actor.member_id != member_id:
            raise Forbidden("a member registers its own key")
        self.require_state(["admitted"], "register a key")
        try:
            load_public_key(public_key)
        except DecisionFormatError as exc:
            raise InvalidInput("public_key", str(exc)) from None
        if weak_key(public_key):
            raise InvalidInput("public_key", "a point of small order: anyone could make its "
                               "signatures; generate a key (dataledger keys new)")
        kid = decision_key_id(public_key)
        if any(kid in m.keys for m in self.members.values()):
            raise InvalidInput("public_key", f"key {kid} is already registered")
        if replaces is not None and self.key_of(member_id, replaces) is None:
            raise InvalidInput("replaces", f"member {member_id} has no key {replaces!r}")
        if replaces is not None and self.members[member_id].keys[replaces].state != "active":
            raise InvalidInput("replaces", f"key {replaces} is already revoked")
        self.trigger(KeyRegistered, ctx, member_id=member_id, public_key=public_key,
                     key_id=kid)
        if replaces is not None:
            self.trigger(KeyRevoked, ctx, member_id=member_id, key_id=replaces,
                         reason=f"replaced by {kid}")
        return kid

    def revoke_key(self, ctx: Context, *, key_id: str, reason: str) -> str:
        """Revoke a key (by its member or the participant's admin); the member's id."""
        holder = next((m for m, member in self.members.items() if key_id in member.keys), None)
        if holder is None:
            raise NotFound(f"no key {key_id} in participant {self.id}", kind="key", id=key_id)
        own = ctx.actor.member_id == holder
        if not own and not (ctx.actor.participant_id == self.id
                            and "admin" in ctx.actor.member_roles):
            raise Forbidden("participant.key_revocation: only the key's member or an admin of "
                            "its participant revokes it", rule="participant.key_revocation")
        self.require_state(["admitted"], "revoke a key")
        if self.members[holder].keys[key_id].state != "active":
            raise WrongState(f"key {key_id} is already revoked", state="revoked")
        if not reason.strip():
            raise InvalidInput("reason", "a revocation needs a reason")
        self.trigger(KeyRevoked, ctx, member_id=holder, key_id=key_id, reason=reason)
        return holder

    def register_node_key(self, ctx: Context, *, public_key: str,
                          sign: Sign = lambda: None) -> str:
        """A member of this provider registers its compute node's X25519 key (its id
        returned), replacing any earlier one."""
        if self.role != "provider" or ctx.actor.participant_id != self.id:
            raise Forbidden("participant.node_key: a provider's own member registers its "
                            "node key", rule="participant.node_key")
        self.require_state(["admitted"], "register a node key")
        try:
            check_node_key(public_key)
        except ValueError as exc:
            raise InvalidInput("public_key", str(exc)) from None
        kid = node_key_id(public_key)
        self.trigger(NodeKeyRegistered, ctx, public_key=public_key, key_id=kid,
                     signature=sign())
        return kid

    def key_of(self, member_id: str, key_id: str) -> MemberKey | None:
        """The member's registered key of that id (active or revoked), or None."""
        member = self.members.get(member_id)
        return None if member is None else member.keys.get(key_id)

    def suspend(self, ctx: Context, *, reason: str) -> None:
        if self.role == "platform":
            raise Forbidden("the platform operator cannot be suspended: suspension is "
                            "terminal, and the platform onboards and lists for everyone")
        if self.role == "regulator":
            raise RegulatorNotSuspendable(
                "participant.suspension: the regulator cannot be suspended: it supervises "
                "the platform, and a platform has one regulator", rule="participant.suspension")
        self.require_state(["admitted"], "suspend")
        if not reason:
            raise InvalidInput("reason", "a suspension needs a reason")
        self.trigger(ParticipantSuspended, ctx, reason=reason)

    def require_admitted(self) -> None:
        """Raise (409 ``participant_suspended`` or ``participant_not_admitted``) unless the
        participant may act."""
        if self.state != "admitted":
            error = (ParticipantSuspendedError if self.state == "suspended"
                     else ParticipantNotAdmitted)
            raise error(f"participant {self.id} is {self.state}, not admitted",
                        state=self.state)

    def _require_unused(self, token_hash: str) -> None:
        """A token hash names one member (the API checks the other participants' too)."""
        if any(m.token_hash == token_hash for m in self.members.values()):
            raise InvalidInput("token_hash", "already the token of a member: make a new token")

    def _require_member(self, member_id: str) -> None:
        if member_id not in self.members:
            raise InvalidInput("member_id", f"no member {member_id} in participant {self.id}")

    # -- evolve ---------------------------------------------------------------
    @applies(ParticipantRegistered)
    def _registered(self, e: ParticipantRegistered) -> None:
        self.state, self.name, self.role, self.credit_code = "pending", e.name, e.role, e.credit_code

    @applies(AdmissionApproved)
    def _admitted(self, e: AdmissionApproved) -> None:
        self.state = "admitted"

    @applies(AdmissionRejected)
    def _rejected(self, e: AdmissionRejected) -> None:
        self.state = "rejected"

    @applies(MemberAdded)
    def _member_added(self, e: MemberAdded) -> None:
        self.members[e.member_id] = Member(e.name, list(e.member_roles), e.token_hash)

    @applies(MemberTokenRotated)
    def _rotated(self, e: MemberTokenRotated) -> None:
        self.members[e.member_id].token_hash = e.token_hash

    @applies(KeyRegistered)
    def _key(self, e: KeyRegistered) -> None:
        self.members[e.member_id].keys[e.key_id] = MemberKey(e.public_key)

    @applies(KeyRevoked)
    def _key_revoked(self, e: KeyRevoked) -> None:
        self.members[e.member_id].keys[e.key_id].state = "revoked"

    @applies(NodeKeyRegistered)
    def _node_key(self, e: NodeKeyRegistered) -> None:
        self.node_key = e.public_key

    @applies(ParticipantSuspended)
    def _suspended(self, e: ParticipantSuspended) -> None:
        self.state = "suspended"


#: the id of the regulator seat's stream: fixed, so that registrations of a regulator meet on it
REGULATOR_SEAT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "dataledger:regulator-seat"))


class RegulatorSeat(Aggregate):
    """The platform's one regulator seat: free, or held by a registered regulator."""

    kind = "regulator_seat"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.holder: str | None = None

    def take(self, ctx: Context, participant_id: str, holder_state: str | None) -> None:
        """Seat ``participant_id``; refused (409 ``regulator_exists``) while the holder
        (in ``holder_state``) is not rejected."""
        if self.holder is not None and holder_state != "rejected":
            raise RegulatorExists(f"the platform has its regulator ({self.holder}, "
                                  f"{holder_state}): one regulator per platform",
                                  regulator_id=self.holder)
        self.trigger(RegulatorSeated, ctx, participant_id=participant_id)

    @applies(RegulatorSeated)
    def _seated(self, e: RegulatorSeated) -> None:
        self.holder = e.participant_id


def _take_regulator_seat(uow: UnitOfWork, ctx: Context, participant_id: str) -> None:
    """The new regulator takes the seat in the registration's unit of work (the seat's
    stream is made at its first use: two first registrations conflict on its version 1)."""
    try:
        seat = uow.get(RegulatorSeat, REGULATOR_SEAT_ID)
    except NotFound:
        seat = RegulatorSeat(REGULATOR_SEAT_ID)
        uow.add(seat)
    state = None if seat.holder is None else uow.get(Participant, seat.holder).state
    seat.take(ctx, participant_id, state)


#: a token hash as ``api.auth.hash_token`` makes it: SHA-256, 64 lowercase hex digits
TOKEN_HASH = re.compile(r"[0-9a-f]{64}")


def found_platform(id: str, ctx: Context, *, name: str) -> Participant:
    """Create the platform operator itself (平台运营方) at first start, already admitted."""
    agg = Participant(id)
    agg.trigger(ParticipantRegistered, ctx, name=name, role="platform", credit_code="")
    agg.trigger(AdmissionApproved, ctx, comment="platform operator, created at first start")
    return agg


# -- use cases ------------------------------------------------------------------
def register_participant(uow: UnitOfWork, ctx: Context, *, name: str, role: str,
                         credit_code: str, admin_name: str, admin_token_hash: str) -> dict[str, str]:
    """Onboard an organization with its first admin member, whose token's hash the caller
    gives (made by the new participant itself, or by the server for development): the only
    member the platform makes for another participant. A regulator takes the platform's one
    regulator seat in the same unit of work (409 ``regulator_exists`` if it is held)."""
    permit(ctx.actor, "participant.registration")
    agg = Participant.register(new_id(), ctx, name=name, role=role, credit_code=credit_code)
    if role == "regulator":
        _take_regulator_seat(uow, ctx, agg.id)
    member_id = new_id()
    agg.add_member(ctx, member_id=member_id, name=admin_name, member_roles=["admin"],
                   token_hash=admin_token_hash)
    uow.add(agg)
    return {"participant_id": agg.id, "member_id": member_id}


def decide_admission(uow: UnitOfWork, ctx: Context, participant_id: str, *, approve: bool,
                     comment: str, signed: Signed | None = None) -> dict[str, str]:
    """准入审核: approve or reject a pending participant (a signed decision)."""
    from domain.signing import signature_check  # it reads participants: imported late

    permit(ctx.actor, "participant.admission")
    agg = uow.get(Participant, participant_id)
    sign = signature_check(uow, ctx, "participant.admission", agg, signed)
    agg.decide_admission(ctx, approve=approve, comment=comment, sign=sign)
    return {"participant_id": agg.id, "state": agg.state}


def add_member(uow: UnitOfWork, ctx: Context, participant_id: str, *, name: str,
               member_roles: list[str], token_hash: str) -> dict[str, str]:
    """An admin of the participant adds a member (user) with a bearer token whose hash the
    caller computed. No participant makes another's members (separation of duties): the
    platform's one is the first admin, made when it onboards the participant."""
    permit(ctx.actor, "participant.member_addition")
    if participant_id != ctx.actor.participant_id:
        raise SeparationOfDuties(
            f"participant.member_addition: only the admins of participant {participant_id} "
            "add its members; the platform made its first admin when it onboarded it",
            rule="participant.member_addition")
    agg = uow.get(Participant, participant_id)
    member_id = new_id()
    agg.add_member(ctx, member_id=member_id, name=name, member_roles=member_roles,
                   token_hash=token_hash)
    return {"participant_id": agg.id, "member_id": member_id}


def rotate_token(uow: UnitOfWork, ctx: Context, participant_id: str, member_id: str, *,
                 token_hash: str) -> dict[str, str]:
    """A member replaces its bearer token by one it made (only its hash is sent); its
    participant's admin may rotate its members' tokens; no other participant, the platform
    included. The old token stops working."""
    permit(ctx.actor, "participant.token_rotation")
    if not TOKEN_HASH.fullmatch(token_hash):
        raise InvalidInput("token_hash", "SHA-256 hex of the token: 64 lowercase hex digits")
    agg = uow.get(Participant, participant_id)
    agg.rotate_token(ctx, member_id=member_id, token_hash=token_hash)
    return {"participant_id": agg.id, "member_id": member_id}


def register_key(uow: UnitOfWork, ctx: Context, participant_id: str, *,
                 public_key: str, replaces: str | None = None) -> dict[str, str]:
    """The calling member registers an Ed25519 public key; with ``replaces``, rotates:
    that key of the member's is revoked in the same command."""
    permit(ctx.actor, "participant.key_registration")
    if participant_id != ctx.actor.participant_id:
        raise Forbidden("participant.key_registration: a member registers its key in its own "
                        "participant", rule="participant.key_registration")
    agg = uow.get(Participant, participant_id)
    kid = agg.register_key(ctx, member_id=ctx.actor.member_id, public_key=public_key,
                           replaces=replaces)
    return {"participant_id": agg.id, "member_id": ctx.actor.member_id, "key_id": kid}


def register_node_key(uow: UnitOfWork, ctx: Context, participant_id: str, *,
                      public_key: str, signed: Signed | None = None) -> dict[str, str]:
    """A member of a provider registers its compute node's X25519 public key (a signed
    decision); it replaces the provider's earlier node key."""
    from domain.signing import signature_check  # it reads participants: imported late

    permit(ctx.actor, "participant.node_key")
    agg = uow.get(Participant, participant_id)
    sign = signature_check(uow, ctx, "participant.node_key", agg, signed)
    kid = agg.register_node_key(ctx, public_key=public_key, sign=sign)
    return {"participant_id": agg.id, "key_id": kid}


def revoke_key(uow: UnitOfWork, ctx: Context, participant_id: str, key_id: str, *,
               reason: str) -> dict[str, str]:
    """The key's member or its participant's admin revokes a key."""
    permit(ctx.actor, "participant.key_revocation")
    agg = uow.get(Participant, participant_id)
    member_id = agg.revoke_key(ctx, key_id=key_id, reason=reason)
    return {"participant_id": agg.id, "member_id": member_id, "key_id": key_id,
            "state": "revoked"}


def suspend_participant(uow: UnitOfWork, ctx: Context, participant_id: str, *,
                        reason: str) -> dict[str, str]:
    """Suspend an admitted participant (terminal)."""
    permit(ctx.actor, "participant.suspension")
    agg = uow.get(Participant, participant_id)
    agg.suspend(ctx, reason=reason)
    return {"participant_id": agg.id, "state": agg.state}
