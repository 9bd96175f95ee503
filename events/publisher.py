"""The log is the outbox: a publisher that follows it and publishes every event to JetStream.

Each stored event goes to NATS JetStream (``nats-py``) on subject
``<prefix>.<type_name>`` (``ledger.participant.registered``), body = the canonical
bytes of the stored event (``LogEntry.canonical()``, the Merkle leaf's preimage), with
the headers

* ``Nats-Msg-Id`` = the seq: the server drops a message whose id it has seen within
  the stream's duplicate window;
* ``Dataledger-Seq`` = the seq and ``Dataledger-Leaf-Hash`` = the hex leaf hash, so a
  consumer can check what it got against a checkpoint;
* ``Nats-Expected-Last-Sequence`` = the stream sequence the message must follow: the
  server refuses it (error 10071) unless the stream ends exactly where the publisher
  thinks. Pipelined publishes therefore can never be stored out of order nor twice,
  even if a message in the middle of a window is lost with a connection, and even
  after the duplicate window has passed.

Publishes are pipelined (``window`` in flight, acks taken in order). They are plain
``nc.publish`` calls with a reply subject ``<inbox>.<seq>`` on one subscribed inbox,
which is what ``js.publish_async`` does too, minus a future, a random token and a
semaphore per message, and minus its hang: nats-py 2.16's ``publish_async`` never
resolves the future of a message the stream refuses (e.g. 10077, maximum messages
exceeded), as its reply handler raises instead. The position,
the highest seq whose ack and every earlier ack arrived, is recorded in the table
``outbox_position`` in the same database as the events, after the acks. At the start
of every session the publisher asks the stream where it ends (its last message's
``Dataledger-Seq``): events already there (a crash between the ack and the record)
are not sent again, and the stream's last message is checked against the log (same
leaf hash) so that a stream fed from another log is refused rather than extended.

NATS down: every error closes the session; :meth:`JetStreamPublisher.run_forever`
retries with a bounded exponential backoff, logged, from the recorded position; it
never skips an event. The asyncio loop and the NATS connection live in a thread of
their own so that the rest of the application stays synchronous.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future as ConcurrentFuture
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import nats
import psycopg
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from psycopg.sql import SQL, Identifier

from core.record import LogEntry
from core.subjects import (
    HEADER_EXPECTED_LAST_SEQUENCE,
    HEADER_LEAF_HASH,
    HEADER_MSG_ID,
    HEADER_SEQ,
    entry_from_message,
    headers_for,
    subject_for,
)
from events.store import EventStore
from events.url import DatabaseURL

__all__ = [
    "DUPLICATE_WINDOW_SECONDS", "Delivered", "JetStreamPublisher", "PositionStore",
    "PostgresPositionStore", "PublishError", "SQLitePositionStore", "decode_entry",
    "decode_message", "ensure_stream", "open_position_store",
]

log = logging.getLogger(__name__)

#: how long the server remembers message ids (the stream's ``duplicate_window``)
DUPLICATE_WINDOW_SECONDS = 120.0
#: JetStream's error code for a failed ``Nats-Expected-Last-Sequence``
WRONG_LAST_SEQUENCE = 10071

T = TypeVar("T")


class PublishError(RuntimeError):
    """A publishing session failed; the position holds what was acknowledged before it."""


# -- the position table --------------------------------------------------------------------
class PositionStore(ABC):
    """``outbox_position(name PRIMARY KEY, seq)`` in the database of the events."""

    @abstractmethod
    def get(self, name: str) -> int:
        """The recorded seq of ``name`` (0 when none is recorded)."""

    @abstractmethod
    def set(self, name: str, seq: int) -> None:
        """Record ``seq`` for ``name`` as given (also backwards: a reset)."""

    @abstractmethod
    def advance(self, name: str, seq: int) -> None:
        """Record ``seq`` for ``name`` unless a higher one is recorded already."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""


class SQLitePositionStore(PositionStore):
    """The position table in the SQLite file of the events (a connection of its own)."""

    def __init__(self, path: str) -> None:
        if path in ("", ":memory:"):
            raise ValueError("the outbox position needs the events' SQLite file; an in-memory "
                             "database cannot be shared with a second connection")
        self._lock = threading.Lock()
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                    timeout=30)
        self.conn.execute("CREATE TABLE IF NOT EXISTS outbox_position "
                          "(name TEXT PRIMARY KEY, seq INTEGER NOT NULL)")

    def get(self, name: str) -> int:
        with self._lock:
            row = self.conn.execute("SELECT seq FROM outbox_position WHERE name = ?",
                                    (name,)).fetchone()
        return int(row[0]) if row else 0

    def set(self, name: str, seq: int) -> None:
        with self._lock:
            self.conn.execute("INSERT INTO outbox_position VALUES (?, ?) ON CONFLICT (name) "
                              "DO UPDATE SET seq = excluded.seq", (name, seq))

    def advance(self, name: str, seq: int) -> None:
        with self._lock:
            self.conn.execute("INSERT INTO outbox_position VALUES (?, ?) ON CONFLICT (name) "
                              "DO UPDATE SET seq = max(seq, excluded.seq)", (name, seq))

    def close(self) -> None:
        with self._lock:
            self.conn.close()


class PostgresPositionStore(PositionStore):
    """The position table in the PostgreSQL schema of the events."""

    def __init__(self, conninfo: str, schema: str = "public") -> None:
        self._conninfo = conninfo
        self._lock = threading.Lock()
        table = SQL("{0}.outbox_position").format(Identifier(schema))
        self._get = SQL("SELECT seq FROM {0} WHERE name = %s").format(table)
        self._set = SQL("INSERT INTO {0} VALUES (%s, %s) ON CONFLICT (name) "
                        "DO UPDATE SET seq = EXCLUDED.seq").format(table)
        self._advance = SQL("INSERT INTO {0} AS p VALUES (%s, %s) ON CONFLICT (name) "
                            "DO UPDATE SET seq = GREATEST(p.seq, EXCLUDED.seq)").format(table)
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {0}").format(Identifier(schema)))
        self.conn.execute(SQL("CREATE TABLE IF NOT EXISTS {0} (name text PRIMARY KEY, "
                              "seq bigint NOT NULL)").format(table))

    def _run(self, statement: SQL | Any, params: tuple[Any, ...]) -> Any:
        """Execute (returning the first row, if any); after a lost connection, once more."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    cur = self.conn.execute(statement, params)
                    return cur.fetchone() if cur.description else None
                except psycopg.OperationalError:
                    if attempt == 2 or not (self.conn.closed or self.conn.broken):
                        raise
                    self.conn = psycopg.connect(self._conninfo, autocommit=True)
        return None

    def get(self, name: str) -> int:
        row = self._run(self._get, (name,))
        return int(row[0]) if row else 0

    def set(self, name: str, seq: int) -> None:
        self._run(self._set, (name, seq))

    def advance(self, name: str, seq: int) -> None:
        self._run(self._advance, (name, seq))

    def close(self) -> None:
        with self._lock:
            self.conn.close()


def open_position_store(url: DatabaseURL | str) -> PositionStore:
    """The position table in the database named by ``url`` (the events' database)."""
    parsed = DatabaseURL.parse(url) if isinstance(url, str) else url
    if parsed.kind == "sqlite":
        return SQLitePositionStore(parsed.path)
    return PostgresPositionStore(parsed.conninfo(), parsed.schema)


# -- messages --------------------------------------------------------------------------------
class Delivered(NamedTuple):
    """What :func:`decode_message` gives: the seq, the type and the decoded payload."""

    seq: int
    type_name: str
    payload: Any


def _headers(msg: Any) -> dict[str, str]:
    headers = getattr(msg, "headers", None) or {}
    return {str(k): str(v) for k, v in headers.items()}


def decode_entry(msg: Any) -> LogEntry:
    """The stored event a message carries, checked (:func:`core.subjects.entry_from_message`).

    ``msg`` is a ``nats.aio.msg.Msg`` (or anything with ``data`` and ``headers``).
    """
    return entry_from_message(bytes(msg.data or b""), _headers(msg))


def decode_message(msg: Any) -> Delivered:
    """``(seq, type_name, payload)`` of a message the publisher sent (checked as
    :func:`decode_entry` does)."""
    entry = decode_entry(msg)
    return Delivered(entry.seq, entry.type_name, entry.payload())


async def ensure_stream(js: JetStreamContext, stream: str, subject_prefix: str,
                        duplicate_window: float = DUPLICATE_WINDOW_SECONDS) -> None:
    """Create the stream (file storage, subjects ``<prefix>.>``) unless it exists."""
    subjects = [f"{subject_prefix}.>"]
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        await js.add_stream(StreamConfig(name=stream, subjects=subjects,
                                         storage=StorageType.FILE,
                                         duplicate_window=duplicate_window))
        log.info("created JetStream stream %s on %s", stream, subjects[0])
        return
    if subjects[0] not in (info.config.subjects or []):
        raise PublishError(f"stream {stream} exists without subject {subjects[0]} "
                           f"(it has {info.config.subjects})")


# -- the publisher -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Outgoing:
    seq: int
    subject: str
    body: bytes
    #: msg id, seq and leaf hash; the expected last sequence is added when sent
    headers: dict[str, str]


class _AckError(PublishError):
    """JetStream refused a message (``err_code`` as the server gives it)."""

    def __init__(self, seq: int, err_code: int, description: str) -> None:
        super().__init__(f"seq {seq}: refused by JetStream (err_code {err_code}: {description})")
        self.err_code = err_code


class _Acks:
    """The replies to pipelined publishes, on one inbox: reply subject ``<inbox>.<seq>``.

    JetStream answers a publish that carries a reply subject with its ack (or error)
    there. One subscription collects them by seq; :meth:`take` waits for the one
    needed next (acks are taken in order).
    """

    def __init__(self, prefix: str = "") -> None:
        #: the inbox: replies come on ``<prefix><seq>``
        self.prefix = prefix
        self._replies: dict[int, bytes | Exception] = {}
        self._waiting: tuple[int, asyncio.Future[None]] | None = None
        self._failure: Exception | None = None

    async def on_reply(self, msg: Msg) -> None:
        """The subscription's callback."""
        try:
            seq = int(msg.subject[len(self.prefix):])
        except ValueError:
            return
        status = (msg.headers or {}).get("Status")
        self._replies[seq] = PublishError(f"seq {seq}: NATS status {status} "
                                          f"{(msg.headers or {}).get('Description', '')}"
                                          ) if status else msg.data
        if self._waiting is not None and self._waiting[0] == seq \
                and not self._waiting[1].done():
            self._waiting[1].set_result(None)

    def fail(self, exc: Exception) -> None:
        """The connection is gone: every wait, now and later, ends with ``exc``."""
        self._failure = exc
        if self._waiting is not None and not self._waiting[1].done():
            self._waiting[1].set_exception(exc)

    async def take(self, seq: int, timeout: float) -> PubAck:
        """The ack of ``seq`` (raises its error, or PublishError on timeout or loss)."""
        reply = self._replies.pop(seq, None)
        if reply is None:
            if self._failure is not None:
                raise self._failure
            waiter = asyncio.get_running_loop().create_future()
            self._waiting = (seq, waiter)
            try:
                await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                raise PublishError(f"seq {seq}: no ack within {timeout} s") from None
            finally:
                self._waiting = None
            reply = self._replies.pop(seq)
        if isinstance(reply, Exception):
            raise reply
        answer = json.loads(reply)
        error = answer.get("error")
        if error is not None:
            raise _AckError(seq, int(error.get("err_code", 0)), str(error.get("description")))
        return PubAck(stream=answer["stream"], seq=int(answer["seq"]),
                      duplicate=bool(answer.get("duplicate")))


class JetStreamPublisher:
    """Follows the log from its recorded position and publishes each event once, in order.

    ``publish_pending()`` makes one catch-up pass (raises :class:`PublishError` when
    NATS fails; what was acknowledged is recorded). ``start()`` follows in a thread (or
    ``run_forever()`` in the caller's), woken by ``notify()`` (the application's
    ``on_commit``) or every ``poll_interval`` seconds, retrying with backoff.
    """

    def __init__(self, store: EventStore, nats_url: str, position_store: PositionStore,
                 stream: str = "LEDGER", subject_prefix: str = "ledger", *,
                 name: str | None = None, window: int = 1000, batch_size: int = 1000,
                 ack_timeout: float = 5.0, connect_timeout: float = 2.0,
                 poll_interval: float = 0.5, min_backoff: float = 0.1,
                 max_backoff: float = 5.0,
                 duplicate_window: float = DUPLICATE_WINDOW_SECONDS) -> None:
        if window < 1 or batch_size < 1:
            raise ValueError("window and batch_size must be at least 1")
        self.store = store
        self.nats_url = nats_url
        self.positions = position_store
        self.stream = stream
        self.subject_prefix = subject_prefix
        #: the row of ``outbox_position`` this publisher owns
        self.name = name or f"jetstream:{stream}"
        self.window = window
        self.batch_size = batch_size
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.poll_interval = poll_interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.duplicate_window = duplicate_window
        #: failed sessions since the start (each one logged)
        self.failures = 0
        #: the last failure, for health checks (None after a successful pass)
        self.last_error: str | None = None
        #: events published (stored in the stream, not duplicates) by this object
        self.published = 0
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._acks: _Acks | None = None
        #: (stream's last sequence, seq of the log it holds) while the session is sound
        self._tail: tuple[int, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._pass_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- synchronous API -------------------------------------------------------------------
    @property
    def position(self) -> int:
        """The recorded position: every event up to it is in the stream."""
        return self.positions.get(self.name)

    def publish_pending(self) -> int:
        """Publish every stored event after the position; return how many were stored."""
        with self._pass_lock:
            return int(self._call(self._pass(interruptible=False)))

    def notify(self) -> None:
        """New events were stored: publish soon."""
        self._wake.set()

    def start(self) -> None:
        """Follow the log in a background thread (``run_forever`` there)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_forever, name="jetstream-publisher",
                                        daemon=True)
        self._thread.start()

    def run_forever(self) -> None:
        """Catch up, then follow until ``stop()``; on failure retry with backoff."""
        if threading.current_thread() is not self._thread:
            self._stop.clear()
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                with self._pass_lock:
                    self._call(self._pass(interruptible=True))
            except Exception as exc:  # noqa: BLE001 - NATS or the database: retry, never skip
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                backoff = min(self.max_backoff, max(self.min_backoff, backoff * 2))
                log.warning("publishing to JetStream %s at %s failed (%s); position %s kept, "
                            "retrying in %.1f s (failure %d)", self.stream, self.nats_url,
                            self.last_error, self._safe_position(), backoff, self.failures)
                self._stop.wait(backoff)
                continue
            backoff = 0.0
            self.last_error = None
            self._wake.wait(self.poll_interval)
            self._stop.wait(0.005)  # under load, take the events of a few ms in one pass

    def stop(self) -> None:
        """Stop following, close the connection and the loop thread (idempotent)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        with self._pass_lock:
            loop, thread = self._loop, self._loop_thread
            if loop is None or thread is None:
                return
            try:
                asyncio.run_coroutine_threadsafe(self._close_session(), loop).result(10)
            except Exception:  # closing anyway
                log.debug("closing the NATS connection failed", exc_info=True)
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            self._loop = self._loop_thread = None

    close = stop

    def _safe_position(self) -> int | str:
        try:
            return self.position
        except Exception:  # noqa: BLE001 - the database may be what failed
            return "unknown"

    # -- the loop thread -------------------------------------------------------------------
    def _call(self, coro: Any) -> Any:
        """Run ``coro`` on the publisher's loop thread and wait for its result."""
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            self._loop_thread = threading.Thread(target=serve, name="jetstream-publisher-loop",
                                                 daemon=True)
            self._loop_thread.start()
            ready.wait()
            self._loop = loop
        future: ConcurrentFuture[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    async def _session(self) -> tuple[NATS, JetStreamContext, _Acks]:
        """The open connection (connect, subscribe the ack inbox, ensure the stream)."""
        nc, js, acks = self._nc, self._js, self._acks
        if nc is not None and js is not None and acks is not None and nc.is_connected:
            return nc, js, acks
        await self._close_session()

        async def on_error(exc: Exception) -> None:
            log.debug("nats: %r", exc)

        acks = _Acks()

        async def on_closed() -> None:  # this connection's waits only
            acks.fail(PublishError("the NATS connection was lost"))

        nc = self._nc = await nats.connect(
            self.nats_url, connect_timeout=self.connect_timeout, allow_reconnect=False,
            max_reconnect_attempts=1, reconnect_time_wait=0.05, error_cb=on_error,
            closed_cb=on_closed, disconnected_cb=on_closed)
        acks.prefix = nc.new_inbox() + "."
        self._acks = acks
        await nc.subscribe(acks.prefix + "*", cb=acks.on_reply)
        js = self._js = nc.jetstream(timeout=self.ack_timeout)
        await ensure_stream(js, self.stream, self.subject_prefix, self.duplicate_window)
        return nc, js, acks

    async def _close_session(self) -> None:
        nc, acks = self._nc, self._acks
        self._nc = self._js = self._acks = self._tail = None
        if acks is not None:
            acks.fail(PublishError("the session was closed"))
        if nc is not None and not nc.is_closed:
            try:
                await nc.close()
            except Exception:  # already broken
                log.debug("nats close failed", exc_info=True)

    async def _thread_call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def _prepare(self, after: int) -> list[_Outgoing]:
        """The next batch of events after ``after``, encoded (runs in a worker thread)."""
        out = []
        for e in self.store.read(after, self.batch_size):
            body = e.canonical()
            out.append(_Outgoing(e.seq, subject_for(self.subject_prefix, e.type_name), body,
                                 headers_for(e.seq, body)))
        return out

    async def _reconcile(self, js: JetStreamContext, position: int) -> tuple[int, int]:
        """(stream's last sequence, the seq of the log to publish after)."""
        info = await js.stream_info(self.stream)
        last_stream_seq = int(info.state.last_seq)
        if not info.state.messages:
            return last_stream_seq, position
        try:
            last = await js.get_msg(self.stream, seq=last_stream_seq)
        except NotFoundError:  # the last message was deleted: trust the position
            log.warning("stream %s: its last message (sequence %d) is deleted; publishing "
                        "after the recorded position %d", self.stream, last_stream_seq, position)
            return last_stream_seq, position
        headers = {str(k): str(v) for k, v in (last.headers or {}).items()}
        raw = headers.get(HEADER_SEQ) or headers.get(HEADER_MSG_ID)
        try:
            in_stream = int(raw or "")
        except ValueError:
            raise PublishError(f"stream {self.stream}: its last message (sequence "
                               f"{last_stream_seq}) has no seq header: not this log's") from None
        mine = await self._thread_call(self.store.read, in_stream - 1, 1)
        want = headers.get(HEADER_LEAF_HASH)
        if not mine or mine[0].seq != in_stream or (want and want != mine[0].leaf_hash().hex()):
            raise PublishError(f"stream {self.stream} ends with seq {in_stream}, which differs "
                               "from this log's event of that seq: it is fed by another log")
        if in_stream > position:
            log.info("stream %s already holds seq %d > recorded position %d: recording it",
                     self.stream, in_stream, position)
            await self._thread_call(self.positions.advance, self.name, in_stream)
            return last_stream_seq, in_stream
        if in_stream < position:
            log.warning("stream %s ends at seq %d, behind the recorded position %d: events "
                        "%d..%d are not in it (set outbox_position %r lower to publish them "
                        "again)", self.stream, in_stream, position, in_stream + 1, position,
                        self.name)
        return last_stream_seq, position

    async def _pass(self, interruptible: bool) -> int:
        """One catch-up pass; any failure closes the session (reconciled at the next)."""
        try:
            nc, js, acks = await self._session()
            if self._tail is None:
                position = await self._thread_call(self.positions.get, self.name)
                self._tail = await self._reconcile(js, position)
            return await self._publish(nc, acks, interruptible)
        except BaseException as exc:
            await self._close_session()
            if isinstance(exc, _AckError) and exc.err_code == WRONG_LAST_SEQUENCE:
                raise PublishError(f"the stream moved under the publisher ({exc}); "
                                   "reconciling") from exc
            if isinstance(exc, (PublishError, asyncio.CancelledError)):
                raise
            raise PublishError(f"{type(exc).__name__}: {exc}") from exc

    async def _publish(self, nc: NATS, acks: _Acks, interruptible: bool) -> int:
        """Publish from the session's tail to the log's head, ``window`` in flight.

        Each message says which stream sequence it must follow; the acks are taken
        in order, and each must be the very next stream sequence.
        """
        assert self._tail is not None
        stream_seq, acked = self._tail
        sent = stream_seq  # the stream sequence of the last message sent (once stored)
        recorded = acked
        stored = 0
        inflight: deque[_Outgoing] = deque()

        async def settle(down_to: int) -> None:
            """Take acks, in order, until at most ``down_to`` publishes are in flight."""
            nonlocal stream_seq, acked, stored
            while len(inflight) > down_to:
                out = inflight[0]
                ack = await acks.take(out.seq, self.ack_timeout)
                inflight.popleft()
                if ack.seq != stream_seq + 1 or ack.stream != self.stream:
                    raise PublishError(
                        f"seq {out.seq}: acknowledged as {ack.stream}:{ack.seq}, expected "
                        f"{self.stream}:{stream_seq + 1}"
                        + (" (a duplicate of an older message)" if ack.duplicate else ""))
                stream_seq, acked = ack.seq, out.seq
                if not ack.duplicate:
                    stored += 1

        try:
            batch = await self._thread_call(self._prepare, acked)
            while batch and not (interruptible and self._stop.is_set()):
                following = asyncio.ensure_future(self._thread_call(self._prepare,
                                                                    batch[-1].seq))
                try:
                    for out in batch:
                        if len(inflight) >= self.window:
                            await settle(self.window // 2)
                        out.headers[HEADER_EXPECTED_LAST_SEQUENCE] = str(sent)
                        await nc.publish(out.subject, out.body, reply=f"{acks.prefix}{out.seq}",
                                         headers=out.headers)
                        inflight.append(out)
                        sent += 1
                    if acked > recorded:
                        await self._thread_call(self.positions.advance, self.name, acked)
                        recorded = acked
                    batch = await following
                except BaseException:
                    following.cancel()
                    raise
            await settle(0)
            if acked > recorded:
                await self._thread_call(self.positions.advance, self.name, acked)
                recorded = acked
        finally:
            self._tail = (stream_seq, acked)
            self.published += stored
            if acked > recorded:  # on failure: what was acknowledged is kept
                try:
                    await self._thread_call(self.positions.advance, self.name, acked)
                except Exception:
                    log.exception("recording the outbox position %d failed", acked)
        return stored
