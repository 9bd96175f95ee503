"""The results store: keyed by (computation id, SHA-256), so no post can shadow the bytes a
delivery names."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text

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
