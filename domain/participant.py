"""Participant: an organization on the platform, its admission (准入审核) and members."""

from __future__ import annotations

from dataclasses import dataclass

from core.event import Event
from domain.base import ROLES, Aggregate, Context, applies, new_id
from domain.errors import Forbidden, InvalidInput, WrongState
from domain.unit_of_work import UnitOfWork

MEMBER_ROLES = ("admin", "expert", "member")


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
    comment: str = ""


@dataclass(frozen=True, kw_only=True)
class AdmissionRejected(Event):
    """Admission review failed; terminal."""

    type_name = "participant.admission_rejected"
    reason: str


@dataclass(frozen=True, kw_only=True)
class MemberAdded(Event):
    """A member (user) joined; ``token_hash`` is SHA-256 of its bearer token, never the token."""

    type_name = "participant.member_added"
    member_id: str
    name: str
    member_roles: list[str]
    token_hash: str


@dataclass(frozen=True, kw_only=True)
class MemberTokenRotated(Event):
    """A member's bearer token was replaced; the old one stops working."""

    type_name = "participant.member_token_rotated"
    member_id: str
    token_hash: str


@dataclass(frozen=True, kw_only=True)
class KeyRegistered(Event):
    """A member registered an Ed25519 public key (base64) for decision signatures."""

    type_name = "participant.key_registered"
    member_id: str
    public_key: str


@dataclass(frozen=True, kw_only=True)
class ParticipantSuspended(Event):
    """The regulator or platform suspended the participant; terminal."""

    type_name = "participant.suspended"
    reason: str


@dataclass
class Member:
    name: str
    roles: list[str]
    token_hash: str
    public_key: str | None = None


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

    # -- decide ---------------------------------------------------------------
    @classmethod
    def register(cls, id: str, ctx: Context, *, name: str, role: str, credit_code: str) -> Participant:
        ctx.actor.require_role("platform")
        if role not in ROLES:
            raise InvalidInput("role", f"must be one of {', '.join(ROLES)}")
        if role == "platform":
            raise InvalidInput("role", "there is one platform operator; it is created at first start")
        agg = cls(id)
        agg.trigger(ParticipantRegistered, ctx, name=name, role=role, credit_code=credit_code)
        return agg

    def decide_admission(self, ctx: Context, *, approve: bool, comment: str) -> None:
        # Operators are selected by the government (白皮书 5.1.1): the regulator admits them.
        needed = ("regulator",) if self.role == "operator" else ("platform", "regulator")
        ctx.actor.require_role(*needed)
        self.require_state(["pending"], "decide admission")
        if approve:
            self.trigger(AdmissionApproved, ctx, comment=comment)
        else:
            if not comment:
                raise InvalidInput("comment", "a rejection needs a reason")
            self.trigger(AdmissionRejected, ctx, reason=comment)

    def add_member(self, ctx: Context, *, member_id: str, name: str, member_roles: list[str],
                   token_hash: str) -> None:
        self._require_admin_or_platform(ctx)
        self.require_state(["pending", "admitted"], "add a member")
        bad = [r for r in member_roles if r not in MEMBER_ROLES]
        if bad or not member_roles:
            raise InvalidInput("roles", f"each must be one of {', '.join(MEMBER_ROLES)}")
        if "expert" in member_roles and self.role != "regulator":
            raise InvalidInput("roles", "experts (专家组) are members of the regulator")
        self.trigger(MemberAdded, ctx, member_id=member_id, name=name,
                     member_roles=sorted(set(member_roles)), token_hash=token_hash)

    def rotate_token(self, ctx: Context, *, member_id: str, token_hash: str) -> None:
        self._require_member(member_id)
        if ctx.actor.member_id != member_id:
            self._require_admin_or_platform(ctx)
        self.require_state(["pending", "admitted"], "rotate a token")
        self.trigger(MemberTokenRotated, ctx, member_id=member_id, token_hash=token_hash)

    def register_key(self, ctx: Context, *, member_id: str, public_key: str) -> None:
        self._require_member(member_id)
        if ctx.actor.member_id != member_id:
            raise Forbidden("a member registers its own key")
        self.require_state(["admitted"], "register a key")
        self.trigger(KeyRegistered, ctx, member_id=member_id, public_key=public_key)

    def suspend(self, ctx: Context, *, reason: str) -> None:
        ctx.actor.require_role("platform", "regulator")
        if self.role == "platform":
            raise Forbidden("the platform operator cannot be suspended: suspension is "
                            "terminal, and the platform onboards and lists for everyone")
        self.require_state(["admitted"], "suspend")
        if not reason:
            raise InvalidInput("reason", "a suspension needs a reason")
        self.trigger(ParticipantSuspended, ctx, reason=reason)

    def require_admitted(self) -> None:
        """Raise WrongState unless the participant may act."""
        if self.state != "admitted":
            raise WrongState(f"participant {self.id} is {self.state}, not admitted",
                             state=self.state)

    def _require_member(self, member_id: str) -> None:
        if member_id not in self.members:
            raise InvalidInput("member_id", f"no member {member_id} in participant {self.id}")

    def _require_admin_or_platform(self, ctx: Context) -> None:
        if ctx.actor.role in ("platform", "system"):
            return
        if ctx.actor.participant_id == self.id and "admin" in ctx.actor.member_roles:
            return
        raise Forbidden("only the participant's admin members or the platform manage members")

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
        self.members[e.member_id].public_key = e.public_key

    @applies(ParticipantSuspended)
    def _suspended(self, e: ParticipantSuspended) -> None:
        self.state = "suspended"


def found_platform(id: str, ctx: Context, *, name: str) -> Participant:
    """Create the platform operator itself (平台运营方) at first start, already admitted."""
    agg = Participant(id)
    agg.trigger(ParticipantRegistered, ctx, name=name, role="platform", credit_code="")
    agg.trigger(AdmissionApproved, ctx, comment="platform operator, created at first start")
    return agg


# -- use cases ------------------------------------------------------------------
def register_participant(uow: UnitOfWork, ctx: Context, *, name: str, role: str,
                         credit_code: str, admin_name: str, admin_token_hash: str) -> dict[str, str]:
    """Onboard an organization with its first admin member (the token is made by the caller)."""
    agg = Participant.register(new_id(), ctx, name=name, role=role, credit_code=credit_code)
    member_id = new_id()
    agg.add_member(ctx, member_id=member_id, name=admin_name, member_roles=["admin"],
                   token_hash=admin_token_hash)
    uow.add(agg)
    return {"participant_id": agg.id, "member_id": member_id}


def decide_admission(uow: UnitOfWork, ctx: Context, participant_id: str, *, approve: bool,
                     comment: str) -> dict[str, str]:
    """准入审核: approve or reject a pending participant."""
    agg = uow.get(Participant, participant_id)
    agg.decide_admission(ctx, approve=approve, comment=comment)
    return {"participant_id": agg.id, "state": agg.state}


def add_member(uow: UnitOfWork, ctx: Context, participant_id: str, *, name: str,
               member_roles: list[str], token_hash: str) -> dict[str, str]:
    """Add a member (user) with a bearer token whose hash the caller computed."""
    agg = uow.get(Participant, participant_id)
    member_id = new_id()
    agg.add_member(ctx, member_id=member_id, name=name, member_roles=member_roles,
                   token_hash=token_hash)
    return {"participant_id": agg.id, "member_id": member_id}


def register_key(uow: UnitOfWork, ctx: Context, participant_id: str, *,
                 public_key: str) -> dict[str, str]:
    """The calling member registers its Ed25519 public key."""
    agg = uow.get(Participant, participant_id)
    agg.register_key(ctx, member_id=ctx.actor.member_id, public_key=public_key)
    return {"participant_id": agg.id, "member_id": ctx.actor.member_id}


def suspend_participant(uow: UnitOfWork, ctx: Context, participant_id: str, *,
                        reason: str) -> dict[str, str]:
    """Suspend an admitted participant (terminal)."""
    agg = uow.get(Participant, participant_id)
    agg.suspend(ctx, reason=reason)
    return {"participant_id": agg.id, "state": agg.state}
