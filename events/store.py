"""The event store: the append-only log over one of the recorders (SQLite file or
PostgreSQL), and the same log as the application's EventLog.

Each stored event gets a global, gap-free sequence number ``seq`` (the library's
notification id). Idempotency records (member, key) → the first answer are kept in the
same transaction as the events, so that a retried request writes nothing new. Each
recorder is a module of its own: :mod:`events.sqlite`, :mod:`events.postgres`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import IntegrityError, StoredEvent

from core.canonical import canonical_bytes, decode
from core.event import Event, event_class
from core.record import LogEntry
from domain.application import AdmissionStale, ConflictError
from events.append import AdmissionChanged, IdempotencyRecord, append_checks
from events.postgres import PostgresLedgerRecorder, open_postgres
from events.sqlite import SQLiteLedgerRecorder, open_sqlite
from events.url import DatabaseURL

__all__ = ["MAX_SEQ", "EventStore", "LedgerLog", "LogGapError", "follow_on", "from_stored",
           "open_store", "to_stored"]

#: the largest seq (and tree size) a store can hold: a signed 64-bit integer on both backends
MAX_SEQ = 2**63 - 1


class LogGapError(RuntimeError):
    """The log skips a seq (an event is missing from the store): nothing that follows the
    log in order (the tree, the read models) may go past it. ``missing`` is that seq."""

    def __init__(self, missing: int, found: int) -> None:
        super().__init__(f"the log has a gap: seq {missing} is missing (the next stored "
                         f"event is seq {found})")
        self.missing, self.found = missing, found


def follow_on(after: int, entries: Sequence[LogEntry]) -> None:
    """Raise LogGapError unless the seqs of ``entries`` are ``after`` + 1, + 2, …"""
    for k, entry in enumerate(entries):
        if entry.seq != after + k + 1:
            raise LogGapError(after + k + 1, entry.seq)


def to_stored(event: Event) -> StoredEvent:
    """Domain event → the library's StoredEvent: topic is the stable type name."""
    return StoredEvent(originator_id=event.originator_id,
                       originator_version=event.originator_version,
                       topic=event.type_name, state=event.canonical_payload())


def from_stored(stored: StoredEvent) -> Event:
    """The library's StoredEvent → domain event."""
    return event_class(stored.topic).from_payload(
        str(stored.originator_id), stored.originator_version, decode(stored.state))


class EventStore:
    """The append-only log: load streams, append batches atomically, read in seq order."""

    def __init__(self, recorder: SQLiteLedgerRecorder | PostgresLedgerRecorder,
                 closer: Any) -> None:
        self.recorder = recorder
        self._closer = closer

    def load(self, originator_id: str, after_version: int = 0) -> list[Event]:
        """The events of one aggregate after ``after_version``, in order.

        An id with a NUL character has none: ids are made by the platform, and PostgreSQL
        text cannot hold one (asking would be a database error, not "no such aggregate").
        """
        if "\x00" in originator_id:
            return []
        if isinstance(self.recorder, SQLiteLedgerRecorder):
            stored = self.recorder.select_events_after(originator_id, after_version)
        else:
            stored = list(self.recorder.select_events(originator_id, gt=after_version or None))
        return [from_stored(s) for s in stored]

    def append(self, events: Sequence[Event],
               batches: Sequence[tuple[int, IdempotencyRecord | None]] = (),
               reads: dict[str, int] | None = None,
               admissions: Sequence[tuple[str, int]] = ()) -> list[int]:
        """Store ``events`` in one transaction; return their seqs.

        Raises the library's IntegrityError if any (originator, version) or
        idempotency key is already taken, or an aggregate in ``reads`` is no longer
        at the version given (AdmissionChanged for one in ``admissions``); then
        nothing is stored.
        """
        ids = self.recorder.insert_events([to_stored(e) for e in events], batches=batches,
                                          reads=reads or {}, admissions=admissions)
        return list(ids or [])

    async def append_async(self, events: Sequence[Event],
                           batches: Sequence[tuple[int, IdempotencyRecord | None]] = (),
                           reads: dict[str, int] | None = None,
                           admissions: Sequence[tuple[str, int]] = ()) -> list[int]:
        """``append`` from an event loop: on PostgreSQL, events without idempotency records
        over the loop's own connection; anything else in a worker thread."""
        if (isinstance(self.recorder, PostgresLedgerRecorder) and events
                and all(record is None for _, record in batches)):
            checks = append_checks({"reads": reads or {}, "admissions": admissions})
            return await self.recorder.insert_events_async(
                [to_stored(e) for e in events], checks)
        return await asyncio.to_thread(self.append, events, batches, reads, admissions)

    def read(self, after: int = 0, limit: int = 100) -> list[LogEntry]:
        """Up to ``limit`` stored events with seq > ``after``, in seq order."""
        if isinstance(self.recorder, PostgresLedgerRecorder):
            return self.recorder.select_log(after, limit)
        notes = self.recorder.select_notifications(start=after, limit=limit,
                                                   inclusive_of_start=False)
        return [LogEntry(n.id, str(n.originator_id), n.originator_version, n.topic, n.state)
                for n in notes]

    def check_gap_free(self, batch: int = 5000) -> None:
        """Raise LogGapError at the first seq missing from the log (one pass over it)."""
        done = 0
        while entries := self.read(done, batch):
            follow_on(done, entries)
            done = entries[-1].seq

    def types_between(self, after: int, upto: int) -> set[str]:
        """The type names of the stored events with ``after`` < seq <= ``upto``.

        One query that returns only the distinct topics (for followers that need to
        know what kinds of events arrived, not the events themselves).
        """
        if upto <= after:
            return set()
        return set(self.recorder.topics_between(after, upto))

    def max_seq(self) -> int:
        """The seq of the last stored event (0 when empty)."""
        return self.recorder.max_notification_id() or 0

    def idempotency(self, member_id: str, key: str) -> tuple[str, dict[str, Any]] | None:
        """The fingerprint and first answer stored for (member, key), if any."""
        found = self.recorder.idempotency(member_id, key)
        return None if found is None else (found[0], decode(found[1]))

    def forget_answers(self, naming: str) -> int:
        """Delete the idempotency records whose stored answer names ``naming`` (an id: a
        data subject's, at its erasure, docs/PRIVACY.md); how many. A retry of such a
        request is then run again, not replayed."""
        return self.recorder.forget_answers(canonical_bytes(naming))

    def close(self) -> None:
        """Release connections."""
        self._closer.close()


def open_store(url: DatabaseURL, *, create: bool = True) -> EventStore:
    """Open (and by default create) the event store named by ``url``."""
    recorder: SQLiteLedgerRecorder | PostgresLedgerRecorder
    closer: Any
    if url.kind == "sqlite":
        recorder, closer = open_sqlite(url.path)
    else:
        recorder, closer = open_postgres(url)
    if create:
        recorder.create_table()
    return EventStore(recorder, closer)


def _append_arguments(batches: list[Any]) -> tuple[
        list[tuple[int, IdempotencyRecord | None]], dict[str, int], list[tuple[str, int]]]:
    """The application's batches as EventStore.append takes them: idempotency records, the
    versions the decisions read, the callers' admissions."""

    records = [(b.count, None if b.idempotency is None else IdempotencyRecord(
        b.idempotency.member_id, b.idempotency.key, b.idempotency.fingerprint, b.response))
        for b in batches]
    reads: dict[str, int] = {}
    admissions: set[tuple[str, int]] = set()
    for b in batches:
        for read_id, version in b.reads.items():
            if reads.setdefault(read_id, version) != version:
                # two decisions read one aggregate at two versions: one check cannot
                # hold for both (the older decision may rest on a state since changed);
                # the committer then writes each commit alone, with its own checks
                raise ConflictError(f"decisions of one group read {read_id} at versions "
                                    f"{reads[read_id]} and {version}")
        if b.admission is not None:
            admissions.add(b.admission)
    return records, reads, sorted(admissions)


def _as_conflict(exc: IntegrityError) -> Exception:
    """The store's integrity error as the application's conflict."""

    if isinstance(exc, AdmissionChanged):
        return AdmissionStale(str(exc))
    return ConflictError(str(exc))


class LedgerLog:
    """The EventStore seen as the application's EventLog (conflicts translated)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def load(self, originator_id: str, after_version: int = 0) -> list[Event]:
        return self.store.load(originator_id, after_version)

    @property
    def appends_async(self) -> bool:
        """Whether ``append_batches_async`` appends without a thread (PostgreSQL)."""
        return isinstance(self.store.recorder, PostgresLedgerRecorder)

    def append_batches(self, events: list[Event], batches: list[Any]) -> list[int]:
        records, reads, admissions = _append_arguments(batches)
        try:
            return self.store.append(events, records, reads, admissions)
        except IntegrityError as exc:
            raise _as_conflict(exc) from exc

    async def append_batches_async(self, events: list[Event], batches: list[Any]) -> list[int]:
        """``append_batches`` from the event loop: batches without an idempotency record on
        PostgreSQL go over the loop's own connection; anything else in a worker thread."""
        records, reads, admissions = _append_arguments(batches)
        try:
            return await self.store.append_async(events, records, reads, admissions)
        except IntegrityError as exc:
            raise _as_conflict(exc) from exc

    async def aclose(self) -> None:
        """Close the running event loop's own connection, if it made one."""
        if isinstance(self.store.recorder, PostgresLedgerRecorder):
            await self.store.recorder.aclose()

    def idempotent_answer(self, member_id: str, key: str) -> tuple[str, dict[str, Any]] | None:
        return self.store.idempotency(member_id, key)
