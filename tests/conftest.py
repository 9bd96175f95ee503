"""Shared fixtures: real SQLite files and the real PostgreSQL on 127.0.0.1:5432.

With ``CI`` set, a missing PostgreSQL fails the tests that need it; elsewhere they
are skipped with the reason.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

PG_DSN = os.environ.get("DATALEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

# A `dataledger serve` started by a test runs no embedded compute node unless the test asks
# for one (tests/compute does): the node is a PySyft process of its own.
os.environ.setdefault("DATALEDGER_COMPUTE_NODE", "false")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def require_service(name: str, problem: str | None) -> None:
    """Fail under CI, skip elsewhere, when a service the test needs is down."""
    if problem is None:
        return
    message = f"{name} is not reachable: {problem}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: services must run)", pytrace=False)
    pytest.skip(f"{message} (set CI to make this a failure)")


@pytest.fixture(scope="session")
def pg_available() -> None:
    require_service("PostgreSQL at " + PG_DSN, _pg_reachable())


@pytest.fixture
def pg_url(pg_available: None) -> Iterator[str]:
    """A PostgreSQL URL with a fresh schema of its own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{PG_DSN}?schema={schema}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on a SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


# The suite builds containers with the projections and the chain in threads of the test
# process (tests drive runner.rebuild() and read runner.position directly); the child
# process that `serve` uses by default is tested in tests/e2e/test_background_process.py.
os.environ.setdefault("DATALEDGER_BACKGROUND_PROCESS", "false")
