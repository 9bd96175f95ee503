"""The background work of ``serve`` in a child process: projections and the chain.

Both only need the store: they read the log and write the read models, the tree and
the checkpoints, tracking their positions in the database. In threads of the server
they compete with the requests for the GIL; in a process of their own they run on the
other core. The server follows the projections' position (``ProjectionRunner.follow``)
so that its queries still wait for its own writes, and asks the child to hurry when a
query waits.

The child also drops, every ``SWEEP_EVERY_S``, the result bytes that no
``computation.succeeded`` records and that are older than the grace period
(``delivery.results.sweep``: what a crash between storing and recording left behind), and
so for the layouts, masked parts and sealed tables of joint computations that no joint event
records (``aggregation.store.sweep``).

The server keeps the child running (``core.supervise``): if it exits (a crash, the OOM
killer, an error at its start) the exit code is logged and a new child is started after a
pause (1 s, doubling up to 30 s; back to 1 s once a child ran a minute). It resumes from
the positions in the database. Until the new child reports that it runs, ``running`` is
False and ``/health`` answers 503 ``degraded`` (``state`` says why).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from aggregation import store as joint_store
from core.supervise import Backoff, Supervisor
from delivery import results
from runtime.settings import Settings

log = logging.getLogger(__name__)

_HURRY, _STOP, _READY = b"h", b"s", b"r"
NAME = "dataledger-background"
FIRST_PAUSE, MAX_PAUSE, STEADY_SECONDS = 1.0, 30.0, 60.0
STOP_GRACE_S = 20.0
#: how often the child sweeps unrecorded result bytes
SWEEP_EVERY_S = 600.0


class _Child:
    """One child process and the server's end of its pipe."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process, self.conn = process, conn
        self.ready = False  # it reported that it projects
        self._listening = True  # its end of the pipe is open
        self._lock = threading.Lock()  # sends against close

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def send(self, message: bytes) -> None:
        # the child is gone, or its end closed: nothing to tell
        with self._lock, contextlib.suppress(OSError, EOFError, ValueError):
            self.conn.send_bytes(message)

    def wait(self, timeout: float | None) -> int | None:
        """Its exit code once exited (None if it still runs after ``timeout`` seconds);
        meanwhile take its report that it runs."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = self._wait_for(left)
            if self.conn in ready:
                self._receive()
            if not self.process.is_alive():
                self.process.join()
                self.ready = False
                return self.process.exitcode
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _wait_for(self, timeout: float | None) -> list[Any]:
        """The pipe (while open) and the process's sentinel that are ready."""
        waited: list[Any] = [self.conn] if self._listening else []
        try:
            return wait([*waited, self.process.sentinel], timeout=timeout)
        except (OSError, ValueError):  # closed meanwhile
            self._listening = False
            return []

    def _receive(self) -> None:
        try:
            if self.conn.recv_bytes() == _READY:
                self.ready = True
                log.info("background process %s runs", self.process.pid)
        except (EOFError, OSError):  # gone or closed: only its exit is left to see
            self._listening = False

    def terminate(self) -> None:
        self.ready = False
        self.send(_STOP)

    def kill(self) -> None:
        """SIGTERM, then SIGKILL if it is still there 5 s later."""
        self.process.terminate()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()

    def close(self) -> None:
        self.ready = False
        self._listening = False
        with self._lock:
            self.conn.close()


class BackgroundProcess:
    """The child process, as the server sees it: hurry it, watch it, restart it, stop it."""

    def __init__(self, settings: Settings, *, first_pause: float = FIRST_PAUSE,
                 max_pause: float = MAX_PAUSE, steady_seconds: float = STEADY_SECONDS) -> None:
        self._values = settings.model_dump()
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded server
        self._supervisor = Supervisor(
            "background process (projections, chain)", self._spawn,
            Backoff(first_pause, max_pause, steady_seconds), log=log)
        self._supervisor.start()

    def _spawn(self) -> _Child:
        conn, child = self._context.Pipe()
        process = self._context.Process(target=_main, args=(self._values, child),
                                        name=NAME, daemon=True)
        process.start()
        child.close()
        return _Child(process, conn)

    @property
    def _child(self) -> _Child:
        child = self._supervisor.child
        assert child is not None  # started in __init__
        return child

    @property
    def process(self) -> BaseProcess:
        """The current child process."""
        return self._child.process

    @property
    def restarts(self) -> int:
        return self._supervisor.starts - 1

    @property
    def last_exitcode(self) -> int | None:
        return self._supervisor.last_exitcode

    def hurry(self) -> None:
        """A query waits for the projections: apply now, not at the end of the window."""
        self._child.send(_HURRY)

    @property
    def running(self) -> bool:
        """The child runs: it said so, or it is the first one and has not exited yet (a
        server just started is not degraded for the second its child takes to start)."""
        return self._child.ready or (self.last_exitcode is None
                                     and not self._supervisor.stopping.is_set())

    def state(self) -> dict[str, Any]:
        """What ``/health`` says of the child."""
        state: dict[str, Any] = {"process": NAME, "running": self.running,
                                 "restarts": self.restarts, "last_exitcode": self.last_exitcode}
        restart_at = self._supervisor.restart_at
        if restart_at is not None:
            state["restart_in_seconds"] = round(max(0.0, restart_at - time.monotonic()), 1)
        return state

    def stop(self, timeout: float = STOP_GRACE_S) -> None:
        self._supervisor.stop(timeout)


def _main(settings_values: dict[str, Any], conn: Connection) -> None:
    """The child: project and integrate until told to stop or the server goes away."""
    from runtime.build import build

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops it (Ctrl-C reaches both)
    logging.basicConfig(level=logging.INFO)
    services = build(Settings(**settings_values), role="background")
    if services.chain is not None:
        services.chain.start()
    # No wake-up per commit from the server: poll the log every 50 ms (and batch what came)
    services.runner.start(poll_interval=0.05)
    try:
        with contextlib.suppress(EOFError, OSError):  # the server went away
            _serve_requests(conn, services)
    finally:
        services.close()


def _serve_requests(conn: Connection, services: Any) -> None:
    """Tell the server the child runs, then hurry the projections on each request until it
    says stop; sweep unrecorded result bytes every ``SWEEP_EVERY_S`` meanwhile."""
    conn.send_bytes(_READY)  # the server's /health: ok again
    next_sweep = time.monotonic() + SWEEP_EVERY_S  # serve swept at its start
    while True:
        if time.monotonic() >= next_sweep:
            next_sweep = time.monotonic() + SWEEP_EVERY_S
            _sweep(services)
        if not conn.poll(0.5):
            continue
        if conn.recv_bytes() == _STOP:
            return
        services.runner.hurry()


def _sweep(services: Any) -> None:
    """Drop unrecorded result bytes past the grace period; a failure is logged, and the
    next sweep tries again (the projections and the chain go on)."""
    try:
        dropped = results.sweep(services.engine, services.store)
        joint_dropped = joint_store.sweep(services.engine, services.store)
    except Exception:
        log.exception("sweeping unrecorded result bytes failed")
        return
    if dropped:
        log.info("dropped %d stored result(s) that no computation.succeeded records", dropped)
    if joint_dropped:
        log.info("dropped %d stored joint layout(s), part(s) or table(s) that no joint "
                 "event records", joint_dropped)
