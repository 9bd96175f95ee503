"""The outbox publisher's events/s to JetStream beside the bare ``nats-py`` rate.

For one backend (a SQLite file in a fresh temporary directory, or PostgreSQL in a
fresh schema ``bench_<random>`` dropped at the end) N stored events are written first
(not measured). Then, alternating in rounds, each against a fresh stream of the same
configuration (``events.jetstream.ensure_stream``: file storage, subjects
``<prefix>.>``, 2-minute duplicate window):

* **bare nats-py** – the same bodies (the canonical bytes of the same stored events,
  read and encoded beforehand) and subjects, ``js.publish_async`` with a
  ``Nats-Msg-Id`` header, at most ``window`` in flight, acks awaited in order; one
  connection in one event loop;
* **publisher** – ``JetStreamPublisher.publish_pending()`` from position 0 with the
  same window: reading the log in batches, encoding, leaf hashes, the extra headers,
  checking every ack, recording the position in the database, from a synchronous
  caller through the publisher's loop thread.

Each timing includes connecting and ensuring the stream. Goal: the
publisher reaches at least half the bare rate. Everything stays on this machine.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from bench.append.suite import GOAL_RATIO
from bench.databases import PG_URL, check_postgres, drop_schemas
from core.subjects import HEADER_MSG_ID, subject_for
from events.jetstream import ensure_stream
from events.positions import open_position_store
from events.publisher import JetStreamPublisher, PublisherSettings
from events.store import EventStore, open_store
from events.url import DatabaseURL

NATS_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True)
class Sizes:
    """How much each measurement publishes, how often, and how."""

    events: int
    rounds: int
    window: int = 1000
    batch_size: int = 1000


FULL = Sizes(events=20_000, rounds=3)
QUICK = Sizes(events=3_000, rounds=1)


def _fill(store: EventStore, n: int) -> None:
    from domain.base import Actor, Context, new_id
    from domain.participant import found_platform

    system = Actor("system", "system", "system")
    events: list[Any] = []
    for i in range((n + 1) // 2):
        events += found_platform(new_id(), Context(system, "2026-11-26T10:00:00.000000Z"),
                                 name=f"bench org {i}").collect()
    for start in range(0, n, 5000):
        store.append(events[start:min(n, start + 5000)])


async def _delete_stream(nats_url: str, name: str) -> None:
    nc = await nats.connect(nats_url, connect_timeout=2)
    try:
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


async def _bare(nats_url: str, stream: str, prefix: str,
                messages: list[tuple[str, bytes, str]], window: int) -> float:
    """Seconds to publish ``messages`` with bare nats-py, pipelined, acks in order."""
    started = time.perf_counter()
    nc = await nats.connect(nats_url, connect_timeout=2)
    try:
        js = nc.jetstream(publish_async_max_pending=window + 1)
        await ensure_stream(js, stream, prefix)
        inflight: deque[asyncio.Future[Any]] = deque()
        for subject, body, msg_id in messages:
            while len(inflight) >= window:
                ack = await inflight.popleft()
                assert not ack.duplicate
            inflight.append(await js.publish_async(subject, body,
                                                   headers={HEADER_MSG_ID: msg_id}))
        while inflight:
            await inflight.popleft()
        seconds = time.perf_counter() - started
        info = await js.stream_info(stream)
        assert info.state.messages == len(messages), info.state
    finally:
        await nc.close()
    return seconds


def measure(nats_url: str = NATS_URL, backend: str = "sqlite", sizes: Sizes = FULL,
            database_url: str | None = None) -> dict[str, Any]:
    """Publisher events/s vs bare nats-py events/s on one backend; table rows included."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-publisher-"))
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    if database_url is None:
        if backend == "sqlite":
            database_url = f"sqlite:///{tmp / 'ledger.db'}"
        else:
            check_postgres(DatabaseURL.parse(PG_URL))
            database_url = f"{PG_URL}?schema={schema}"
    url = DatabaseURL.parse(database_url)
    store = open_store(url)
    positions = open_position_store(url)
    tag = uuid.uuid4().hex[:8]
    bare_s: list[float] = []
    pub_s: list[float] = []
    try:
        _fill(store, sizes.events)
        entries = store.read(0, sizes.events)
        prefix = f"bench{tag}"
        for r in range(sizes.rounds):
            name = f"BENCH_BARE_{tag}_{r}".upper()
            messages = [(subject_for(f"{prefix}b{r}", e.type_name), e.canonical(), str(e.seq))
                        for e in entries]
            try:
                bare_s.append(asyncio.run(_bare(nats_url, name, f"{prefix}b{r}", messages,
                                                sizes.window)))
            finally:
                asyncio.run(_delete_stream(nats_url, name))
            name = f"BENCH_PUB_{tag}_{r}".upper()
            publisher = JetStreamPublisher(store, positions, PublisherSettings(
                nats_url, stream=name, subject_prefix=prefix + f"p{r}", window=sizes.window,
                batch_size=sizes.batch_size))
            try:
                started = time.perf_counter()
                published = publisher.publish_pending()
                pub_s.append(time.perf_counter() - started)
                assert published == len(entries) == publisher.position, published
            finally:
                publisher.stop()
                asyncio.run(_delete_stream(nats_url, name))
    finally:
        positions.close()
        store.close()
        if url.kind == "postgresql":
            drop_schemas(url, [url.schema])
        shutil.rmtree(tmp, ignore_errors=True)

    n = len(entries)
    bare_rate = n * len(bare_s) / sum(bare_s)
    pub_rate = n * len(pub_s) / sum(pub_s)
    ratio = pub_rate / bare_rate
    sizes_b = [len(e.canonical()) for e in entries]
    row = {"backend": backend, "key": "publisher", "measure": "outbox publisher to JetStream",
           "rate": round(pub_rate, 1), "unit": "events/s", "commands_per_s": None,
           "baseline": "bare nats-py publish_async", "baseline_rate": round(bare_rate, 1),
           "ratio": round(ratio, 3), "goal": f">= {GOAL_RATIO:.2f}x",
           "met": ratio >= GOAL_RATIO, "errors": 0}
    return {
        "suite": "publisher", "backend": backend, "events": n, "rounds": sizes.rounds,
        "window": sizes.window, "batch_size": sizes.batch_size,
        "payload_bytes": {"mean": round(statistics.fmean(sizes_b), 1), "min": min(sizes_b),
                          "max": max(sizes_b)},
        "publisher": {"rate": round(pub_rate, 1),
                      "round_rates": [round(n / s) for s in pub_s]},
        "bare": {"rate": round(bare_rate, 1), "round_rates": [round(n / s) for s in bare_s]},
        "ratio": round(ratio, 3), "goal_ratio": GOAL_RATIO, "met": ratio >= GOAL_RATIO,
        "table": [row],
        "notes": [("bare = js.publish_async of the same pre-encoded bodies with a Nats-Msg-Id "
                  "header, same window, acks awaited in order; publisher = "
                  "JetStreamPublisher.publish_pending() from position 0 (log reads, encoding, "
                  "leaf hashes, expected-last-sequence and seq/hash headers, position writes); "
                  "both include connecting and ensuring a fresh stream of the same config")],
    }


if __name__ == "__main__":  # pragma: no cover - manual run
    import json
    import sys

    from bench.run import format_table

    quick = "--quick" in sys.argv
    backends = [a for a in sys.argv[1:] if a in ("sqlite", "postgresql")] or ["sqlite"]
    results = [measure(backend=b, sizes=QUICK if quick else FULL) for b in backends]
    print(format_table([row for r in results for row in r["table"]]))
    print(json.dumps(results, indent=2))
