"""What ``audit replay`` found: the numbered steps, the first failure, and the log's shape.

The report is plain data, so the same object gives the summary table, ``--json`` (the
full machine-readable report, :meth:`Report.to_json`) and ``--html`` (audit/html.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FORMAT = "dataledger-audit-report/1"

PASSED, FAILED, SKIPPED, STOPPED = "passed", "failed", "skipped", "stopped"
"""A step's status: held everywhere; failed (the first failure); not run, with the reason;
checked up to the first failure of another step, then stopped with the walk."""


@dataclass(frozen=True)
class StepInfo:
    """One numbered step of the replay: its number, short name and what it checks."""

    number: int
    name: str
    checks: str


STEPS: tuple[StepInfo, ...] = (
    StepInfo(1, "records", "seqs gap-free from 1, each line exactly a canonical record"),
    StepInfo(2, "tree", "every leaf and every checkpoint root recomputed from the events"),
    StepInfo(3, "signatures", "each checkpoint's log signature; the witnesses' co-signatures, "
             "their quorum and aggregate; every event covered by an anchored checkpoint"),
    StepInfo(4, "consistency", "consecutive checkpoints grow, in time order, each linking "
             "the one before (prev); each event's at no later than the checkpoint over it, "
             "never back by more than the tolerance"),
    StepInfo(5, "index", "each checkpoint's index line recomputed from the events; once "
             "one carried it, every later one"),
    StepInfo(6, "business rules", "the rule book replayed from the events alone"),
    StepInfo(7, "read models", "the live read models equal those rebuilt from the log"),
)
STEP = {s.number: s for s in STEPS}

UNWITNESSED = ("UNWITNESSED: the trust file's quorum is 0, so no witness vouches for this "
               "log: the operator alone could have rewritten and re-signed every event and "
               "checkpoint, and this replay would not tell")
"""The note a replay against a trust file of quorum 0 starts with (``--accept-unwitnessed``)."""


@dataclass(frozen=True)
class Failure:
    """The first thing that does not hold: the step, the seq (None when no single event is
    to blame), where, what, what was expected and what was found."""

    step: int
    seq: int | None
    where: str
    what: str
    expected: str = ""
    found: str = ""

    def line(self) -> str:
        """One line for a terminal: ``step 2 (tree) at seq 7: ...``."""
        at = f" at seq {self.seq}" if self.seq is not None else ""
        where = "" if self.where == f"seq {self.seq}" else f", {self.where}"
        evidence = (f" (expected {self.expected}, found {self.found})"
                    if self.expected or self.found else "")
        return f"step {self.step} ({STEP[self.step].name}){at}{where}: {self.what}{evidence}"

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "step_name": STEP[self.step].name, "seq": self.seq,
                "where": self.where, "what": self.what, "expected": self.expected,
                "found": self.found}


@dataclass
class StepResult:
    """How one step went: its status, how many things it checked, and why it was skipped."""

    number: int
    status: str = PASSED
    checked: int = 0
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        info = STEP[self.number]
        return {"number": self.number, "name": info.name, "checks": info.checks,
                "status": self.status, "checked": self.checked, "reason": self.reason}


@dataclass(frozen=True)
class CheckpointSeen:
    """A checkpoint as the replay met it: its size, signed time, anchoring, witnesses."""

    size: int
    time: str | None
    anchored: bool
    signers: int
    index: bool


@dataclass
class Report:
    """The whole outcome of one replay."""

    source: str
    trust: str
    steps: dict[int, StepResult] = field(
        default_factory=lambda: {s.number: StepResult(s.number) for s in STEPS})
    failure: Failure | None = None
    events: int = 0
    per_type: Counter[str] = field(default_factory=Counter)
    per_day: Counter[str] = field(default_factory=Counter)
    checkpoints: list[CheckpointSeen] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started_at: str = ""
    seconds: float = 0.0
    merkle_core: str = ""
    #: the trust file's quorum is 0: no witness vouches for the log (:data:`UNWITNESSED`)
    unwitnessed: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None

    def skip(self, number: int, reason: str) -> None:
        """Mark step ``number`` as not run, saying why."""
        self.steps[number].status, self.steps[number].reason = SKIPPED, reason

    def fail(self, failure: Failure, *, walked: bool = False) -> None:
        """Record the first failure (later ones are ignored); unless the walk over the
        events was ``walked`` to its end, the steps that held so far stopped with it."""
        if self.failure is not None:
            return
        self.failure = failure
        for result in self.steps.values():
            if result.status == PASSED and not walked:
                result.status = STOPPED
                result.reason = f"checked up to the failure at step {failure.step}"
        self.steps[failure.step].status = FAILED
        self.steps[failure.step].reason = failure.what

    def to_json(self) -> dict[str, Any]:
        """The full machine-readable report (``--json``)."""
        anchored = [c for c in self.checkpoints if c.anchored]
        return {
            "format": FORMAT, "ok": self.ok, "unwitnessed": self.unwitnessed,
            "source": self.source, "trust": self.trust,
            "started_at": self.started_at, "seconds": round(self.seconds, 3),
            "merkle_core": self.merkle_core,
            "steps": [self.steps[s.number].to_json() for s in STEPS],
            "failure": None if self.failure is None else self.failure.to_json(),
            "events": self.events,
            "events_per_type": dict(sorted(self.per_type.items())),
            "events_per_day": dict(sorted(self.per_day.items())),
            "checkpoints": {
                "count": len(self.checkpoints), "anchored": len(anchored),
                "latest_anchored_size": anchored[-1].size if anchored else 0,
                "list": [{"size": c.size, "time": c.time, "anchored": c.anchored,
                          "signers": c.signers, "index": c.index} for c in self.checkpoints]},
            "notes": list(self.notes),
        }
