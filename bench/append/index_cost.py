"""The per-actor index's own CPU per event for ``bench append``'s workload, beside the tree's.

``python -m bench.append.index_cost sqlite|POSTGRESQL_URL [COMMANDS]`` runs COMMANDS (3,000 by
default) of the workload (``workload.py``: a provider registering datasets) in process on a
fresh store, integrates them into the tree (``Integrator.catch_up``) and then indexes them as
``serve``'s background process does before each cut (``ActorIndex.advance`` at every 1,000
leaves), and prints the CPU per event of each. Compare with the server's CPU per command in
``bench append``'s HTTP rows (docs/BENCHMARKS.md, "The per-actor index's cost"). For a
PostgreSQL URL, name a schema of its own (``?schema=...``): it is left behind.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def measure(url: str, commands: int) -> dict[str, float]:
    from anchoring.checkpointer import CutPolicy
    from anchoring.integrator import Integrator
    from anchoring.service import build_chain
    from bench.append.workload import Workload
    from events.commit import new_ledger
    from events.store import LedgerLog, open_store
    from events.url import DatabaseURL

    tmp = Path(tempfile.mkdtemp(prefix="dataledger-index-cost-"))
    parsed = DatabaseURL.parse(f"sqlite:///{tmp / 'ledger.db'}" if url == "sqlite" else url)
    store = open_store(parsed)
    ledger = new_ledger(LedgerLog(store))
    try:
        workload = Workload()
        workload.setup(ledger)
        for i in range(commands):
            ledger.execute(workload.handler, workload.actor, **workload.kwargs(i))
        head = store.max_seq()
        chain = build_chain(store, parsed, tmp, origin="bench.local/log", key_file=None,
                            witness_urls=[], quorum=None, policy=CutPolicy(10**9, 3600.0))
        t0 = time.process_time()
        Integrator(store, chain.tree).catch_up()
        tree = time.process_time() - t0
        assert chain.index is not None
        t0 = time.process_time()
        for size in [*range(1000, head, 1000), head]:
            chain.index.advance(size)
        index = time.process_time() - t0
    finally:
        ledger.close()
        store.close()
    return {"events": head, "tree_us_per_event": 1e6 * tree / head,
            "index_us_per_event": 1e6 * index / head}


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        sys.exit(2)
    out = measure(sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else 3000)
    print(f"{out['events']} events: tree {out['tree_us_per_event']:.1f} µs per event, "
          f"index {out['index_us_per_event']:.1f} µs per event")
