"""Executions in flight: several at once, started early, released only once proven.

A provider's node runs independent executions concurrently, at most ``parallel`` at a time
(``DATALEDGER_NODE_PARALLEL``). An execution may start as soon as the node sees its event,
before an anchored checkpoint proves the event itself (:meth:`Runs.start`; the node builds
that job from the events it depends on, proven under the latest anchored checkpoint): the
executor's :meth:`~compute_nodes.executor.Executor.prepare` asks the ledger, runs and
checks, and reports nothing. Only the job built once the event is proven releases a result
(:meth:`Runs.run`): when it equals the early job, the early work is released; when it
differs, the early work is dropped unreleased and the proven job runs.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from compute_nodes.executor import Executor, Job, Prepared
from compute_nodes.outcome import Outcome

log = logging.getLogger(__name__)

PARALLEL = 4  # executions at once per provider, by default
#: an early run whose event is never proven (a platform that shows events it never
#: anchors) is dropped, unreleased, this long after it started
EARLY_TTL_S = 900.0


class Runs:
    """The executions of one provider's node: a bounded pool and what is in flight."""

    def __init__(self, executor: Executor, parallel: int = PARALLEL) -> None:
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, not {parallel}")
        self.executor = executor
        self.pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="execution")
        self._lock = threading.Lock()
        #: (contract, execution) -> the job being prepared and its future
        self._flight: dict[tuple[str, int], tuple[Job, Future[Prepared | Outcome]]] = {}
        #: when each early start began (monotonic)
        self._early: dict[tuple[str, int], float] = {}

    def in_flight(self, key: tuple[str, int]) -> bool:
        """Whether the execution ``key`` (contract, execution) is being prepared."""
        with self._lock:
            return key in self._flight

    def start(self, job: Job) -> None:
        """Start preparing ``job`` (built from views, not proven yet) unless it is in
        flight already."""
        with self._lock:
            self._forget_stale(time.monotonic())
            if job.key not in self._flight:
                self._flight[job.key] = (job, self.pool.submit(self.executor.prepare, job))
                self._early[job.key] = time.monotonic()

    def _forget_stale(self, now: float) -> None:
        """Drop the early runs that ended and were never claimed within EARLY_TTL_S."""
        for key, began in list(self._early.items()):
            entry = self._flight.get(key)
            if entry is None:
                del self._early[key]
            elif now - began > EARLY_TTL_S and entry[1].done():
                log.warning("contract %s execution %d: started early %.0f s ago, never "
                            "proven; dropped unreleased", *key, now - began)
                del self._flight[key], self._early[key]

    def run(self, job: Job, *, wait: bool = True) -> Outcome:
        """The outcome of the proven ``job``: its early work released if it is the same
        job, else the job prepared now. ``wait=False``: a ``running`` outcome while it is
        not done (the caller handles the event again later)."""
        with self._lock:
            early, future = self._flight.get(job.key) or (None, None)
            if future is not None and early != job and future.done():
                log.warning("contract %s execution %d: the early run was not of the proven "
                            "job; dropped unreleased", *job.key)
                future = None
            if future is None:
                future = self.pool.submit(self.executor.prepare, job)
                early = job
                self._flight[job.key] = (job, future)
        if not wait and not future.done():
            return Outcome(job.contract_id, "running", "the execution runs", job.execution)
        if early != job:  # an early run of another job: let it end, then run this one
            future.exception()
            return self.run(job, wait=wait)
        mine = False
        try:
            prepared = future.result()
        finally:
            with self._lock:
                if self._flight.get(job.key, (None, None))[1] is future:
                    del self._flight[job.key]
                    mine = True
                self._early.pop(job.key, None)
        if not mine:  # another caller releases it: handled again, it is settled or skipped
            return Outcome(job.contract_id, "running", "released by another", job.execution)
        return self.executor.release(job, prepared)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
