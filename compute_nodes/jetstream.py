"""A durable JetStream pull consumer of the log, driven synchronously: the compute node's
feed follows it (``compute_nodes/feeds.py``). It needs only nats-py and the standard
library, so the server's tests of the publisher read the stream with it too.

The server's publisher (``events/publisher.py``) puts each stored event on
``<prefix>.<type>`` with the canonical bytes as the body (``core/subjects.py``). This
consumer is:

- filtered to the subjects given: ``filter_subjects`` on NATS >= 2.10; older servers have a
  single filter, so the common ``<prefix>.contract.>`` is used and the caller skips (and
  acknowledges) the other events;
- explicit acknowledgements, one message at a time (``batch`` 1 by default), given by the
  caller once the event is handled (the node: once its outcome is on the ledger);
- a durable consumer found with delivered-but-unacknowledged messages (its follower died
  mid-event) is recreated from its acknowledgement floor, so that those messages come
  again at once and in order rather than after ``ack_wait`` behind newer ones.

The asyncio loop and the connection live in a thread of their own; :meth:`Follower.fetch`
and :meth:`Follower.ack` block the caller, whose thread therefore is the one that runs the
handler (the datasite clients are used from one thread).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)

T = TypeVar("T")


class JetStreamError(Exception):
    """The stream is missing or NATS refused the consumer."""


def common_filter(subjects: list[str]) -> str:
    """The narrowest single filter covering ``subjects`` (``a.b.x``, ``a.b.y`` → ``a.b.>``)."""
    if len(set(subjects)) == 1:
        return subjects[0]
    common: list[str] = []
    for tokens in zip(*(s.split(".") for s in subjects), strict=False):
        if len(set(tokens)) != 1:
            break
        common.append(tokens[0])
    return ".".join([*common, ">"])


class Follower:
    """``with Follower(...) as f: f.fetch(); f.ack(msg)`` on a durable pull consumer."""

    def __init__(self, url: str, stream: str, durable: str, subjects: list[str], *,
                 batch: int = 1, ack_wait: float = 300.0, connect_timeout: float = 2.0) -> None:
        self.url, self.stream, self.durable = url, stream, durable
        self.subjects = list(subjects)
        self.batch = max(1, batch)
        self.ack_wait = ack_wait
        self.connect_timeout = connect_timeout
        self.filtered_exactly = False  # True when the server took filter_subjects
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc: NATS | None = None
        self._sub: Any = None

    # -- the loop thread ------------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        assert self._loop is not None, "use the follower inside `with`"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"jetstream-{self.durable}")
        self._thread.start()
        try:
            self._call(self._open())
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            if self._nc is not None and not self._nc.is_closed:
                self._call(self._nc.close(), timeout=10)
        except Exception as error:  # noqa: BLE001 - closing is best effort
            log.debug("closing the NATS connection: %s", error)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            loop.close()
            self._loop = self._thread = None
            self._nc = self._sub = None

    # -- consumer -------------------------------------------------------------------------
    async def _open(self) -> None:
        self._nc = await nats.connect(self.url, connect_timeout=self.connect_timeout,
                                      max_reconnect_attempts=3, allow_reconnect=True)
        js = self._nc.jetstream()
        try:
            await js.stream_info(self.stream)
        except NotFoundError as exc:
            raise JetStreamError(f"no stream {self.stream} on {self.url} (the platform's "
                                 "publisher makes it)") from exc
        version = self._nc.connected_server_version
        self.filtered_exactly = (version.major, version.minor) >= (2, 10)
        try:
            info = await js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            config = ConsumerConfig(durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT,
                                    deliver_policy=DeliverPolicy.ALL, ack_wait=self.ack_wait,
                                    max_ack_pending=self.batch * 4)
            if self.filtered_exactly and len(self.subjects) > 1:
                config.filter_subjects = self.subjects
            else:
                config.filter_subject = common_filter(self.subjects)
            await js.add_consumer(self.stream, config)
        else:
            if info.num_ack_pending:
                floor = info.ack_floor.stream_seq if info.ack_floor else 0
                log.info("consumer %s has %d unacknowledged message(s): recreating it from "
                         "stream sequence %d so that they come again, in order", self.durable,
                         info.num_ack_pending, floor + 1)
                await js.delete_consumer(self.stream, self.durable)
                config = info.config
                if floor > 0:
                    config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
                    config.opt_start_seq = floor + 1
                    config.opt_start_time = None
                await js.add_consumer(self.stream, config)
        self._sub = await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)

    def fetch(self, timeout: float = 1.0) -> list[Msg]:
        """Up to ``batch`` messages; [] when none came within ``timeout`` seconds."""
        try:
            msgs: list[Msg] = self._call(self._sub.fetch(self.batch, timeout=timeout))
        except TimeoutError:  # nats.errors.TimeoutError is one too
            return []
        return msgs

    def ack(self, msg: Msg) -> None:
        """Acknowledge ``msg``; the server confirms before this returns."""
        self._call(msg.ack_sync(timeout=10.0))
