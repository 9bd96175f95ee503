"""serve's HTTP server: uvicorn, with a bound on what one client may hold open.

uvicorn bounds neither how long a request's head may take nor (with httptools, its default
parser) how large it may grow: a client that opens connections and sends nothing, or a head
a byte at a time, holds each one for good. Its protocol here closes a connection whose head
is not complete ``header_read_timeout`` seconds after the connection (or after the first
byte of a later request), answers 431 to a head over ``max_header_bytes``, and closes a
connection whose answer went out before its request's body was read (the rest would hold it
open; the app answers 408 to a body that stalls, ``api.edge.LimitBody``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from runtime.settings import Settings


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a time and a size limit on each request's head."""

    header_read_timeout: float = 10.0
    max_header_bytes: int = 32 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_open = False  # a request's head is expected or arriving
        self._head_bytes = 0  # bytes read while it was (a bound on a head still arriving)
        self._head_size = 0  # the bytes of its request line and headers, once parsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_open:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_open and self._head_bytes > self.max_header_bytes:
            self._refuse(431, "request head too large")

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
            super().on_body(body)

    def on_message_complete(self) -> None:
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
        "max_header_bytes": settings.max_header_bytes})
    return {"http": protocol, "timeout_keep_alive": settings.keep_alive_timeout,
            "h11_max_incomplete_event_size": settings.max_header_bytes}
