"""serve with DATALEDGER_NATS_URL: every command's events reach JetStream, in order."""

from __future__ import annotations

import threading
from pathlib import Path

from core.record import LogEntry
from domain.base import Actor
from domain.participant import register_participant
from runtime.build import PLATFORM_ADMIN_ID, PLATFORM_ID, build
from runtime.settings import Settings
from tests.integration.test_publisher import NATS_URL, Stream, follow, nats_available, stream

__all__ = ["nats_available", "stream"]


def test_the_server_publishes_every_event_to_jetstream(
        database_url: str, tmp_path: Path, stream: Stream) -> None:
    settings = Settings(data_dir=tmp_path / "var", database_url=database_url,
                        admin_token="dl_nats_wiring_token_0123456789", nats_url=NATS_URL,
                        nats_stream=stream.name, nats_subject_prefix=stream.prefix)
    c = build(settings)
    try:
        admin = Actor(PLATFORM_ID, PLATFORM_ADMIN_ID, "platform", ("admin",))
        for i in range(5):
            c.ledger.execute(register_participant, admin, name=f"org {i}", role="provider",
                             credit_code="9111", admin_name="a", admin_token_hash=f"{i:064d}")
        head = c.store.max_seq()
        got: list[LogEntry] = []
        follow(NATS_URL, "wiring-test", got.append, stream=stream.name,
               subject_prefix=stream.prefix, until_seq=head, idle_timeout=30,
               stop=threading.Event())
        assert [e.seq for e in got] == list(range(1, head + 1))
        assert [e.canonical() for e in got] == [e.canonical() for e in c.store.read(0, head)]
    finally:
        c.close()
