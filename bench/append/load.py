"""The HTTP load generators: a minimal asyncio HTTP/1.1 client on keep-alive connections
(what is measured), and the same load through one ``httpx.AsyncClient`` (for information)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    """One kind of request; ``body(i)`` gives the JSON body of the ``i``-th."""

    method: str
    path: str
    headers: dict[str, str]
    body: Callable[[int], dict[str, Any]] | None = None

    def encode(self, i: int) -> bytes:
        """The HTTP/1.1 request bytes (keep-alive) of the ``i``-th request."""
        payload = b"" if self.body is None else json.dumps(self.body(i)).encode()
        head = [f"{self.method} {self.path} HTTP/1.1", "Host: 127.0.0.1",
                *(f"{k}: {v}" for k, v in self.headers.items())]
        if self.body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


@dataclass
class Tally:
    """What one load counted: successful requests, errors, each status, the first error, and
    how long it ran."""

    ok: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    first_error: str | None = None
    seconds: float = 0.0

    def failed(self, what: str) -> None:
        """Count an error (the first one's ``what`` is kept)."""
        self.errors += 1
        if self.first_error is None:
            self.first_error = what

    def answered(self, status: int) -> bool:
        """Count a response's status; whether it is a success (2xx)."""
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            self.ok += 1
            return True
        return False


def _tickets(deadline: float, max_count: int) -> Iterator[int]:
    """Request numbers 0, 1, ... until ``deadline`` (``perf_counter``) or ``max_count``;
    shared by every worker of a load."""
    for i in range(max_count):
        if time.perf_counter() >= deadline:
            return
        yield i


async def _drive(concurrency: int, worker: Callable[[Tally], Awaitable[None]]) -> Tally:
    """Run ``concurrency`` workers to their end; their tally, with the time they took."""
    tally = Tally()
    start = time.perf_counter()
    await asyncio.gather(*(worker(tally) for _ in range(concurrency)))
    tally.seconds = time.perf_counter() - start
    return tally


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    data: bytes) -> tuple[int, bytes, bool]:
    """Send one request, read its response: (status, body, server closes)."""
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:] if line)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection", "").lower() == "close"


_CONNECTION_ERRORS = (TimeoutError, OSError, EOFError, ValueError, IndexError,
                      asyncio.IncompleteReadError, asyncio.LimitOverrunError)


async def raw_load(port: int, request: Request, seconds: float, max_count: int,
                   concurrency: int) -> Tally:
    """``concurrency`` keep-alive connections, one request in flight on each, for ``seconds``.

    A minimal HTTP/1.1 client on asyncio streams (about 0.03 ms of CPU per request),
    so that the server, not the client, is what is measured.
    """
    tickets = _tickets(time.perf_counter() + seconds, max_count)

    async def worker(tally: Tally) -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            for i in tickets:
                try:
                    if conn is None:
                        conn = await asyncio.wait_for(
                            asyncio.open_connection("127.0.0.1", port), 10)
                    status, body, close = await asyncio.wait_for(
                        _exchange(*conn, request.encode(i)), 30)
                except _CONNECTION_ERRORS as exc:
                    tally.failed(repr(exc))
                    if conn is not None:
                        conn[1].close()
                    conn = None
                    continue
                if not tally.answered(status):
                    tally.failed(f"{status} {body[:300]!r}")
                if close:
                    conn[1].close()
                    conn = None
        finally:
            if conn is not None:
                conn[1].close()

    return await _drive(concurrency, worker)


async def httpx_load(client: Any, request: Request, seconds: float, max_count: int,
                     concurrency: int) -> Tally:
    """The same through one ``httpx.AsyncClient`` (``concurrency`` requests in flight)."""
    tickets = _tickets(time.perf_counter() + seconds, max_count)

    async def worker(tally: Tally) -> None:
        for i in tickets:
            try:
                response = await client.request(
                    request.method, request.path, headers=request.headers,
                    json=None if request.body is None else request.body(i))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                tally.failed(repr(exc))
                continue
            if not tally.answered(response.status_code):
                tally.failed(f"{response.status_code} {response.text[:300]}")

    return await _drive(concurrency, worker)
