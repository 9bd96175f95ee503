"""`dataledger bench chain`: the verifiable log's costs, each beside a baseline of the same run.

For each backend (SQLite files in a fresh temporary directory; PostgreSQL in fresh
schemas ``bench_<random>[_<part>]`` that are dropped at the end) it measures:

1. **tree alone** – N leaf byte strings given (random, 200 bytes each),
   ``tree.append_leaf_data(batch)`` in batches of 5,000 (the integrator's): the tree
   hashes each leaf (SHA-256 of 0x00 ‖ leaf) and the nodes it completes in its hashing
   core (C when built, see :mod:`chain.merkle`) and stores every hash it keeps (the leaf
   tiles and the nodes of level >= 8) with the new size; baseline:
   ``hashlib.sha256(b"\\x00" + b).digest()`` over the same leaves, alternating with the
   tree in rounds. Goal: at least half the baseline's rate and over 200,000 leaves/s.
2. **end to end** – N stored events (filled beforehand with the recorder's
   ``insert_events`` in big batches, not measured), then ``Integrator(store, tree)
   .catch_up()`` from an empty tree (read, canonical bytes, leaf hash, append); baseline:
   reading the same events with the bare library only (``recorder.select_notifications``,
   same batch size; no canonical bytes, no hashing). Goal: over 50,000 leaves/s.
3. **proofs at 1,000,000 leaves** – a tree of that many leaves filled through
   ``append_leaves`` (timed, reported, not a goal), then ``inclusion_proof(i, n)`` and
   ``consistency_proof(m, n)`` for random i, m, served from the database, and their
   verification (``chain.verify``); baselines: one primary-key ``SELECT`` of one node on
   the same connection, and hashing as many interior nodes as the proof has with
   ``hashlib``. Goal: under 1 ms each (judged on p95).
4. **anchoring latency** – the whole service (``runtime.build.build``: event store,
   projections, chain service with its two in-process witnesses) with
   ``checkpoint_every_seconds`` T; commands through ``container.ledger.execute`` at a
   steady modest rate; for each, the time from its commit returning until an anchored
   checkpoint (quorum of both witnesses) covers its last seq, watched every 10 ms on a
   connection of its own. Baseline: the cut interval T (the wait a time-based cut
   implies even if signing and co-signing cost nothing). Goal: under T + 2 s (judged on
   the maximum).

Every loop is bounded in count and time; everything stays on this machine.

The suite (``suite.py``) runs the measurements in order: the tree alone (``tree.py``), end
to end (``e2e.py``), proofs (``proofs.py``) and anchoring latency (``latency.py``), each
in fresh trees and stores of its own (``place.py``).
"""
