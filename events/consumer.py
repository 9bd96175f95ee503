"""A durable JetStream consumer of the log, for projections and compute nodes.

:func:`follow` binds (or creates) a durable pull consumer on the publisher's stream,
fetches in batches and hands each event to ``handler`` in seq order, acknowledging
only what ``handler`` returned from: the consumer acknowledges "all up to", and the
last event handled of each batch is acknowledged synchronously (the server confirms)
before the next fetch, when the follow ends and when ``handler`` raises. Delivery is
at least once: after a crash between the handler and the ack, the event comes again,
so a handler keeps its own position (and ``start_seq`` = that position + 1 skips what
it has seen).

Order across restarts: when the durable consumer still has messages delivered but
not acknowledged (a previous follower died mid-batch), JetStream would redeliver them
only after ``ack_wait``, behind newer ones. ``follow`` therefore recreates such a
consumer from its acknowledged floor, so events always come in seq order; within a
session a message at or below the last handled seq is acknowledged and skipped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from core.record import LogEntry
from core.subjects import HEADER_MSG_ID, HEADER_SEQ
from events.publisher import DUPLICATE_WINDOW_SECONDS, decode_entry, ensure_stream

__all__ = ["follow", "follow_async"]

log = logging.getLogger(__name__)

Handler = Callable[[LogEntry], object]


async def _ledger_seq_at(js: JetStreamContext, stream: str, stream_seq: int) -> int | None:
    msg = await js.get_msg(stream, seq=stream_seq)
    headers = {str(k): str(v) for k, v in (msg.headers or {}).items()}
    raw = headers.get(HEADER_SEQ) or headers.get(HEADER_MSG_ID)
    return int(raw) if raw and raw.isdigit() else None


async def _start_config(js: JetStreamContext, stream: str, start_seq: int,
                        subject_filter: str, durable: str, ack_wait: float,
                        max_ack_pending: int) -> ConsumerConfig:
    """A consumer config that delivers from the stream message holding ``start_seq``.

    Stream sequences and log seqs differ by a constant (0 when the publisher made the
    stream), read off the stream's first message; anything earlier than ``start_seq``
    that is delivered all the same is skipped by the follower.
    """
    config = ConsumerConfig(durable_name=durable, name=durable, ack_policy=AckPolicy.ALL,
                            filter_subject=subject_filter, ack_wait=ack_wait,
                            max_ack_pending=max_ack_pending, deliver_policy=DeliverPolicy.ALL)
    info = await js.stream_info(stream)
    if info.state.messages and start_seq > 1:
        first = int(info.state.first_seq)
        ledger_first = await _ledger_seq_at(js, stream, first)
        if ledger_first is not None and start_seq > ledger_first:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = first + (start_seq - ledger_first)
    return config


async def _bind(js: JetStreamContext, stream: str, durable: str, subject_filter: str,
                start_seq: int, ack_wait: float,
                max_ack_pending: int) -> JetStreamContext.PullSubscription:
    """Bind the durable consumer, creating it, or recreating it from its ack floor."""
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        config = await _start_config(js, stream, start_seq, subject_filter, durable,
                                     ack_wait, max_ack_pending)
        await js.add_consumer(stream, config)
    else:
        if info.num_ack_pending:
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            log.info("consumer %s has %d unacknowledged messages: recreating it from stream "
                     "sequence %d so that they come again, in order", durable,
                     info.num_ack_pending, floor + 1)
            await js.delete_consumer(stream, durable)
            config = info.config
            if floor > 0:
                config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
                config.opt_start_seq = floor + 1
                config.opt_start_time = None
            await js.add_consumer(stream, config)
    return await js.pull_subscribe_bind(durable=durable, stream=stream)


async def follow_async(nats_url: str, durable: str, handler: Handler, start_seq: int = 1, *,
                       stream: str = "LEDGER", subject_prefix: str = "ledger",
                       batch: int = 256, fetch_timeout: float = 1.0, ack_wait: float = 30.0,
                       stop: threading.Event | None = None, until_seq: int | None = None,
                       idle_timeout: float | None = None,
                       duplicate_window: float = DUPLICATE_WINDOW_SECONDS) -> int:
    """:func:`follow` inside a running event loop (``handler`` runs in a worker thread)."""
    nc: NATS = await nats.connect(nats_url, connect_timeout=2.0, max_reconnect_attempts=3)
    last = start_seq - 1
    try:
        js = nc.jetstream()
        await ensure_stream(js, stream, subject_prefix, duplicate_window)
        sub = await _bind(js, stream, durable, f"{subject_prefix}.>", start_seq, ack_wait,
                          max(batch, 1) * 4)
        idle_since = time.monotonic()
        while not (stop is not None and stop.is_set()) and \
                not (until_seq is not None and last >= until_seq):
            if idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                break
            try:
                msgs = await sub.fetch(batch, timeout=fetch_timeout)
            except TimeoutError:  # nats.errors.TimeoutError is one too
                continue
            idle_since = time.monotonic()
            done: Msg | None = None  # the last message handled (or skipped) in this batch
            try:
                for msg in msgs:
                    if (until_seq is not None and last >= until_seq) or \
                            (stop is not None and stop.is_set()):
                        break  # the rest stay unacknowledged: the next follow gets them first
                    entry = decode_entry(msg)
                    if entry.seq > last:
                        if last >= start_seq and entry.seq != last + 1:
                            log.warning("consumer %s: seq %d follows %d (the stream lacks the "
                                        "events between)", durable, entry.seq, last)
                        await asyncio.to_thread(handler, entry)
                        last = entry.seq
                    done = msg
            finally:
                if done is not None:  # acknowledges it and everything before it
                    await done.ack_sync(timeout=ack_wait)
    finally:
        await nc.close()
    return last


def follow(nats_url: str, durable: str, handler: Handler, start_seq: int = 1, *,
           stream: str = "LEDGER", subject_prefix: str = "ledger", batch: int = 256,
           fetch_timeout: float = 1.0, ack_wait: float = 30.0,
           stop: threading.Event | None = None, until_seq: int | None = None,
           idle_timeout: float | None = None) -> int:
    """Hand the log's events to ``handler(entry)`` in seq order from a durable consumer.

    ``durable`` names the consumer on ``stream`` (created on first use, delivering
    from the event of seq ``start_seq``; afterwards it resumes where its
    acknowledgements stopped). Each message is checked (:func:`decode_entry`) and
    acknowledged after ``handler`` returns; an exception from ``handler`` ends the
    follow unacknowledged. Runs until ``stop`` is set, the event ``until_seq`` was
    handled, or ``idle_timeout`` seconds passed without a message; returns the last
    seq handled (``start_seq - 1`` if none). Blocking: it runs its own event loop.
    """
    return asyncio.run(follow_async(
        nats_url, durable, handler, start_seq, stream=stream, subject_prefix=subject_prefix,
        batch=batch, fetch_timeout=fetch_timeout, ack_wait=ack_wait, stop=stop,
        until_seq=until_seq, idle_timeout=idle_timeout))
