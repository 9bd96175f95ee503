"""The platform's aggregation node (white paper 5.2.2's privacy-computing main node, 6.1 step 2).

``Aggregator.aggregate(joint_id)``: once every provider's masked part of a joint execution is
in, it loads the parts (``aggregation/store.py``), checks each against the digest its
``joint.part_received`` recorded, sums them (``core.secagg.aggregate``), turns the sum into
the joint table (key -> summed values, in memory only: after a crash it is summed again from
the stored parts), prepares the hidden table under a fresh OPRF key
(``aggregation/prepare.py``), stores both (``aggregation/store.py``) and records
``joint.published`` as the system actor. A refused aggregation records ``joint.failed``
(``refused: <reason>: <message>``) and stores nothing; so does a sum out of reach of the
providers' values (``bound``: a part whose masks do not cancel, such as an old body
relabelled for this execution), an integer column whose sum is not whole, or a table the
hidden table cannot take (``table``: a key or a row out of ``core.hidden_query``'s bounds).

``sweep()`` (every few seconds, in the API process: ``run_sweeps``) fails the executions
past their deadline with a part or the layout missing (``missing: …``) and aggregates those
whose parts are all in but that were not published (a crash, a restart); one whose
aggregation raised (a database error, say: tried again every ``RETRY_AFTER_S``) is failed
once a run past its deadline raised (``refused: aggregation: …``), never tried for ever. Both
are idempotent: an execution already published or failed is left as it is, and a table stored
before a crash and never recorded is swept as unrecorded bytes (``aggregation/store.py``).

``answer(joint_id, request)``: the node's side of a hidden query, ``evaluate`` with the
published table's OPRF key. The key never leaves this module and ``aggregation/store.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from aggregation import store
from aggregation.prepare import prepare
from core import hidden_query as hq
from core import secagg
from domain import joint as uc
from domain.application import Ledger, StoreUnitOfWork
from domain.base import Actor
from domain.errors import ConcurrencyConflict, NotFound, WrongState
from domain.joint import JointExecution, JointPublished
from domain.policy import parse_instant
from domain.product import Product, column_type

log = logging.getLogger("dataledger.aggregation")

#: after a run that raised (not a refusal: a database error, say), how long the sweep
#: waits before it tries that execution again, in seconds
RETRY_AFTER_S = 30.0


def table_json(value: Any) -> bytes:
    """The joint table's canonical JSON: ``core.canonical``'s form (sorted keys, no
    whitespace, UTF-8), a number column's float in Python's shortest round-trip text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def joint_table(joint: JointExecution, keys: list[str], total: list[int],
                kinds: list[str]) -> dict[str, dict[str, int | float]]:
    """The joint table from the summed vector (row-major: for each key of the layout, each
    value column): an integer column's sum divided by ``SCALE`` exactly, a number column's
    as a float. Refuses (``AggregationRefused``) a sum no honest parts can make."""
    columns = joint.value_columns
    bound = len(joint.providers) * secagg.VALUE_BOUND
    if total and (max(total) > bound or min(total) < -bound):
        raise secagg.AggregationRefused(
            "bound", f"the sum is beyond what {len(joint.providers)} providers' values can "
                     "reach: a part's masks do not cancel (masked for another execution?)")
    table: dict[str, dict[str, int | float]] = {}
    width = len(columns)
    for i, key in enumerate(keys):
        row: dict[str, int | float] = {}
        for j, (column, kind) in enumerate(zip(columns, kinds)):
            value = total[i * width + j]
            if kind != "integer":
                row[column] = value / secagg.SCALE
                continue
            whole, rest = divmod(value, secagg.SCALE)
            if rest:
                raise secagg.AggregationRefused(
                    "integer", f"the sum of integer column {column!r} for key {key!r} is not "
                               "whole: a part's masks do not cancel")
            row[column] = whole
        table[key] = row
    return table


def sealed_rows(joint: JointExecution,
                table: dict[str, dict[str, int | float]]) -> dict[str, bytes]:
    """Each key's row as the bank opens it: the canonical JSON of the key column and the
    summed values."""
    return {key: table_json({joint.key_column: key, **row}) for key, row in table.items()}


class Aggregator:
    """The aggregation node of one server process: over the read models' database (the
    stored parts, layouts and tables) and the ledger (as ``actor``, the system)."""

    def __init__(self, engine: Engine, ledger: Ledger, actor: Actor, *,
                 open_joints: Callable[[], list[str]], sweep_seconds: float = 2.0,
                 prepare_table: Callable[[bytes, dict[str, bytes]], hq.HiddenTable] = prepare,
                 ) -> None:
        self.engine, self.ledger, self.actor = engine, ledger, actor
        #: the joint executions neither published nor failed (the read models know them)
        self.open_joints = open_joints
        self.sweep_seconds = sweep_seconds
        self.prepare_table = prepare_table
        self._running: set[str] = set()
        self._failed_at: dict[str, float] = {}
        #: joint id -> the kind of error its last aggregation raised (not a refusal), when
        self._errors: dict[str, tuple[str, datetime]] = {}
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._digests: dict[str, str] = {}

    # -- reading the ledger -------------------------------------------------------
    def _load(self, cls: type[Any], id: str) -> Any:
        return StoreUnitOfWork(self.ledger.streams).get(cls, id)

    def joint(self, joint_id: str) -> JointExecution | None:
        """The joint execution as the log holds it now, or None."""
        try:
            found: JointExecution = self._load(JointExecution, joint_id)
        except NotFound:
            return None
        return found

    def table_digest(self, joint_id: str) -> str | None:
        """The digest ``joint.published`` recorded for ``joint_id``'s table, or None (kept
        once found: a joint is published once)."""
        digest = self._digests.get(joint_id)
        if digest is None:
            digest = next((e.table_digest for e in self.ledger.streams.load(joint_id)
                           if isinstance(e, JointPublished)), None)
            if digest is not None:
                self._digests[joint_id] = digest
        return digest

    # -- aggregating ----------------------------------------------------------------
    @contextmanager
    def _claim(self, joint_id: str) -> Iterator[bool]:
        """Whether this thread runs ``joint_id`` now (one run at a time per execution)."""
        with self._lock:
            mine = joint_id not in self._running
            self._running.add(joint_id)
        try:
            yield mine
        finally:
            if mine:
                with self._lock:
                    self._running.discard(joint_id)

    def aggregate(self, joint_id: str) -> str:
        """Aggregate and publish ``joint_id`` if every part is in: its state after
        (``published``, ``failed``, or the state it waits in; ``running`` if another
        thread of this process is at it). Blocking (minutes for a million rows): call it
        off the event loop."""
        with self._claim(joint_id) as mine:
            if not mine:
                return "running"
            joint = self.joint(joint_id)
            if joint is None or joint.state != "layout_published" or not joint.complete():
                return "unknown" if joint is None else joint.state
            try:
                table, result_sha256 = self._sum(joint)
            except secagg.AggregationRefused as exc:
                return self._fail(joint, f"refused: {exc}")
            key = hq.generate_key()  # a fresh key per publication (docs/HIDDEN_QUERY.md)
            try:
                hidden = self.prepare_table(key, sealed_rows(joint, table))
            except ValueError as exc:  # HiddenQueryError: a key or row it cannot take
                return self._fail(joint, f"refused: table: {exc}")
            del table
            digest = hidden.digest()
            store.put_table(self.engine, joint_id, digest, hidden.to_bytes(), key)
            state = self._record(joint_id, uc.publish, result_sha256=result_sha256,
                                 table_digest=digest, rows=len(hidden.rows))
            if self.table_digest(joint_id) != digest:  # not recorded: not kept
                store.discard_table(self.engine, self.ledger.log, joint_id, digest)
            return state

    def _sum(self, joint: JointExecution) -> tuple[dict[str, dict[str, int | float]], str]:
        """The joint table and its SHA-256, from the stored parts and layout (each checked
        against what the log recorded); AggregationRefused if they do not make one."""
        keys = store.get_layout(self.engine, joint.id, joint.layout_sha256 or "")
        if keys is None:
            raise secagg.AggregationRefused("missing", "the layout's bytes are not stored")
        parts = store.get_parts(self.engine, joint.id, joint.parts)
        for provider in joint.providers:
            if provider not in parts or parts[provider].digest() != joint.parts[provider]:
                raise secagg.AggregationRefused(
                    "missing", f"the part of provider {provider} recorded as "
                               f"{joint.parts[provider]} is not stored")
        total = secagg.aggregate(parts.values(), joint.id, joint.providers,
                                 joint.layout_sha256)
        product: Product = self._load(Product, joint.product_id)
        kinds = [column_type(product.output_schema, c) for c in joint.value_columns]
        table = joint_table(joint, keys, total, kinds)
        return table, hashlib.sha256(table_json(table)).hexdigest()

    def _fail(self, joint: JointExecution, reason: str) -> str:
        return self._record(joint.id, uc.fail, reason=reason)

    def _record(self, joint_id: str, handler: Callable[..., dict[str, Any]],
                **kwargs: Any) -> str:
        """Record ``handler``'s event as the system actor; the joint's state after (a
        concurrent run that recorded first is no error: its state is the answer)."""
        for _ in range(3):
            try:
                self.ledger.execute(handler, self.actor, joint_id, **kwargs)
                break
            except ConcurrencyConflict:
                continue
            except WrongState:
                break
        joint = self.joint(joint_id)
        return "unknown" if joint is None else joint.state

    # -- the sweep --------------------------------------------------------------------
    def now(self) -> datetime:
        """The ledger's time: the instant its next event will be stamped with."""
        return parse_instant(self.ledger.clock(), "now")

    def sweep(self, *, now: datetime | None = None, aggregate: bool = True) -> dict[str, str]:
        """Fail the open joints past their deadline with a part (or the layout) missing;
        aggregate those whose parts are all in (``aggregate`` False: leave them
        ``complete``, for the caller to run). Each one's state after. ``now`` defaults to the
        ledger's clock, the one its events are stamped with, so a failure is never dated
        before the deadline it cites."""
        at = now or self.now()
        out: dict[str, str] = {}
        for joint_id in self.open_joints():
            if time.monotonic() - self._failed_at.get(joint_id, -RETRY_AFTER_S) < RETRY_AFTER_S:
                continue
            try:
                out[joint_id] = self._sweep_one(joint_id, at, aggregate)
            except Exception as exc:  # one execution's error must not stop the others'
                log.exception("aggregation: the sweep of joint %s failed", joint_id)
                self._errored(joint_id, exc, at)
        return out

    def _errored(self, joint_id: str, exc: Exception, at: datetime | None = None) -> None:
        """Remember that ``joint_id``'s run raised (at ``at``, default now): the sweep waits
        ``RETRY_AFTER_S``; once a run at or past the deadline raised, it fails the joint."""
        self._failed_at[joint_id] = time.monotonic()
        self._errors[joint_id] = (type(exc).__name__, at or self.now())

    def _sweep_one(self, joint_id: str, at: datetime, aggregate: bool) -> str:
        joint = self.joint(joint_id)
        if joint is None or joint.state in uc.TERMINAL:
            return "unknown" if joint is None else joint.state
        deadline = parse_instant(joint.deadline, "deadline")
        if joint.state == "layout_published" and joint.complete():
            error = self._errors.get(joint_id)
            if error is not None and error[1] >= deadline:  # raised past it: no more tries
                return self._fail(joint, f"refused: aggregation: it raised {error[0]} past "
                                         f"the deadline {joint.deadline}")
            return self.aggregate(joint_id) if aggregate else "complete"
        if at < deadline:
            return joint.state
        return self._fail(joint, joint.missing_reason())

    # -- in the API process: off the event loop -------------------------------------
    def on_parts_complete(self, joint_id: str) -> None:
        """The masked-part route's hook (``aggregation/hook.py``): the last part of
        ``joint_id`` is recorded; aggregate it in a worker thread. Returns at once."""
        self._start(joint_id)

    def _start(self, joint_id: str) -> None:
        """Aggregate ``joint_id`` in a worker thread: a task of the running event loop
        (``wait_idle`` awaits it), or a thread of its own when called off any loop."""
        with self._lock:
            if joint_id in self._running:
                return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            threading.Thread(target=self._aggregate_logged, args=(joint_id,),
                             name=f"aggregate-{joint_id}").start()
            return
        task = loop.create_task(asyncio.to_thread(self._aggregate_logged, joint_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _aggregate_logged(self, joint_id: str) -> str:
        try:
            return self.aggregate(joint_id)
        except Exception as exc:  # the sweep tries again later
            log.exception("aggregation: joint %s could not be aggregated", joint_id)
            self._errored(joint_id, exc)
            return "error"

    async def run_sweeps(self) -> None:
        """Sweep every ``sweep_seconds`` until cancelled (the API app's lifespan runs it):
        deadlines in a worker thread, each complete joint's aggregation in its own."""
        while True:
            try:
                states = await asyncio.to_thread(self.sweep, aggregate=False)
            except Exception:  # the read models' database away a moment: next round
                log.exception("aggregation: the sweep failed")
                states = {}
            for joint_id, state in states.items():
                if state == "complete":
                    self._start(joint_id)
            await asyncio.sleep(self.sweep_seconds)

    async def wait_idle(self) -> None:
        """Wait for the aggregations in flight (before the process closes its stores)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- the hidden query -----------------------------------------------------------
    def answer(self, joint_id: str, request: bytes) -> bytes:
        """The node's answer to a blinded request on ``joint_id``'s published table
        (``evaluate`` with its OPRF key). WrongState if no published table is stored."""
        digest = self.table_digest(joint_id)
        key = None if digest is None else store.get_key(self.engine, joint_id, digest)
        if key is None:
            raise WrongState(f"joint {joint_id} has no published table stored")
        return hq.evaluate(key, request)

    def table_bytes(self, joint_id: str, digest: str) -> bytes | None:
        """The sealed table of ``joint_id`` recorded as ``digest`` (what the bank downloads)."""
        return store.get_table(self.engine, joint_id, digest)
