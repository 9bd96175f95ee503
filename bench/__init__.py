"""Benchmarks: `dataledger bench <suite>` (see docs/BENCHMARKS.md).

``bench.run.main(args)`` dispatches a suite, prints a table (each figure beside its
baseline, the ratio and the goal) and writes JSON with the machine's description.
Suites: ``append`` (commands/s through the application service and through HTTP,
beside the bare ``eventsourcing`` recorder and the server's no-op endpoint), ``chain``
(the tree, integration, proofs and anchoring latency), ``publisher`` (the NATS outbox)
and ``compute`` (approval to delivery through real compute nodes), each on SQLite and
PostgreSQL.
"""
