"""The background work of ``serve`` in a child process: projections and the chain.

Both only need the store: they read the log and write the read models, the tree and
the checkpoints, tracking their positions in the database. In threads of the server
they compete with the requests for the GIL; in a process of their own they run on the
other core. The server follows the projections' position (``ProjectionRunner.follow``)
so that its queries still wait for its own writes, and asks the child to hurry when a
query waits.

A thread of the server watches the child: if it exits (a crash, the OOM killer, an
error at its start) the exit code is logged and a new child is started after a pause
(1 s, doubling up to 30 s; back to 1 s once a child ran a minute). It resumes from the
positions in the database. Until the new child reports that it runs, ``running`` is
False and ``/health`` answers 503 ``degraded`` (``state`` says why).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any

from api.settings import Settings

log = logging.getLogger(__name__)

_HURRY, _STOP, _READY = b"h", b"s", b"r"
NAME = "dataledger-background"
FIRST_PAUSE, MAX_PAUSE, STEADY_SECONDS = 1.0, 30.0, 60.0


class BackgroundProcess:
    """The child process, as the server sees it: hurry it, watch it, restart it, stop it."""

    def __init__(self, settings: Settings, *, first_pause: float = FIRST_PAUSE,
                 max_pause: float = MAX_PAUSE, steady_seconds: float = STEADY_SECONDS) -> None:
        self._values = settings.model_dump()
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded server
        self._first_pause, self._max_pause = first_pause, max_pause
        self._steady_seconds = steady_seconds
        self._lock = threading.Lock()  # the connection (sends, replacement)
        self._stopping = threading.Event()
        self._ready = False  # the current child reported that it projects
        self.restarts = 0
        self.last_exitcode: int | None = None
        self._restart_at: float | None = None  # monotonic time of the next start
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="background-watcher",
                                         daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        conn, child = self._context.Pipe()
        process = self._context.Process(target=_main, args=(self._values, child),
                                        name=NAME, daemon=True)
        process.start()
        child.close()
        with self._lock:
            self._conn, self.process = conn, process
        self._started = time.monotonic()

    def _send(self, message: bytes) -> None:
        with self._lock:
            try:
                self._conn.send_bytes(message)
            except (OSError, EOFError, ValueError):  # the child is gone (or closed)
                pass

    def hurry(self) -> None:
        """A query waits for the projections: apply now, not at the end of the window."""
        self._send(_HURRY)

    @property
    def running(self) -> bool:
        """The child runs: it said so, or it is the first one and has not exited yet (a
        server just started is not degraded for the second its child takes to start)."""
        return self._ready or (self.last_exitcode is None and not self._stopping.is_set())

    def state(self) -> dict[str, Any]:
        """What ``/health`` says of the child."""
        state: dict[str, Any] = {"process": NAME, "running": self.running,
                                 "restarts": self.restarts, "last_exitcode": self.last_exitcode}
        restart_at = self._restart_at
        if restart_at is not None:
            state["restart_in_seconds"] = round(max(0.0, restart_at - time.monotonic()), 1)
        return state

    def _watch(self) -> None:
        """Until stopped: wait for the child's report or its exit; restart it when it exits."""
        pause = self._first_pause
        while not self._stopping.is_set():
            conn, process = self._conn, self.process
            try:
                ready = wait([conn, process.sentinel], timeout=0.5)
            except (OSError, ValueError):  # closed by stop
                ready = []
            if self._stopping.is_set():
                break
            if conn in ready:
                try:
                    if conn.recv_bytes() == _READY:
                        self._ready = True
                        log.info("background process %s runs", process.pid)
                except (EOFError, OSError):  # gone: the sentinel says so next
                    pass
            if process.is_alive():
                continue
            process.join()
            self.last_exitcode = process.exitcode  # before: ``running`` is never True between
            self._ready = False
            lived = time.monotonic() - self._started
            if lived >= self._steady_seconds:
                pause = self._first_pause
            log.error("background process %s (projections, chain) exited with code %s "
                      "after %.1f s; restarting it in %.1f s", process.pid, process.exitcode,
                      lived, pause)
            with self._lock:
                conn.close()
            self._restart_at = time.monotonic() + pause
            if self._stopping.wait(pause):
                break
            try:
                self._spawn()
            except Exception:  # try again after a longer pause
                log.exception("starting the background process failed")
            else:
                self.restarts += 1
            finally:
                self._restart_at = None
            pause = min(pause * 2, self._max_pause)

    def stop(self, timeout: float = 20.0) -> None:
        self._stopping.set()
        self._watcher.join()  # no restart from here on
        self._ready = False
        self._send(_STOP)
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self._conn.close()


def _main(settings_values: dict[str, Any], conn: Connection) -> None:
    """The child: project and integrate until told to stop or the server goes away."""
    from chain.checkpointer import CutPolicy
    from chain.service import build_chain
    from events.store import DatabaseURL, open_store
    from projections import all_projections
    from projections.runner import ProjectionRunner, views_engine

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops it (Ctrl-C reaches both)
    logging.basicConfig(level=logging.INFO)
    settings = Settings(**settings_values)
    url = DatabaseURL.parse(settings.resolved_database_url())
    store = open_store(url, create=False)
    engine = views_engine(url, settings.views_path())
    runner = ProjectionRunner(store, engine, all_projections())
    runner.create_tables()
    chain = None
    if settings.chain:
        chain = build_chain(
            store, url, settings.data_dir, origin=settings.log_origin,
            key_file=settings.log_key_file,
            witness_urls=[u.strip() for u in settings.witness_urls.split(",") if u.strip()],
            quorum=settings.witness_quorum,
            policy=CutPolicy(settings.checkpoint_every_leaves, settings.checkpoint_every_seconds))
        chain.start()
    # No wake-up per commit from the server: poll the log every 50 ms (and batch what came)
    runner.start(poll_interval=0.05)
    try:
        conn.send_bytes(_READY)  # the server's /health: ok again
        while True:
            if not conn.poll(0.5):
                continue
            if conn.recv_bytes() == _STOP:
                break
            runner.hurry()
    except (EOFError, OSError):  # the server went away
        pass
    finally:
        runner.stop()
        if chain is not None:
            chain.close()
        engine.dispose()
        store.close()
