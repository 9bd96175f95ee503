"""The composition root: builds everything from settings, nothing at import."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import Engine

from api.background import BackgroundProcess
from api.settings import Settings
from chain.checkpointer import CutPolicy
from chain.service import ChainService, build_chain
from domain.application import Ledger
from domain.base import Actor, Context
from domain.participant import Participant, found_platform
from events.publisher import JetStreamPublisher, open_position_store
from events.store import DatabaseURL, EventStore, LedgerLog, open_store
from projections import all_projections
from projections.runner import ProjectionRunner, views_engine

#: the platform operator's participant id: fixed, so every process finds it
PLATFORM_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "dataledger:platform"))
PLATFORM_ADMIN_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "dataledger:platform-admin"))
SYSTEM = Actor("system", "system", "system")


def hash_token(token: str) -> str:
    """Tokens are stored as SHA-256 hex, never in clear."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh bearer token (256 bits)."""
    return "dl_" + secrets.token_urlsafe(32)


class AuthCache:
    """Token hash → actor, so a request need not query the members table.

    Cleared whenever this process projects a participant event (token rotated,
    member added, participant suspended); entries also expire after ``ttl``
    seconds, for changes projected by another process. Commands re-check the
    participant's admission on the event store anyway (Ledger._require_active).
    """

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Actor]] = {}
        #: bumped by every invalidation: a lookup that began before one is not cached
        self.generation = 0

    def get(self, token_hash: str) -> Actor | None:
        entry = self._entries.get(token_hash)
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            return None
        return entry[1]

    def put(self, token_hash: str, actor: Actor, generation: int) -> None:
        """Cache a lookup that began at ``generation`` (dropped if invalidated since)."""
        if generation != self.generation:
            return
        if len(self._entries) > 100_000:
            self._entries.clear()
        self._entries[token_hash] = (time.monotonic(), actor)

    def invalidate(self, types: set[str]) -> None:
        """Forget everything after participant events were projected."""
        if any(t.startswith("participant.") for t in types):
            self.generation += 1
            self._entries.clear()


@dataclass
class Container:
    """Everything the API and the CLI use, built once."""

    settings: Settings
    store: EventStore
    ledger: Ledger
    runner: ProjectionRunner
    engine: Engine
    chain: ChainService | None = None
    publisher: JetStreamPublisher | None = None
    first_admin_token: str | None = None
    auth_cache: AuthCache = field(default_factory=AuthCache)
    #: projections and chain in a child process (settings.background_process)
    background: BackgroundProcess | None = None

    def on_commit(self) -> None:
        """The in-process dispatcher: wake the projections and the chain."""
        self.runner.notify()
        if self.chain is not None:
            self.chain.notify()
        if self.publisher is not None:
            self.publisher.notify()

    def close(self) -> None:
        if self.background is not None:
            self.background.stop()
        if self.publisher is not None:
            self.publisher.stop()
            self.publisher.positions.close()
        if self.chain is not None:
            self.chain.close()
        self.runner.stop()
        self.ledger.close()
        self.engine.dispose()
        self.store.close()


def build(settings: Settings, *, start_background: bool = True) -> Container:
    """Open the store and read models, make sure the platform exists, start projecting."""
    url = DatabaseURL.parse(settings.resolved_database_url())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(url)
    ledger = Ledger(LedgerLog(store), group_commit=settings.group_commit,
                    decide_in_thread=url.kind == "postgresql")
    engine = views_engine(url, settings.views_path())
    runner = ProjectionRunner(store, engine, all_projections())
    runner.create_tables()
    container = Container(settings, store, ledger, runner, engine)
    runner.on_applied.append(container.auth_cache.invalidate)
    if settings.chain:
        container.chain = build_chain(
            store, url, settings.data_dir, origin=settings.log_origin,
            key_file=settings.log_key_file,
            witness_urls=[u.strip() for u in settings.witness_urls.split(",") if u.strip()],
            quorum=settings.witness_quorum,
            policy=CutPolicy(settings.checkpoint_every_leaves, settings.checkpoint_every_seconds))
    if settings.nats_url:
        container.publisher = JetStreamPublisher(
            store, settings.nats_url, open_position_store(url), stream=settings.nats_stream,
            subject_prefix=settings.nats_subject_prefix)
    # the platform is made once everything else is configured: a first start that fails
    # on a setting writes nothing (its admin token is never made and lost)
    container.first_admin_token = ensure_platform(container)
    runner.catch_up()
    if start_background:
        if settings.background_process:  # the chain here only serves the /ledger routes
            container.background = BackgroundProcess(settings)
            runner.follow(container.background.hurry)
        else:
            runner.start()
            if container.chain is not None:
                container.chain.start()
        if container.publisher is not None:
            container.publisher.start()
        ledger.on_commit = container.on_commit
    return container


def ensure_platform(c: Container) -> str | None:
    """Create the platform operator and its admin at first start.

    Returns a newly made admin token (to print once) or None.
    """
    events = c.store.load(PLATFORM_ID)
    wanted = c.settings.admin_token
    ctx = Context(SYSTEM, c.ledger.clock())
    if not events:
        token = wanted or new_token()
        agg = found_platform(PLATFORM_ID, ctx, name=c.settings.platform_name)
        agg.add_member(ctx, member_id=PLATFORM_ADMIN_ID, name="platform admin",
                       member_roles=["admin"], token_hash=hash_token(token))
        c.ledger.log.append_batches(agg.collect(), [])
        return None if wanted else token
    agg = Participant.replay(PLATFORM_ID, events)
    if wanted and agg.members[PLATFORM_ADMIN_ID].token_hash != hash_token(wanted):
        agg.rotate_token(ctx, member_id=PLATFORM_ADMIN_ID, token_hash=hash_token(wanted))
        c.ledger.log.append_batches(agg.collect(), [])
    return None
