"""``dataledger serve`` against clients that hold on: a body or a head that stalls is cut
after its timeout, a body over the limit is refused unread, a head over the limit is 431,
and a client that leaves mid-request is one line in the log (no traceback). Raw sockets,
timed."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

TOKEN = "dl_test_admin_token_0123456789abcdef"
#: the timeouts serve runs with here (seconds)
BODY_TIMEOUT, HEAD_TIMEOUT = 1.0, 1.0


@dataclass
class Serve:
    port: int
    log: Path

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return s

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    data = tmp_path_factory.mktemp("serve")
    port, log = free_port(), data / "serve.log"
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(data / "var"),
           "DATALEDGER_ADMIN_TOKEN": TOKEN, "DATALEDGER_COMPUTE_NODE": "false",
           "DATALEDGER_BODY_READ_TIMEOUT": str(BODY_TIMEOUT),
           "DATALEDGER_HEADER_READ_TIMEOUT": str(HEAD_TIMEOUT)}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield Serve(port, log)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def head(path: str, length: int | None, extra: bytes = b"") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {TOKEN}",
             "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n").encode() + extra + b"\r\n"


def read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_response(s: socket.socket) -> bytes:
    """One answer on a connection kept open: its head and ``Content-Length`` bytes."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += s.recv(65536)
    head_part, _, body = raw.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head_part).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += s.recv(65536)
    return raw[:len(head_part) + 4] + body


def status_and_body(raw: bytes) -> tuple[int, bytes]:
    head_part, _, body = raw.partition(b"\r\n\r\n")
    return int(head_part.split(b" ", 2)[1]), body


def test_a_stalled_body_is_408_after_the_timeout_and_closed(serve: Serve) -> None:
    with serve.connect() as s:
        started = time.monotonic()  # before the server's timer starts, at its read
        s.sendall(head("/datasets", 1000) + b'{"name": "slow')
        raw = read_all(s)  # returns once the server closed the connection
        waited = time.monotonic() - started
    status, body = status_and_body(raw)
    assert status == 408, raw
    assert json.loads(body)["error"] == "request_timeout"
    assert BODY_TIMEOUT <= waited < BODY_TIMEOUT + 5, waited


def test_a_body_that_keeps_coming_is_read_whole_however_long_it_takes(serve: Serve) -> None:
    body = json.dumps({"name": "slow but steady", "source_system": "s",
                       "classification": "L2", "fields": []}).encode()
    parts = [body[:10], body[10:20], body[20:30], body[30:]]
    with serve.connect() as s:
        s.sendall(head("/datasets", len(body)))
        started = time.monotonic()
        for part in parts:  # each part within the timeout of the last; the whole beyond it
            time.sleep(BODY_TIMEOUT * 0.4)
            s.sendall(part)
        status, answer = status_and_body(read_response(s))
    assert time.monotonic() - started > BODY_TIMEOUT
    assert status == 422 and json.loads(answer)["error"] == "invalid_input", answer


def test_a_stalled_head_and_a_silent_connection_are_closed_after_the_timeout(
        serve: Serve) -> None:
    started = time.monotonic()  # the head's time runs from the connection
    with serve.connect() as s:
        s.sendall(b"POST /datasets HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        raw = read_all(s)
        waited = time.monotonic() - started
    assert raw.startswith(b"HTTP/1.1 408"), raw
    assert HEAD_TIMEOUT <= waited < HEAD_TIMEOUT + 5, waited
    started = time.monotonic()
    with serve.connect() as s:
        assert read_all(s) == b""
        waited = time.monotonic() - started
    assert HEAD_TIMEOUT <= waited < HEAD_TIMEOUT + 5, waited


def test_a_declared_50_mb_body_is_413_unread_and_a_large_head_431(serve: Serve) -> None:
    with serve.connect() as s:
        s.sendall(head("/datasets", 50 * 1024 * 1024))
        raw = read_all(s)  # answered and closed with no byte of the body sent (not a 408)
    status, body = status_and_body(raw)
    assert (status, json.loads(body)["error"]) == (413, "too_large"), raw
    with serve.connect() as s:
        s.sendall(head("/datasets", 2, b"X-Padding: " + b"p" * 40_000 + b"\r\n") + b"{}")
        raw = read_all(s)
    assert raw.startswith(b"HTTP/1.1 431"), raw


def test_a_client_leaving_mid_request_is_one_line_in_the_log(serve: Serve) -> None:
    before = serve.output()
    with serve.connect() as s:
        s.sendall(head("/datasets", 1000) + b'{"name": "gone')
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while "disconnected" not in serve.output()[len(before):]:
        assert time.monotonic() < deadline, serve.output()[len(before):]
        time.sleep(0.1)
    time.sleep(0.5)  # anything else it would log about it
    logged = serve.output()[len(before):]
    lines = [line for line in logged.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in logged, logged
    assert "disconnected before its request was read: POST /datasets" in lines[0]
