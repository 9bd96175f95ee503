"""`dataledger bench append`: commands/s on the write path, each beside its baseline.

For each backend (a SQLite file in a fresh temporary directory; PostgreSQL in a
fresh schema ``bench_<random>`` that is dropped at the end) it measures, within
the same process and the same minute or so:

1. **bare library** – the store's recorder (``store.recorder.insert_events``: the
   library's recorder class with dataledger's faster single-statement insert) saving
   pre-encoded events (``events.store.to_stored`` of the very domain events the
   command path produces), one transaction per event; once from one thread, once from
   N threads (the library's own concurrency, no grouping). The goal is judged against
   this, the stricter baseline. Also, for information, the library's stock recorder
   unmodified (``SQLiteApplicationRecorder``: BEGIN, INSERT, COMMIT per event;
   ``PostgresApplicationRecorder``: sequence-assigned ids), on a table of its own;
2. **command path, 1 thread** – ``Ledger.execute`` of a real use case (a provider
   registering datasets; the platform registering participants if
   ``domain.dataset`` is absent), group commit on;
3. **command path, N threads** – the same from N threads (group commit groups them);
4. **HTTP** – ``dataledger serve`` in a subprocess on a free loopback port, loaded
   over C keep-alive connections (one request in flight on each) by a minimal
   asyncio HTTP/1.1 client: ``GET /noop`` (the baseline) and the command
   (``POST /datasets`` as an admitted provider if the route exists, else
   ``POST /participants``) for the same duration, one after the other. httpx is used
   for setup, and for one informational "client check" row: a single
   ``httpx.AsyncClient`` with C requests in flight spends milliseconds of CPU per
   request, so it measures itself rather than the server.

Goals: the command path costs at most 2x the bare library per
event (ratio of events/s >= 0.5); concurrent HTTP commands reach at least half the
no-op endpoint's rate. Every loop is bounded both in count and in time; all
traffic stays on the loopback interface.

The suite (``suite.py``: sizes, one backend, the table rows) uses the workload
(``workload.py``), the in-process measurements (``inprocess.py``), the server under test
(``server.py``), the load generators (``load.py``) and the HTTP measurements
(``http_suite.py``); each measurement is a :class:`~bench.append.measure.Measure`.
"""
