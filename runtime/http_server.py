"""serve's HTTP server: uvicorn, with a bound on what one client may hold open.

uvicorn bounds neither how long a request's head or body may take nor (with httptools, its
default parser) how large a head may grow: a client that opens connections and sends
nothing, or a request a byte at a time, holds each one for good. Its protocol here

- closes a connection whose head is not complete ``header_read_timeout`` seconds after the
  connection (or after the first byte of a later request), answering 408 if part of it came;
- answers 431 to a head over ``max_header_bytes``;
- when no part of a body came for ``body_read_timeout`` seconds, tells the app
  (``api.edge.BODY_TIMED_OUT``: it answers 408 and the connection is closed), and closes
  the connection itself if the app has not answered another ``body_read_timeout`` later;
- closes a connection answered before its request's body was read (the rest would hold it).

The timers cost nothing to a request that comes whole: the body's is armed only when a read
leaves a body incomplete.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from api.edge import BODY_TIMED_OUT
from runtime.settings import Settings


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a time and a size limit on each request's head."""

    header_read_timeout: float = 10.0
    max_header_bytes: int = 32 * 1024
    body_read_timeout: float = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_at = 0.0  # when the last part of the body came
        self._head_open = False  # a request's head is expected or arriving
        self._head_bytes = 0  # bytes read while it was (a bound on a head still arriving)
        self._head_size = 0  # the bytes of its request line and headers, once parsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head()
        self._stop_body()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_open:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_open and self._head_bytes > self.max_header_bytes:
            self._refuse(431, "request head too large")
        elif self._body_timer is None and self._body_pending():
            self._body_at = self.loop.time()
            self._body_timer = self.loop.call_later(self.body_read_timeout, self._body_late)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._head_open:
            self._start_head()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head()
        if self._head_size > self.max_header_bytes:  # it came whole, in one read
            self._refuse(431, "request head too large")
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.cycle is not None and not self.transport.is_closing():  # None: refused
            self._body_at = self.loop.time()
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._stop_body()
        if self.cycle is not None and not self.transport.is_closing():
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        if (cycle is not None and cycle.response_complete and cycle.more_body
                and not self.transport.is_closing()):
            self.transport.close()  # answered before its body came: never read the rest

    def _start_head(self) -> None:
        self._head_open, self._head_bytes, self._head_size = True, 0, 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_read_timeout, self._head_late)

    def _stop_head(self) -> None:
        self._head_open = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self._head_bytes:
            self._refuse(408, "request head not received in time")
        elif not self.transport.is_closing():
            self.transport.close()

    def _body_pending(self) -> bool:
        """A request whose head came is waiting for the rest of its body."""
        cycle = self.cycle
        return (cycle is not None and not self._head_open and cycle.more_body
                and not cycle.response_complete and not self.transport.is_closing())

    def _stop_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_late(self) -> None:
        """No part of the body for the timeout: tell the app (it answers 408); if it has
        not answered a timeout later, close."""
        self._body_timer = None
        if not self._body_pending():
            return
        quiet = self.loop.time() - self._body_at
        if quiet < self.body_read_timeout:  # a part came since: wait for the rest
            self._body_timer = self.loop.call_later(self.body_read_timeout - quiet,
                                                    self._body_late)
            return
        extensions = self.cycle.scope.setdefault("extensions", {})
        if BODY_TIMED_OUT in extensions:  # told already, and still no answer
            self.transport.close()
            return
        extensions[BODY_TIMED_OUT] = {"seconds": self.body_read_timeout}
        self.cycle.message_event.set()  # the app's read returns, empty: LimitBody sees it
        self._body_timer = self.loop.call_later(self.body_read_timeout, self._body_late)

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` (plain text) and close, as uvicorn answers a malformed request."""
        self._stop_head()
        if self.transport.is_closing():
            return
        body = message.encode("ascii")
        self.transport.write(b"".join([
            STATUS_LINE[status], b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: ", str(len(body)).encode("ascii"), b"\r\n",
            b"connection: close\r\n\r\n", body]))
        self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The arguments of ``uvicorn.run`` that bound a client's hold on the server."""
    protocol = type("BoundedHttpProtocol", (BoundedHttpProtocol,), {
        "header_read_timeout": settings.header_read_timeout,
        "max_header_bytes": settings.max_header_bytes,
        "body_read_timeout": settings.body_read_timeout})
    return {"http": protocol, "timeout_keep_alive": settings.keep_alive_timeout,
            "h11_max_incomplete_event_size": settings.max_header_bytes}
