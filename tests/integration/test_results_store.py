"""The results store: keyed by (computation id, SHA-256), so no post can shadow the bytes a
delivery names."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text, update

from delivery import results
from events.url import DatabaseURL
from projections.runner import views_engine

CID = "c-0001"


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


class FakeLog:
    """A log holding computation.succeeded for some (computation id, digest) pairs."""

    def __init__(self, *recorded: tuple[str, str]) -> None:
        self.recorded = recorded

    def load(self, originator_id: str, after_version: int = 0) -> list[Any]:
        from domain.computation import ComputationSucceeded

        return [ComputationSucceeded(originator_id=cid, originator_version=2, at="t",
                                     actor={}, datasite="d", code_sha256="c",
                                     input_hashes={}, result_sha256=digest, result_rows=1)
                for cid, digest in self.recorded if cid == originator_id]


def age(engine: Engine, seconds: float) -> None:
    """Make every stored row ``seconds`` older."""
    with engine.begin() as conn:
        conn.execute(update(results.results).values(
            stored_at=results.results.c.stored_at - seconds))


def test_sweep_drops_old_unrecorded_bytes_only(engine: Engine) -> None:
    kept, orphan, fresh = b'"recorded"', b'"left by a crash"', b'"in flight"'
    log = FakeLog((CID, sha(kept)))
    results.put(engine, CID, kept)
    results.put(engine, CID, orphan)
    age(engine, 2 * results.ORPHAN_GRACE_S)
    results.put(engine, "c-0002", fresh)
    assert results.sweep(engine, log) == 1
    assert results.get(engine, CID, sha(kept)) == kept  # the log records it: never dropped
    assert results.get(engine, CID, sha(orphan)) is None
    assert results.get(engine, "c-0002", sha(fresh)) == fresh  # within the grace period
    assert results.sweep(engine, log, older_than=0) == 1
    assert results.get(engine, "c-0002", sha(fresh)) is None
    assert results.get(engine, CID, sha(kept)) == kept


def test_storing_the_same_bytes_again_renews_them(engine: Engine) -> None:
    """A node re-posting bytes a crash left behind renews them: the sweep leaves them to
    the post that is about to record them."""
    orphan = b'"posted again"'
    results.put(engine, CID, orphan)
    age(engine, 2 * results.ORPHAN_GRACE_S)
    results.put(engine, CID, orphan)
    assert results.sweep(engine, FakeLog()) == 0
    assert results.get(engine, CID, sha(orphan)) == orphan


def test_discard_keeps_bytes_the_log_records(engine: Engine) -> None:
    recorded, refused = b'"recorded"', b'"refused"'
    log = FakeLog((CID, sha(recorded)))
    results.put(engine, CID, recorded)
    results.put(engine, CID, refused)
    assert results.discard(engine, log, CID, sha(recorded)) is False
    assert results.discard(engine, log, CID, sha(refused)) is True
    assert results.get(engine, CID, sha(recorded)) == recorded
    assert results.get(engine, CID, sha(refused)) is None
    assert results.discard(engine, log, CID, sha(refused)) is False  # nothing left to drop


def test_a_table_made_before_stored_at_gains_it(engine: Engine) -> None:
    """Rows stored before the column existed have none: the sweep takes them as old."""
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {results.TABLE} (computation_id VARCHAR NOT NULL, "
                          "sha256 VARCHAR NOT NULL, content BYTEA NOT NULL, "
                          "PRIMARY KEY (computation_id, sha256))"
                          if conn.dialect.name == "postgresql" else
                          f"CREATE TABLE {results.TABLE} (computation_id VARCHAR NOT NULL, "
                          "sha256 VARCHAR NOT NULL, content BLOB NOT NULL, "
                          "PRIMARY KEY (computation_id, sha256))"))
        conn.execute(text(f"INSERT INTO {results.TABLE} VALUES ('c-old', 'x', :b)"),
                     {"b": b'"old"'})
    results.ensure_table(engine)
    assert "stored_at" in {c["name"] for c in inspect(engine).get_columns(results.TABLE)}
    results.put(engine, CID, b'"new"')
    assert results.sweep(engine, FakeLog()) == 1
    assert results.get(engine, "c-old", "x") is None
    assert results.get(engine, CID, sha(b'"new"')) == b'"new"'
