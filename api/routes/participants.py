"""Participants: onboarding (入驻), admission (准入审核), members, keys, suspension."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.auth import hash_token, new_token
from api.deps import Commands, CommandsDep, ReaderDep
from api.fields import NAME, Id, Reason, SignedBody
from api.routes.common import CommandAnswer, CommandRoute, answer, found
from domain import participant as uc
from domain.base import ROLES
from domain.errors import InvalidInput
from projections import participants as q

router = APIRouter(prefix="/participants", tags=["participants"], route_class=CommandRoute)

Role = Literal["provider", "operator", "developer", "demander", "regulator"]
#: SHA-256 hex of a bearer token, as ``api.auth.hash_token`` computes it
TOKEN_HASH = Field(pattern="^[0-9a-f]{64}$", min_length=64, max_length=64,
                   description="SHA-256 hex (64 lowercase digits) of a bearer token its "
                   "member made itself: the platform never sees the token")


class ParticipantCreate(BaseModel):
    name: str = NAME
    role: Role
    credit_code: str = Field(min_length=1, max_length=32,
                             description="unified social credit code 统一社会信用代码")
    admin_name: str = NAME
    admin_token_hash: str | None = Field(
        default=None, pattern="^[0-9a-f]{64}$", min_length=64, max_length=64,
        description="SHA-256 hex of the first admin's token, made by the new participant "
        "itself (the platform never sees it). Without it the server makes the token and "
        "answers it once (for development: token_seen_by_platform)")


class AdmissionDecision(SignedBody):
    approve: bool
    comment: str = Field(default="", max_length=5000,
                         description="required to reject (422 naming comment otherwise)")


class MemberCreate(BaseModel):
    name: str = NAME
    roles: list[Literal["admin", "expert", "member"]] = Field(min_length=1)


class KeyCreate(BaseModel):
    public_key: str = Field(min_length=40, max_length=64,
                            description="Ed25519 public key: base64 of its 32 raw bytes")
    replaces: Id | None = Field(default=None, description="rotation: the id of the calling "
                                "member's active key this one replaces (revoked in the same "
                                "command)")


class NodeKeyCreate(SignedBody):
    public_key: str = Field(min_length=40, max_length=64,
                            description="the compute node's X25519 public key: base64 of its "
                            "32 raw bytes (core.secagg.public_key_text)")


class NodeKeyAnswer(CommandAnswer):
    """The participant's view after the registration, with its new ``node_key``."""

    participant_id: str
    key_id: str = Field(description="x25519: and 32 hex digits of the key's SHA-256")
    node_key: dict[str, Any] = Field(description="{public_key, key_id, seq, signer_seq}: seq "
                                     "is that of the participant.node_key_registered event, "
                                     "signer_seq of the participant.key_registered of the "
                                     "member key that signed it")


class KeyRevocation(BaseModel):
    reason: Reason


class KeyAnswer(CommandAnswer):
    participant_id: str
    member_id: str = Field(description="the key's member")
    key_id: str = Field(description="the key's id (ed25519:…), named by each signature")


class Suspension(BaseModel):
    reason: str = Field(min_length=1, max_length=5000)


class TokenRotation(BaseModel):
    token_hash: str = TOKEN_HASH


class RegistrationAnswer(CommandAnswer):
    participant_id: str
    member_id: str = Field(description="the first admin's member id")
    token: str | None = Field(default=None, description="only when no admin_token_hash was "
                              "sent: the token the server made, shown once (null when an "
                              "Idempotency-Key replays the first answer)")
    token_seen_by_platform: bool = Field(description="true when the server made the admin's "
                                         "token (the platform saw it: rotate it)")


class TokenAnswer(CommandAnswer):
    token: str | None = Field(description="the new member's bearer token, shown once "
                              "(null when an Idempotency-Key replays the first answer)")


def _require_unused(cmd: Commands, token_hash: str) -> None:
    """422 when a member's token already hashes to ``token_hash`` (the projection voids a
    duplicate that races past this check)."""
    with cmd.container.engine.connect() as conn:
        if q.token_hash_in_use(conn, token_hash):
            raise InvalidInput("token_hash", "already the token of a member: make a new token")


@router.post("", status_code=201, response_model=RegistrationAnswer)
async def register_participant(body: ParticipantCreate, cmd: CommandsDep) -> JSONResponse:
    """The platform onboards an organization with its first admin member. The new
    participant makes that admin's token and sends only its hash (``admin_token_hash``):
    the answer then holds no token. Without it the server makes one and answers it
    (``token_seen_by_platform``: for development; the member should rotate it)."""
    token = None if body.admin_token_hash is not None else new_token()
    token_hash = body.admin_token_hash or hash_token(token or "")
    if body.admin_token_hash is not None:
        _require_unused(cmd, token_hash)
    result = await cmd.run(uc.register_participant, name=body.name, role=body.role,
                           credit_code=body.credit_code, admin_name=body.admin_name,
                           admin_token_hash=token_hash)
    if token is None:
        return answer(result, 201, token_seen_by_platform=False)
    return answer(result, 201, token=None if result.replayed else token,
                  token_seen_by_platform=True)


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


@router.post("/{participant_id}/members/{member_id}/token", response_model=CommandAnswer)
async def rotate_token(participant_id: str, member_id: str, body: TokenRotation,
                       cmd: CommandsDep) -> JSONResponse:
    """A member replaces its bearer token by one it made (only the hash is sent), or its
    participant's admin a member's; never another participant, the platform included. The
    old token stops working when this answers."""
    _require_unused(cmd, body.token_hash)
    result = await cmd.run(uc.rotate_token, participant_id, member_id,
                           token_hash=body.token_hash, allow_pending=True)
    container = cmd.container
    if result.seqs:  # the read model authentication reads drops the old hash: wait for it
        await asyncio.to_thread(container.runner.wait_for, result.seqs[-1],
                                container.settings.read_wait_seconds)
    container.auth_cache.invalidate({"participant.member_token_rotated"})
    return answer(result)


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


@router.post("/{participant_id}/node-key", response_model=NodeKeyAnswer)
async def register_node_key(participant_id: str, body: NodeKeyCreate,
                            cmd: CommandsDep) -> JSONResponse:
    """A member of a provider registers its compute node's X25519 public key (a signed
    decision, ``participant.node_key``): the key its peers agree masks with in a joint
    computation (docs/SECAGG.md). It replaces the provider's earlier node key. The answer
    is the participant's view, whose ``node_key`` is ``{public_key, key_id, seq,
    signer_seq}`` (``seq`` that of the ``participant.node_key_registered`` event a peer's
    node proves, ``signer_seq`` that of the signing member key's registration)."""
    result = await cmd.run(uc.register_node_key, participant_id, public_key=body.public_key,
                           signed=body.signed())
    container = cmd.container
    if result.seqs:  # the view answered is the one the new key is projected into
        await asyncio.to_thread(container.runner.wait_for, result.seqs[-1],
                                container.settings.read_wait_seconds)
    with container.engine.connect() as conn:
        view = q.get_participant(conn, participant_id, cmd.actor.participant_id, False,
                                 container.keystore.reveal_all)
    return answer(result, 200, **found(view, "participant", participant_id))


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
                                True, reader.container.keystore.reveal_all)
    return {"member_id": reader.actor.member_id, "member_roles": list(reader.actor.member_roles),
            "participant": found(row, "participant", reader.actor.participant_id)}


@router.get("/{participant_id}")
def get_participant(participant_id: str, reader: ReaderDep) -> dict[str, Any]:
    """One participant (members only for itself, the regulator and the platform)."""
    with reader.connect() as conn:
        row = q.get_participant(conn, participant_id, reader.actor.participant_id,
                                reader.sees_all, reader.container.keystore.reveal_all)
    return found(row, "participant", participant_id)
