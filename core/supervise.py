"""One restart-with-backoff supervisor: keeps a child process running until told to stop.

Used by serve for its background process (``runtime/background.py``) and for the
compute-node host (``runtime/compute_host.py``), and by that host for each provider's
node process (``compute_nodes/host.py``). Standard library only: it is imported in the
compute node's own environment too.

A child that exits is started again after a pause that doubles after each exit, up to a
most, and goes back to the first once a child ran ``steady`` seconds. The first start
happens in the caller (an error there reaches it); the later ones in a watcher thread,
which logs each exit and tries again after a longer pause if a start fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Child(Protocol):
    """A running child process, as the supervisor drives it."""

    @property
    def pid(self) -> int | None: ...

    def wait(self, timeout: float | None) -> int | None:
        """Its exit code once it exited; None if it still runs after ``timeout`` seconds."""

    def terminate(self) -> None:
        """Ask it to stop (it may take a while)."""

    def kill(self) -> None:
        """Make it stop now."""

    def close(self) -> None:
        """Release what this handle holds, once the child exited."""


C = TypeVar("C", bound=Child)


class Backoff:
    """The pause before the next start: ``first``, doubling after each exit up to ``most``,
    and ``first`` again after a child that ran ``steady`` seconds or more."""

    def __init__(self, first: float, most: float, steady: float) -> None:
        self.first, self.most, self.steady = first, most, steady
        self._next = first

    def pause(self, lived: float) -> float:
        """The pause after a child that ran ``lived`` seconds exited."""
        if lived >= self.steady:
            self._next = self.first
        pause = self._next
        self._next = min(pause * 2, self.most)
        return pause


class PopenChild:
    """A ``subprocess.Popen`` as a supervised child. ``group``: signal its whole process
    group (it was started with ``start_new_session=True``)."""

    def __init__(self, process: subprocess.Popen[bytes], *, group: bool = False) -> None:
        self.process = process
        self.group = group

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def wait(self, timeout: float | None) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def close(self) -> None:
        """Nothing to release: the process was reaped by ``wait``."""

    def _signal(self, signum: int) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
            if self.group:
                os.killpg(self.process.pid, signum)
            else:
                self.process.send_signal(signum)


class Supervisor(Generic[C]):
    """Starts a child with ``start``, and again after a growing pause each time it exits,
    until :meth:`stop`. ``name`` says which child in the log (``log``)."""

    def __init__(self, name: str, start: Callable[[], C], backoff: Backoff, *,
                 log: logging.Logger, poll: float = 0.5) -> None:
        self.name = name
        self._start = start
        self.backoff = backoff
        self._log = log
        self._poll = poll
        self._lock = threading.Lock()  # a start against stop
        self.stopping = threading.Event()
        self.child: C | None = None
        self.starts = 0
        self.last_exitcode: int | None = None
        #: monotonic time of the next start while one is pending
        self.restart_at: float | None = None
        self._exited = False  # the current child exited (and is not replaced yet)
        self._started = 0.0
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """A child was started and has not been seen to exit."""
        return self.child is not None and not self._exited

    def start(self) -> None:
        """Start the first child here, then watch it from a thread."""
        self._spawn()
        self._thread = threading.Thread(target=self._watch, name=self.name, daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        with self._lock:
            if self.stopping.is_set():
                return
            child = self._start()
            self.child, self._exited = child, False
            self.starts += 1
            self._started = time.monotonic()

    def _watch(self) -> None:
        while not self.stopping.is_set():
            child = self.child
            assert child is not None
            code = child.wait(self._poll)
            if code is None or self.stopping.is_set():
                continue
            self.last_exitcode, self._exited = code, True
            child.close()
            lived = time.monotonic() - self._started
            pause = self.backoff.pause(lived)
            self._log.error("%s (pid %s) exited with code %s after %.1f s; restarting it "
                            "in %.1f s", self.name, child.pid, code, lived, pause)
            if not self._restart(pause):
                break

    def _restart(self, pause: float) -> bool:
        """Start a new child after ``pause``, and after a longer one each time a start fails;
        False once told to stop."""
        try:
            while True:
                self.restart_at = time.monotonic() + pause
                if self.stopping.wait(pause):
                    return False
                try:
                    self._spawn()
                    return True
                except Exception:  # noqa: BLE001 - logged; tried again after a longer pause
                    pause = self.backoff.pause(0.0)
                    self._log.exception("starting %s failed; trying again in %.1f s",
                                        self.name, pause)
        finally:
            self.restart_at = None

    def request_stop(self) -> None:
        """No restart from here on; ask the child to stop (without waiting for it)."""
        with self._lock:
            self.stopping.set()
            child = self.child
        if child is not None and not self._exited:
            child.terminate()

    def stop(self, grace: float) -> None:
        """Stop for good: ask the child to stop, kill it after ``grace`` seconds."""
        self.request_stop()
        if self._thread is not None:  # then nothing else waits on the child
            self._thread.join()
        child = self.child
        if child is not None:
            if child.wait(grace) is None:
                child.kill()
                child.wait(None)
            self._exited = True
            child.close()
