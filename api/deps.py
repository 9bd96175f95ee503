"""Dependencies: the services, the current member, command running, read consistency."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, Header, Request
from sqlalchemy import Connection, Engine, select

from anchoring.service import ChainService
from api.auth import AuthCache, hash_token
from domain.application import CommandResult, Idempotency, Ledger
from domain.base import Actor
from domain.errors import InvalidInput, Unauthenticated
from events.store import EventStore
from privacy.keystore import KeyStore
from projections.participants import members, participants
from projections.runner import ProjectionRunner

CommandHandler = Callable[..., dict[str, Any]]


class ReadSettings(Protocol):
    @property
    def read_wait_seconds(self) -> float:
        """How long a query waits for the read models to reach the last write."""

    @property
    def max_result_bytes(self) -> int:
        """The largest body of a result post, in bytes (413 beyond)."""

    @property
    def max_body_bytes(self) -> int:
        """The largest request body, in bytes (413 beyond); not a result post's."""

    @property
    def data_dir(self) -> Path:
        """The platform's data directory (its watermark key: ``privacy/watermark.py``)."""

    @property
    def body_read_timeout(self) -> float:
        """The longest wait, in seconds, for the next part of a request body (408 beyond)."""

    @property
    def header_read_timeout(self) -> float:
        """The longest a request's head may take to arrive, in seconds (the server's)."""

    @property
    def max_header_bytes(self) -> int:
        """The largest request head, in bytes (the server's)."""


class Background(Protocol):
    """Serve's background process (projections, chain), as ``/health`` reports it."""

    @property
    def running(self) -> bool: ...

    def state(self) -> dict[str, Any]: ...


class Aggregation(Protocol):
    """The platform's aggregation node (``aggregation/service.py``), as the app uses it."""

    async def run_sweeps(self) -> None: ...

    async def wait_idle(self) -> None: ...

    def on_parts_complete(self, joint_id: str) -> None: ...

    def joint(self, joint_id: str) -> Any: ...

    def table_digest(self, joint_id: str) -> str | None: ...

    def table_bytes(self, joint_id: str, digest: str) -> bytes | None: ...

    def answer(self, joint_id: str, request: bytes) -> bytes: ...


class Services(Protocol):
    """What the routes use: built by the composition root (``runtime.build``) and handed to
    ``api.app.create_app``, which keeps it in ``app.state.container``."""

    @property
    def settings(self) -> ReadSettings: ...
    @property
    def store(self) -> EventStore: ...
    @property
    def ledger(self) -> Ledger: ...
    @property
    def runner(self) -> ProjectionRunner: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def chain(self) -> ChainService | None: ...
    @property
    def auth_cache(self) -> AuthCache: ...
    @property
    def background(self) -> Background | None: ...
    @property
    def aggregator(self) -> Aggregation | None: ...
    @property
    def keystore(self) -> KeyStore: ...


async def get_container(request: Request) -> Services:
    container: Services = request.app.state.container
    return container


ContainerDep = Annotated[Services, Depends(get_container)]


def _lookup(container: Services, token_hash: str) -> Actor | None:
    cached = container.auth_cache.get(token_hash)
    if cached is not None:
        return cached
    generation = container.auth_cache.generation
    actor = _lookup_uncached(container, token_hash)
    if actor is not None:
        container.auth_cache.put(token_hash, actor, generation)
    return actor


def _lookup_uncached(container: Services, token_hash: str) -> Actor | None:
    with container.engine.connect() as conn:
        row = conn.execute(
            select(members.c.member_id, members.c.participant_id, members.c.roles,
                   participants.c.role)
            .join(participants, participants.c.id == members.c.participant_id)
            .where(members.c.token_hash == token_hash)).first()
    if row is None:
        return None
    return Actor(row.participant_id, row.member_id, row.role, tuple(row.roles))


# The dependencies are coroutines so that FastAPI runs them on the event loop, not each
# in a worker thread of its own (a hop costs more than their work: the token lookup is
# an in-memory cache hit, and only on a miss a short indexed read).
async def _authenticate(container: Services, authorization: str | None) -> Actor:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthenticated("send Authorization: Bearer <token>")
    token_hash = hash_token(authorization[7:].strip())
    actor = _lookup(container, token_hash)
    # a token this process just issued may not have been projected at the first lookup:
    # look again once the read models reach this process's last write, waiting for them in
    # a thread if they lag (the loop serves every other request meanwhile: an unknown token
    # sent while they lag must not stall the server)
    if actor is None and (
            container.runner.position >= container.ledger.last_seq
            or await asyncio.to_thread(container.runner.wait_for, container.ledger.last_seq,
                                       container.settings.read_wait_seconds)):
        actor = _lookup(container, token_hash)
    if actor is None:
        raise Unauthenticated("unknown bearer token")
    return actor


async def current_actor(container: ContainerDep,
                        authorization: Annotated[str | None, Header()] = None) -> Actor:
    """The member whose bearer token came with the request (401 otherwise)."""
    return await _authenticate(container, authorization)


CurrentActor = Annotated[Actor, Depends(current_actor)]


#: the length of an Idempotency-Key, in characters
MIN_IDEMPOTENCY_KEY, MAX_IDEMPOTENCY_KEY = 1, 200


async def _idempotency(container: Services, request: Request, actor: Actor,
                       idempotency_key: str | None) -> Idempotency | None:
    """The request's Idempotency-Key with a fingerprint of method, path and body.

    The fingerprint is an HMAC-SHA256 under the platform's secret in the key store
    (``KeyStore.fingerprint_key``), not a plain hash: a body may name a person (a member's
    name, sealed in the log), and a plain hash kept in the log's idempotency table would
    confirm a guessed name after its erasure (docs/PRIVACY.md, Erasure)."""
    if idempotency_key is None:
        return None
    if not MIN_IDEMPOTENCY_KEY <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidInput("Idempotency-Key", f"must be {MIN_IDEMPOTENCY_KEY} to "
                           f"{MAX_IDEMPOTENCY_KEY} characters")
    key = container.keystore.fingerprint_key()
    digest = hmac.new(key, digestmod=hashlib.sha256)
    for part in (request.method.encode(), request.url.path.encode(), await request.body()):
        digest.update(len(part).to_bytes(8, "big") + part)
    return Idempotency(actor.member_id, idempotency_key, "hmac-sha256:" + digest.hexdigest())


@dataclass
class Commands:
    """Runs a domain use case as the current actor, honouring the Idempotency-Key."""

    container: Services
    actor: Actor
    idempotency: Idempotency | None

    async def run(self, handler: CommandHandler, *args: Any, allow_pending: bool = False,
                        **kwargs: Any) -> CommandResult:
        """Decide on the event loop, commit in the background group writer."""
        return await self.container.ledger.execute_async(
            handler, self.actor, *args, idempotency=self.idempotency,
            allow_pending=allow_pending, **kwargs)


#: the headers ``commands`` reads, as the OpenAPI document lists them (see api.app; the
#: bearer token is its security scheme)
COMMAND_HEADERS: list[dict[str, Any]] = [
    {"name": "idempotency-key", "in": "header", "required": False,
     "description": f"{MIN_IDEMPOTENCY_KEY} to {MAX_IDEMPOTENCY_KEY} characters (422 "
                    "otherwise): the same key with the same request answers the first "
                    "answer again (Idempotent-Replayed: true); with another request, 422",
     "schema": {"type": "string", "minLength": MIN_IDEMPOTENCY_KEY,
                "maxLength": MAX_IDEMPOTENCY_KEY, "title": "Idempotency-Key"}}]


# One dependency for the command routes rather than a tree of them (container, actor,
# idempotency), and the headers read from the request: FastAPI's per-request cost grows
# with every dependency and every declared parameter (each one validated).
async def commands(request: Request) -> Commands:
    """The current actor (401 without a known bearer token) and its Idempotency-Key."""
    authorization = request.headers.get("authorization")
    idempotency_key = request.headers.get("idempotency-key")
    container: Services = request.app.state.container
    actor = await _authenticate(container, authorization)
    return Commands(container, actor,
                    await _idempotency(container, request, actor, idempotency_key))


CommandsDep = Annotated[Commands, Depends(commands)]


@dataclass
class Reader:
    """A read-model connection, after the read models caught up with the last write."""

    container: Services
    actor: Actor

    @functools.cached_property
    def sees_all(self) -> bool:
        """The regulator and the platform see every row, while admitted (pending, rejected
        or suspended, they see what any participant sees: their own and public rows)."""
        if self.actor.role not in ("regulator", "platform"):
            return False
        with self.connect() as conn:
            state = conn.execute(select(participants.c.state).where(
                participants.c.id == self.actor.participant_id)).scalar()
        return state == "admitted"

    def connect(self) -> Connection:
        self.container.runner.wait_for(self.container.ledger.last_seq,
                                       self.container.settings.read_wait_seconds)
        return self.container.engine.connect()


async def reader(container: ContainerDep, actor: CurrentActor) -> Reader:
    return Reader(container, actor)


ReaderDep = Annotated[Reader, Depends(reader)]
