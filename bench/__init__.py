"""Benchmarks: `dataledger bench <suite>` (see docs/BENCHMARKS.md).

``bench.run.main(args)`` dispatches a suite, prints a table (each figure beside its
baseline, the ratio and the goal) and writes JSON with the machine's description.
Suites: ``append`` (``bench.append``) - commands/s through the application service
and through HTTP, on SQLite and PostgreSQL, against the bare ``eventsourcing``
recorder and the server's no-op endpoint.
"""
