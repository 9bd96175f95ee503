"""The integration tests' event store and ledger, on the ``database_url`` of the test (a
SQLite file and PostgreSQL, unless a module narrows ``database_url``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from domain.application import Ledger
from events.commit import new_ledger
from events.store import EventStore, LedgerLog, open_store
from events.url import DatabaseURL

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
