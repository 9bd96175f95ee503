"""The results store: keyed by (computation id, SHA-256), so no post can shadow the bytes a
delivery names; a table keyed by computation id alone (older versions) is migrated in place."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Engine, LargeBinary, MetaData, String, Table, event, inspect, text

from delivery import results
from events.url import DatabaseURL
from projections.runner import views_engine

CID = "c-0001"
OLD_ROWS = {CID: b'[{"score":812}]', "c-0002": b'"two"'}


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@pytest.fixture
def engine(database_url: str, tmp_path: Path) -> Iterator[Engine]:
    url = DatabaseURL.parse(database_url)
    e = views_engine(url, str(tmp_path / "views.db"))
    if url.kind == "postgresql":
        with e.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{url.schema}"'))
    yield e
    e.dispose()


def old_table(engine: Engine) -> None:
    """The table as older versions made it (keyed by computation id), with two rows."""
    old = Table(results.TABLE, MetaData(),
                Column("computation_id", String, primary_key=True),
                Column("content", LargeBinary, nullable=False),
                Column("sha256", String, nullable=False))
    with engine.begin() as conn:
        old.create(conn)
        conn.execute(old.insert(), [{"computation_id": c, "content": b, "sha256": sha(b)}
                                    for c, b in OLD_ROWS.items()])


def key(engine: Engine) -> list[str]:
    return list(inspect(engine).get_pk_constraint(results.TABLE)["constrained_columns"])


def test_a_new_table_is_keyed_by_computation_and_digest(engine: Engine) -> None:
    results.ensure_table(engine)
    assert key(engine) == ["computation_id", "sha256"]


def test_other_bytes_for_the_same_computation_shadow_nothing(engine: Engine) -> None:
    first, other = b'[{"score":812}]', b'[{"score":1}]'
    assert results.put(engine, CID, other) == sha(other)  # e.g. another provider, first
    assert results.put(engine, CID, first) == sha(first)
    assert results.put(engine, CID, first) == sha(first)  # idempotent
    assert results.get(engine, CID, sha(first)) == first
    assert results.get(engine, CID, sha(other)) == other
    assert results.get(engine, CID, sha(b"never posted")) is None
    assert results.get(engine, "c-none", sha(first)) is None


def test_an_old_table_is_rekeyed_in_place_keeping_its_rows(engine: Engine) -> None:
    old_table(engine)
    assert key(engine) == ["computation_id"]
    results.ensure_table(engine)
    assert key(engine) == ["computation_id", "sha256"]
    assert inspect(engine).get_table_names() == [results.TABLE]
    for cid, content in OLD_ROWS.items():
        assert results.get(engine, cid, sha(content)) == content
    # the new key at work: other bytes for a migrated computation go to a row of their own
    results.put(engine, CID, b'"other"')
    assert results.get(engine, CID, sha(OLD_ROWS[CID])) == OLD_ROWS[CID]
    assert results.get(engine, CID, sha(b'"other"')) == b'"other"'
    results.migrate(engine)  # once migrated, migrating again changes nothing
    assert key(engine) == ["computation_id", "sha256"]
    assert results.get(engine, CID, sha(OLD_ROWS[CID])) == OLD_ROWS[CID]


def test_a_migration_that_fails_midway_leaves_the_old_table_whole(engine: Engine) -> None:
    old_table(engine)

    def crash(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("ALTER TABLE"):  # the swap's last step
            raise RuntimeError("kill -9")

    event.listen(engine, "before_cursor_execute", crash)
    with pytest.raises(RuntimeError, match="kill -9"):
        results.ensure_table(engine)
    event.remove(engine, "before_cursor_execute", crash)
    assert key(engine) == ["computation_id"]
    assert inspect(engine).get_table_names() == [results.TABLE]
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT computation_id, content FROM {results.TABLE}")).all()
    assert {r.computation_id: bytes(r.content) for r in rows} == OLD_ROWS
    results.ensure_table(engine)  # the next start migrates it
    assert key(engine) == ["computation_id", "sha256"]
    assert results.get(engine, CID, sha(OLD_ROWS[CID])) == OLD_ROWS[CID]
