"""The log as the outbox, against the real NATS JetStream on 127.0.0.1:4222.

Each test runs on a SQLite file and on PostgreSQL (``database_url``), with a stream of
its own (``LEDGER_T<random>`` on ``t<random>.>``, deleted afterwards). With ``CI`` set,
a NATS server that is down fails these tests; elsewhere they are skipped.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import nats
import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from compute_nodes.jetstream import Follower, JetStreamError
from core.record import LogEntry
from core.subjects import HEADER_LEAF_HASH, HEADER_MSG_ID, HEADER_SEQ, entry_from_message
from domain.base import Actor, Context, new_id
from domain.participant import found_platform
from events.jetstream import PublishError, decode_entry, decode_message
from events.positions import PositionStore, open_position_store
from events.publisher import JetStreamPublisher, PublisherSettings
from events.store import EventStore
from events.url import DatabaseURL
from tests.conftest import require_service
from tests.integration.conftest import AT

NATS_URL = os.environ.get("DATALEDGER_TEST_NATS", "nats://127.0.0.1:4222")
SYSTEM = Actor("system", "system", "system")

pytestmark = pytest.mark.nats


def _nats_problem() -> str | None:
    async def probe() -> None:
        nc = await nats.connect(NATS_URL, connect_timeout=2, allow_reconnect=False,
                                max_reconnect_attempts=1, reconnect_time_wait=0.1)
        try:
            await nc.jetstream().account_info()
        finally:
            await nc.close()

    try:
        asyncio.run(asyncio.wait_for(probe(), 10))
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable
        return f"{type(exc).__name__}: {exc}".strip()
    return None


@pytest.fixture(scope="session")
def nats_available() -> None:
    """JetStream at NATS_URL, or fail (CI) / skip (elsewhere)."""
    require_service("NATS JetStream at " + NATS_URL, _nats_problem())


# -- helpers ---------------------------------------------------------------------------------
def run(coro_fn: Callable[[Any], Any]) -> Any:
    """``await coro_fn(js)`` on a fresh connection (from any thread without a loop)."""
    async def main() -> Any:
        nc = await nats.connect(NATS_URL, connect_timeout=2)
        try:
            return await coro_fn(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


@dataclass(frozen=True)
class Stream:
    name: str
    prefix: str

    def count(self) -> int:
        async def f(js: Any) -> int:
            return int((await js.stream_info(self.name)).state.messages)
        return int(run(f))

    def messages(self) -> list[Any]:
        """Every message, in stream order (stream sequence 1.. as stored)."""
        async def f(js: Any) -> list[Any]:
            state = (await js.stream_info(self.name)).state
            return [await js.get_msg(self.name, seq=s)
                    for s in range(state.first_seq, state.last_seq + 1)]
        return list(run(f))


@pytest.fixture
def stream(nats_available: None) -> Iterator[Stream]:
    tag = uuid.uuid4().hex[:10]
    s = Stream(f"LEDGER_T{tag.upper()}", f"t{tag}")
    yield s

    async def delete(js: Any) -> None:
        try:
            await js.delete_stream(s.name)
        except nats.js.errors.NotFoundError:
            pass
    run(delete)


@pytest.fixture
def positions(store: EventStore, database_url: str) -> Iterator[PositionStore]:
    p = open_position_store(DatabaseURL.parse(database_url))
    yield p
    p.close()


def fill(store: EventStore, n: int) -> list[int]:
    """``n`` stored events (pairs of two types: participant.registered, …approved)."""
    seqs: list[int] = []
    events: list[Any] = []
    for _ in range(n // 2):
        events += found_platform(new_id(), Context(SYSTEM, AT), name="p").collect()
    for start in range(0, len(events), 2000):
        seqs += store.append(events[start:start + 2000])
    return seqs


def publisher(store: EventStore, positions: PositionStore, stream: Stream,
              url: str = NATS_URL, **kwargs: Any) -> JetStreamPublisher:
    options: dict[str, Any] = {"window": 64, "batch_size": 50, "ack_timeout": 2.0,
                               "poll_interval": 0.05, "min_backoff": 0.05, "max_backoff": 0.2}
    return JetStreamPublisher(store, positions, PublisherSettings(
        url, stream=stream.name, subject_prefix=stream.prefix, **{**options, **kwargs}))


def follow(nats_url: str, durable: str, handler: Callable[[LogEntry], object],
           start_seq: int = 1, *, stream: str = "LEDGER", subject_prefix: str = "ledger",
           batch: int = 256, fetch_timeout: float = 1.0, stop: threading.Event | None = None,
           until_seq: int | None = None, idle_timeout: float | None = None) -> int:
    """Hand the stream's events to ``handler(entry)`` in seq order from the durable pull
    consumer ``durable`` (the repository's consumer, ``compute_nodes.jetstream.Follower``).

    Each message is checked (``core.subjects.entry_from_message``) and acknowledged after
    ``handler`` returns; an exception from ``handler`` ends the follow with that message
    unacknowledged (a later follow of the same durable gets it first). Messages before
    ``start_seq`` are acknowledged and skipped. Runs until ``stop`` is set, the event
    ``until_seq`` was handled, or ``idle_timeout`` seconds passed without a message; returns
    the last seq handled (``start_seq - 1`` if none). A stream not made yet is waited for.
    """
    last = start_seq - 1

    def more() -> bool:
        return not (stop is not None and stop.is_set()) and \
            not (until_seq is not None and last >= until_seq)

    def drain(follower: Follower) -> None:
        nonlocal last
        idle_since = time.monotonic()
        while more():
            if idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                return
            msgs = follower.fetch(fetch_timeout)
            if msgs:
                idle_since = time.monotonic()
            for msg in msgs:
                if not more():
                    return  # the rest stay unacknowledged: the next follow gets them first
                entry = entry_from_message(bytes(msg.data), msg.headers)
                if entry.seq > last:
                    handler(entry)
                    last = entry.seq
                follower.ack(msg)

    deadline = time.monotonic() + (idle_timeout or 10.0)
    while True:
        try:
            with Follower(nats_url, stream, durable, [f"{subject_prefix}.>"], batch=batch,
                          ack_wait=30.0) as follower:
                drain(follower)
                return last
        except JetStreamError:
            assert time.monotonic() < deadline, f"no stream {stream}"
            time.sleep(0.2)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_exactly_once_in_order(stream: Stream, store: EventStore) -> None:
    """The stream holds every stored event once, in seq order, as the publisher sends it."""
    entries = store.read(0, 1_000_000)
    msgs = stream.messages()
    assert [int(m.headers[HEADER_MSG_ID]) for m in msgs] == [e.seq for e in entries]
    for msg, entry in zip(msgs, entries, strict=True):
        assert msg.subject == f"{stream.prefix}.{entry.type_name}"
        assert msg.data == entry.canonical()
        assert msg.headers[HEADER_SEQ] == str(entry.seq)
        assert msg.headers[HEADER_LEAF_HASH] == entry.leaf_hash().hex()


class Proxy:
    """A TCP relay to NATS that a test can cut (every connection dropped, new ones refused)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"nats://127.0.0.1:{self.listener.getsockname()[1]}"
        self.up = True
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if not self.up:
                    client.close()
                    continue
                upstream = socket.create_connection(self.target)
                self.conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self.lock:
            self.up = False
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.conns.clear()

    def restore(self) -> None:
        with self.lock:
            self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


class SlowStore(EventStore):
    """The same store, each read delayed (so that a cut falls in the middle of a run)."""

    def __init__(self, inner: EventStore, delay: float) -> None:
        super().__init__(inner.recorder, inner._closer)
        self.delay = delay

    def read(self, after: int = 0, limit: int = 100) -> list[LogEntry]:
        time.sleep(self.delay)
        return super().read(after, limit)


# -- publishing ------------------------------------------------------------------------------
def test_every_stored_event_arrives_once_in_seq_order_with_seq_as_msg_id(
        store: EventStore, positions: PositionStore, stream: Stream) -> None:
    seqs = fill(store, 300)
    pub = publisher(store, positions, stream)
    try:
        assert pub.publish_pending() == 300
        assert pub.position == seqs[-1] == 300
        assert pub.publish_pending() == 0
    finally:
        pub.stop()
    assert_exactly_once_in_order(stream, store)
    first = stream.messages()[0]
    assert decode_message(first) == (1, "participant.registered", store.read(0, 1)[0].payload())
    assert decode_entry(first) == store.read(0, 1)[0]


def test_rerunning_from_position_zero_publishes_nothing_new(
        store: EventStore, positions: PositionStore, stream: Stream) -> None:
    fill(store, 120)
    pub = publisher(store, positions, stream)
    try:
        assert pub.publish_pending() == 120
        positions.set(pub.name, 0)  # as if nothing were recorded
        again = publisher(store, positions, stream)
        assert again.publish_pending() == 0
        again.stop()
    finally:
        pub.stop()
    assert stream.count() == 120
    assert positions.get(pub.name) == 120

    # and the server drops a message whose id (= seq) it has seen: the publisher's dedup
    entry = store.read(9, 1)[0]

    async def republish(js: Any) -> Any:
        return await js.publish(f"{stream.prefix}.{entry.type_name}", entry.canonical(),
                                headers={HEADER_MSG_ID: str(entry.seq)})
    ack = run(republish)
    assert ack.duplicate and ack.seq == 10
    assert stream.count() == 120
    assert_exactly_once_in_order(stream, store)


class ForgetfulPositions(PositionStore):
    """Positions that are never written: a crash after every ack, before every record."""

    def __init__(self, inner: PositionStore) -> None:
        self.inner = inner

    def get(self, name: str) -> int:
        return self.inner.get(name)

    def set(self, name: str, seq: int) -> None:
        pass

    def advance(self, name: str, seq: int) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_crash_between_ack_and_record_sends_nothing_twice(
        store: EventStore, positions: PositionStore, stream: Stream) -> None:
    fill(store, 100)
    crashing = publisher(store, ForgetfulPositions(positions), stream)
    try:
        assert crashing.publish_pending() == 100
    finally:
        crashing.stop()
    assert positions.get(crashing.name) == 0
    fill(store, 40)
    pub = publisher(store, positions, stream)
    try:
        assert pub.publish_pending() == 40
    finally:
        pub.stop()
    assert positions.get(pub.name) == 140
    assert_exactly_once_in_order(stream, store)


class CheckingPositions(ForgetfulPositions):
    """Positions that check, as each is recorded, that the stream already holds it."""

    def __init__(self, inner: PositionStore, stream: Stream) -> None:
        super().__init__(inner)
        self.stream = stream
        self.recorded: list[tuple[int, int]] = []

    def advance(self, name: str, seq: int) -> None:
        self.recorded.append((seq, self.stream.count()))
        self.inner.advance(name, seq)


def test_the_position_is_recorded_only_after_the_acks(
        store: EventStore, positions: PositionStore, stream: Stream) -> None:
    fill(store, 400)
    checking = CheckingPositions(positions, stream)
    pub = publisher(store, checking, stream, window=64, batch_size=50)
    try:
        assert pub.publish_pending() == 400
    finally:
        pub.stop()
    assert len(checking.recorded) > 3
    assert all(in_stream >= seq for seq, in_stream in checking.recorded), checking.recorded
    assert [s for s, _ in checking.recorded] == sorted(s for s, _ in checking.recorded)
    assert positions.get(pub.name) == 400


def test_a_refusing_stream_stops_the_position_at_the_last_ack(
        store: EventStore, positions: PositionStore, stream: Stream) -> None:
    async def limited(js: Any) -> None:  # holds 75 messages, refuses the 76th
        await js.add_stream(StreamConfig(name=stream.name, subjects=[f"{stream.prefix}.>"],
                                         storage=StorageType.FILE, max_msgs=75,
                                         discard=DiscardPolicy.NEW, duplicate_window=120))
    run(limited)
    fill(store, 200)
    pub = publisher(store, positions, stream, window=64, batch_size=50)
    try:
        with pytest.raises(PublishError, match="maximum messages exceeded"):
            pub.publish_pending()
        assert pub.position == 75  # more were in flight, none acknowledged
        with pytest.raises(PublishError):
            pub.publish_pending()
        assert pub.position == 75
    finally:
        pub.stop()
    assert stream.count() == 75


# -- the outage ------------------------------------------------------------------------------
def test_nats_outage_loses_nothing_and_duplicates_nothing(
        store: EventStore, positions: PositionStore, stream: Stream) -> None:
    fill(store, 100)
    pub = publisher(store, positions, stream)
    pub.start()
    try:
        wait_until(lambda: pub.position == 100)
    finally:
        pub.stop()

    fill(store, 100)  # appended while the publisher is stopped
    down = publisher(store, positions, stream, url=f"nats://127.0.0.1:{closed_port()}")
    down.start()
    try:
        fill(store, 50)  # and while NATS is unreachable
        down.notify()
        wait_until(lambda: down.failures >= 3)
        assert down.last_error is not None
        assert down.position == 100  # retried, never advanced
    finally:
        down.stop()
    assert stream.count() == 100

    again = publisher(store, positions, stream)
    again.start()
    try:
        wait_until(lambda: again.position == 250)
        fill(store, 10)  # the application's on_commit wakes it
        again.notify()
        wait_until(lambda: again.position == 260)
    finally:
        again.stop()
    assert again.failures == 0
    assert_exactly_once_in_order(stream, store)


def test_connection_cut_mid_window_loses_nothing_and_keeps_order(
        store: EventStore, positions: PositionStore, stream: Stream) -> None:
    fill(store, 3000)
    proxy = Proxy(("127.0.0.1", int(NATS_URL.rsplit(":", 1)[1])))
    pub = publisher(SlowStore(store, 0.01), positions, stream, url=proxy.url, window=200,
                    batch_size=100, ack_timeout=1.0)
    pub.start()
    try:
        wait_until(lambda: pub.position >= 500)
        proxy.cut()  # while hundreds of messages are in flight
        fill(store, 200)
        pub.notify()
        wait_until(lambda: pub.failures >= 2)
        stuck = pub.position
        assert stuck < 3000
        time.sleep(0.3)
        assert pub.position == stuck
        proxy.restore()
        wait_until(lambda: pub.position == 3200, timeout=60)
    finally:
        pub.stop()
        proxy.close()
    assert_exactly_once_in_order(stream, store)


# -- consuming -------------------------------------------------------------------------------
def test_the_consumer_reads_in_order_and_a_durable_resumes_after_restart(
        store: EventStore, positions: PositionStore, stream: Stream) -> None:
    fill(store, 200)
    pub = publisher(store, positions, stream)
    try:
        pub.publish_pending()
        got: list[int] = []
        kwargs: dict[str, Any] = {"stream": stream.name, "subject_prefix": stream.prefix,
                                  "batch": 64, "fetch_timeout": 0.2}
        # stops in the middle of a fetched batch: the rest is not acknowledged
        assert follow(NATS_URL, "views", lambda e: got.append(e.seq), until_seq=90,
                      **kwargs) == 90
        assert got == list(range(1, 91))
        # a new process, the same durable: from 91 on, although asked from 1
        assert follow(NATS_URL, "views", lambda e: got.append(e.seq), until_seq=200,
                      **kwargs) == 200
        assert got == list(range(1, 201))

        fill(store, 40)
        pub.publish_pending()

        def fail_at_220(entry: LogEntry) -> None:
            if entry.seq == 220:
                raise RuntimeError("handler failed")
            got.append(entry.seq)

        with pytest.raises(RuntimeError, match="handler failed"):
            follow(NATS_URL, "views", fail_at_220, idle_timeout=2, **kwargs)
        assert got == list(range(1, 220))
        assert follow(NATS_URL, "views", lambda e: got.append(e.seq), idle_timeout=0.6,
                      **kwargs) == 240
        assert got == list(range(1, 241))

        # a new durable starting at a given seq
        late: list[LogEntry] = []
        assert follow(NATS_URL, "compute", late.append, start_seq=201, until_seq=240,
                      **kwargs) == 240
        assert [e.seq for e in late] == list(range(201, 241))
        assert late == store.read(200, 40)
    finally:
        pub.stop()
