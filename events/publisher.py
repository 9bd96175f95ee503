"""The log is the outbox: a publisher that follows it and publishes every event to JetStream.

Each stored event goes to NATS JetStream (``nats-py``) on subject ``<prefix>.<type_name>``
(``ledger.participant.registered``), body = the canonical bytes of the stored event
(``LogEntry.canonical()``, the Merkle leaf's preimage), with the headers of
:mod:`core.subjects` (message id and ``Dataledger-Seq`` = the seq, the hex leaf hash, and
the stream sequence the message must follow). The publishing itself, pipelined and
checked ack by ack, is :mod:`events.publish_session`; the recorded position is
:mod:`events.positions`; the stream is :mod:`events.jetstream`.

NATS down: every error closes the session; :meth:`JetStreamPublisher.run_forever`
retries with a bounded exponential backoff, logged, from the recorded position; it
never skips an event. The asyncio loop and the NATS connection live in a thread of
their own so that the rest of the application stays synchronous.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future as ConcurrentFuture
from dataclasses import dataclass
from typing import Any

from core.subjects import DEFAULT_PREFIX, DEFAULT_STREAM
from events.jetstream import DUPLICATE_WINDOW_SECONDS
from events.positions import PositionStore
from events.publish_session import PublishSession
from events.store import EventStore

__all__ = ["JetStreamPublisher", "PublisherSettings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublisherSettings:
    """Where a publisher publishes, how much at once, and how it waits and retries."""

    #: the NATS server (``nats://host:port``)
    nats_url: str
    #: the JetStream stream, on subjects ``<subject_prefix>.>``
    stream: str = DEFAULT_STREAM
    subject_prefix: str = DEFAULT_PREFIX
    #: the row of ``outbox_position`` the publisher owns (default ``jetstream:<stream>``)
    name: str | None = None
    #: publishes in flight at most, and events read from the log at once
    window: int = 1000
    batch_size: int = 1000
    ack_timeout: float = 5.0
    connect_timeout: float = 2.0
    #: how often a following publisher looks for new events when not notified
    poll_interval: float = 0.5
    #: the bounds of the retry backoff after a failed session
    min_backoff: float = 0.1
    max_backoff: float = 5.0
    #: the duplicate window of a stream the publisher creates
    duplicate_window: float = DUPLICATE_WINDOW_SECONDS

    def __post_init__(self) -> None:
        if self.window < 1 or self.batch_size < 1:
            raise ValueError("window and batch_size must be at least 1")

    @property
    def position_name(self) -> str:
        """The row of ``outbox_position`` the publisher owns."""
        return self.name or f"jetstream:{self.stream}"


class JetStreamPublisher:
    """Follows the log from its recorded position and publishes each event once, in order.

    ``publish_pending()`` makes one catch-up pass (raises
    :class:`events.jetstream.PublishError` when NATS fails; what was acknowledged is
    recorded). ``start()`` follows in a thread (or ``run_forever()`` in the caller's),
    woken by ``notify()`` (the application's ``on_commit``) or every ``poll_interval``
    seconds, retrying with backoff.
    """

    def __init__(self, store: EventStore, position_store: PositionStore,
                 settings: PublisherSettings) -> None:
        self.store = store
        self.positions = position_store
        self.settings = settings
        #: the row of ``outbox_position`` this publisher owns
        self.name = settings.position_name
        #: failed sessions since the start (each one logged)
        self.failures = 0
        #: the last failure, for health checks (None after a successful pass)
        self.last_error: str | None = None
        self._session = PublishSession(store, position_store, settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._pass_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def published(self) -> int:
        """Events published (stored in the stream, not duplicates) by this object."""
        return self._session.published

    # -- synchronous API -------------------------------------------------------------------
    @property
    def position(self) -> int:
        """The recorded position: every event up to it is in the stream."""
        return self.positions.get(self.name)

    def publish_pending(self) -> int:
        """Publish every stored event after the position; return how many were stored."""
        with self._pass_lock:
            return int(self._call(self._session.run_pass()))

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
        settings, backoff = self.settings, 0.0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                with self._pass_lock:
                    self._call(self._session.run_pass(self._stop))
            except Exception as exc:  # noqa: BLE001 - NATS or the database: retry, never skip
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                backoff = min(settings.max_backoff, max(settings.min_backoff, backoff * 2))
                log.warning("publishing to JetStream %s at %s failed (%s); position %s kept, "
                            "retrying in %.1f s (failure %d)", settings.stream, settings.nats_url,
                            self.last_error, self._safe_position(), backoff, self.failures)
                self._stop.wait(backoff)
                continue
            backoff = 0.0
            self.last_error = None
            self._wake.wait(settings.poll_interval)
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
                asyncio.run_coroutine_threadsafe(self._session.close(), loop).result(10)
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
