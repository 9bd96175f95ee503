"""The publishing session: one NATS connection feeding the stream from the recorded position.

Publishes are pipelined (``window`` in flight, acks taken in order). They are plain
``nc.publish`` calls with a reply subject ``<inbox>.<seq>`` on one subscribed inbox,
which is what ``js.publish_async`` does too, minus a future, a random token and a
semaphore per message, and minus its hang: nats-py 2.16's ``publish_async`` never
resolves the future of a message the stream refuses (e.g. 10077, maximum messages
exceeded), as its reply handler raises instead. Each message carries
``Nats-Expected-Last-Sequence``, the stream sequence it must follow: the server refuses it
(error 10071) unless the stream ends exactly where the publisher thinks, so pipelined
publishes can never be stored out of order nor twice, even if a message in the middle of
a window is lost with a connection, and even after the duplicate window has passed.

At the start of every session the stream is asked where it ends (its last message's
``Dataledger-Seq``): events already there (a crash between the ack and the record) are not
sent again, and the stream's last message is checked against the log (same leaf hash) so
that a stream fed from another log is refused rather than extended. The position is
recorded after the acks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NotFoundError

from core.subjects import (
    HEADER_EXPECTED_LAST_SEQUENCE,
    HEADER_LEAF_HASH,
    HEADER_MSG_ID,
    HEADER_SEQ,
    headers_for,
    subject_for,
)
from events.jetstream import PublishError, ensure_stream
from events.positions import PositionStore
from events.store import EventStore

if TYPE_CHECKING:
    from events.publisher import PublisherSettings

__all__ = ["WRONG_LAST_SEQUENCE", "PublishSession"]

log = logging.getLogger(__name__)

#: JetStream's error code for a failed ``Nats-Expected-Last-Sequence``
WRONG_LAST_SEQUENCE = 10071

T = TypeVar("T")


async def _thread_call(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


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


class PublishSession:
    """The publisher's work on its event loop: connect, reconcile with the stream, publish.

    The connection (and where the stream ends) is kept from pass to pass while it is
    sound; any failure closes it, and the next pass reconciles again.
    """

    def __init__(self, store: EventStore, positions: PositionStore,
                 settings: PublisherSettings) -> None:
        self.store = store
        self.positions = positions
        self.settings = settings
        #: the row of ``outbox_position`` this publisher owns
        self.name = settings.position_name
        #: events published (stored in the stream, not duplicates) by this session's owner
        self.published = 0
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._acks: _Acks | None = None
        #: (stream's last sequence, seq of the log it holds) while the session is sound
        self._tail: tuple[int, int] | None = None

    async def _connect(self) -> tuple[NATS, JetStreamContext, _Acks]:
        """The open connection (connect, subscribe the ack inbox, ensure the stream)."""
        nc, js, acks = self._nc, self._js, self._acks
        if nc is not None and js is not None and acks is not None and nc.is_connected:
            return nc, js, acks
        await self.close()

        async def on_error(exc: Exception) -> None:
            log.debug("nats: %r", exc)

        acks = _Acks()

        async def on_closed() -> None:  # this connection's waits only
            acks.fail(PublishError("the NATS connection was lost"))

        settings = self.settings
        nc = self._nc = await nats.connect(
            settings.nats_url, connect_timeout=settings.connect_timeout, allow_reconnect=False,
            max_reconnect_attempts=1, reconnect_time_wait=0.05, error_cb=on_error,
            closed_cb=on_closed, disconnected_cb=on_closed)
        acks.prefix = nc.new_inbox() + "."
        self._acks = acks
        await nc.subscribe(acks.prefix + "*", cb=acks.on_reply)
        js = self._js = nc.jetstream(timeout=settings.ack_timeout)
        await ensure_stream(js, settings.stream, settings.subject_prefix,
                            settings.duplicate_window)
        return nc, js, acks

    async def close(self) -> None:
        """Close the connection; the next pass connects and reconciles anew."""
        nc, acks = self._nc, self._acks
        self._nc = self._js = self._acks = self._tail = None
        if acks is not None:
            acks.fail(PublishError("the session was closed"))
        if nc is not None and not nc.is_closed:
            try:
                await nc.close()
            except Exception:  # already broken
                log.debug("nats close failed", exc_info=True)

    def _prepare(self, after: int) -> list[_Outgoing]:
        """The next batch of events after ``after``, encoded (runs in a worker thread)."""
        out, prefix = [], self.settings.subject_prefix
        for e in self.store.read(after, self.settings.batch_size):
            body = e.canonical()
            out.append(_Outgoing(e.seq, subject_for(prefix, e.type_name), body,
                                 headers_for(e.seq, body)))
        return out

    async def _reconcile(self, js: JetStreamContext, position: int) -> tuple[int, int]:
        """(stream's last sequence, the seq of the log to publish after)."""
        stream = self.settings.stream
        info = await js.stream_info(stream)
        last_stream_seq = int(info.state.last_seq)
        if not info.state.messages:
            return last_stream_seq, position
        try:
            last = await js.get_msg(stream, seq=last_stream_seq)
        except NotFoundError:  # the last message was deleted: trust the position
            log.warning("stream %s: its last message (sequence %d) is deleted; publishing "
                        "after the recorded position %d", stream, last_stream_seq, position)
            return last_stream_seq, position
        headers = {str(k): str(v) for k, v in (last.headers or {}).items()}
        raw = headers.get(HEADER_SEQ) or headers.get(HEADER_MSG_ID)
        try:
            in_stream = int(raw or "")
        except ValueError:
            raise PublishError(f"stream {stream}: its last message (sequence "
                               f"{last_stream_seq}) has no seq header: not this log's") from None
        mine = await _thread_call(self.store.read, in_stream - 1, 1)
        want = headers.get(HEADER_LEAF_HASH)
        if not mine or mine[0].seq != in_stream or (want and want != mine[0].leaf_hash().hex()):
            raise PublishError(f"stream {stream} ends with seq {in_stream}, which differs "
                               "from this log's event of that seq: it is fed by another log")
        if in_stream > position:
            log.info("stream %s already holds seq %d > recorded position %d: recording it",
                     stream, in_stream, position)
            await _thread_call(self.positions.advance, self.name, in_stream)
            return last_stream_seq, in_stream
        if in_stream < position:
            log.warning("stream %s ends at seq %d, behind the recorded position %d: events "
                        "%d..%d are not in it (set outbox_position %r lower to publish them "
                        "again)", stream, in_stream, position, in_stream + 1, position,
                        self.name)
        return last_stream_seq, position

    async def run_pass(self, stop: threading.Event | None = None) -> int:
        """One catch-up pass (ending early once ``stop`` is set); any failure closes the
        session (reconciled at the next)."""
        try:
            nc, js, acks = await self._connect()
            if self._tail is None:
                position = await _thread_call(self.positions.get, self.name)
                self._tail = await self._reconcile(js, position)
            return await self._publish(nc, acks, stop)
        except BaseException as exc:
            await self.close()
            if isinstance(exc, _AckError) and exc.err_code == WRONG_LAST_SEQUENCE:
                raise PublishError(f"the stream moved under the publisher ({exc}); "
                                   "reconciling") from exc
            if isinstance(exc, (PublishError, asyncio.CancelledError)):
                raise
            raise PublishError(f"{type(exc).__name__}: {exc}") from exc

    async def _publish(self, nc: NATS, acks: _Acks, stop: threading.Event | None) -> int:
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
                ack = await acks.take(out.seq, self.settings.ack_timeout)
                inflight.popleft()
                if ack.seq != stream_seq + 1 or ack.stream != self.settings.stream:
                    raise PublishError(
                        f"seq {out.seq}: acknowledged as {ack.stream}:{ack.seq}, expected "
                        f"{self.settings.stream}:{stream_seq + 1}"
                        + (" (a duplicate of an older message)" if ack.duplicate else ""))
                stream_seq, acked = ack.seq, out.seq
                if not ack.duplicate:
                    stored += 1

        try:
            batch = await _thread_call(self._prepare, acked)
            while batch and not (stop is not None and stop.is_set()):
                following = asyncio.ensure_future(_thread_call(self._prepare, batch[-1].seq))
                try:
                    for out in batch:
                        if len(inflight) >= self.settings.window:
                            await settle(self.settings.window // 2)
                        out.headers[HEADER_EXPECTED_LAST_SEQUENCE] = str(sent)
                        await nc.publish(out.subject, out.body, reply=f"{acks.prefix}{out.seq}",
                                         headers=out.headers)
                        inflight.append(out)
                        sent += 1
                    if acked > recorded:
                        await _thread_call(self.positions.advance, self.name, acked)
                        recorded = acked
                    batch = await following
                except BaseException:
                    following.cancel()
                    raise
            await settle(0)
            if acked > recorded:
                await _thread_call(self.positions.advance, self.name, acked)
                recorded = acked
        finally:
            self._tail = (stream_seq, acked)
            self.published += stored
            if acked > recorded:  # on failure: what was acknowledged is kept
                try:
                    await _thread_call(self.positions.advance, self.name, acked)
                except Exception:
                    log.exception("recording the outbox position %d failed", acked)
        return stored
