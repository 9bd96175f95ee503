"""One persistence suite, run on a SQLite file and on the real PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.persistence import IntegrityError
from psycopg.sql import SQL, Identifier

from core.canonical import decode
from core.decision import SignedDecision, new_private_key, public_key_text, signed_body
from domain.application import Idempotency, Ledger
from domain.base import Actor, Context, new_id
from domain.errors import ConcurrencyConflict, IdempotencyKeyReused
from domain.participant import Participant, found_platform, register_participant
from events.append import IdempotencyRecord
from events.commit import new_ledger
from events.store import EventStore, LedgerLog
from events.url import DatabaseURL
from tests.integration.conftest import AT

SYSTEM = Actor("system", "system", "system")


def platform_events(id: str | None = None) -> list:  # type: ignore[type-arg]
    return found_platform(id or new_id(), Context(SYSTEM, AT), name="p").collect()


def test_appends_get_gap_free_seqs_from_one(store: EventStore) -> None:
    assert store.max_seq() == 0
    assert store.append(platform_events()) == [1, 2]
    assert store.append(platform_events()) == [3, 4]
    assert store.max_seq() == 4


def test_a_conflicting_batch_stores_nothing_and_leaves_no_gap(store: EventStore) -> None:
    first = platform_events("agg-1")
    store.append(first)
    with pytest.raises(IntegrityError):
        store.append(platform_events() + first[1:])
    assert store.max_seq() == 2
    assert [e.seq for e in store.read(0, 10)] == [1, 2]
    assert store.append(platform_events()) == [3, 4]


def test_load_gives_back_equal_events_in_order(store: EventStore) -> None:
    events = platform_events("agg-2")
    store.append(events)
    assert store.load("agg-2") == events
    assert store.load("agg-2", after_version=1) == events[1:]
    assert store.load("nothing-here") == []


def test_read_returns_canonical_bytes_in_seq_order(store: EventStore) -> None:
    store.append(platform_events("a"))
    store.append(platform_events("b"))
    entries = store.read(after=1, limit=2)
    assert [e.seq for e in entries] == [2, 3]
    whole = decode(entries[0].canonical())
    assert whole == {"seq": 2, "id": "a", "version": 2, "type": "participant.admission_approved",
                     "payload": entries[0].payload()}
    assert entries[1].event() == store.load("b")[0]


def test_idempotency_record_is_written_with_the_events(store: EventStore) -> None:
    record = IdempotencyRecord("m1", "key-1", "fp", {"participant_id": "x"})
    seqs = store.append(platform_events(), [(2, record)])
    assert store.idempotency("m1", "key-1") == ("fp", {"participant_id": "x", "seqs": seqs})
    with pytest.raises(IntegrityError):
        store.append(platform_events(), [(2, record)])
    assert store.max_seq() == 2
    assert store.idempotency("m1", "other") is None


PLATFORM = "platform-1"
ADMIN = Actor(PLATFORM, "admin", "platform", ("admin",))


def _setup_platform(store: EventStore) -> None:
    store.append(platform_events(PLATFORM))


def _setup_signing_platform(store: EventStore, ledger: Ledger) -> Ed25519PrivateKey:
    """The platform with ADMIN as its admin member holding a registered key: an admission
    is a decision ADMIN signs (core/decision.py)."""
    from domain.participant import register_key

    platform = found_platform(PLATFORM, Context(SYSTEM, AT), name="p")
    platform.add_member(Context(ADMIN, AT), member_id=ADMIN.member_id, name="admin",
                        member_roles=["admin"], token_hash="0" * 64)
    store.append(platform.collect())
    key = new_private_key()
    ledger.execute(register_key, ADMIN, PLATFORM, public_key=public_key_text(key.public_key()))
    return key


def _admit(store: EventStore, ledger: Ledger, key: Ed25519PrivateKey, pid: str, *,
           approve: bool = True, comment: str = ""):  # type: ignore[no-untyped-def]
    """ADMIN decides ``pid``'s admission, signed at the participant's current version."""
    from domain.participant import decide_admission
    from domain.signing import Signed

    version = Participant.replay(pid, store.load(pid)).version
    body = {"approve": approve, "comment": comment}
    wire = signed_body(key, "participant.admission", pid, version, ADMIN.member_id, body)
    return ledger.execute(decide_admission, ADMIN, pid, approve=approve, comment=comment,
                          signed=Signed(SignedDecision.of(wire["signature"]), body))


def register(ledger: Ledger, name: str, idem: Idempotency | None = None):  # type: ignore[no-untyped-def]
    return ledger.execute(register_participant, ADMIN, name=name, role="provider",
                          credit_code="91110000MA0000000X", admin_name="a",
                          admin_token_hash="0" * 64, idempotency=idem)


def test_a_replayed_idempotency_key_writes_nothing_and_returns_the_first_answer(
        store: EventStore, ledger: Ledger) -> None:
    _setup_platform(store)
    idem = Idempotency("admin", "k", "fingerprint")
    first = register(ledger, "Tax bureau", idem)
    again = register(ledger, "Tax bureau", idem)
    assert again.replayed and again.body == first.body
    assert store.max_seq() == 4
    with pytest.raises(IdempotencyKeyReused):
        register(ledger, "Tax bureau", Idempotency("admin", "k", "another request"))
    assert store.max_seq() == 4


def test_concurrent_commands_are_grouped_without_gaps_or_losses(
        store: EventStore, ledger: Ledger) -> None:
    _setup_platform(store)
    results: list[list[int]] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        r = register(ledger, f"p{i}")
        with lock:
            results.append(r.seqs)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = sorted(s for r in results for s in r)
    assert seqs == list(range(3, 3 + 80))
    assert store.max_seq() == 82


def test_concurrent_retries_of_one_idempotency_key_write_once(
        store: EventStore, ledger: Ledger) -> None:
    _setup_platform(store)
    answers = []
    idem = Idempotency("admin", "same", "fp")
    threads = [threading.Thread(target=lambda: answers.append(register(ledger, "x", idem)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.max_seq() == 4
    assert len({tuple(a.seqs) for a in answers}) == 1


def test_a_stale_write_to_the_same_aggregate_is_a_concurrency_conflict(
        store: EventStore, ledger: Ledger) -> None:
    key = _setup_signing_platform(store, ledger)
    pid = register(ledger, "x").body["participant_id"]
    stale = Participant.replay(pid, store.load(pid))
    ctx = Context(ADMIN, AT)
    stale.decide_admission(ctx, approve=True, comment="")
    _admit(store, ledger, key, pid, approve=False, comment="no")
    with pytest.raises(ConcurrencyConflict):
        def replay_stale(uow, ctx, *_a, **_k):  # type: ignore[no-untyped-def]
            uow.add(stale)
            return {}
        ledger.execute(replay_stale, ADMIN)
    assert [e.type_name for e in store.load(pid)][-1] == "participant.admission_rejected"


def test_a_command_that_writes_no_event_keeps_its_first_answer(store: EventStore) -> None:
    record = IdempotencyRecord("m1", "noop-key", "fp", {"existing": True})
    assert store.append([], [(0, record)]) == []
    assert store.idempotency("m1", "noop-key") == ("fp", {"existing": True, "seqs": []})
    assert store.max_seq() == 0


def test_a_decision_on_a_changed_aggregate_is_a_conflict_and_writes_nothing(
        store: EventStore, ledger: Ledger) -> None:
    """A command that read an aggregate which another command changed before the append
    (e.g. a computation requested while its contract is being terminated) is refused."""
    key = _setup_signing_platform(store, ledger)
    pid = register(ledger, "x").body["participant_id"]

    def decide_on_stale_read(uow, ctx):  # type: ignore[no-untyped-def]
        seen = uow.get(Participant, pid)  # read at version 2 (registered + admin member)
        _admit(store, ledger, key, pid)  # now 3
        assert seen.state == "pending"
        other = found_platform("other-agg", ctx, name="q")
        uow.add(other)
        return {}

    before = store.max_seq()
    with pytest.raises(ConcurrencyConflict):
        ledger.execute(decide_on_stale_read, ADMIN)
    assert store.max_seq() == before + 1  # only the admission decision
    assert store.load("other-agg") == []


# -- the command path's cached admission (Ledger._prepare_cached) ----------------------------
def _admitted_provider(store: EventStore, ledger: Ledger) -> Actor:
    """The platform (signing its decisions) and a provider it admitted."""
    key = _setup_signing_platform(store, ledger)
    pid = register(ledger, "provider").body["participant_id"]
    _admit(store, ledger, key, pid)
    return Actor(pid, "m", "provider", ("admin",))


def _register_dataset(ledger: Ledger, actor: Actor, name: str):  # type: ignore[no-untyped-def]
    from domain.dataset import register_dataset

    return ledger.execute(register_dataset, actor, name=name, description="", source_system="s",
                          classification="L2",
                          fields=[{"name": "a", "type": "string", "sensitivity": "public"}])


def test_a_participant_suspended_elsewhere_is_refused_though_its_admission_was_cached(
        store: EventStore, ledger: Ledger) -> None:
    """Another process (here: another Ledger on the same store) suspends the caller after
    this process cached its admission: the append's check sees it, the command is decided
    again on a fresh read and refused, and nothing is written."""
    from domain.errors import WrongState

    provider = _suspended_elsewhere_after_caching(store, ledger)
    before = store.max_seq()
    with pytest.raises(WrongState):
        _register_dataset(ledger, provider, "second")
    assert store.max_seq() == before


def _suspended_elsewhere_after_caching(store: EventStore, ledger: Ledger) -> Actor:
    """An admitted provider whose stream ``ledger`` cached, then suspended through another
    Ledger on the same store (as another process would)."""
    from domain.participant import suspend_participant

    provider = _admitted_provider(store, ledger)
    _register_dataset(ledger, provider, "first")  # caches the provider's stream
    assert ledger.streams.cached(provider.participant_id)
    other = new_ledger(LedgerLog(store), clock=lambda: AT)
    try:
        other.execute(suspend_participant, ADMIN, provider.participant_id, reason="audit")
    finally:
        other.close()
    return provider


def test_a_participant_changed_elsewhere_but_still_admitted_is_no_conflict(
        store: EventStore, ledger: Ledger) -> None:
    from domain.participant import add_member

    provider = _admitted_provider(store, ledger)
    _register_dataset(ledger, provider, "first")
    other = new_ledger(LedgerLog(store), clock=lambda: AT)
    try:
        other.execute(add_member, provider, provider.participant_id, name="b",
                      member_roles=["admin"], token_hash="1" * 64)
    finally:
        other.close()
    result = _register_dataset(ledger, provider, "second")
    assert result.seqs == [store.max_seq()]


def test_concurrent_async_commands_are_grouped_without_gaps_or_losses(
        store: EventStore, ledger: Ledger) -> None:
    import asyncio

    from domain.dataset import register_dataset

    provider = _admitted_provider(store, ledger)
    _register_dataset(ledger, provider, "first")
    before = store.max_seq()

    async def many() -> list[int]:
        results = await asyncio.gather(*(
            ledger.execute_async(register_dataset, provider, name=f"d{i}", description="",
                                 source_system="s", classification="L2",
                                 fields=[{"name": "a", "type": "string",
                                          "sensitivity": "public"}])
            for i in range(40)))
        return sorted(s for r in results for s in r.seqs)

    seqs = asyncio.run(many())
    assert seqs == list(range(before + 1, before + 41))
    assert store.max_seq() == before + 40


def test_a_group_of_many_events_gets_consecutive_seqs_in_its_order(store: EventStore) -> None:
    """SQLite writes a group as one INSERT … SELECT: the seqs follow the events' order."""
    events = [e for i in range(300) for e in platform_events(f"p-{i:03d}")]
    seqs = store.append(events)
    assert seqs == list(range(1, len(events) + 1))
    entries = store.read(0, len(events))
    assert [(x.originator_id, x.version) for x in entries] == \
        [(e.originator_id, e.originator_version) for e in events]


def test_a_failed_check_in_a_group_append_stores_nothing(store: EventStore) -> None:
    store.append(platform_events("seen"))
    at = store.load("seen")[-1].originator_version
    before = store.max_seq()
    with pytest.raises(IntegrityError):
        store.append(platform_events("new"), reads={"seen": 7})
    from events.append import AdmissionChanged
    with pytest.raises(AdmissionChanged):
        store.append(platform_events("new"), reads={"seen": at}, admissions=[("seen", 5)])
    assert store.max_seq() == before
    made = platform_events("new")
    assert store.append(made, reads={"seen": at}, admissions=[("seen", at)]) == \
        list(range(before + 1, before + 1 + len(made)))


def test_two_decisions_of_a_group_that_read_one_aggregate_at_two_versions_clash(
        store: EventStore) -> None:
    """A decided on X at version 2, then X changed, then B decided on X at version 3: one
    check (X == 3) cannot vouch for A, so the group is refused and each commit is then
    written alone (A's own check fails, B's holds)."""
    from domain.application import Batch, ConflictError

    log = LedgerLog(store)
    store.append(platform_events("x"))  # x at version 2
    stale = store.load("x")[-1].originator_version
    x = Participant.replay("x", store.load("x"))
    x.add_member(Context(SYSTEM, AT), member_id="m2", name="second", member_roles=["member"],
                 token_hash="0" * 64)
    store.append(x.collect())  # x now one version further
    fresh = store.load("x")[-1].originator_version
    assert fresh == stale + 1
    a_events, b_events = platform_events("a"), platform_events("b")
    batches = [Batch(len(a_events), None, {}, reads={"x": stale}),
               Batch(len(b_events), None, {}, reads={"x": fresh})]
    before = store.max_seq()
    with pytest.raises(ConflictError, match="read x at versions"):
        log.append_batches(a_events + b_events, batches)
    assert store.max_seq() == before
    with pytest.raises(ConflictError):  # A alone: its decision rests on a changed x
        log.append_batches(a_events, batches[:1])
    assert log.append_batches(b_events, batches[1:]) == [before + 1, before + 2]


def test_a_group_with_more_checks_than_one_statement_holds_is_still_written(
        store: EventStore) -> None:
    """SQLite caps an expression's depth at 1000: a group checking more reads than one
    INSERT … SELECT … WHERE can carry goes the stepwise way, with the same result."""
    readers = [f"r-{i:04d}" for i in range(1200)]
    store.append([e for r in readers for e in platform_events(r)])
    reads = {r: store.load(r)[-1].originator_version for r in readers}
    made = platform_events("many-reads")
    before = store.max_seq()
    assert store.append(made, reads=reads) == [before + 1, before + 2]
    with pytest.raises(IntegrityError):
        store.append(platform_events("refused"), reads={**reads, readers[-1]: 99})
    assert store.max_seq() == before + 2


# -- commits from an event loop (the HTTP API's path: execute_async) -------------------------
# On PostgreSQL they are written by a task on the loop over its own connection
# (LoopCommitter); on SQLite by the group committer's thread. Same outcomes on both.
def test_two_async_decisions_on_one_aggregate_in_one_group_one_is_a_conflict(
        store: EventStore, ledger: Ledger) -> None:
    """Both publish the same dataset from the same read; they queue into one group: the
    first is written, the second clashes with it, is written alone, and is refused."""
    import asyncio

    from domain.dataset import publish_dataset

    provider = _admitted_provider(store, ledger)
    dataset_id = _register_dataset(ledger, provider, "shared").body["dataset_id"]
    before = store.max_seq()

    async def both() -> list[object]:
        return await asyncio.gather(
            *(ledger.execute_async(publish_dataset, provider, dataset_id) for _ in range(2)),
            return_exceptions=True)

    outcomes = asyncio.run(both())
    assert sum(isinstance(o, ConcurrencyConflict) for o in outcomes) == 1
    written = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(written) == 1 and written[0].seqs == [before + 1]  # type: ignore[attr-defined]
    assert [e.type_name for e in store.read(before, 10)] == ["dataset.published"]


def test_an_async_command_of_a_participant_suspended_elsewhere_is_refused(
        store: EventStore, ledger: Ledger) -> None:
    """The cached admission is checked in the append (here over the loop's path): the
    command is decided again on a fresh read, refused, and nothing is written."""
    import asyncio

    from domain.dataset import register_dataset
    from domain.errors import WrongState

    provider = _suspended_elsewhere_after_caching(store, ledger)
    before = store.max_seq()
    with pytest.raises(WrongState):
        asyncio.run(ledger.execute_async(
            register_dataset, provider, name="second", description="", source_system="s",
            classification="L2", fields=[{"name": "a", "type": "string",
                                          "sensitivity": "public"}]))
    assert store.max_seq() == before


def test_types_between_names_the_types_of_a_range_of_seqs(store: EventStore) -> None:
    store.append(platform_events("a"))  # 1 participant.registered, 2 admission_approved
    store.append(platform_events("b"))  # 3, 4
    assert store.types_between(0, 1) == {"participant.registered"}
    assert store.types_between(1, 4) == {"participant.registered",
                                         "participant.admission_approved"}
    assert store.types_between(4, 4) == set()
    assert store.types_between(4, 100) == set()


def _hold_write_lock(url: DatabaseURL) -> tuple[Any, Callable[[], None]]:
    """Another connection holding the lock a keyed append needs (SQLite's write lock; on
    PostgreSQL the idempotency table's); returns it and how to let go."""
    if url.kind == "sqlite":
        conn = sqlite3.connect(url.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        return conn, lambda: (conn.execute("COMMIT"), conn.close())
    pg = psycopg.connect(url.conninfo())
    pg.execute(SQL("LOCK TABLE {0}.idempotency IN EXCLUSIVE MODE").format(
        Identifier(url.schema)))
    return pg, lambda: (pg.commit(), pg.close())


def test_a_keyed_command_that_writes_no_event_waits_for_another_writer(
        store: EventStore, database_url: str) -> None:
    # it must wait for the lock (up to the store's timeout), not fail with "database is
    # locked": on SQLite a read before the first write made the transaction unable to wait
    store.append(platform_events("x"))
    record = IdempotencyRecord("m1", "busy-key", "fp", {"existing": True})
    outcome: list[object] = []

    def append() -> None:
        try:
            outcome.append(store.append([], [(0, record)], reads={"x": 2}))
        except Exception as exc:  # noqa: BLE001 - the assertion shows it
            outcome.append(exc)

    _, release = _hold_write_lock(DatabaseURL.parse(database_url))
    worker = threading.Thread(target=append)
    worker.start()
    worker.join(timeout=0.5)
    still_waiting = worker.is_alive()
    release()
    worker.join(timeout=30)
    assert still_waiting and outcome == [[]]
    assert store.idempotency("m1", "busy-key") == ("fp", {"existing": True, "seqs": []})


def test_commits_queued_behind_a_slice_of_cancelled_ones_are_still_written(
        store: EventStore) -> None:
    import asyncio

    from domain.application import Batch
    from events.commit import GroupCommitter

    committer = GroupCommitter(LedgerLog(store), max_batch=2)

    async def run() -> list[int]:
        committer._write_lock.acquire()  # a group being written (as if waiting on a lock)
        waiters = [committer.submit_async(platform_events(), Batch(2, None, {}))
                   for _ in range(3)]
        waiters[0].cancel()  # the first max_batch commits' clients went away meanwhile
        waiters[1].cancel()
        await asyncio.sleep(0.05)
        committer._write_lock.release()
        return await asyncio.wait_for(waiters[2], 10)

    try:
        assert asyncio.run(run()) == [1, 2]
    finally:
        committer.close()
    assert store.max_seq() == 2
