"""PostgreSQL's write paths: the append function, the event loop's own connection, and the
projections' array inserts, on the real server at 127.0.0.1:5432."""

from __future__ import annotations

import asyncio
import threading
import uuid
from urllib.parse import quote

import psycopg
import pytest
from psycopg.sql import SQL, Identifier, Literal
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    insert,
    select,
)

from domain.application import Ledger
from domain.base import Actor
from domain.dataset import register_dataset
from events.commit import new_ledger
from events.postgres import APPEND_FUNCTION
from events.store import EventStore, LedgerLog, open_store
from events.url import DatabaseURL
from projections.base import BufferedConnection
from projections.runner import views_engine
from tests.conftest import PG_DSN
from tests.integration.conftest import AT
from tests.integration.test_persistence import (
    _admitted_provider,
    _register_dataset,
    _setup_platform,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def database_url(pg_url: str) -> str:
    """The store and the ledger of these tests are on PostgreSQL only."""
    return pg_url


def _schema(url: str) -> str:
    return DatabaseURL.parse(url).schema


def _dataset(ledger: Ledger, provider: Actor, name: str):  # type: ignore[no-untyped-def]
    return ledger.execute_async(register_dataset, provider, name=name, description="",
                                source_system="s", classification="L2",
                                fields=[{"name": "a", "type": "string",
                                         "sensitivity": "public"}])


def test_concurrent_commands_of_one_loop_share_transactions_and_leave_no_gap(
        pg_url: str, store: EventStore, ledger: Ledger) -> None:
    """60 commands at once on one event loop: written in fewer transactions than commands
    (each event's xmin names its transaction), seqs gap-free, every answer its own seq."""
    provider = _admitted_provider(store, ledger)
    _register_dataset(ledger, provider, "warm")  # caches the provider: decided on the loop
    before = store.max_seq()

    async def many() -> list[int]:
        results = await asyncio.gather(*(_dataset(ledger, provider, f"d{i}") for i in range(60)))
        await ledger.aclose()
        return [s for r in results for s in r.seqs]

    seqs = asyncio.run(many())
    assert sorted(seqs) == list(range(before + 1, before + 61))
    with psycopg.connect(PG_DSN) as conn:
        row = conn.execute(f'SELECT count(*), count(DISTINCT xmin::text) FROM '
                           f'"{_schema(pg_url)}".stored_events WHERE notification_id > %s',
                           (before,)).fetchone()
    assert row is not None and row[0] == 60 and row[1] < 60


def test_a_dropped_loop_connection_is_replaced_before_the_next_command(
        store: EventStore, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server ends the loop's connection (a restart, an admin): after a pause the
    connection is checked, replaced, and the next command is written."""
    import events.postgres as postgres_module

    monkeypatch.setattr(postgres_module, "IDLE_CHECK_S", 0.0)
    provider = _admitted_provider(store, ledger)
    _register_dataset(ledger, provider, "warm")

    async def run() -> tuple[list[int], list[int]]:
        first = (await _dataset(ledger, provider, "before")).seqs
        recorder = store.recorder
        pid = next(iter(recorder._loop_connections.values())).conn.info.backend_pid
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        await asyncio.sleep(0.1)
        second = (await _dataset(ledger, provider, "after")).seqs
        await ledger.aclose()
        return first, second

    first, second = asyncio.run(run())
    assert second == [first[0] + 1] and store.max_seq() == second[0]


def test_an_existing_store_without_the_append_function_gets_it_at_open(pg_url: str) -> None:
    """A store made by an earlier version has no append function: opening makes it."""
    url = DatabaseURL.parse(pg_url)
    open_store(url).close()
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP FUNCTION "{url.schema}".{APPEND_FUNCTION}')
    store = open_store(url)
    try:
        _setup_platform(store)
        assert store.max_seq() == 2
    finally:
        store.close()


def test_processes_opening_one_fresh_store_at_once_all_succeed(pg_url: str) -> None:
    """Creating the schema, types, tables and function is serialized (advisory locks):
    eight openers at once neither fail on a concurrent CREATE (SCHEMA, TYPE, TABLE) nor
    lose the function."""
    url = DatabaseURL.parse(pg_url)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def open_and_close() -> None:
        try:
            start.wait()
            open_store(url).close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted
            errors.append(exc)

    threads = [threading.Thread(target=open_and_close) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = open_store(url, create=False)
    try:
        _setup_platform(store)
        assert store.max_seq() == 2
    finally:
        store.close()


def test_buffered_rows_are_written_as_arrays_exactly_as_one_insert_per_row(
        pg_url: str) -> None:
    """The projections' PostgreSQL flush (one INSERT … SELECT FROM unnest per table) writes
    the rows SQLAlchemy's INSERT per row writes: strings, integers, JSON, booleans, bytes
    and NULLs; with ON CONFLICT DO NOTHING, repeated rows (in the batch or already there)
    are skipped."""
    open_store(DatabaseURL.parse(pg_url)).close()  # makes the schema
    engine = views_engine(DatabaseURL.parse(pg_url))
    meta = MetaData()

    def columns() -> list[Column]:  # type: ignore[type-arg]
        return [Column("id", String, primary_key=True), Column("n", Integer),
                Column("doc", JSON), Column("flag", Boolean), Column("blob", LargeBinary),
                Column("note", String, nullable=True)]

    arrays = Table("t_arrays", meta, *columns())
    single = Table("t_single", meta, *columns())
    rows = [{"id": "a", "n": 1, "doc": {"k": [1, "é"]}, "flag": True, "blob": b"\x00\x01",
             "note": None},
            {"id": "b", "n": -(2**31), "doc": [], "flag": False, "blob": b"", "note": "x'y"},
            {"id": "c", "n": 0, "doc": None, "flag": None, "blob": None, "note": "\\N"}]
    try:
        meta.create_all(engine)
        with engine.begin() as conn:
            buffered = BufferedConnection(conn)
            for row in rows:
                buffered.add(arrays, row)
            buffered.flush()
            conn.execute(insert(single), rows)
        with engine.connect() as conn:
            got = [dict(r) for r in conn.execute(select(arrays).order_by(arrays.c.id)).mappings()]
            want = [dict(r) for r in conn.execute(select(single).order_by(single.c.id)).mappings()]
        assert got == want and [r["id"] for r in got] == ["a", "b", "c"]

        with engine.begin() as conn:
            buffered = BufferedConnection(conn)
            for row in [rows[0], {**rows[0], "id": "d"}, {**rows[0], "id": "d"}]:
                buffered.add(arrays, row, ignore_conflicts=True)
            buffered.flush()
        with engine.connect() as conn:
            ids = list(conn.execute(select(arrays.c.id).order_by(arrays.c.id)).scalars())
        assert ids == ["a", "b", "c", "d"]
    finally:
        meta.drop_all(engine)
        engine.dispose()


def test_a_url_with_percent_encoded_user_and_password_reaches_every_connection(
        pg_url: str) -> None:
    """User and password hold "@", ":" and "%" (percent-encoded in the URL): the store's
    pool, the event loop's own connection and the read models all log in as that role."""
    from sqlalchemy import text

    role, password = f"dl@test%{uuid.uuid4().hex[:8]}", "p@ss:w%rd"
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(SQL("CREATE ROLE {0} LOGIN SUPERUSER PASSWORD {1}").format(
            Identifier(role), Literal(password)))
    try:
        base = DatabaseURL.parse(pg_url)
        url = DatabaseURL.parse(
            f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}@{base.host}:"
            f"{base.port}/{base.dbname}?schema={base.schema}")
        assert (url.user, url.password) == (role, password)
        store = open_store(url)
        ledger = new_ledger(LedgerLog(store), clock=lambda: AT)
        try:
            provider = _admitted_provider(store, ledger)
            _register_dataset(ledger, provider, "warm")

            async def on_the_loop() -> tuple[list[int], str]:
                seqs = (await _dataset(ledger, provider, "loop")).seqs
                user = next(iter(store.recorder._loop_connections.values())).conn.info.user
                await ledger.aclose()
                return seqs, user

            seqs, loop_user = asyncio.run(on_the_loop())
            assert seqs == [store.max_seq()] and loop_user == role
            with store.recorder.datastore.transaction(commit=False) as curs:
                curs.execute("SELECT current_user AS u")
                assert curs.fetchone()["u"] == role
        finally:
            ledger.close()
            store.close()
        engine = views_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT current_user")).scalar() == role
        finally:
            engine.dispose()
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(SQL("DROP OWNED BY {0} CASCADE").format(Identifier(role)))
            admin.execute(SQL("DROP ROLE {0}").format(Identifier(role)))


def test_a_clashing_commit_cancelled_while_the_group_is_written_is_not_written(
        store: EventStore, ledger: Ledger) -> None:
    """The loop's committer writes a clashing commit alone after the group; if its request
    was cancelled meanwhile, nobody waits for it and it is dropped, as from a group."""
    from domain.application import Batch
    from tests.integration.test_persistence import platform_events

    async def run() -> list[int]:
        committer = ledger.committer._loop_committer()  # type: ignore[attr-defined]
        first = committer.submit(platform_events("a"), Batch(2, None, {}, {"z": 0}))
        # writes what `first` read: a clash, written alone after the group
        clashing = committer.submit(platform_events("z"), Batch(2, None, {}))
        await asyncio.sleep(0)  # the group is formed and being written
        clashing.cancel()
        seqs = await first
        await asyncio.sleep(0.2)  # time for a solo write, were there one
        await ledger.aclose()
        return seqs

    assert asyncio.run(run()) == [1, 2]
    assert store.max_seq() == 2 and store.load("z") == []
