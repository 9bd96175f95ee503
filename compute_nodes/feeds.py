"""The feeds that bring the log's events to a compute node, each handled until settled.

- :func:`follow_http` polls ``GET /ledger/events`` from a position kept in a JSON file
  (:class:`Position`), written once an event's outcome is on the ledger.
- :func:`follow_nats` follows a durable JetStream pull consumer (``compute_nodes/jetstream.py``)
  filtered to the event types the node acts on, acknowledging a message only once its
  outcome is on the ledger. The stream carries every tenant's events: a message is only a
  notification of its seq (:func:`message_seq`), the node acts on the event as
  ``GET /ledger/events/{seq}`` shows it to this provider. A 404 there is "not for this
  provider" only once ``GET /health``'s ``projected`` is past the event; before, the event
  is asked for again shortly, never dropped.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from client.platform import PlatformError
from compute_nodes.outcome import SOON, WATCHED, Outcome, settled
from core.files import write_private
from core.subjects import DEFAULT_PREFIX, DEFAULT_STREAM, HEADER_SEQ, subject_for

if TYPE_CHECKING:
    from compute_nodes.node import ComputeNode

log = logging.getLogger(__name__)

PAGE = 500  # events per GET /ledger/events
RETRY_S = 1.0  # first pause before handling an unsettled event again; doubles up to MAX
MAX_RETRY_S = 30.0
#: pause before looking again for an anchored checkpoint covering an event: checkpoints are
#: cut every few seconds, so a short fixed pause (not a doubling one) starts the run soon
#: after the event is anchored; each look is one small GET
ANCHOR_RETRY_S = 0.25
#: pause before looking again at an event whose execution runs in the node's threads
RUNNING_RETRY_S = 0.05
#: when stopping, how long the events still being handled are given to end (one whose
#: result is being posted ends in well under this; a longer one is left unsettled)
FINISH_GRACE_S = 5.0

OnOutcome = Callable[[Outcome], Any] | None


def _tell(outcomes: Sequence[Outcome], on_outcome: OnOutcome) -> None:
    if on_outcome is not None:
        for o in outcomes:
            on_outcome(o)


def settle(node: ComputeNode, event: Any, stop: threading.Event | None = None,
           retry_s: float = RETRY_S) -> list[Outcome] | None:
    """Handle an event until its outcome is settled; None if ``stop`` was set first.

    Waiting for an anchored checkpoint is retried every ``ANCHOR_RETRY_S`` (at most
    ``retry_s``); anything else (a refused check, a platform error) with pauses
    doubling from ``retry_s`` up to MAX_RETRY_S."""
    pause = retry_s
    stop = stop or threading.Event()
    while True:
        outcomes = node.handle(event)
        if settled(outcomes):
            return outcomes
        anchoring = all(o.status in SOON or o.settled for o in outcomes)
        wait = min(ANCHOR_RETRY_S, retry_s) if anchoring else pause
        for o in outcomes:
            log.log(logging.DEBUG if anchoring else logging.INFO,
                    "event %s of %s: %s (%s), again in %.2f s", o.seq, o.contract_id,
                    o.status, o.detail, wait)
        if stop.wait(wait):
            return None
        if not anchoring:
            pause = min(pause * 2, MAX_RETRY_S)


# -- HTTP -------------------------------------------------------------------------------------


class Position:
    """The last seq handled, in a small JSON file ``{"seq": n}`` (written atomically)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.seq = 0
        if self.path is not None and self.path.exists():
            self.seq = int(json.loads(self.path.read_text(encoding="utf-8")).get("seq", 0))

    def save(self, seq: int) -> None:
        self.seq = max(self.seq, seq)
        if self.path is None:
            return
        write_private(self.path, json.dumps({"seq": self.seq}))


def follow_http(node: ComputeNode, position: str | Path | Position | None = None, *,
                stop: threading.Event | None = None, poll_s: float = 2.0,
                once: bool = False, page: int = PAGE, retry_s: float = RETRY_S,
                on_outcome: OnOutcome = None) -> int:
    """Follow ``GET /ledger/events`` from ``position`` (a JSON file; None: from the
    start, kept in memory) and handle each event. Events are handled as they come, without
    waiting for the ones before to settle (their executions run concurrently, up to the
    node's ``parallel``); an unsettled event is handled again (shortly while it waits for
    its checkpoint or runs; with pauses doubling from ``retry_s`` after a refused check or
    a platform error). The position moves past an event only once it and every event
    before it are settled on the ledger. A page that leaves the scan behind the log's
    ``head`` is followed by the next at once (a page may hold nothing this provider sees);
    ``poll_s`` is the pause once caught up. Runs until ``stop`` is set (or, with ``once``,
    until it has caught up with the head and settled everything); returns the
    position."""
    pos = position if isinstance(position, Position) else Position(position)
    stop = stop or threading.Event()
    follower = HttpFollower(node, pos, retry_s, on_outcome)
    pause = retry_s
    while not stop.is_set():
        try:
            state = follower.step(stop, page)
        except (PlatformError, httpx.HTTPError, ValueError) as exc:
            log.warning("GET /ledger/events after %d: %s; again in %.1f s", follower.scan,
                        exc, pause)
            stop.wait(pause)
            pause = min(pause * 2, MAX_RETRY_S)
            continue
        pause = retry_s
        if state == IDLE and once:
            return pos.seq
        if state != MORE:
            stop.wait(follower.pending.due_in() if state == WAITING else poll_s)
    follower.pending.finish()
    follower.pos.save(follower.pending.first() - 1 if follower.pending else follower.scan)
    return pos.seq


class _Unsettled:
    """Events handled but not settled yet (seq -> the event, when to look again, the pause
    after that, what to do once it settles): shortly while an event waits for its
    checkpoint or runs; with pauses doubling from ``retry_s`` after a refused check or a
    platform error."""

    def __init__(self, node: ComputeNode, retry_s: float, on_outcome: OnOutcome) -> None:
        self.node, self.retry_s, self.on_outcome = node, retry_s, on_outcome
        self.items: dict[int, tuple[dict[str, Any], float, float, Callable[[], Any]]] = {}

    def __bool__(self) -> bool:
        return bool(self.items)

    def first(self) -> int:
        return min(self.items)

    def look(self, event: dict[str, Any], done: Callable[[], Any] = lambda: None) -> None:
        """Handle one event without waiting for its execution; keep it if unsettled,
        else tell its outcomes and call ``done``."""
        seq = int(event["seq"])
        outcomes = self.node.handle(event, wait=False)
        if settled(outcomes):
            self.items.pop(seq, None)
            _tell(outcomes, self.on_outcome)
            done()
            return
        soon = all(o.status in SOON or o.settled for o in outcomes)
        pause = self.items[seq][2] if seq in self.items else self.retry_s
        wait = min(ANCHOR_RETRY_S, self.retry_s) if soon else pause
        if all(o.status == "running" or o.settled for o in outcomes):
            wait = RUNNING_RETRY_S  # a look at a running execution costs nothing
        self.items[seq] = (event, time.monotonic() + wait,
                           pause if soon else min(pause * 2, MAX_RETRY_S), done)
        for o in outcomes:
            log.log(logging.DEBUG if soon else logging.INFO, "event %d of %s: %s (%s), "
                    "again in %.2f s", seq, o.contract_id, o.status, o.detail, wait)

    def due_in(self) -> float:
        """Seconds until the next event is due to be looked at again (0 if one is)."""
        if not self.items:
            return ANCHOR_RETRY_S
        return max(0.0, min(at for _, at, _, _ in self.items.values()) - time.monotonic())

    def finish(self, grace_s: float = FINISH_GRACE_S) -> None:
        """Tell the outcomes of the events whose handling ends within ``grace_s`` (when
        stopping): none is started again."""
        deadline = time.monotonic() + grace_s
        for seq in sorted(self.items):
            event, _, _, done = self.items[seq]
            outcomes = self.node.finished(event, max(0.0, deadline - time.monotonic()))
            if settled(outcomes):
                self.items.pop(seq, None)
                _tell(outcomes, self.on_outcome)
                done()

    def again(self, stop: threading.Event) -> None:
        """Handle again the events whose pause is over, in log order."""
        now = time.monotonic()
        for seq in sorted(self.items):
            event, at, _, done = self.items[seq]
            if at <= now and not stop.is_set():
                self.look(event, done)


#: what :meth:`HttpFollower.step` found: more of the log at once; events being settled;
#: nothing to do until the log grows
MORE, WAITING, IDLE = "more", "waiting", "idle"


class HttpFollower:
    """Follows ``GET /ledger/events`` a page at a time (:meth:`step`): how far the log was
    scanned, the unsettled events, and the position (moved past an event only once it
    and every event before it are settled). Used by :func:`follow_http` and by the
    embedded host's node processes."""

    def __init__(self, node: ComputeNode, pos: Position, retry_s: float = RETRY_S,
                 on_outcome: OnOutcome = None) -> None:
        self.node, self.pos = node, pos
        self.scan = pos.seq
        self.pending = _Unsettled(node, retry_s, on_outcome)

    def step(self, stop: threading.Event, page: int = PAGE) -> str:
        """Handle again the unsettled events whose pause is over, then the next page; what
        to do next (:data:`MORE`, :data:`WAITING` or :data:`IDLE`). Raises what the
        platform's answer raises."""
        self.pending.again(stop)
        answer = self.node.platform.events(self.scan, page)
        before = self.scan
        events = answer.get("events") or []
        for event in events:
            if event.get("type") in WATCHED:
                self.pending.look(event)
            self.scan = max(self.scan, int(event["seq"]))
        self.scan = max(self.scan, int(answer.get("next_after") or self.scan))
        self.pos.save(self.pending.first() - 1 if self.pending else self.scan)
        head = answer.get("head")
        caught_up = self.scan >= head if isinstance(head, int) else not events
        if self.pending:
            return MORE if not caught_up and self.scan != before else WAITING
        if caught_up:
            return IDLE
        # behind the head but nothing scanned: the platform lists a participant only the
        # events its read models have reached; they catch up within moments
        return WAITING if self.scan == before else MORE


# -- JetStream --------------------------------------------------------------------------------


@dataclass(frozen=True)
class JetStreamSettings:
    """Where and how a node follows JetStream."""

    url: str
    stream: str = DEFAULT_STREAM
    durable: str | None = None  # the consumer's name; None: compute-<participant id>
    subject_prefix: str = DEFAULT_PREFIX
    batch: int = 1
    fetch_timeout: float = 1.0  # one pull's wait
    ack_wait: float = 300.0
    #: stop once this many seconds pass with no message (then a NATS error is raised, not
    #: retried); None: run until stopped
    idle_timeout: float | None = None
    retry_s: float = RETRY_S


def follow_nats(node: ComputeNode, settings: JetStreamSettings, *,
                stop: threading.Event | None = None, on_outcome: OnOutcome = None) -> int:
    """Follow a durable JetStream pull consumer on the settings' stream, filtered to the
    contract events the node acts on, and handle each in order, as
    ``GET /ledger/events/{seq}`` shows it (the message is only a notification); a message
    is acknowledged only once its outcome is settled on the ledger (an unsettled one is
    handled again, see :func:`settle`). NATS or the stream being unavailable is logged and
    retried with backoff. Runs until ``stop`` is set or ``idle_timeout`` seconds pass with
    no message; returns the last seq handled (0 if none)."""
    return _JetStreamFollow(node, settings, stop or threading.Event(), on_outcome).run()


class _JetStreamFollow:
    """One :func:`follow_nats`: the last seq handled and since when no message came."""

    def __init__(self, node: ComputeNode, settings: JetStreamSettings,
                 stop: threading.Event, on_outcome: OnOutcome) -> None:
        self.node, self.settings, self.stop, self.on_outcome = node, settings, stop, on_outcome
        self.last = 0
        self.idle_since = time.monotonic()

    def idle(self) -> bool:
        timeout = self.settings.idle_timeout
        return timeout is not None and time.monotonic() - self.idle_since > timeout

    def run(self) -> int:
        import nats.errors

        from compute_nodes.jetstream import Follower, JetStreamError

        s = self.settings
        subjects = [subject_for(s.subject_prefix, t) for t in WATCHED]
        name = s.durable or f"compute-{self.node.participant_id}"
        pause = s.retry_s
        while not self.stop.is_set():
            try:
                with Follower(s.url, s.stream, name, subjects, batch=s.batch,
                              ack_wait=s.ack_wait) as follower:
                    pause = s.retry_s
                    self.drain(follower)
                    return self.last
            except (JetStreamError, nats.errors.Error, OSError, TimeoutError) as exc:
                log.warning("JetStream %s on %s: %s: %s; again in %.1f s", s.stream, s.url,
                            type(exc).__name__, exc, pause)
                if self.idle():
                    raise
                self.stop.wait(pause)
                pause = min(pause * 2, MAX_RETRY_S)
        return self.last

    def drain(self, follower: Any) -> None:
        """Fetch and handle messages until stopped or idle. A message is acknowledged once
        its event is settled; the next ones are fetched and handled meanwhile (their
        executions run concurrently); an unsettled one is handled again (an
        unacknowledged one also comes again after ``ack_wait``). Once stopped, the events
        still being handled are given :data:`FINISH_GRACE_S` to end and be told."""
        pending = _Unsettled(self.node, self.settings.retry_s, self.on_outcome)
        while not self.stop.is_set() and not (self.idle() and not pending):
            pending.again(self.stop)
            wait = self.settings.fetch_timeout
            messages = follower.fetch(max(0.01, min(wait, pending.due_in())) if pending
                                      else wait)
            if messages:
                self.idle_since = time.monotonic()
            for msg in messages:
                seq = message_seq(msg)
                event = {} if seq is None else _event_view(self.node, seq, self.stop,
                                                           self.settings.retry_s)
                if event is None:  # stopped
                    break
                if seq is None:
                    log.error("message on %s names no ledger seq: acknowledged and skipped",
                              msg.subject)
                if not event or event.get("type") not in WATCHED:
                    self._acked(follower, msg, seq or 0)
                    continue
                if seq not in pending.items:  # not a redelivery of one in hand
                    pending.look(event, functools.partial(self._acked, follower, msg, seq))
        pending.finish()

    def _acked(self, follower: Any, msg: Any, seq: int) -> None:
        follower.ack(msg)
        self.last = max(self.last, seq)


def consume(node: ComputeNode, msg: Any, follower: Any, stop: threading.Event,
            retry_s: float, on_outcome: OnOutcome) -> int | None:
    """Handle one message until settled, then acknowledge it; its seq (None: stopped).

    A message is only a notification: the stream carries every tenant's events, so the
    node takes the message's seq and acts on ``GET /ledger/events/{seq}`` as the
    platform shows it to this provider (an event it may not see is acknowledged and
    skipped), never on the message's own bytes."""
    seq = message_seq(msg)
    if seq is None:
        log.error("message on %s names no ledger seq: acknowledged and skipped",
                  msg.subject)
        follower.ack(msg)
        return 0
    event = _event_view(node, seq, stop, retry_s)
    if event is None:
        return None
    outcomes = (settle(node, event, stop, retry_s)
                if event and event.get("type") in WATCHED else [])
    if outcomes is None:
        return None
    _tell(outcomes, on_outcome)
    follower.ack(msg)
    return seq


def _event_view(node: ComputeNode, seq: int, stop: threading.Event,
                retry_s: float) -> dict[str, Any] | None:
    """``GET /ledger/events/{seq}`` with the node's token, asked again until it answers;
    ``{}`` if this provider may not see the event (404 once the read models are past
    ``seq``), None if ``stop`` was set first."""
    pause = retry_s
    while True:
        try:
            r = node.platform.call("GET", f"/ledger/events/{seq}", expect=(200, 404))
            if r.status_code == 200:
                view = r.json()
                if not isinstance(view, dict) or view.get("seq") != seq:
                    raise ValueError(f"GET /ledger/events/{seq} answered another event")
                return view
            projected = node.platform.projected()
            if projected >= seq:
                log.debug("event %d is not visible to this provider: skipped", seq)
                return {}
            wait = min(ANCHOR_RETRY_S, retry_s)
            log.debug("event %d: the read models are at %d; again in %.2f s", seq,
                      projected, wait)
        except (PlatformError, httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            wait = pause
            pause = min(pause * 2, MAX_RETRY_S)
            log.warning("GET /ledger/events/%d: %s; again in %.1f s", seq, exc, wait)
        if stop.wait(wait):
            return None


def message_seq(msg: Any) -> int | None:
    """The ledger seq a JetStream message notifies of: the ``seq`` of its canonical bytes,
    else its ``Dataledger-Seq`` header; None if it names none."""
    try:
        seq = json.loads(bytes(msg.data).decode("utf-8")).get("seq")
    except (ValueError, AttributeError, TypeError):
        seq = None
    if seq is None:
        headers = getattr(msg, "headers", None) or {}
        seq = headers.get(HEADER_SEQ)
        try:
            seq = int(seq) if seq is not None else None
        except ValueError:
            seq = None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return None
    return seq
