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
    start, kept in memory) and handle each event in order. The position moves past an
    event only once its outcome is settled on the ledger. A page that leaves the position
    behind the log's ``head`` is followed by the next at once (a page may hold nothing
    this provider sees); ``poll_s`` is the pause once caught up. Runs until ``stop`` is
    set (or, with ``once``, until it has caught up with the head); returns the
    position."""
    pos = position if isinstance(position, Position) else Position(position)
    stop = stop or threading.Event()
    pause = retry_s
    while not stop.is_set():
        try:
            answer = node.platform.events(pos.seq, page)
        except (PlatformError, httpx.HTTPError, ValueError) as exc:
            log.warning("GET /ledger/events after %d: %s; again in %.1f s", pos.seq, exc,
                        pause)
            stop.wait(pause)
            pause = min(pause * 2, MAX_RETRY_S)
            continue
        pause = retry_s
        before = pos.seq
        events = answer.get("events") or []
        if not _handle_page(node, events, pos, stop, retry_s, on_outcome):
            return pos.seq
        pos.save(max(pos.seq, int(answer.get("next_after") or pos.seq)))
        head = answer.get("head")
        if pos.seq >= head if isinstance(head, int) else not events:  # caught up
            if once:
                return pos.seq
            stop.wait(poll_s)
        elif pos.seq == before:
            # behind the head but nothing scanned: the platform lists a participant only
            # the events its read models have reached; they catch up within moments
            stop.wait(min(poll_s, ANCHOR_RETRY_S))
        # else: more of the log is there (a page may show nothing to this provider and
        # still move on): the next page at once
    return pos.seq


def _handle_page(node: ComputeNode, events: list[Any], pos: Position, stop: threading.Event,
                 retry_s: float, on_outcome: OnOutcome) -> bool:
    """Start every watched event of a page (their executions run concurrently, up to the
    node's ``parallel``), then settle each in order, moving ``pos`` past it; False if
    ``stop`` was set first."""
    first = {int(e["seq"]): node.handle(e, wait=False)
             for e in events if e.get("type") in WATCHED}
    for event in events:
        seq = int(event["seq"])
        if seq in first:
            outcomes: list[Outcome] | None = first[seq]
            if not settled(first[seq]):
                outcomes = settle(node, event, stop, retry_s)
            if outcomes is None:
                return False
            _tell(outcomes, on_outcome)
            pos.save(seq)
        else:
            pos.seq = max(pos.seq, seq)
    return True


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
        """Fetch and handle messages until stopped, idle, or a message is left
        unacknowledged (it comes again next time)."""
        while not self.stop.is_set() and not self.idle():
            messages = follower.fetch(self.settings.fetch_timeout)
            if messages:
                self.idle_since = time.monotonic()
            for msg in messages:
                seq = consume(self.node, msg, follower, self.stop, self.settings.retry_s,
                              self.on_outcome)
                if seq is None:
                    return
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
