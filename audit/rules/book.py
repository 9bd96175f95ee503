"""The rule book: the business rules replayed over the log, one event at a time.

``RuleBook.feed(entry)`` judges one stored event (``core.record.LogEntry``, its raw payload:
never the domain's classes) against the ledger as it stood before it, then moves past it,
and returns the findings. The findings on a ``computation.requested`` are held until that
computation's next event (a request the ledger refused is recorded with its failure and
broke no rule), so ``feed`` may return a finding for an earlier seq; ``finish()`` returns
those still held at the end of the log (and what the log's last command had to write with
its events: ``joint.py``). Memory grows with the aggregates (a few fields each)
and the signatures seen (16 bytes each), never with the events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from audit.rules import authority, execution
from audit.rules.joint import JointRules
from audit.rules.masking import MaskingRules
from audit.rules.model import Ev, Finding, Malformed, State
from audit.rules.privacy import PrivacyRules
from audit.rules.signatures import Signatures
from core.canonical import CanonicalEncodingError
from core.record import LogEntry

CHECKS = {**authority.CHECKS, **execution.CHECKS}
assert not set(authority.CHECKS) & set(execution.CHECKS), "an event type checked twice"


class RuleBook:
    """The business rules, replayed from the events alone (``audit/rules/``)."""

    def __init__(self, *, require_signatures: bool = False) -> None:
        self.state = State()
        self.signatures = Signatures(require_signatures)
        self.joints = JointRules()
        self.privacy = PrivacyRules()
        self.masking = MaskingRules()
        self.events = 0

    def feed(self, entry: LogEntry, payload: dict[str, Any] | None = None) -> list[Finding]:
        """The findings on ``entry`` (and on a held request it settles), in seq order;
        ``payload``: the entry's payload, when the caller has decoded it (never changed)."""
        self.events += 1
        try:
            ev = Ev.of(entry, payload)
        except (Malformed, CanonicalEncodingError, UnicodeDecodeError, ValueError) as exc:
            return [Finding(entry.seq, "event_shape", f"{entry.type_name}: an actor and an "
                            "instant", str(exc))]
        ended = self.joints.ended_by(self.state, ev)  # what one command had to write
        try:
            found = [*ended, *authority.actor_findings(self.state, ev),
                     *authority.creation_findings(self.state, ev)]
            check = CHECKS.get(ev.type)
            if check is not None:
                found += check(self.state, ev)
            found += self.signatures.findings(self.state, ev)
            found += self.joints.findings(self.state, ev)
            found += self.privacy.findings(self.state, ev)
            found += self.masking.findings(self.state, ev)
            self.state.apply(ev)
        except (Malformed, KeyError, TypeError, AttributeError) as exc:
            return [*ended, Finding(entry.seq, "event_shape", f"{entry.type_name} as the "
                                    "catalogue describes it", f"{type(exc).__name__}: {exc}")]
        if ev.type == "computation.requested" and ev.id in self.state.computations:
            held = [f for f in found if f.seq == ev.seq]
            self.state.computations[ev.id].held = held
            found = [f for f in found if f.seq != ev.seq]
        return sorted(found, key=lambda f: f.seq)

    def finish(self) -> list[Finding]:
        """The findings still held at the end of the log: requests that broke a rule and
        were never refused."""
        out = [f for run in self.state.computations.values() for f in run.held]
        out += self.joints.finish(self.state)
        for run in self.state.computations.values():
            run.held = []
        return sorted(out, key=lambda f: f.seq)

    def run(self, entries: Iterable[LogEntry]) -> list[Finding]:
        """Every finding of a whole log (``feed`` each entry, then ``finish``)."""
        out = [f for entry in entries for f in self.feed(entry)]
        return sorted(out + self.finish(), key=lambda f: f.seq)
