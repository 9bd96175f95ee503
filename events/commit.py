"""Group commit: the commits of concurrent commands appended together.

:class:`GroupCommitter` (threads): whoever gets the write lock writes every waiting commit
in one transaction (one fsync for many commands); a background writer serves callers that
must not block. If a group fails on a conflict, its commits are retried one by one so that
only the conflicting command is refused. :class:`LoopCommitter` does the same on an event
loop for a log that appends without a thread (PostgreSQL): no thread to hand the GIL to.
:class:`GroupedCommits` is the ``domain.application.Committer`` made of both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from core.event import Event
from domain.application import AsyncEventLog, Batch, ConflictError, EventLog, Ledger, utc_now
from domain.base import Sealer
from events.streams import StreamCache

log = logging.getLogger(__name__)


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
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, commits)


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


class GroupedCommits:
    """The committer of a Ledger whose commits are grouped.

    On a log that appends from an event loop (PostgreSQL), commits without an
    Idempotency-Key made from a loop are grouped by that loop's own LoopCommitter;
    everything else by the GroupCommitter's threads.
    """

    def __init__(self, log: EventLog, max_batch: int = 256) -> None:
        self.log = log
        self.group = GroupCommitter(log, max_batch)
        self._appends_async = bool(getattr(log, "appends_async", False))
        self._loop_committers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, LoopCommitter] = weakref.WeakKeyDictionary()

    def commit(self, events: list[Event], batch: Batch) -> list[int]:
        return self.group.commit(events, batch)

    async def commit_async(self, events: list[Event], batch: Batch) -> list[int]:
        if self._appends_async and batch.idempotency is None:
            return await self._loop_committer().submit(events, batch)
        return await self.group.submit_async(events, batch)

    def close(self) -> None:
        self.group.close()

    def _loop_committer(self) -> LoopCommitter:
        loop = asyncio.get_running_loop()
        committer = self._loop_committers.get(loop)
        if committer is None:
            committer = LoopCommitter(self.log)  # type: ignore[arg-type]
            self._loop_committers[loop] = committer
        return committer


def new_ledger(log: EventLog, *, clock: Callable[[], str] = utc_now, group_commit: bool = True,
               decide_in_thread: bool = False, sealer: Sealer | None = None) -> Ledger:
    """A Ledger over ``log`` with a stream cache, its commits grouped unless told not to,
    sealing personal fields with ``sealer`` (``privacy.keystore``; None: in clear)."""
    committer = GroupedCommits(log) if group_commit else None
    return Ledger(log, StreamCache(log), committer, clock=clock,
                  decide_in_thread=decide_in_thread, sealer=sealer)
