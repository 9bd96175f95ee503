"""The background work of ``serve`` in a child process: projections and the chain.

Both only need the store: they read the log and write the read models, the tree and
the checkpoints, tracking their positions in the database. In threads of the server
they compete with the requests for the GIL; in a process of their own they run on the
other core. The server follows the projections' position (``ProjectionRunner.follow``)
so that its queries still wait for its own writes, and asks the child to hurry when a
query waits.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any

from api.settings import Settings

log = logging.getLogger(__name__)

_HURRY, _STOP = b"h", b"s"


class BackgroundProcess:
    """The child process, as the server sees it: hurry it, stop it."""

    def __init__(self, settings: Settings) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded server
        self._conn, child = context.Pipe()
        self.process = context.Process(target=_main, args=(settings.model_dump(), child),
                                       name="dataledger-background", daemon=True)
        self.process.start()
        child.close()
        self._lock = threading.Lock()

    def _send(self, message: bytes) -> None:
        with self._lock:
            try:
                self._conn.send_bytes(message)
            except (OSError, EOFError, ValueError):  # the child is gone (or closed)
                pass

    def hurry(self) -> None:
        """A query waits for the projections: apply now, not at the end of the window."""
        self._send(_HURRY)

    def stop(self, timeout: float = 20.0) -> None:
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
