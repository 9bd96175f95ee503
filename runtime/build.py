"""The composition root: one ``build()`` makes a process's services from settings.

serve (and ``dataledger projections rebuild``) builds everything; serve's background process
builds the read models and the chain over the store serve made; the ``dataledger chain``
commands build the chain. Nothing is built at import.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Engine, select

from aggregation import store as joint_store
from aggregation.service import Aggregator
from anchoring.checkpointer import CutPolicy
from anchoring.service import ChainService, build_chain
from api.auth import AuthCache, hash_token, new_token
from core.files import private_dir
from delivery import results
from domain.application import Ledger
from domain.base import Actor, Context
from domain.joint import TERMINAL
from domain.participant import Participant, found_platform
from events.commit import new_ledger
from events.store import EventStore, LedgerLog, open_store
from events.url import DatabaseURL
from privacy.keystore import KeyStore, open_keystore
from projections import all_projections
from projections.joint import joints
from projections.runner import ProjectionRunner, views_engine
from runtime.background import BackgroundProcess
from runtime.settings import Settings

if TYPE_CHECKING:
    from events.publisher import JetStreamPublisher

#: the platform operator's participant id: fixed, so every process finds it
PLATFORM_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "dataledger:platform"))
PLATFORM_ADMIN_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "dataledger:platform-admin"))
SYSTEM = Actor("system", "system", "system")


@dataclass
class Container:
    """A process's services (what the routes use: ``api.deps.Services``), built by ``build``."""

    settings: Settings
    store: EventStore
    ledger: Ledger
    runner: ProjectionRunner
    engine: Engine
    #: the per-subject keys of personal fields in events (privacy/keystore.py)
    keystore: KeyStore
    chain: ChainService | None = None
    publisher: JetStreamPublisher | None = None
    first_admin_token: str | None = None
    auth_cache: AuthCache = field(default_factory=AuthCache)
    #: projections and chain in a child process (settings.background_process)
    background: BackgroundProcess | None = None
    #: the platform's aggregation node of joint computations (serve's API process)
    aggregator: Aggregator | None = None

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
        self.keystore.close()
        self.store.close()


#: which process builds: serve; serve's background process; the ``chain`` commands
Role = Literal["serve", "background", "chain"]


def build(settings: Settings, *, role: Role = "serve",
          start_background: bool = True) -> Container:
    """Open the store, the read models and the chain; for serve also make sure the platform
    exists, catch the read models up and start the background work (``start_background``).

    The background process opens the store serve made (never creates it) and starts what it
    runs itself; the ``chain`` commands build the chain whatever ``settings.chain`` says.
    """
    url = DatabaseURL.parse(settings.resolved_database_url())
    if role != "background":
        private_dir(settings.data_dir)  # the product's code runs as another user
    store = open_store(url, create=role != "background")
    keystore = open_keystore(url, settings.data_dir,  # personal fields sealed (密钥销毁)
                             DatabaseURL.parse(settings.keystore_url)
                             if settings.keystore_url else None)
    ledger = new_ledger(LedgerLog(store), group_commit=settings.group_commit and role == "serve",
                        decide_in_thread=url.kind == "postgresql", sealer=keystore)
    ledger.allow_unsigned_decisions = settings.allow_unsigned_decisions
    engine = views_engine(url, settings.views_path())
    runner = ProjectionRunner(store, engine, all_projections())
    if role != "chain":
        runner.create_tables()
    container = Container(settings, store, ledger, runner, engine, keystore)
    if settings.chain or role == "chain":
        container.chain = build_chain(
            store, url, settings.data_dir, origin=settings.log_origin,
            key_file=settings.log_key_file, witness_urls=settings.witness_url_list,
            quorum=settings.witness_quorum,
            policy=CutPolicy(settings.checkpoint_every_leaves, settings.checkpoint_every_seconds,
                             index=settings.actor_index))
    if role == "serve":
        _serve(container, url, start_background)
    return container


def _serve(container: Container, url: DatabaseURL, start_background: bool) -> None:
    """The platform, the publisher and the background work of serve."""
    # imported here: serve's background process imports this module, and publishes nothing
    from events.positions import open_position_store
    from events.publisher import JetStreamPublisher, PublisherSettings

    settings, runner = container.settings, container.runner
    runner.on_applied.append(container.auth_cache.invalidate)
    if settings.nats_url:
        container.publisher = JetStreamPublisher(
            container.store, open_position_store(url),
            PublisherSettings(settings.nats_url, stream=settings.nats_stream,
                              subject_prefix=settings.nats_subject_prefix))
    # the platform is made once everything else is configured: a first start that fails
    # on a setting writes nothing (its admin token is never made and lost)
    container.first_admin_token = ensure_platform(container)
    container.aggregator = Aggregator(
        container.engine, container.ledger, SYSTEM, open_joints=_open_joints(container),
        sweep_seconds=settings.aggregation_sweep_seconds)
    runner.catch_up()
    # result bytes, and joint layouts, parts and tables, a crash left unrecorded (the
    # background process sweeps them from now on)
    results.sweep(container.engine, container.store)
    joint_store.sweep(container.engine, container.store)
    if not start_background:
        return
    if settings.background_process:  # the chain here only serves the /ledger routes
        container.background = BackgroundProcess(settings)
        runner.follow(container.background.hurry)
    else:
        runner.start()
        if container.chain is not None:
            container.chain.start()
    if container.publisher is not None:
        container.publisher.start()
    container.ledger.on_commit = container.on_commit


def _open_joints(c: Container) -> Callable[[], list[str]]:
    """The aggregation node's sweep list: the joint executions the read models hold as
    neither published nor failed (the node reads each one's state from the log)."""

    def find() -> list[str]:
        with c.engine.connect() as conn:
            return list(conn.execute(select(joints.c.id).where(
                joints.c.state.not_in(TERMINAL))).scalars())

    return find


def ensure_platform(c: Container) -> str | None:
    """Create the platform operator and its admin at first start.

    Returns a newly made admin token (to print once) or None.
    """
    events = c.store.load(PLATFORM_ID)
    wanted = c.settings.admin_token
    ctx = Context(SYSTEM, c.ledger.clock(), sealer=c.keystore)
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
