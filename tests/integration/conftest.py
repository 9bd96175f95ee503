"""The integration tests' event store and ledger, on the ``database_url`` of the test (a
SQLite file and PostgreSQL, unless a module narrows ``database_url``)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from anchoring.service import load_or_create_signer
from domain.application import Ledger
from events.commit import new_ledger
from events.store import EventStore, LedgerLog, open_store
from events.url import DatabaseURL
from tests.conftest import free_port

#: the ledger's fixed clock in these tests
AT = "2026-11-26T10:00:00.000000Z"


@pytest.fixture
def store(database_url: str) -> Iterator[EventStore]:
    s = open_store(DatabaseURL.parse(database_url))
    yield s
    s.close()


@pytest.fixture
def ledger(store: EventStore) -> Iterator[Ledger]:
    led = new_ledger(LedgerLog(store), clock=lambda: AT)
    yield led
    led.close()


@pytest.fixture
def witness_urls(tmp_path: Path) -> Iterator[list[str]]:
    """Two witnesses as separate processes on loopback ports, trusting the platform's key."""
    signer = load_or_create_signer(tmp_path / "var" / "log.key", "dataledger.local/log")
    procs, urls = [], []
    try:
        for name in ("regulator", "consortium"):
            port = free_port()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "cli", "witness", "--name", f"dataledger.local/{name}",
                 "--state-dir", str(tmp_path / name), "--log-key", signer.verifier().vkey,
                 "--host", "127.0.0.1", "--port", str(port)], cwd=Path(__file__).parents[2],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        for url in urls:
            while True:
                try:
                    httpx.get(url + "/", timeout=1)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, f"witness {url} did not start"
                    time.sleep(0.1)
        yield urls
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
