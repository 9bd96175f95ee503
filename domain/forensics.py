"""Leak tracing (溯源): the platform records each trace of a leaked copy it made.

``dataledger forensics trace-leak FILE`` (the platform's own tool, privacy/trace.py) reads
the watermark out of a leaked table and compares it with every copy served (each delivery's
demander's copy, and the operator's and regulator's copies of it); the server's system
actor records the outcome here, whatever it is: ``forensics.leak_traced`` with the file's
SHA-256, every copy it matched (delivery, contract, demander, the reader when not the
demander, each with its p-value) or none, whether several matched (a merged copy), the
confidence and the votes. A trace is an aggregate of its own (one event); the file's bytes and the
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
    """A leaked copy (by its SHA-256) was traced: ``matches`` are the copies it matched,
    by p-value (each ``delivery_id``, ``contract_id``, ``demander_id``, ``reader_id``: null
    for the demander's copy, else the operator or regulator served its own copy;
    ``p_value``, ``bits_agreeing``), empty for "no match"; ``merged``: several matched (a
    copy merged from several, or colluding readers: none is picked among them);
    ``confidence`` is the best's ``"1 - p"`` (null without a match), ``p_value`` the best
    candidate's Bonferroni-corrected chance for a table it did not come from (text: the log
    holds no floats), ``candidates`` the copies compared, ``votes`` what the file's
    watermark said (``cast``, codeword bits ``bits_decided``, of which ``bits_agreeing``
    with the best candidate's; ``shift``: the constant undone), under ``scheme``."""

    type_name = "forensics.leak_traced"
    class_version = 2
    file_sha256: str
    matches: list[dict[str, Any]]
    merged: bool
    confidence: str | None
    p_value: str
    candidates: int
    votes: dict[str, int]
    scheme: str

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 recorded one ``match`` (the demander's copy) or null."""
        match = state.pop("match", None)
        state["matches"] = [] if match is None else [{
            **match, "reader_id": None, "p_value": state["p_value"],
            "bits_agreeing": state["votes"].get("bits_agreeing", 0)}]
        state["merged"] = False


class LeakTrace(Aggregate):
    """One trace: recorded once."""

    kind = "leak_trace"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.file_sha256 = ""
        self.matches: list[dict[str, Any]] = []

    @applies(LeakTraced)
    def _traced(self, e: LeakTraced) -> None:
        self.file_sha256, self.matches = e.file_sha256, e.matches


MATCH_FIELDS = ("delivery_id", "contract_id", "demander_id", "reader_id", "p_value",
                "bits_agreeing")


def _require_match(uow: UnitOfWork, match: Any) -> dict[str, Any]:
    """A matched copy, checked against the log: a delivered computation of that contract,
    to that demander (the reader, if any, is a participant id)."""
    if not isinstance(match, dict) or set(match) != set(MATCH_FIELDS) \
            or not all(isinstance(match[f], str) for f in MATCH_FIELDS[:3] + ("p_value",)) \
            or not isinstance(match["reader_id"], str | None) \
            or type(match["bits_agreeing"]) is not int:
        raise InvalidInput("matches", f"each must be an object of {', '.join(MATCH_FIELDS)}")
    comp = uow.get(Computation, match["delivery_id"])
    if not comp.delivered or (comp.contract_id, comp.demander_id) != (
            match["contract_id"], match["demander_id"]):
        raise InvalidInput("matches", f"delivery {comp.id} is not a delivery of contract "
                                      f"{match['contract_id']} to {match['demander_id']}")
    return {f: match[f] for f in MATCH_FIELDS}


def record_leak_trace(uow: UnitOfWork, ctx: Context, *, file_sha256: str,
                      evidence: dict[str, Any]) -> dict[str, Any]:
    """Record a trace (the server's system actor: ``forensics.leak_trace``); ``evidence``
    holds the event's ``matches``, ``merged``, ``confidence``, ``p_value``, ``candidates``,
    ``votes`` and ``scheme`` (``privacy.trace.Trace.record()``)."""
    permit(ctx.actor, "forensics.leak_trace")
    digest = require_sha256(file_sha256, "file_sha256")
    if not isinstance(evidence, dict) or set(evidence) != set(EVIDENCE):
        raise InvalidInput("evidence", f"must be an object of {', '.join(EVIDENCE)}")
    if not isinstance(evidence["matches"], list):
        raise InvalidInput("matches", "must be a list")
    found = [_require_match(uow, m) for m in evidence["matches"]]
    if evidence["merged"] is not (len(found) > 1):
        raise InvalidInput("merged", "must say whether several copies matched")
    agg = LeakTrace(new_id())
    agg.trigger(LeakTraced, ctx, file_sha256=digest,
                **{k: found if k == "matches" else evidence[k] for k in EVIDENCE})
    uow.add(agg)
    return {"trace_id": agg.id, "file_sha256": digest, "matches": found}


#: the fields of ``forensics.leak_traced`` that ``record_leak_trace`` takes as evidence
EVIDENCE = ("matches", "merged", "confidence", "p_value", "candidates", "votes", "scheme")
