"""A provider's compute node: acts on contract events of the log, runs the product's code on
its PySyft datasite and reports back to the ledger over HTTP (DESIGN.md §5).

Runs in the compute venv only (``compute_nodes/setup-env``). An event is acted on only once
the trust verifier (``compute_nodes/trust.py``) has proven it included in a checkpoint signed
by the log key and co-signed by a quorum of the trusted witnesses. An event not yet under an
anchored checkpoint is answered ``not_anchored``, to be handled again later, never dropped.
What runs comes from proven events too, under the same checkpoint: the order's product,
demander and execution 1's query from its ``order.placed`` (the order view's
``placed_seq``), the code's SHA-256 and the inputs from ``product.registered`` (the product
view's ``registered_seq``); a view that names no such event or differs from it is
``refused`` (handled again later, logged).

The events acted on are those of ``compute_nodes/outcome.py``, for contracts this provider
is a party to and owns inputs of (a trial: owns inputs of). Each party provider runs its
own computation per execution over its own inputs (in product order, bound by position to
the function's parameters): ``compute_nodes/executor.py``; for a joint product
(``product.registered``'s ``joint``) it posts a masked part instead of its rows
(``compute_nodes/joint.py``, with the node key given to :meth:`ComputeNode.use_node_key`). A 404 of the order is "not for
this provider" only once ``GET /health``'s ``projected`` is past the event; before, the
event is ``lagging`` and handled again shortly, never dropped. The feeds
(``compute_nodes/feeds.py``) bring the events: :meth:`ComputeNode.follow_http` and
:meth:`ComputeNode.follow_nats`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from chain.checkpoint import Checkpoint
from client.platform import PlatformError
from compute_nodes import feeds
from compute_nodes.executor import BACKOFF_S, Executor, Job
from compute_nodes.joint import JointNode, JointTerms, PartStore
from compute_nodes.outcome import (
    APPROVED,
    QUERY_SUBMITTED,
    TRIAL,
    WATCHED,
    NodeError,
    Outcome,
)
from compute_nodes.output_contract import OutputContract
from compute_nodes.platform import NodePlatform
from compute_nodes.result_rows import check_query
from compute_nodes.runs import PARALLEL, Runs
from compute_nodes.sandbox import Sandbox
from compute_nodes.trust import Trust, TrustError, Verifier
from core.record import LogEntry

log = logging.getLogger(__name__)


class ComputeNode:
    """One provider's node: its platform credentials, its datasite, the keys it trusts."""

    def __init__(self, platform_url: str, token: str, site: tuple[Any, Any, str],
                 trusted: Trust | dict[str, Any], sandbox: Sandbox, *,
                 http: httpx.Client | None = None, backoff_s: float = BACKOFF_S,
                 parallel: int = PARALLEL) -> None:
        """``site``: the datasite's admin client, the client that submits code requests,
        and its name; ``sandbox``: where the product's code runs (the caller closes it)."""
        self.platform = NodePlatform(platform_url, token, http)
        self.http = self.platform.http
        self.trust = trusted if isinstance(trusted, Trust) else Trust.from_json(trusted)
        self.verifier = Verifier(self.trust, self.platform)
        self.sleep: Callable[[float], Any] = time.sleep
        self.clock: Callable[[], float] = time.monotonic
        # the executor pauses and reads the time through this node's sleep and clock,
        # looked up at each call (a test replaces them)
        self.executor = Executor(self.platform, site, sandbox, backoff_s=backoff_s,
                                 sleep=lambda s: self.sleep(s), clock=lambda: self.clock())
        self.executor.joint = JointNode(self.platform, self.verifier, None, None,
                                        sleep=lambda s: self.sleep(s))
        self.runs = Runs(self.executor, parallel)
        #: the events being handled in threads of their own (``handle(wait=False)``): by
        #: seq; as many threads as executions at once, and as many again for the proofs
        self._handlers = ThreadPoolExecutor(max_workers=2 * parallel,
                                            thread_name_prefix="event")
        self._handling: dict[int, Future[Outcome]] = {}
        #: seq -> the size of the anchored checkpoint an early start was last tried under
        self._early_tried: dict[int, int] = {}
        self._lock = threading.Lock()

    @property
    def participant_id(self) -> str:
        return self.platform.participant_id

    def load(self, dataset_id: str, private_path: str | Path,
             mock_path: str | Path) -> dict[str, Any]:
        """Put a dataset's private data and mock on the datasite; record it on the ledger."""
        return self.executor.load(dataset_id, private_path, mock_path)

    def request_key(self, contract_id: str, execution: int) -> str:
        """The datasite request key of one execution: one request per key, ever."""
        return self.executor.request_key(contract_id, execution)

    def use_node_key(self, key_file: Path, parts_dir: Path) -> None:
        """Take part in joint products: the node's X25519 key (made at enrollment, its
        public half registered by the provider) and where its masked parts are kept."""
        joint = self.executor.joint
        assert joint is not None
        joint.key_file, joint.parts = key_file, PartStore(parts_dir)

    # -- one event ----------------------------------------------------------------------
    def close(self) -> None:
        self._handlers.shutdown(wait=False, cancel_futures=True)
        self.runs.close()

    def handle(self, event: Any, *, wait: bool = True) -> list[Outcome]:
        """Act on one ledger event (a ``GET /ledger/events`` item, canonical bytes or a
        :class:`LogEntry`); one outcome per execution it concerns, none for an event
        type the node does not act on. Never raises for what the platform answers: an
        outcome whose status is in :data:`RETRY_LATER` asks to be handled again later.
        ``wait=False``: the event is handled in a thread of its own (its proofs, then its
        execution), answering ``running`` until that is done, so that the caller hands over
        the next events meanwhile (the feeds and the host's loop do)."""
        try:
            entry = self.verifier.record(event)
        except TrustError as exc:
            seq = event.get("seq") if isinstance(event, dict) else None
            return [Outcome("", "refused", f"not a ledger event: {exc}", seq=seq)]
        if entry.type_name not in WATCHED:
            return []
        return [self._in_background(entry, wait)]

    def _in_background(self, entry: LogEntry, wait: bool) -> Outcome:
        """The event handled in a thread of the node's, once at a time: its outcome when
        that is done (``wait``: once it is), else ``running``."""
        with self._lock:
            future = self._handling.get(entry.seq)
            if future is None:
                future = self._handlers.submit(self._acted, entry)
                self._handling[entry.seq] = future
        if wait:
            future.exception()
        with self._lock:
            if not future.done():
                return Outcome(entry.originator_id, "running", "being handled",
                               seq=entry.seq, event_type=entry.type_name)
            if self._handling.get(entry.seq) is future:
                del self._handling[entry.seq]
        return future.result()

    def finished(self, event: Any, timeout: float = 0.0) -> list[Outcome]:
        """The outcome of an event whose handling ends within ``timeout`` seconds, without
        starting any: ``running`` if it did not end (or never began)."""
        entry = self.verifier.record(event)
        with self._lock:
            future = self._handling.get(entry.seq)
        if future is not None:
            with contextlib.suppress(TimeoutError):
                future.exception(timeout)
        if future is None or not future.done():
            return [Outcome(entry.originator_id, "running", "not ended", seq=entry.seq,
                            event_type=entry.type_name)]
        return self.handle(event, wait=False)

    def _acted(self, entry: LogEntry) -> Outcome:
        contract_id = entry.originator_id
        try:
            outcome = self._event(entry)
        except (NodeError, TrustError) as exc:
            log.error("event %d (%s of %s) refused: %s", entry.seq, entry.type_name,
                      contract_id, exc)
            outcome = Outcome(contract_id, "refused", str(exc))
        except (PlatformError, httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            log.warning("event %d (%s of %s): platform error, to be retried: %s", entry.seq,
                        entry.type_name, contract_id, exc)
            outcome = Outcome(contract_id, "error", f"{type(exc).__name__}: {exc}")
        outcome.seq, outcome.event_type = entry.seq, entry.type_name
        return outcome

    def _event(self, entry: LogEntry) -> Outcome:
        contract_id = entry.originator_id
        execution = _execution(entry)
        order = self.platform.order(contract_id)
        if order is None:
            projected = self.platform.projected()
            if projected < entry.seq:  # the order (or this provider's grant) is not there yet
                return Outcome(contract_id, "lagging", f"the read models are at {projected}, "
                               f"before event {entry.seq}", execution)
            return Outcome(contract_id, "ignored", "not a party to this contract", execution)
        # a trial may come before the contract is proposed: input owners run it
        if execution > 0 and self.participant_id not in order.get("required_approvals", []):
            return Outcome(contract_id, "ignored", "not a party to this contract", execution)
        product = self.platform.product(order["product_id"])
        inputs = self._my_inputs(product.get("inputs") or [])
        if not inputs:
            return Outcome(contract_id, "ignored", "no input of the product is this "
                           "provider's", execution)
        checkpoint = self.verifier.anchored(entry.seq)
        if checkpoint is None:
            self._start_early(entry, execution, order, product, inputs)
            return Outcome(contract_id, "not_anchored", f"event {entry.seq} is not yet under "
                           "an anchored checkpoint", execution)
        self.verifier.included(entry, checkpoint)
        self._early_tried.pop(entry.seq, None)
        job = self._job(entry, execution, order, product, inputs, checkpoint)
        return self.runs.run(job)

    def _start_early(self, entry: LogEntry, execution: int, order: dict[str, Any],
                     product: dict[str, Any], inputs: list[str]) -> None:
        """Start the execution while its event waits for an anchored checkpoint, when
        everything else it depends on (the order's order.placed, the product's
        product.registered, the contract's contract.proposed) is proven under the latest
        anchored one: only the event itself is not proven yet, and nothing is reported
        before it is (:class:`~compute_nodes.runs.Runs`). The ledger checks the request
        on its own store."""
        latest = self.verifier.latest
        if latest is None or self.runs.in_flight((entry.originator_id, execution)) \
                or self._early_tried.get(entry.seq) == latest.size:
            return  # each try proves events: once per event and anchored checkpoint
        self._early_tried[entry.seq] = latest.size
        try:
            self.runs.start(self._job(entry, execution, order, product, inputs, latest))
        except (NodeError, TrustError, KeyError, TypeError, ValueError) as exc:
            log.debug("event %d: no early start: %s", entry.seq, exc)

    def _job(self, entry: LogEntry, execution: int, order: dict[str, Any],
             product: dict[str, Any], inputs: list[str], checkpoint: Checkpoint) -> Job:
        """What runs, from proven events rather than the views: the order (its product,
        demander and execution 1's query) from order.placed, the code's SHA-256 and the
        inputs from product.registered, both under the same anchored checkpoint."""
        contract_id = entry.originator_id
        placed = self.verifier.proven(order, "placed_seq", "order.placed", contract_id,
                                      checkpoint)
        self.verifier.agree(order, placed, ("product_id", "demander_id"), "order")
        registered = self.verifier.proven(product, "registered_seq", "product.registered",
                                          str(order["product_id"]), checkpoint)
        if str(product.get("id", order["product_id"])) != registered.originator_id:
            raise TrustError(f"the product view is not product {registered.originator_id}")
        proven = registered.payload()
        proven_inputs = proven.get("inputs")
        if not isinstance(proven_inputs, list) or self._my_inputs(proven_inputs) != inputs:
            raise TrustError(f"the product view's inputs are not those of product.registered "
                             f"(event {registered.seq})")
        # the trial runs on mock rows, which hold none of the real keys a query names
        query = None if execution == 0 else _query(entry, order, placed)
        policy = joint = None
        columns = _columns(proven_inputs, inputs)
        if execution > 0:  # the contract's usage policy, from its proven contract.proposed
            proposed = self.verifier.proven(order, "proposed_seq", "contract.proposed",
                                            contract_id, checkpoint)
            policy = proposed.payload().get("usage_policy")
            columns = allowed_columns(columns, inputs, (policy or {}).get("allowed_fields"),
                                      self._granted(proven, checkpoint))
            # a joint product (white paper 6.1): a masked part, not this provider's rows
            joint = JointTerms.of(proven, proposed.payload())
        return Job(contract_id, execution, product.get("code"),
                   str(proven.get("code_sha256") or "").lower(), registered.seq, inputs,
                   query, OutputContract.of(proven, policy), columns, joint)

    def _granted(self, registered: dict[str, Any], checkpoint: Checkpoint
                 ) -> dict[str, set[str]]:
        """The fields this provider granted of each of its datasets, from the proven
        ``authorization.granted`` of each authorization the product names that is this
        provider's (another provider's grants cover other datasets)."""
        granted: dict[str, set[str]] = {}
        for auth_id in registered.get("authorization_ids") or []:
            view = self.platform.authorization(str(auth_id))
            if view is None or view.get("provider_id") != self.participant_id:
                continue
            event = self.verifier.proven(view, "granted_seq", "authorization.granted",
                                         str(auth_id), checkpoint)
            payload = event.payload()
            if payload.get("provider_id") != self.participant_id:
                raise TrustError(f"authorization.granted (event {event.seq}) is not "
                                 f"provider {self.participant_id}'s")
            for item in payload.get("datasets") or []:
                granted.setdefault(str(item["dataset_id"]), set()).update(
                    str(f) for f in item["fields"])
        return granted

    def _my_inputs(self, items: list[Any]) -> list[str]:
        """This provider's input datasets among a product's ``inputs``, in product order."""
        mine = []
        for item in items:
            dataset_id = str(item["dataset_id"])
            owner = item.get("owner_id") or item.get("provider_id") or \
                self.platform.dataset_owner(dataset_id)
            if owner == self.participant_id:
                mine.append(dataset_id)
        return mine

    # -- feeding it ---------------------------------------------------------------------
    def settle(self, event: Any, stop: threading.Event | None = None,
               retry_s: float = feeds.RETRY_S) -> list[Outcome] | None:
        """Handle an event until its outcome is settled (:func:`feeds.settle`)."""
        return feeds.settle(self, event, stop, retry_s)

    def follow_http(self, position: str | Path | feeds.Position | None = None, *,
                    stop: threading.Event | None = None, poll_s: float = 2.0,
                    once: bool = False, page: int = feeds.PAGE, retry_s: float = feeds.RETRY_S,
                    on_outcome: Callable[[Outcome], Any] | None = None) -> int:
        """Follow ``GET /ledger/events`` from ``position`` (:func:`feeds.follow_http`)."""
        return feeds.follow_http(self, position, stop=stop, poll_s=poll_s, once=once,
                                 page=page, retry_s=retry_s, on_outcome=on_outcome)

    def follow_nats(self, settings: feeds.JetStreamSettings, *,
                    stop: threading.Event | None = None,
                    on_outcome: Callable[[Outcome], Any] | None = None) -> int:
        """Follow a durable JetStream consumer (:func:`feeds.follow_nats`)."""
        return feeds.follow_nats(self, settings, stop=stop, on_outcome=on_outcome)


def _execution(entry: LogEntry) -> int:
    """The execution an event starts: 0 the trial (试用, the code on this provider's mock
    rows), 1 the approved contract, n >= 2 a submitted query."""
    if entry.type_name == TRIAL:
        return 0
    if entry.type_name == APPROVED:
        return 1
    execution = entry.payload().get("execution")
    if isinstance(execution, bool) or not isinstance(execution, int) or execution < 2:
        raise NodeError(f"event {entry.seq}: execution {execution!r} is not >= 2")
    return execution


def _columns(items: list[Any], inputs: list[str]) -> tuple[tuple[str, ...], ...]:
    """The fields a product's ``inputs`` name of each of ``inputs``, in that order."""
    named = {str(i["dataset_id"]): tuple(str(f) for f in i["fields"]) for i in items}
    return tuple(named[d] for d in inputs)


def allowed_columns(columns: tuple[tuple[str, ...], ...], inputs: list[str],
                    allowed: Any, granted: dict[str, set[str]]) -> tuple[tuple[str, ...], ...]:
    """The columns the code is handed of each input: those the product names, cut to the
    contract's ``allowed_fields`` (if it sets them) and to the fields this provider's
    proven authorizations grant of that dataset (none granted: none handed over)."""
    keep = None if allowed is None else {str(a) for a in allowed}
    return tuple(tuple(c for c in names if (keep is None or c in keep)
                       and c in granted.get(dataset_id, set()))
                 for names, dataset_id in zip(columns, inputs, strict=True))


def _query(entry: LogEntry, order: dict[str, Any],
           placed: LogEntry) -> dict[str, Any] | None:
    """The execution's query, from a proven event: the query_submitted event itself, or
    for execution 1 the order's ``order.placed`` (the view's must agree with it)."""
    if entry.type_name == QUERY_SUBMITTED:
        return check_query(entry.payload().get("query"))
    proven = check_query(placed.payload().get("query"))
    if check_query(order.get("query")) != proven:
        raise TrustError(f"the order's query differs from its order.placed (event "
                         f"{placed.seq})")
    return proven
