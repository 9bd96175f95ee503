"""Leak tracing (溯源): the platform records each trace of a leaked copy it made.

``dataledger forensics trace-leak FILE`` (the platform's own tool, privacy/trace.py) reads
the watermark out of a leaked table and compares it with every delivery's; the server's
system actor records the outcome here, whatever it is: ``forensics.leak_traced`` with the
file's SHA-256, the delivery it matched (its contract and demander) or null, the confidence
and the votes. A trace is an aggregate of its own (one event); the file's bytes and the
watermark key never go in the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.event import Event
from domain.base import Aggregate, Context, applies, new_id
from domain.computation import Computation
from domain.delivered import require_sha256
from domain.errors import InvalidInput
from domain.permissions import permit
from domain.unit_of_work import UnitOfWork


@dataclass(frozen=True, kw_only=True)
class LeakTraced(Event):
    """A leaked copy (by its SHA-256) was traced: ``match`` is the delivery it came from
    (``delivery_id``, ``contract_id``, ``demander_id``) or null ("no match");
    ``confidence`` is ``"1 - p"`` (null without a match), ``p_value`` the best candidate's
    Bonferroni-corrected chance for a table it did not come from (text: the log holds no
    floats), ``candidates`` the deliveries compared, ``votes`` what the file's watermark
    said (``cast``, codeword bits ``bits_decided``, of which ``bits_agreeing`` with the best
    candidate's), under ``scheme``."""

    type_name = "forensics.leak_traced"
    file_sha256: str
    match: dict[str, str] | None
    confidence: str | None
    p_value: str
    candidates: int
    votes: dict[str, int]
    scheme: str


class LeakTrace(Aggregate):
    """One trace: recorded once."""

    kind = "leak_trace"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.file_sha256 = ""
        self.match: dict[str, str] | None = None

    @applies(LeakTraced)
    def _traced(self, e: LeakTraced) -> None:
        self.file_sha256, self.match = e.file_sha256, e.match


def _require_match(uow: UnitOfWork, match: Any) -> dict[str, str] | None:
    """None, or the matched delivery, checked against the log: a delivered computation of
    that contract, to that demander."""
    if match is None:
        return None
    fields = ("delivery_id", "contract_id", "demander_id")
    if not isinstance(match, dict) or set(match) != set(fields) \
            or not all(isinstance(match[f], str) for f in fields):
        raise InvalidInput("match", f"must be null or an object of {', '.join(fields)}")
    comp = uow.get(Computation, match["delivery_id"])
    if not comp.delivered or (comp.contract_id, comp.demander_id) != (
            match["contract_id"], match["demander_id"]):
        raise InvalidInput("match", f"delivery {comp.id} is not a delivery of contract "
                                    f"{match['contract_id']} to {match['demander_id']}")
    return {f: match[f] for f in fields}


def record_leak_trace(uow: UnitOfWork, ctx: Context, *, file_sha256: str, match: Any,
                      evidence: dict[str, Any]) -> dict[str, Any]:
    """Record a trace (the server's system actor: ``forensics.leak_trace``); ``evidence``
    holds the event's ``confidence``, ``p_value``, ``candidates``, ``votes`` and ``scheme``
    (``privacy.trace.Trace.record()``)."""
    permit(ctx.actor, "forensics.leak_trace")
    digest = require_sha256(file_sha256, "file_sha256")
    found = _require_match(uow, match)
    if not isinstance(evidence, dict) or set(evidence) != set(EVIDENCE):
        raise InvalidInput("evidence", f"must be an object of {', '.join(EVIDENCE)}")
    agg = LeakTrace(new_id())
    agg.trigger(LeakTraced, ctx, file_sha256=digest, match=found,
                **{k: evidence[k] for k in EVIDENCE})
    uow.add(agg)
    return {"trace_id": agg.id, "file_sha256": digest, "match": found}


#: the fields of ``forensics.leak_traced`` that ``record_leak_trace`` takes as evidence
EVIDENCE = ("confidence", "p_value", "candidates", "votes", "scheme")
