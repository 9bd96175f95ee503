"""The application service: run a command handler in a unit of work, save its events.

Commits of concurrent commands are grouped: a single committer thread takes every
commit waiting in its queue and appends them in one transaction (one fsync for
many commands). If the group fails on a conflict, its commits are retried one by
one so that only the conflicting command is refused. On a log that appends from an
event loop (PostgreSQL), the commands of a loop (the HTTP API's) are grouped the same
way by a task of that loop instead (LoopCommitter): no thread to hand the GIL to.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from core.event import Event
from domain.base import Actor, Aggregate, Context
from domain.errors import ConcurrencyConflict, IdempotencyKeyReused, WrongState
from domain.participant import Participant
from domain.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

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


@dataclass
class CommandResult:
    """What a command answers: its result, the seqs it wrote, and whether it was a replay."""

    body: dict[str, Any]
    replayed: bool = False

    @property
    def seqs(self) -> list[int]:
        return list(self.body.get("seqs", []))


class StreamCache:
    """Recently read event streams: a load reads only the events after the cached ones.

    Stored events never change, so a cached prefix stays valid; each load still
    asks the store for newer events, so other processes' writes are seen.
    """

    def __init__(self, log: EventLog, max_streams: int = 10_000) -> None:
        self.log = log
        self.max_streams = max_streams
        self._streams: dict[str, list[Event]] = {}
        self._lock = threading.Lock()

    def cached(self, id: str) -> list[Event] | None:
        """The events of ``id`` read so far (possibly not all), without asking the store."""
        with self._lock:
            return self._streams.get(id)

    def load(self, id: str) -> list[Event]:
        """Every stored event of stream ``id``, in order."""
        with self._lock:
            cached = self._streams.get(id, [])
        newer = self.log.load(id, len(cached))
        if not newer:
            return cached
        events = cached + newer
        with self._lock:
            if len(self._streams) >= self.max_streams:
                self._streams.pop(next(iter(self._streams)))
            self._streams[id] = events
        return events


class _NeedsStore(Exception):
    """A handler run on cached state only wanted to load an aggregate."""


class _NoLoadUnitOfWork(UnitOfWork):
    """A unit of work that refuses every load: for deciding without touching the store."""

    def _load(self, cls: type[A], id: str) -> A | None:
        raise _NeedsStore(id)


class StoreUnitOfWork(UnitOfWork):
    """A unit of work reading aggregates from the event log (through the stream cache)."""

    def __init__(self, streams: StreamCache) -> None:
        super().__init__()
        self.streams = streams

    def _load(self, cls: type[A], id: str) -> A | None:
        events = self.streams.load(id)
        if not events or type(events[0]) not in cls._evolvers:
            return None
        return cls.replay(id, events)


@dataclass
class _Commit:
    events: list[Event]
    batch: Batch
    future: Future[list[int]] = field(default_factory=Future)
    #: for a caller on an event loop: its loop and the asyncio future it awaits
    loop: asyncio.AbstractEventLoop | None = None
    waiter: asyncio.Future[list[int]] | None = None


def _settle(commits: list[_Commit]) -> None:
    """On the callers' event loop: pass each written commit's outcome to its waiter."""
    for commit in commits:
        waiter = commit.waiter
        if waiter is None or waiter.done():
            continue
        if not commit.future.done():  # the writer failed before answering it
            waiter.set_exception(RuntimeError("the group commit failed"))
            continue
        exc = commit.future.exception()
        if exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(commit.future.result())


def _wake_loops(group: list[_Commit]) -> None:
    """One call into each event loop per written group (not one per commit)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Commit]] = {}
    for commit in group:
        if commit.loop is not None:
            by_loop.setdefault(commit.loop, []).append(commit)
    for loop, commits in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, commits)
        except RuntimeError:  # that loop is closed: nobody waits any more
            pass


def utc_now() -> str:
    """The current time, ISO-8601 UTC with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class GroupCommitter:
    """Leader/follower group commit: whoever gets the write lock writes every waiting commit.

    An uncontended command commits in its own thread (no hand-off); while one
    transaction is being written, the commits that arrive meanwhile queue up and
    the next leader writes them all in one transaction.
    """

    def __init__(self, log: EventLog, max_batch: int = 256) -> None:
        self.log = log
        self.max_batch = max_batch
        self._pending: list[_Commit] = []
        self._pending_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, events: list[Event], batch: Batch) -> Future[list[int]]:
        """Queue a commit for the background writer (for callers that must not block)."""
        if self._closed:
            raise RuntimeError("the group committer is closed")
        mine = _Commit(events, batch)
        self._enqueue(mine)
        return mine.future

    def submit_async(self, events: list[Event], batch: Batch) -> asyncio.Future[list[int]]:
        """Queue a commit for the background writer; await the answer on this event loop.

        The writer settles all the waiters of a group with one call into the loop, not one
        per commit. Cancelling the waiter drops the commit unless it is being written.
        """
        if self._closed:
            raise RuntimeError("the group committer is closed")
        loop = asyncio.get_running_loop()
        mine = _Commit(events, batch, loop=loop, waiter=loop.create_future())
        mine.waiter.add_done_callback(  # type: ignore[union-attr]
            lambda w: w.cancelled() and mine.future.cancel())
        self._enqueue(mine)
        return mine.waiter  # type: ignore[return-value]

    def _enqueue(self, commit: _Commit) -> None:
        """Queue a commit and wake the background writer (started on first use)."""
        with self._pending_lock:
            self._pending.append(commit)
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name="group-committer",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def _drain(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            while self._pending:  # (a taken slice may hold only cancelled commits)
                with self._write_lock:
                    group = self._take()
                    if not group:
                        continue
                    try:
                        self._write(group)
                    except Exception:  # the writer must outlive any one group
                        log.exception("group commit failed")
                    _wake_loops(group)

    def _take(self) -> list[_Commit]:
        """Up to max_batch waiting commits, each claimed (a cancelled waiter is dropped)."""
        with self._pending_lock:
            group = self._pending[:self.max_batch]
            del self._pending[:self.max_batch]
        return [c for c in group if c.future.set_running_or_notify_cancel()]

    def commit(self, events: list[Event], batch: Batch) -> list[int]:
        """Append one command's events (grouped with concurrent ones); their seqs.

        Raises ConflictError when an (aggregate, version) or idempotency key is taken.
        """
        if not self._pending and self._write_lock.acquire(blocking=False):
            try:  # nobody writing and nothing queued: no group to join, write it here
                if not self._pending:
                    return self.log.append_batches(events, [batch])
            finally:
                self._write_lock.release()
        mine = _Commit(events, batch)
        with self._pending_lock:
            self._pending.append(mine)
        while not mine.future.done():  # beyond max_batch: a later leader writes it
            with self._write_lock:
                if not mine.future.done():
                    group = self._take()
                    try:
                        self._write(group)
                    finally:
                        _wake_loops(group)
        return mine.future.result()

    def close(self) -> None:
        """Stop the background writer once what is queued is written."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _write(self, group: list[_Commit]) -> None:
        keep, later = _split_clashes(group)
        if keep:
            self._write_group(keep)
        for commit in later:
            self._write_one(commit)

    def _write_group(self, group: list[_Commit]) -> None:
        try:
            seqs = self.log.append_batches([e for c in group for e in c.events],
                                           [c.batch for c in group])
        except ConflictError:
            for commit in group:
                self._write_one(commit)
            return
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear of it
            for commit in group:
                commit.future.set_exception(exc)
            return
        start = 0
        for commit in group:
            commit.future.set_result(seqs[start:start + len(commit.events)])
            start += len(commit.events)

    def _write_one(self, commit: _Commit) -> None:
        try:
            commit.future.set_result(self.log.append_batches(commit.events, [commit.batch]))
        except BaseException as exc:  # noqa: BLE001
            commit.future.set_exception(exc)


class _Grouped(Protocol):
    events: list[Event]
    batch: Batch


G = TypeVar("G", bound=_Grouped)


def _split_clashes(group: list[G]) -> tuple[list[G], list[G]]:
    """The commits that may share one transaction, and those that wait for a solo write.

    A clash: the same (aggregate, version) or idempotency key as an earlier commit of
    the group, or one command writes an aggregate that another one's decision read
    (reads are checked before the group's inserts, so the two must not share a
    transaction). The first group is written first, then each clashing commit alone.
    """
    taken: set[tuple[str, int] | tuple[str, str]] = set()
    written: set[str] = set()
    read: set[str] = set()
    keep: list[G] = []
    later: list[G] = []
    for commit in group:
        keys: set[tuple[str, int] | tuple[str, str]] = {
            (e.originator_id, e.originator_version) for e in commit.events}
        idem = commit.batch.idempotency
        if idem is not None:
            keys.add((idem.member_id, idem.key))
        writes = {e.originator_id for e in commit.events}
        reads = set(commit.batch.reads)
        if commit.batch.admission is not None:
            reads.add(commit.batch.admission[0])
        clash = bool(keys & taken or reads & written or writes & read)
        (later if clash else keep).append(commit)
        taken |= keys
        written |= writes
        read |= reads
    return keep, later


@dataclass
class _LoopCommit:
    events: list[Event]
    batch: Batch
    waiter: asyncio.Future[list[int]]


class LoopCommitter:
    """Group commit on an event loop, for a log that appends without a thread.

    Commands of the loop queue their commits; one task writes whatever is queued as
    one group, awaiting the store, and meanwhile the next commits queue up. No
    thread, so no hand-over of the GIL between the loop and a writer per group.
    Clashes and conflicts are handled as GroupCommitter does.
    """

    def __init__(self, log: AsyncEventLog, max_batch: int = 256) -> None:
        self.log = log
        self.max_batch = max_batch
        self._pending: list[_LoopCommit] = []
        self._task: asyncio.Task[None] | None = None

    def submit(self, events: list[Event], batch: Batch) -> asyncio.Future[list[int]]:
        """Queue a commit; the future gives its seqs (or its error)."""
        loop = asyncio.get_running_loop()
        commit = _LoopCommit(events, batch, loop.create_future())
        self._pending.append(commit)
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return commit.waiter

    async def _drain(self) -> None:
        try:
            while self._pending:
                group = [c for c in self._pending[:self.max_batch] if not c.waiter.done()]
                del self._pending[:self.max_batch]
                keep, later = _split_clashes(group)
                if keep:
                    await self._write_group(keep)
                for commit in later:
                    await self._write_one(commit)
        finally:
            self._task = None

    async def _write_group(self, group: list[_LoopCommit]) -> None:
        try:
            seqs = await self.log.append_batches_async(
                [e for c in group for e in c.events], [c.batch for c in group])
        except ConflictError:
            for commit in group:
                await self._write_one(commit)
            return
        except Exception as exc:  # noqa: BLE001 - every waiter must hear of it
            for commit in group:
                _answer(commit.waiter, exc=exc)
            return
        start = 0
        for commit in group:
            _answer(commit.waiter, seqs[start:start + len(commit.events)])
            start += len(commit.events)

    async def _write_one(self, commit: _LoopCommit) -> None:
        if commit.waiter.done():  # its request was cancelled meanwhile: nobody waits for it
            return
        try:
            seqs = await self.log.append_batches_async(commit.events, [commit.batch])
        except Exception as exc:  # noqa: BLE001 - the waiter hears of it
            _answer(commit.waiter, exc=exc)
        else:
            _answer(commit.waiter, seqs)


def _answer(waiter: asyncio.Future[list[int]], seqs: list[int] | None = None,
            exc: BaseException | None = None) -> None:
    if waiter.done():  # its request was cancelled (the client went away)
        return
    if exc is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(seqs or [])


class Ledger:
    """Runs commands: check the actor, decide in a unit of work, save atomically."""

    def __init__(self, log: EventLog, clock: Callable[[], str] = utc_now,
                 group_commit: bool = True, decide_in_thread: bool = False) -> None:
        self.log = log
        self.clock = clock
        self.committer = GroupCommitter(log) if group_commit else None
        #: a log that appends from an event loop (PostgreSQL) gets a LoopCommitter per loop
        #: for the commits of execute_async that carry no Idempotency-Key
        self._loop_committers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, LoopCommitter] = weakref.WeakKeyDictionary()
        self._appends_async = group_commit and bool(getattr(log, "appends_async", False))
        self.streams = StreamCache(log)
        #: participant id -> (events replayed, state): admission read from cached events
        self._admissions: dict[str, tuple[int, str]] = {}
        #: execute_async decides in a worker thread (for stores reached over the network,
        #: whose reads must not block the event loop); else on the loop itself
        self.decide_in_thread = decide_in_thread
        self.last_seq = 0
        #: called after every commit (the in-process dispatcher wakes the projections)
        self.on_commit: Callable[[], None] | None = None

    def close(self) -> None:
        if self.committer is not None:
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
                seqs = (self.committer.commit(events, batch) if self.committer
                        else self.log.append_batches(events, [batch]))
            except AdmissionStale:
                prepared = None
                continue
            except ConflictError:
                return self._after_conflict(idempotency)
            return self._done(batch, seqs)
        raise AssertionError("unreachable: a fresh decision is never AdmissionStale")

    async def execute_async(self, handler: Handler, actor: Actor, *args: Any,
                            idempotency: Idempotency | None = None, allow_pending: bool = False,
                            **kwargs: Any) -> CommandResult:
        """Run one command from the event loop: decide, then commit in a group (by the loop's
        own committer task on PostgreSQL unless it carries an Idempotency-Key; else by the
        background writer thread).

        A command whose decision needs no store read (its caller's participant cached, no
        aggregate loaded, no Idempotency-Key) is decided on the loop from the cache; else
        on a fresh read, in a worker thread when ``decide_in_thread``.
        """
        prepared: CommandResult | tuple[list[Event], Batch] | None = self._prepare_cached(
            handler, actor, args, kwargs, idempotency, allow_pending)
        for _ in range(2):  # the cached decision, else (or if stale) one on a fresh read
            if prepared is None:
                if self.decide_in_thread:
                    prepared = await asyncio.to_thread(self._prepare, handler, actor, args,
                                                       kwargs, idempotency, allow_pending)
                else:
                    prepared = self._prepare(handler, actor, args, kwargs, idempotency,
                                             allow_pending)
            if isinstance(prepared, CommandResult):
                return prepared
            events, batch = prepared
            try:
                if self.committer is None:
                    seqs = self.log.append_batches(events, [batch])
                elif self._appends_async and batch.idempotency is None:
                    seqs = await self._loop_committer().submit(events, batch)
                else:
                    seqs = await self.committer.submit_async(events, batch)
            except AdmissionStale:
                prepared = None
                continue
            except ConflictError:
                return self._after_conflict(idempotency)
            return self._done(batch, seqs)
        raise AssertionError("unreachable: a fresh decision is never AdmissionStale")

    def _loop_committer(self) -> LoopCommitter:
        loop = asyncio.get_running_loop()
        committer = self._loop_committers.get(loop)
        if committer is None:
            committer = LoopCommitter(self.log)  # type: ignore[arg-type]
            self._loop_committers[loop] = committer
        return committer

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
        ctx = Context(actor, self.clock())
        try:
            response = handler(uow, ctx, *args, **kwargs)
        except _NeedsStore:
            return None
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
        ctx = Context(actor, self.clock())
        if actor.role != "system":
            # Its own unit of work: the caller's admission is checked now, but is not part
            # of the decision's read set (a suspension racing a command is no conflict).
            self._require_active(StoreUnitOfWork(self.streams), actor, allow_pending)
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
        raise WrongState(f"participant {participant.id} is {participant.state}; "
                         "only admitted participants act", state=participant.state)
