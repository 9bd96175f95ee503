"""The pool of warm workers behind a Sandbox, kept by a thread of its own.

The thread starts the zygote (which therefore dies with it: ``PR_SET_PDEATHSIG``), asks it
for workers until ``warm`` are ready (several start at once), and closes each retired worker
once its intermediate ended, which means every process of its namespace is gone; only then
is its uid leased again. If workers keep failing to start, every ``take()`` raises
SandboxUnavailable with the reason.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import frames
from .confine import ENVIRONMENT
from .errors import SandboxUnavailable
from .job import Worker
from .limits import Limits
from .uids import Uids

ROOT = Path(__file__).resolve().parents[2]
BOOT = ("import sys; sys.path.insert(0, sys.argv[3]); "
        "from compute_nodes.sandbox.zygote import main; main()")
#: start failures in a row after which the pool gives up
MAX_FAILURES = 3


class SpawnFailed(Exception):
    """A worker (or the zygote) could not be started; the text says why."""


@dataclass
class _Starting:
    """A worker on its way: its "started" report (with its pidfd), then its "ready" frame."""

    worker: Worker
    deadline: float
    ready: frames.FrameReader


class Pool:
    """``warm`` ready workers for ``take()``; ``config`` is what the zygote gets (limits,
    paths to hide and to expose)."""

    def __init__(self, limits: Limits, warm: int, config: dict[str, Any], uids: Uids) -> None:
        self.limits = limits
        self.warm = warm
        self.config = config
        self.uids = uids
        self._cond = threading.Condition()
        self._ready: deque[Worker] = deque()
        self._retired: list[Worker] = []
        self._starting: list[_Starting] = []
        self._closing = False
        self._closed = False
        self._failure: str | None = None
        self._zygote: subprocess.Popen[bytes] | None = None
        self._zsock: socket.socket | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._serve, name="sandbox-pool", daemon=True)

    @property
    def zygote_pid(self) -> int | None:
        return None if self._zygote is None else self._zygote.pid

    def start(self) -> None:
        """Start the thread; return once a worker is ready, else SandboxUnavailable."""
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self._ready or self._failure or self._closed,
                                timeout=2 * self.limits.start_timeout_s)
            failure = None if self._ready else (self._failure or "no worker became ready")
        if failure is not None:
            self.close()
            raise SandboxUnavailable(failure)

    def take(self) -> Worker:
        """A ready worker, now the caller's (hand it back with :meth:`retire`)."""
        deadline = time.monotonic() + self.limits.start_timeout_s
        try:
            with self._cond:
                while True:
                    if self._closing:
                        raise SandboxUnavailable("the sandbox is closed")
                    if self._failure is not None:
                        raise SandboxUnavailable(self._failure)
                    while self._ready:
                        worker = self._ready.popleft()
                        if worker.alive():
                            return worker
                        self._retired.append(worker)
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise SandboxUnavailable(f"no worker became ready within "
                                                 f"{self.limits.start_timeout_s} s")
                    self._cond.wait(left)
        finally:
            self._wake()  # to start the next one

    def retire(self, worker: Worker) -> None:
        """Kill a spent worker; it is closed once none of its processes is left."""
        worker.kill()
        with self._cond:
            if self._closing:  # the shutdown does not wait for it: its processes die anyway
                worker.close()
                return
            self._retired.append(worker)
        self._wake()

    def close(self) -> None:
        """Kill every worker and the zygote, and wait for the thread (from another one)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._wake()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout=10)

    def _wake(self) -> None:
        with self._cond:
            if not self._closed:
                try:
                    os.write(self._wake_w, b"x")
                except BlockingIOError:
                    pass  # already awake

    # -- the pool's thread --------------------------------------------------------------

    def _serve(self) -> None:
        failures = 0
        try:
            self._start_zygote()
            while not self._closing:
                self._reap()
                try:
                    self._request()
                    if self._wait():
                        failures = 0
                except SpawnFailed:
                    failures += 1
                    if failures >= MAX_FAILURES:
                        raise
                    time.sleep(0.2 * failures)
                    if self._zygote is None or self._zygote.poll() is not None:
                        self._restart_zygote()
        except Exception as exc:  # noqa: BLE001 - the reason every later take() gets
            with self._cond:
                self._failure = str(exc) or type(exc).__name__
                self._cond.notify_all()
        finally:
            self._shutdown()

    def _request(self) -> None:
        """Ask the zygote for as many workers as are missing (and uids allow)."""
        with self._cond:
            missing = self.warm - len(self._ready) - len(self._starting)
        for _ in range(missing):
            uid = self.uids.claim()
            if uid is None:
                return
            worker = self._spawn(uid)
            reader = frames.FrameReader(worker.ctl, 1 << 16)
            self._starting.append(_Starting(worker, time.monotonic()
                                            + self.limits.start_timeout_s, reader))

    def _spawn(self, uid: int) -> Worker:
        """Have the zygote fork a worker of ``uid``: the node's ends of its channels."""
        if self._zsock is None:
            self.uids.release(uid)
            raise SpawnFailed("the sandbox's zygote is not running")
        try:
            self._zsock.send(json.dumps({"spawn": uid}).encode())
            message, fds, _, _ = socket.recv_fds(self._zsock, 1 << 16, 8,
                                                   socket.MSG_CMSG_CLOEXEC)
        except OSError as exc:
            self.uids.release(uid)
            raise SpawnFailed(f"the sandbox's zygote did not answer: {exc}") from None
        if len(fds) != 5:
            for fd in fds:
                os.close(fd)
            self.uids.release(uid)
            raise SpawnFailed(json.loads(message or b"{}").get("error")
                              or "the sandbox's zygote ended")
        ctl, out, err, status, process = fds
        worker = Worker(uid, socket.socket(fileno=ctl), out, err, socket.socket(fileno=status),
                        process)
        worker.ctl.setblocking(False)
        worker.status.setblocking(False)
        return worker

    def _wait(self) -> bool:
        """Wait for something to do: a wake-up, a retired worker's end, the zygote's end, a
        starting worker's progress. Whether a worker became ready."""
        with self._cond:
            watched = [self._wake_r, *(w.process for w in self._retired)]
        for s in self._starting:
            watched += [s.worker.status, s.worker.ctl]
        if self._zsock is not None:
            watched.append(self._zsock)
        soonest = min((s.deadline for s in self._starting), default=time.monotonic() + 1.0)
        readable = select.select(watched, [], [], max(soonest - time.monotonic(), 0))[0]
        if self._wake_r in readable:
            os.read(self._wake_r, 1 << 12)
        if self._zsock is not None and self._zsock in readable:
            self._restart_zygote()  # it only speaks when asked: it ended
        became_ready = False
        for starting in list(self._starting):
            try:
                done = self._progress(starting)
            except SpawnFailed:
                self._starting.remove(starting)
                self.retire(starting.worker)
                raise
            if done:
                self._starting.remove(starting)
                with self._cond:
                    self._ready.append(starting.worker)
                    self._cond.notify_all()
                became_ready = True
        return became_ready

    @staticmethod
    def _progress(starting: _Starting) -> bool:
        """Read what a starting worker said; whether it is ready (SpawnFailed if it failed)."""
        worker = starting.worker
        if worker.pidfd is None:
            try:
                message, fds, _, _ = socket.recv_fds(worker.status, 1 << 12, 2,
                                                   socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                message, fds = None, []
            if message is not None:
                report = json.loads(message or b"{}")
                if len(fds) != 1 or not report.get("started"):
                    for fd in fds:
                        os.close(fd)
                    raise SpawnFailed(report.get("error") or "the worker's intermediate ended")
                worker.pidfd = fds[0]
        starting.ready.feed()
        if starting.ready.frame is not None and worker.pidfd is not None:
            answer = json.loads(starting.ready.frame)
            if answer == {"ready": True}:
                return True
            raise SpawnFailed(str(answer.get("error")) if isinstance(answer, dict)
                              else "the worker did not start")
        if starting.ready.ended or starting.ready.too_big:
            raise SpawnFailed("the worker ended before it was ready")
        if time.monotonic() > starting.deadline:
            raise SpawnFailed("the worker did not become ready in time")
        return False

    def _reap(self) -> None:
        """Close the retired workers whose processes are all gone; lease their uids again."""
        with self._cond:
            done = [w for w in self._retired if w.ended()]
            self._retired = [w for w in self._retired if w not in done]
        for worker in done:
            worker.close()
            self.uids.release(worker.uid)

    def _start_zygote(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            argv = [sys.executable, "-I", "-c", BOOT, str(theirs.fileno()), str(os.getpid()),
                    str(ROOT)]
            zygote = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      pass_fds=(theirs.fileno(),), env=dict(ENVIRONMENT),
                                      cwd="/")
        ours.settimeout(self.limits.start_timeout_s)
        try:
            ours.send(json.dumps(self.config).encode())
            reply = json.loads(ours.recv(1 << 16) or b"{}")
        except (OSError, ValueError):
            reply = {}
        if reply != {"ready": True}:
            zygote.kill()
            _, err = zygote.communicate(timeout=10)
            ours.close()
            why = reply.get("error") or err.decode(errors="replace").strip()[-1000:] \
                or f"it exited with {zygote.returncode}"
            raise SpawnFailed(f"the sandbox's zygote did not start: {why}")
        assert zygote.stderr is not None
        zygote.stderr.close()  # what it might say later goes nowhere
        self._zygote, self._zsock = zygote, ours

    def _stop_zygote(self) -> None:
        if self._zsock is not None:
            self._zsock.close()
            self._zsock = None
        if self._zygote is not None:
            self._zygote.kill()
            self._zygote.wait()
            self._zygote = None

    def _restart_zygote(self) -> None:
        """A new zygote for an ended one; the workers it started ended with it."""
        self._stop_zygote()
        with self._cond:
            self._retired += [*self._ready, *(s.worker for s in self._starting)]
            self._ready.clear()
            self._starting.clear()
        self._start_zygote()

    def _shutdown(self) -> None:
        with self._cond:
            self._closing = True
            workers = [*self._ready, *self._retired, *(s.worker for s in self._starting)]
            self._ready.clear()
            self._retired.clear()
            self._starting.clear()
            self._cond.notify_all()
        for worker in workers:
            worker.kill()
        self._stop_zygote()
        until = time.monotonic() + 2.0
        for worker in workers:
            while not worker.ended() and time.monotonic() < until:
                time.sleep(0.01)
            worker.close()
        with self._cond:
            self._closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._cond.notify_all()
        self.uids.release_all()
