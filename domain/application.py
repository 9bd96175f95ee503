"""The application service: run a command handler in a unit of work, save its events.

``Ledger`` decides (checks the actor, runs the handler on aggregates read through a
stream cache) and hands the events to a committer. What it needs from the layers that own
connections and threads are the protocols below: the event log, the stream cache and the
committer (``events.commit`` groups concurrent commits; :class:`DirectCommits` appends each
command on its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from core.event import Event
from domain.base import Actor, Aggregate, Context, Sealer
from domain.errors import ConcurrencyConflict, DomainError, IdempotencyKeyReused
from domain.participant import Participant
from domain.signing import Signed
from domain.unit_of_work import UnitOfWork

A = TypeVar("A", bound=Aggregate)
Handler = Callable[..., dict[str, Any]]


class ConflictError(Exception):
    """Raised by the log when an (aggregate, version) or idempotency key is taken."""


class AdmissionStale(ConflictError):
    """Raised by the log when the acting participant changed after its admission was checked
    from the cache (the command is then decided again on a fresh read)."""


@dataclass(frozen=True)
class Idempotency:
    """An Idempotency-Key as sent by one member, with the fingerprint of its request."""

    member_id: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class Batch:
    """What ``EventLog.append`` takes per command: the count of events, its key, the
    versions of the aggregates its decision read, and (when the caller's admission was
    checked on cached events) the caller's participant and its version then: both are
    checked in the append transaction."""

    count: int
    idempotency: Idempotency | None
    response: dict[str, Any]
    reads: dict[str, int] = field(default_factory=dict)
    admission: tuple[str, int] | None = None


class AsyncEventLog(Protocol):
    """An EventLog that can also append from an event loop, without a thread."""

    async def append_batches_async(self, events: list[Event], batches: list[Batch]) -> list[int]:
        ...


class EventLog(Protocol):
    """What the application needs from the event store."""

    def load(self, originator_id: str, after_version: int = 0) -> list[Event]: ...

    def append_batches(self, events: list[Event], batches: list[Batch]) -> list[int]: ...

    def idempotent_answer(self, member_id: str, key: str) -> tuple[str, dict[str, Any]] | None: ...


class Streams(Protocol):
    """Event streams read through a cache (``events.streams.StreamCache``)."""

    def cached(self, id: str) -> list[Event] | None: ...

    def load(self, id: str) -> list[Event]: ...


class Committer(Protocol):
    """Appends one command's events (grouping concurrent ones or not); gives their seqs.

    Raises ConflictError when an (aggregate, version) or idempotency key is taken, and
    AdmissionStale when the caller's participant moved past the version its admission was
    checked at.
    """

    def commit(self, events: list[Event], batch: Batch) -> list[int]: ...

    async def commit_async(self, events: list[Event], batch: Batch) -> list[int]: ...

    def close(self) -> None: ...


class DirectCommits:
    """A committer that appends each command on its own, in the caller's thread."""

    def __init__(self, log: EventLog) -> None:
        self.log = log

    def commit(self, events: list[Event], batch: Batch) -> list[int]:
        return self.log.append_batches(events, [batch])

    async def commit_async(self, events: list[Event], batch: Batch) -> list[int]:
        return self.log.append_batches(events, [batch])

    def close(self) -> None:
        """Nothing to release: it holds no thread and no connection."""


@dataclass
class CommandResult:
    """What a command answers: its result, the seqs it wrote, and whether it was a replay."""

    body: dict[str, Any]
    replayed: bool = False

    @property
    def seqs(self) -> list[int]:
        return list(self.body.get("seqs", []))


class _NeedsStore(Exception):
    """A handler run on cached state only wanted to load an aggregate."""


class _NoLoadUnitOfWork(UnitOfWork):
    """A unit of work that refuses every load: for deciding without touching the store."""

    def _load(self, cls: type[A], id: str) -> A | None:
        raise _NeedsStore(id)


class StoreUnitOfWork(UnitOfWork):
    """A unit of work reading aggregates from the event log (through the stream cache)."""

    def __init__(self, streams: Streams) -> None:
        super().__init__()
        self.streams = streams

    def _load(self, cls: type[A], id: str) -> A | None:
        events = self.streams.load(id)
        if not events or type(events[0]) not in cls._evolvers:
            return None
        return cls.replay(id, events)


def _is_signed(kwargs: dict[str, Any]) -> bool:
    """Whether a command's arguments carry a decision's signature (``signed``)."""
    signed = kwargs.get("signed")
    return isinstance(signed, Signed) and signed.signature is not None


def utc_now() -> str:
    """The current time, ISO-8601 UTC with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Ledger:
    """Runs commands: check the actor, decide in a unit of work, save atomically."""

    def __init__(self, log: EventLog, streams: Streams, committer: Committer | None = None,
                 clock: Callable[[], str] = utc_now, decide_in_thread: bool = False,
                 sealer: Sealer | None = None) -> None:
        self.log = log
        self.clock = clock
        #: seals personal fields before their events are encoded (None: kept in clear)
        self.sealer = sealer
        self.committer: Committer = committer if committer is not None else DirectCommits(log)
        self.streams = streams
        #: participant id -> (events replayed, state): admission read from cached events
        self._admissions: dict[str, tuple[int, str]] = {}
        #: execute_async decides in a worker thread (for stores reached over the network,
        #: whose reads must not block the event loop); else on the loop itself
        self.decide_in_thread = decide_in_thread
        #: development mode only (DATALEDGER_ALLOW_UNSIGNED_DECISIONS): a decision without a
        #: signature is let through, recorded with ``signature: null``
        self.allow_unsigned_decisions = False
        self.last_seq = 0
        #: called after every commit (the in-process dispatcher wakes the projections)
        self.on_commit: Callable[[], None] | None = None

    def close(self) -> None:
        self.committer.close()

    async def aclose(self) -> None:
        """On an event loop that ran commands: release what the log keeps for that loop."""
        aclose = getattr(self.log, "aclose", None)
        if aclose is not None:
            await aclose()

    def execute(self, handler: Handler, actor: Actor, *args: Any,
                idempotency: Idempotency | None = None, allow_pending: bool = False,
                **kwargs: Any) -> CommandResult:
        """Run one command to completion (blocking)."""
        prepared: CommandResult | tuple[list[Event], Batch] | None = self._prepare_cached(
            handler, actor, args, kwargs, idempotency, allow_pending)
        for _ in range(2):  # the cached decision, else (or if stale) one on a fresh read
            if prepared is None:
                prepared = self._prepare(handler, actor, args, kwargs, idempotency,
                                         allow_pending)
            if isinstance(prepared, CommandResult):
                return prepared
            events, batch = prepared
            try:
                return self._done(batch, self.committer.commit(events, batch))
            except AdmissionStale:
                prepared = None
            except ConflictError:
                return self._after_conflict(idempotency)
        raise AssertionError("unreachable: a fresh decision is never AdmissionStale")

    async def execute_async(self, handler: Handler, actor: Actor, *args: Any,
                            idempotency: Idempotency | None = None, allow_pending: bool = False,
                            **kwargs: Any) -> CommandResult:
        """Run one command from the event loop: decide, then commit (the committer's
        ``commit_async``: grouped by the loop's own task or a writer thread).

        A command whose decision needs no store read (its caller's participant cached, no
        aggregate loaded, no Idempotency-Key) is decided on the loop from the cache; else
        on a fresh read, in a worker thread when ``decide_in_thread`` or when the command
        carries a decision's signature (its Ed25519 check stays off the loop).
        """
        signed = _is_signed(kwargs)
        prepared: CommandResult | tuple[list[Event], Batch] | None = None if signed else (
            self._prepare_cached(handler, actor, args, kwargs, idempotency, allow_pending))
        for _ in range(2):  # the cached decision, else (or if stale) one on a fresh read
            if prepared is None:
                if self.decide_in_thread or signed:
                    prepared = await asyncio.to_thread(self._prepare, handler, actor, args,
                                                       kwargs, idempotency, allow_pending)
                else:
                    prepared = self._prepare(handler, actor, args, kwargs, idempotency,
                                             allow_pending)
            if isinstance(prepared, CommandResult):
                return prepared
            events, batch = prepared
            try:
                return self._done(batch, await self.committer.commit_async(events, batch))
            except AdmissionStale:
                prepared = None
            except ConflictError:
                return self._after_conflict(idempotency)
        raise AssertionError("unreachable: a fresh decision is never AdmissionStale")

    def check(self, handler: Callable[..., None], actor: Actor, *args: Any,
              **kwargs: Any) -> None:
        """Run a use case that only checks: it reads aggregates and raises a domain error, or
        returns; it writes nothing (blocking: it may read the store). The caller's
        participant must be admitted, as for the command the check precedes."""
        uow = StoreUnitOfWork(self.streams)
        if actor.role != "system":
            self._require_active(uow, actor, False)
        handler(uow, self._context(actor), *args, **kwargs)

    def _context(self, actor: Actor) -> Context:
        return Context(actor, self.clock(), self.allow_unsigned_decisions, self.sealer)

    def _prepare_cached(self, handler: Handler, actor: Actor, args: tuple[Any, ...],
                        kwargs: dict[str, Any], idempotency: Idempotency | None,
                        allow_pending: bool) -> tuple[list[Event], Batch] | None:
        """Decide without reading the store, or None if that is not possible.

        Possible when the command carries no Idempotency-Key (a replay must be looked up
        first), the caller's participant was read before (its admission is then checked
        on the cached events, and the append checks in its transaction that the
        participant is still at that version), the handler loads no aggregate, and it
        writes at least one event (that is what carries the check to the store).
        """
        if idempotency is not None or actor.role == "system":
            return None
        pid = actor.participant_id
        cached = self.streams.cached(pid)
        if not cached:
            return None
        known = self._admissions.get(pid)
        if known is None or known[0] != len(cached):
            if type(cached[0]) not in Participant._evolvers:
                return None
            known = (len(cached), Participant.replay(pid, cached).state)
            self._admissions[pid] = known
        state = known[1]
        if not (state == "admitted" or (allow_pending and state == "pending")):
            return None  # refused on a fresh read (the cache may be behind)
        uow = _NoLoadUnitOfWork()
        ctx = self._context(actor)
        try:
            response = handler(uow, ctx, *args, **kwargs)
        except (_NeedsStore, DomainError):  # a refusal is decided again on a fresh read:
            return None  # the cache may not hold the caller's suspension, which comes first
        events = [e for agg in uow.pending() for e in agg.collect()]
        if not events:
            return None
        return events, Batch(len(events), None, response, {},
                             (pid, cached[-1].originator_version))

    def _prepare(self, handler: Handler, actor: Actor, args: tuple[Any, ...],
                 kwargs: dict[str, Any], idempotency: Idempotency | None,
                 allow_pending: bool) -> CommandResult | tuple[list[Event], Batch]:
        if idempotency is not None:
            replay = self._replay(idempotency)
            if replay is not None:
                return replay
        uow = StoreUnitOfWork(self.streams)
        ctx = self._context(actor)
        if actor.role != "system":
            # Its own unit of work: the caller's admission is checked now, but is not part
            # of the decision's read set (a suspension racing a command is no conflict);
            # a signed decision reads the caller's participant for its keys anyway (and a
            # key revoked meanwhile must clash): the decision's own, read once.
            own = uow if _is_signed(kwargs) else StoreUnitOfWork(self.streams)
            self._require_active(own, actor, allow_pending)
        response = handler(uow, ctx, *args, **kwargs)
        reads = uow.unchanged_reads()
        events = [e for agg in uow.pending() for e in agg.collect()]
        return events, Batch(len(events), idempotency, response, reads)

    def _done(self, batch: Batch, seqs: list[int]) -> CommandResult:
        if seqs:
            self.last_seq = max(self.last_seq, seqs[-1])
            if self.on_commit is not None:
                self.on_commit()
        return CommandResult(dict(batch.response, seqs=seqs))

    def _after_conflict(self, idempotency: Idempotency | None) -> CommandResult:
        if idempotency is not None:
            replay = self._replay(idempotency)
            if replay is not None:
                return replay
        raise ConcurrencyConflict("another command changed the same aggregate first; "
                                  "reload and retry")

    def _replay(self, idempotency: Idempotency) -> CommandResult | None:
        found = self.log.idempotent_answer(idempotency.member_id, idempotency.key)
        if found is None:
            return None
        fingerprint, response = found
        if fingerprint != idempotency.fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different request", key=idempotency.key)
        return CommandResult(response, replayed=True)

    @staticmethod
    def _require_active(uow: UnitOfWork, actor: Actor, allow_pending: bool) -> None:
        participant = uow.get(Participant, actor.participant_id)
        if participant.state == "admitted" or (allow_pending and participant.state == "pending"):
            return
        participant.require_admitted()
