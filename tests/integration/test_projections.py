"""Projections record their position in the same transaction as their writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, select

from core.record import LogEntry
from domain.base import Actor, Context, new_id
from domain.participant import MemberAdded, found_platform
from events.store import EventStore
from events.url import DatabaseURL
from projections.base import METADATA, tracking
from projections.participants import ParticipantsProjection, members
from projections.runner import ProjectionRunner, views_engine

SYSTEM = Actor("system", "system", "system")
CTX = Context(SYSTEM, "2026-11-26T10:00:00.000000Z")


@pytest.fixture
def runner(store: EventStore, database_url: str, tmp_path: Path) -> Iterator[ProjectionRunner]:
    engine = views_engine(DatabaseURL.parse(database_url), str(tmp_path / "views.db"))
    r = ProjectionRunner(store, engine, [ParticipantsProjection()], batch_size=3)
    r.create_tables()
    yield r
    engine.dispose()


def add_platform_with_members(store: EventStore, n: int) -> None:
    agg = found_platform(new_id(), CTX, name="p")
    for i in range(n):
        agg.add_member(CTX, member_id=f"m{i}", name=f"member {i}", member_roles=["member"],
                       token_hash=f"{i:064d}")
    store.append(agg.collect())


def count_members(runner: ProjectionRunner) -> int:
    with runner.engine.connect() as conn:
        return len(conn.execute(select(members)).all())


def position(runner: ProjectionRunner) -> int:
    with runner.engine.connect() as conn:
        return int(conn.execute(select(tracking.c.seq)).scalar() or 0)


def test_a_crash_mid_batch_leaves_rows_and_position_as_before(
        store: EventStore, runner: ProjectionRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    add_platform_with_members(store, 5)  # seqs 1..7
    projection = runner.projections[0]
    handlers = projection.handlers()
    calls = {"n": 0}

    def flaky(conn: Connection, entry: LogEntry, payload: dict[str, Any]) -> None:
        calls["n"] += 1
        if entry.seq == 6:
            raise RuntimeError("power cut")
        handlers[MemberAdded.type_name](conn, entry, payload)

    monkeypatch.setattr(projection, "handlers",
                        lambda: {**handlers, MemberAdded.type_name: flaky})
    with pytest.raises(RuntimeError):
        runner.catch_up()
    # batches of 3: seqs 1-3 committed, the batch 4-6 rolled back as a whole
    assert position(runner) == 3 and count_members(runner) == 1
    monkeypatch.undo()
    runner.position = 3
    assert runner.catch_up() == 7
    assert position(runner) == 7 and count_members(runner) == 5


def test_catching_up_twice_changes_nothing_and_a_rebuild_gives_the_same_state(
        store: EventStore, runner: ProjectionRunner) -> None:
    add_platform_with_members(store, 4)
    runner.catch_up()
    first = runner.digests()
    runner.position = 0  # as if a restarted runner re-read from the start
    runner.catch_up()
    assert runner.digests() == first
    assert runner.rebuild() == store.max_seq()
    assert runner.digests() == first


def test_read_models_of_an_older_shape_are_rebuilt_from_the_log(
        store: EventStore, runner: ProjectionRunner) -> None:
    add_platform_with_members(store, 4)
    runner.catch_up()
    before = runner.digests()
    with runner.engine.begin() as conn:  # as an older version made it: a column fewer
        conn.exec_driver_sql("ALTER TABLE rm_members DROP COLUMN name")
    again = ProjectionRunner(store, runner.engine, runner.projections, batch_size=3)
    again.create_tables()
    assert again.position == 0
    again.catch_up()
    assert again.digests() == before and count_members(again) == 4


def test_a_rebuild_by_another_process_beside_a_live_applier_gives_the_same_state(
        store: EventStore, runner: ProjectionRunner) -> None:
    """`dataledger projections rebuild` while `serve` applies: the server's applier,
    knowing itself at seq 7, must not project only the next event onto the emptied tables
    and record the head as every projection's position (the rebuild would then skip it all)."""
    add_platform_with_members(store, 5)  # seqs 1..7
    assert runner.catch_up() == 7
    clean = runner.digests()
    other = ProjectionRunner(store, runner.engine, [ParticipantsProjection()], batch_size=3)
    with runner.engine.begin() as conn:  # the other process's rebuild, its first half
        METADATA.drop_all(conn)
        METADATA.create_all(conn)
    later = found_platform(new_id(), CTX, name="q")  # seqs 8..10, applied by the live one
    later.add_member(CTX, member_id="late", name="late member", member_roles=["member"],
                     token_hash="f" * 64)
    store.append(later.collect())
    assert runner.catch_up() == 10
    assert other.catch_up() == 10  # the rebuild's second half
    assert count_members(runner) == 6 and position(runner) == 10
    fresh = ProjectionRunner(store, runner.engine, [ParticipantsProjection()])
    fresh.rebuild()
    assert runner.digests() == fresh.digests() != clean


def test_every_event_type_in_the_catalogue_is_projected() -> None:
    """A view's ``version`` is its stream's: an event type no projection handles would leave
    the views behind their streams (and its facts out of every read)."""
    from events.catalogue import catalogue
    from projections import all_projections

    handled = {name for p in all_projections() for name in p.handlers()}
    domain_types = {name for name, cls in catalogue().items()  # (tests define types of their own)
                    if cls.__module__.startswith("domain.")}
    assert domain_types and domain_types - handled == set()
