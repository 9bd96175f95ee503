"""Length-prefixed frames over a stream socket: an 8-byte big-endian length, then the bytes.

The node sends a job (pickle: the worker is the less trusted side); the worker answers with
JSON only, which the node reads with :class:`FrameReader` under a size cap and never
unpickles."""

from __future__ import annotations

import socket
import struct

HEADER = struct.Struct(">Q")


class FrameError(Exception):
    """The stream ended inside a frame, or a frame is larger than allowed."""


def send(sock: socket.socket, payload: bytes) -> None:
    """Send one frame (blocking)."""
    sock.sendall(HEADER.pack(len(payload)))
    sock.sendall(payload)


def receive(sock: socket.socket, cap: int) -> bytes:
    """Read one frame (blocking); FrameError if the stream ends first or it exceeds ``cap``."""
    (size,) = HEADER.unpack(_exactly(sock, HEADER.size))
    if size > cap:
        raise FrameError(f"a frame of {size} bytes exceeds {cap}")
    return _exactly(sock, size)


def _exactly(sock: socket.socket, size: int) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], min(size - got, 1 << 20))
        if n == 0:
            raise FrameError("the stream ended inside a frame")
        got += n
    return bytes(buf)


class FrameReader:
    """One frame read incrementally from a non-blocking socket, at most ``cap`` bytes.

    ``feed()`` reads what is there; then ``frame`` is the payload once complete,
    ``too_big`` says the announced size exceeds the cap (nothing more is read), and ``ended``
    says the peer closed the stream."""

    def __init__(self, sock: socket.socket, cap: int) -> None:
        self.sock = sock
        self.cap = cap
        self.frame: bytes | None = None
        self.too_big = False
        self.ended = False
        self._head = b""
        self._body: bytearray | None = None
        self._got = 0

    @property
    def done(self) -> bool:
        return self.frame is not None or self.too_big or self.ended

    def feed(self) -> None:
        while not self.done:
            try:
                if self._body is None:
                    self._read_head()
                else:
                    self._read_body(self._body)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # reset by a dying peer: the same as an end
                self.ended = True

    def _read_head(self) -> None:
        chunk = self.sock.recv(HEADER.size - len(self._head))
        if not chunk:
            self.ended = True
            return
        self._head += chunk
        if len(self._head) == HEADER.size:
            (size,) = HEADER.unpack(self._head)
            if size > self.cap:
                self.too_big = True
            else:
                self._body = bytearray(size)
                if size == 0:
                    self.frame = b""

    def _read_body(self, body: bytearray) -> None:
        n = self.sock.recv_into(memoryview(body)[self._got:], min(len(body) - self._got, 1 << 20))
        if n == 0:
            self.ended = True
            return
        self._got += n
        if self._got == len(body):
            self.frame = bytes(body)
