"""The audit bench's log as the server holds it, for the self-proof measure: the bundle's
events in a SQLite event store, the Merkle tree integrated by the server's own integrator,
the per-actor index advanced to each checkpoint by the server's ``ActorIndex`` (its
postings, keys and roots), and the bundle's checkpoints stored with their co-signatures.
``anchoring.selfproof.self_proof`` then answers from it as ``GET /forensics/self-proof``
does. Made once next to the cached bundle (``server/``), as the bundle is.
"""

from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path
from typing import Any

BATCH = 5000


class ServerLog:
    """The event store, tree and index of the bench's log, opened."""

    def __init__(self, directory: Path) -> None:
        from anchoring.actor_index import ActorIndex
        from anchoring.service import open_tree
        from events.store import open_store
        from events.url import DatabaseURL

        url = DatabaseURL.parse(f"sqlite:///{directory / 'events.db'}")
        self.store = open_store(url)
        self.tree = open_tree(url, directory)
        self.index = ActorIndex(self.store, self.tree.tiles)

    def close(self) -> None:
        self.store.close()
        self.tree.tiles.close()


def load(bundle_dir: Path, directory: Path) -> dict[str, Any]:
    """Import the bundle into a server log in ``directory`` (made anew); how long each
    part took, in seconds."""
    from eventsourcing.persistence import StoredEvent

    from anchoring.integrator import Integrator
    from audit.bundle import read_bundle

    work = directory.with_name(directory.name + ".partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    bundle = read_bundle(bundle_dir)
    log = ServerLog(work)
    took: dict[str, Any] = {}
    try:
        t0 = time.monotonic()
        batch: list[Any] = []
        for e in bundle.events():
            batch.append(StoredEvent(originator_id=e.originator_id,
                                     originator_version=e.version, topic=e.type_name,
                                     state=e.payload_bytes))
            if len(batch) == BATCH:
                log.store.recorder.insert_events(batch, batches=[], reads={}, admissions=[])
                batch = []
        if batch:
            log.store.recorder.insert_events(batch, batches=[], reads={}, admissions=[])
        t1 = time.monotonic()
        Integrator(log.store, log.tree).catch_up()
        t2 = time.monotonic()
        for cp in bundle.checkpoints():
            log.index.advance(cp["size"])
            log.tree.checkpoints.put(cp["size"], cp["note"], cp["cut_at"])
            aggregate = None if cp["aggregate"] is None else base64.b64decode(cp["aggregate"])
            log.tree.checkpoints.record_cosignatures(cp["size"], cp["cosigned"], cp["signers"],
                                                     aggregate, cp["anchored"])
        t3 = time.monotonic()
        took = {"events_s": round(t1 - t0, 1), "tree_s": round(t2 - t1, 1),
                "index_and_checkpoints_s": round(t3 - t2, 1)}
    finally:
        log.close()
    work.rename(directory)
    return took
