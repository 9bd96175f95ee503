"""How much each chain measurement does (:class:`Sizes`) and where its fresh trees and
stores live (:class:`Place`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from anchoring.tilestore_postgres import PostgresTileStore
from anchoring.tilestore_sqlite import SQLiteTileStore
from anchoring.treestore import TreeStore
from bench.databases import PG_URL, Scratch
from events.url import DatabaseURL


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does."""

    tree_leaves: int            # leaves of the tree-alone measurement
    tree_rounds: int            # tree and baseline alternate over this many slices
    e2e_events: int             # stored events integrated end to end
    e2e_rounds: int             # each round: baseline read, then catch_up into a fresh tree
    proof_leaves: int           # tree size of the proof measurements
    proof_samples: int          # proofs of each kind timed
    anchor_intervals: tuple[float, ...]  # cut intervals T (checkpoint_every_seconds)
    anchor_seconds: float       # how long commands are sent, per T
    anchor_rate: float          # commands per second (register_participant: 2 events each)
    batch: int = 5000           # the integrator's batch size
    fill_batch: int = 10_000    # events per insert_events call when filling the store
    leaf_bytes: int = 200
    poll_seconds: float = 0.01  # the anchoring watcher's polling interval
    drain_seconds: float = 15.0  # after the load, wait at most T + this for the last anchor


FULL = Sizes(tree_leaves=200_000, tree_rounds=4, e2e_events=200_000, e2e_rounds=2,
             proof_leaves=1_000_000, proof_samples=500, anchor_intervals=(5.0, 1.0),
             anchor_seconds=20.0, anchor_rate=20.0)
QUICK = Sizes(tree_leaves=20_000, tree_rounds=1, e2e_events=20_000, e2e_rounds=1,
              proof_leaves=50_000, proof_samples=100, anchor_intervals=(1.0,),
              anchor_seconds=2.5, anchor_rate=20.0, drain_seconds=5.0)


class Place(Scratch):
    """Fresh trees and stores of one backend: SQLite files in a temporary directory, or
    PostgreSQL schemas ``bench_<tag>[_<label>]`` (all dropped by :meth:`cleanup`)."""

    def __init__(self, backend: str) -> None:
        super().__init__(backend, f"dataledger-bench-chain-{backend}-")

    def tree(self, label: str) -> TreeStore:
        """A new, empty tree store."""
        if self.backend == "sqlite":
            return TreeStore(SQLiteTileStore(os.fspath(self.tmp / label / "chain.db")))
        return TreeStore(PostgresTileStore(DatabaseURL.parse(PG_URL).conninfo(),
                                           self.schema(label)))
