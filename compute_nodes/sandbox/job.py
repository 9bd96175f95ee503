"""One job as the node conducts it: hand the worker its job, collect what it prints and its
answer under caps, kill it on its wall time, and read its answer as untrusted JSON."""

from __future__ import annotations

import contextlib
import json
import os
import select
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from . import frames
from .errors import LIMITS, CodeRaised, LimitExceeded, OutputRefused, SandboxError
from .limits import Limits

MALFORMED = "the worker's answer is not well-formed"
#: the worker's refusal codes, as the node words them (the worker's text is never used)
REFUSALS = {
    "type": "the output holds an object of a type that has no JSON form",
    "key": "the output holds a mapping key that is not text or a number",
    "depth": "the output is nested too deeply",
}
GRACE_S = 1.0


@dataclass(frozen=True)
class Result:
    """A job's result: ``value`` as plain JSON; what the code printed (capped, for the
    provider's own log only); the job's wall time in seconds, as the node measured it."""

    value: Any
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Worker:
    """The node's handles on one worker: its job socket, stdout and stderr pipes, the status
    socket of its intermediate, a pidfd of the intermediate (``process``, readable once it
    ended, hence the whole namespace) and a pidfd of the worker itself (``pidfd``)."""

    uid: int
    ctl: socket.socket
    out: int
    err: int
    status: socket.socket
    process: int
    pidfd: int | None = None
    closed: bool = field(default=False)

    def alive(self) -> bool:
        """Neither the intermediate ended nor did it report the worker's end."""
        return not select.select([self.process, self.status], [], [], 0)[0]

    def ended(self) -> bool:
        """The intermediate ended: no process of this worker is left."""
        return bool(select.select([self.process], [], [], 0)[0])

    def kill(self) -> None:
        """SIGKILL the worker (its namespace dies with it), or before it is known, the
        intermediate (the worker then dies with it)."""
        target = self.pidfd if self.pidfd is not None else self.process
        try:
            signal.pidfd_send_signal(target, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass  # already gone

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ctl.close()
        self.status.close()
        for fd in (self.out, self.err, self.process, self.pidfd):
            if fd is not None:
                os.close(fd)


class _Capture:
    """A stream the code prints to: the first ``cap`` bytes kept, the rest counted."""

    def __init__(self, fd: int, cap: int) -> None:
        self.fd = fd
        self.cap = cap
        self.data = bytearray()
        self.dropped = 0
        self.ended = False

    @property
    def done(self) -> bool:
        return self.ended

    def feed(self) -> None:
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            self.ended = True
            return
        room = max(self.cap - len(self.data), 0)
        self.data += chunk[:room]
        self.dropped += max(len(chunk) - room, 0)

    def text(self) -> str:
        text = self.data.decode("utf-8", "replace")
        return text + (f"\n[{self.dropped} more bytes dropped]" if self.dropped else "")


def conduct(worker: Worker, job: bytes, wall_s: float, limits: Limits) -> Result:
    """Run ``job`` (pickled) on ``worker``, which is spent afterwards; the Result, or the
    SandboxError saying why there is none (with what the code printed)."""
    start = time.monotonic()
    try:
        worker.ctl.settimeout(wall_s)
        frames.send(worker.ctl, job)
    except OSError:
        pass  # the worker is gone: its end says why
    worker.ctl.setblocking(False)
    for fd in (worker.out, worker.err):
        os.set_blocking(fd, False)
    reader = frames.FrameReader(worker.ctl, limits.output_bytes + 8 * limits.print_bytes + 4096)
    out, err = _Capture(worker.out, limits.print_bytes), _Capture(worker.err, limits.print_bytes)
    with selectors.DefaultSelector() as sel:
        sel.register(worker.ctl, selectors.EVENT_READ, reader)
        sel.register(worker.out, selectors.EVENT_READ, out)
        sel.register(worker.err, selectors.EVENT_READ, err)
        sel.register(worker.status, selectors.EVENT_READ, None)
        end, timed_out = _pump(sel, worker, reader, start + wall_s)
        seconds = time.monotonic() - start
        worker.kill()
        with contextlib.suppress(KeyError):
            sel.unregister(worker.ctl)
        with contextlib.suppress(KeyError):
            sel.unregister(worker.status)
        if reader.frame is not None:  # it flushed before it answered: all there already
            _drain_now(sel)
        else:
            _pump(sel, worker, None, time.monotonic() + GRACE_S)  # to the streams' end
    if reader.frame is None and end is None and not reader.too_big and not timed_out:
        end = _status(worker, time.monotonic() + GRACE_S)
    try:
        if timed_out:
            raise LimitExceeded("wall_time")
        value = _outcome(reader, end, limits)
    except SandboxError as exc:
        exc.stdout, exc.stderr = out.text(), err.text()
        raise
    return Result(value, out.text(), err.text(), seconds)


def _pump(sel: selectors.BaseSelector, worker: Worker, reader: frames.FrameReader | None,
          deadline: float) -> tuple[dict[str, Any] | None, bool]:
    """Feed the streams until ``reader``'s answer is complete (without a reader: until every
    stream ended), or the worker ended and its streams closed (a grace later at most), or
    the deadline passed. The worker's end, if it was reported, and whether time ran out."""
    end: dict[str, Any] | None = None
    ended_at: float | None = None
    while sel.get_map() and not (reader is not None and reader.done):
        now = time.monotonic()
        if ended_at is None and now >= deadline:
            return end, reader is not None
        if ended_at is not None and now >= ended_at + GRACE_S:
            break
        until = deadline if ended_at is None else ended_at + GRACE_S
        for key, _ in sel.select(until - now):
            if key.data is None:  # the intermediate reports the worker's end
                sel.unregister(key.fileobj)
                end, ended_at = _status(worker, now + GRACE_S), time.monotonic()
                continue
            key.data.feed()
            if key.data.done:
                sel.unregister(key.fileobj)
    return end, False


def _drain_now(sel: selectors.BaseSelector) -> None:
    """Read what the streams hold now, without waiting (a grace at most)."""
    until = time.monotonic() + GRACE_S
    while (ready := sel.select(0)) and time.monotonic() < until:
        for key, _ in ready:
            key.data.feed()
            if key.data.done:
                sel.unregister(key.fileobj)


def _status(worker: Worker, until: float) -> dict[str, Any] | None:
    """The intermediate's report of the worker's end (signal, exit code, CPU seconds)."""
    while time.monotonic() < until:
        if select.select([worker.status], [], [], until - time.monotonic())[0]:
            try:
                message = worker.status.recv(1 << 12)
            except OSError:
                return None
            if not message:
                return None
            try:
                report = json.loads(message)
            except ValueError:
                return None
            if isinstance(report, dict) and "signal" in report:
                return report
    return None


def _outcome(reader: frames.FrameReader, end: dict[str, Any] | None, limits: Limits) -> Any:
    if reader.frame is not None:
        return _answer(reader.frame, limits)
    if reader.too_big:
        raise LimitExceeded("output_size")
    end = end or {}
    sig, cpu = end.get("signal"), end.get("cpu")
    if sig == signal.SIGXCPU or (isinstance(cpu, int | float) and cpu >= limits.cpu_time_s):
        raise LimitExceeded("cpu_time")
    if sig == signal.SIGXFSZ:
        raise LimitExceeded("file_size")
    raise LimitExceeded("killed")


def _answer(frame: bytes, limits: Limits) -> Any:
    """The worker's answer (untrusted JSON): the value, or the error it stands for."""
    try:
        answer = json.loads(frame, parse_constant=_no_constant)
    except (ValueError, RecursionError, MemoryError):
        raise OutputRefused(MALFORMED) from None
    if not isinstance(answer, dict):
        raise OutputRefused(MALFORMED)
    keys = set(answer)
    if keys == {"ok"}:
        return answer["ok"]
    if keys == {"refused"}:
        raise OutputRefused(REFUSALS.get(str(answer["refused"]), MALFORMED))
    if keys == {"limit"} and answer["limit"] in LIMITS:
        raise LimitExceeded(answer["limit"])
    if keys == {"raised", "detail", "limit"} and isinstance(answer["raised"], str) \
            and isinstance(answer["detail"], str):
        detail = answer["detail"][-limits.print_bytes:]
        if answer["limit"] in LIMITS:
            raise LimitExceeded(answer["limit"], detail)
        raise CodeRaised(answer["raised"], detail)
    raise OutputRefused(MALFORMED)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
