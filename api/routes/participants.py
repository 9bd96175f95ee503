"""Participants: onboarding (入驻), admission (准入审核), members, keys, suspension."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.auth import hash_token, new_token
from api.deps import CommandsDep, ReaderDep
from api.fields import NAME, TEXT, Id, Reason, SignedBody
from api.routes.common import CommandAnswer, CommandRoute, answer, found
from domain import participant as uc
from domain.base import ROLES
from projections import participants as q

router = APIRouter(prefix="/participants", tags=["participants"], route_class=CommandRoute)

Role = Literal["provider", "operator", "developer", "demander", "regulator"]


class ParticipantCreate(BaseModel):
    name: str = NAME
    role: Role
    credit_code: str = Field(min_length=1, max_length=32,
                             description="unified social credit code 统一社会信用代码")
    admin_name: str = NAME


class AdmissionDecision(SignedBody):
    approve: bool
    comment: str = TEXT


class MemberCreate(BaseModel):
    name: str = NAME
    roles: list[Literal["admin", "expert", "member"]] = Field(min_length=1)


class KeyCreate(BaseModel):
    public_key: str = Field(min_length=40, max_length=64,
                            description="Ed25519 public key: base64 of its 32 raw bytes")
    replaces: Id | None = Field(default=None, description="rotation: the id of the calling "
                                "member's active key this one replaces (revoked in the same "
                                "command)")


class KeyRevocation(BaseModel):
    reason: Reason


class KeyAnswer(CommandAnswer):
    participant_id: str
    member_id: str = Field(description="the key's member")
    key_id: str = Field(description="the key's id (ed25519:…), named by each signature")


class Suspension(BaseModel):
    reason: str = Field(min_length=1, max_length=5000)


class TokenAnswer(CommandAnswer):
    token: str | None = Field(description="the new member's bearer token, shown once "
                              "(null when an Idempotency-Key replays the first answer)")


@router.post("", status_code=201, response_model=TokenAnswer)
async def register_participant(body: ParticipantCreate, cmd: CommandsDep) -> JSONResponse:
    """The platform onboards an organization with its first admin member."""
    token = new_token()
    result = await cmd.run(uc.register_participant, name=body.name, role=body.role,
                           credit_code=body.credit_code, admin_name=body.admin_name,
                           admin_token_hash=hash_token(token))
    return answer(result, 201, token=None if result.replayed else token)


@router.post("/{participant_id}/admission", response_model=CommandAnswer)
async def decide_admission(participant_id: str, body: AdmissionDecision,
                           cmd: CommandsDep) -> JSONResponse:
    """Admission review: the regulator admits operators, the platform or regulator the others."""
    return answer(await cmd.run(uc.decide_admission, participant_id, approve=body.approve,
                                comment=body.comment, signed=body.signed()))


@router.post("/{participant_id}/members", status_code=201, response_model=TokenAnswer)
async def add_member(participant_id: str, body: MemberCreate, cmd: CommandsDep) -> JSONResponse:
    """An admin member (or the platform) adds a member; its token is shown once."""
    token = new_token()
    result = await cmd.run(uc.add_member, participant_id, name=body.name,
                           member_roles=list(body.roles), token_hash=hash_token(token),
                           allow_pending=True)
    return answer(result, 201, token=None if result.replayed else token)


@router.post("/{participant_id}/keys", status_code=201, response_model=KeyAnswer)
async def register_key(participant_id: str, body: KeyCreate, cmd: CommandsDep) -> JSONResponse:
    """The calling member registers an Ed25519 public key for decision signatures (it may
    hold several); with ``replaces``, a rotation: that key is revoked in the same command."""
    return answer(await cmd.run(uc.register_key, participant_id, public_key=body.public_key,
                                replaces=body.replaces), 201)


@router.post("/{participant_id}/keys/{key_id}/revocation", response_model=KeyAnswer)
async def revoke_key(participant_id: str, key_id: str, body: KeyRevocation,
                     cmd: CommandsDep) -> JSONResponse:
    """The key's member or its participant's admin revokes a key: decisions signed with it
    are refused from now on (those signed before still verify from their events)."""
    return answer(await cmd.run(uc.revoke_key, participant_id, key_id, reason=body.reason))


@router.post("/{participant_id}/suspension", response_model=CommandAnswer)
async def suspend(participant_id: str, body: Suspension, cmd: CommandsDep) -> JSONResponse:
    """The regulator or platform suspends an admitted participant."""
    return answer(await cmd.run(uc.suspend_participant, participant_id, reason=body.reason))


@router.get("")
def list_participants(reader: ReaderDep,
                      role: Annotated[Literal[ROLES] | None, Query()] = None,  # type: ignore[valid-type]
                      ) -> list[dict[str, Any]]:
    """Admitted participants (all of them for the regulator and the platform)."""
    with reader.connect() as conn:
        return q.list_participants(conn, reader.actor.participant_id, reader.sees_all, role)


@router.get("/me")
def me(reader: ReaderDep) -> dict[str, Any]:
    """The caller: its member id, participant and roles."""
    with reader.connect() as conn:
        row = q.get_participant(conn, reader.actor.participant_id, reader.actor.participant_id,
                                True)
    return {"member_id": reader.actor.member_id, "member_roles": list(reader.actor.member_roles),
            "participant": found(row, "participant", reader.actor.participant_id)}


@router.get("/{participant_id}")
def get_participant(participant_id: str, reader: ReaderDep) -> dict[str, Any]:
    """One participant (members only for itself, the regulator and the platform)."""
    with reader.connect() as conn:
        row = q.get_participant(conn, participant_id, reader.actor.participant_id,
                                reader.sees_all)
    return found(row, "participant", participant_id)
