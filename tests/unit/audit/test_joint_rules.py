"""The rule book's joint computations and hidden queries (audit/rules/joint.py, white paper
6.1): the hand-made flows (published and queried, failed with a provider, started by a
refused request) break no rule; each change a dishonest operator could make to them is
found by the right rule at the right seq."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from audit.rules import RuleBook
from core import secagg
from core.canonical import canonical_bytes
from core.record import LogEntry
from tests.unit.audit.joint_log import (
    BANK,
    COMPUTATIONS,
    DATASETS,
    JOINT,
    OPERATOR,
    ORDER,
    OTHER_BANK,
    PROVIDERS,
    START,
    SYSTEM,
    JointLog,
    Who,
    failed_log,
    iso,
    published_log,
    refused_log,
)
from tests.unit.audit.rules_log import insert, renumbered, with_payload


def findings(entries: list[LogEntry], **options: Any) -> list[tuple[int, str]]:
    return sorted((f.seq, f.rule) for f in RuleBook(**options).run(entries))


def made(type_name: str, oid: str, who: Who, at: str, version: int = 1,
         **payload: Any) -> LogEntry:
    """An event written behind the domain's back (seq set by ``insert``)."""
    body = {"actor": who.actor(), "at": at, **payload}
    return LogEntry(0, oid, version, type_name, canonical_bytes(body))


def at_of(log: JointLog, seq: int, delta: timedelta = timedelta(0)) -> str:
    """The ``at`` of event ``seq``, moved by ``delta``."""
    return iso(datetime.fromisoformat(log.entries[seq - 1].payload()["at"]) + delta)


def replaced(log: JointLog, seq: int, **changes: Any) -> list[LogEntry]:
    entries = list(log.entries)
    entries[seq - 1] = with_payload(entries[seq - 1], **changes)
    return entries


def without(log: JointLog, *seqs: int) -> list[LogEntry]:
    return renumbered([e for e in log.entries if e.seq not in seqs])


# -- the honest flows --------------------------------------------------------------------------
def test_the_honest_joint_flows_break_no_rule() -> None:
    for log in (published_log(), failed_log(), refused_log()):
        types = {e.type_name for e in log.entries}
        assert {"joint.started", "participant.node_key_registered"} <= types
        assert findings(log.entries) == []
    assert {"joint.published", "joint.queried"} <= {e.type_name for e in
                                                    published_log().entries}


def test_the_node_key_registration_is_a_signed_decision() -> None:
    log = published_log()
    first = log.seq_of("participant.node_key_registered", PROVIDERS[0].pid)
    signed = findings(log.entries, require_signatures=True)
    assert (first, "signature_missing") not in signed
    assert (log.seq_of("participant.node_key_registered", PROVIDERS[1].pid),
            "signature_missing") in signed
    # another key written in the event: the statement the member signed no longer says it
    other = secagg.public_key_text(secagg.new_node_key().public_key())
    assert findings(replaced(log, first, public_key=other,
                             key_id=secagg.node_key_id(other))) == [(first,
                                                                     "statement_mismatch")]


def test_a_node_key_by_another_provider_or_with_a_wrong_key_id() -> None:
    log = published_log()
    second = log.seq_of("participant.node_key_registered", PROVIDERS[1].pid)
    assert findings(replaced(log, second, actor=PROVIDERS[2].actor())) == [(second, "party")]
    assert findings(replaced(log, second, key_id="x25519:" + "0" * 32)) == [
        (second, "node_key")]


# -- joint.started ---------------------------------------------------------------------------
def test_a_joint_started_for_other_providers_or_columns() -> None:
    log = published_log()
    seq = log.seq_of("joint.started")
    reversed_ = [p.pid for p in reversed(PROVIDERS)]
    # (then the market regulator's layout is not the layout provider's it names)
    assert findings(replaced(log, seq, providers=reversed_))[0] == (seq, "joint")
    assert findings(replaced(log, seq, value_columns=["score"])) == [(seq, "joint")]
    assert findings(replaced(log, seq, deadline=iso(START + timedelta(days=9)))) == [
        (seq, "joint")]


def test_a_joint_started_without_its_request_in_the_same_commit() -> None:
    log = published_log()
    seq = log.seq_of("joint.started")
    later = timedelta(microseconds=1)  # its own command, its deadline moved with it
    moved = replaced(log, seq, at=at_of(log, seq, later),
                     deadline=at_of(log, seq, later + timedelta(seconds=600)))
    assert findings(moved) == [(seq - 1, "joint_commit"), (seq, "joint_commit")]


def test_a_joint_started_on_a_terminated_contract() -> None:
    """The contract ended before the first request, which was not refused."""
    log = published_log()
    first = log.seq_of("computation.requested")
    end = made("contract.terminated", ORDER, OPERATOR, at_of(log, first - 1),
               version=log.entries[log.seq_of("contract.approved") - 1].version + 1,
               reason="ended")
    found = findings(insert(log.entries, first - 1, end))
    assert (first + 2, "contract_live") in found  # the joint.started, after the request
    assert (first + 1, "contract_live") in found  # the request itself


def test_a_second_joint_started_for_one_execution() -> None:
    log = published_log()
    seq = log.seq_of("joint.started")
    again = with_payload(log.entries[seq - 1], at=at_of(log, seq + 1, timedelta(0)))
    entries = insert(log.entries, seq + 1, again)  # after the second provider's request
    assert (seq + 2, "lifecycle") in findings(entries)


# -- the layout and the parts -----------------------------------------------------------------
def test_a_layout_by_another_provider_and_a_second_layout() -> None:
    log = published_log()
    seq = log.seq_of("joint.layout_published")
    assert findings(replaced(log, seq, actor=PROVIDERS[1].actor())) == [(seq, "party")]
    again = with_payload(log.entries[seq - 1], at=at_of(log, seq, timedelta(seconds=0.5)))
    assert findings(insert(log.entries, seq, again)) == [(seq + 1, "lifecycle")]


def test_a_part_before_the_layout() -> None:
    log = published_log()
    layout = log.seq_of("joint.layout_published")
    entries = renumbered([e for e in log.entries if e.seq != layout])
    # the first part, its layout not out; so its computation's success came without it
    assert findings(entries)[:2] == [(layout, "joint_commit"), (layout + 1, "lifecycle")]


def test_a_part_in_another_providers_name_or_twice() -> None:
    log = published_log()
    seq = log.seq_of("joint.part_received", JOINT, 1)  # the tax bureau's
    wrong = replaced(log, seq, provider_id=PROVIDERS[0].pid)
    assert (seq, "party") in findings(wrong)
    twice = with_payload(log.entries[seq - 1], at=at_of(log, seq, timedelta(seconds=0.5)))
    assert findings(insert(log.entries, seq, twice)) == [(seq + 1, "party")]


def test_a_part_without_its_computations_success_in_the_same_commit() -> None:
    log = published_log()
    part = log.seq_of("joint.part_received", JOINT, 2)
    success = log.seq_of("computation.succeeded", COMPUTATIONS[2])
    assert part == success + 1
    assert findings(without(log, success)) == [(success, "joint_commit")]
    # its success with another digest than the part's
    found = findings(replaced(log, success, result_sha256="7" * 64))
    assert found == [(part, "joint_commit")]


def test_a_part_of_the_wrong_length_or_for_another_computation() -> None:
    log = published_log()
    part = log.seq_of("joint.part_received", JOINT, 0)
    assert findings(replaced(log, part, length=41)) == [(part, "joint")]
    found = findings(replaced(log, part, computation_id=COMPUTATIONS[1]))
    assert (part, "joint") in found


def test_a_joint_computations_success_without_its_part() -> None:
    log = published_log()
    part = log.seq_of("joint.part_received", JOINT, 2)
    found = findings(without(log, part))
    assert found == [(part - 1, "joint_commit"), (part, "joint")]  # then the publication


def test_a_joint_computation_is_never_delivered() -> None:
    log = published_log()
    part = log.seq_of("joint.part_received", JOINT, 1)
    who = PROVIDERS[1]
    delivery = made("delivery.made", COMPUTATIONS[1], who, at_of(log, part), version=3,
                    demander_id=BANK.pid, result_sha256="1" * 64)
    assert findings(insert(log.entries, part, delivery)) == [(part + 1, "delivery")]


# -- publication and failure --------------------------------------------------------------------
def test_a_publication_by_a_provider_or_before_every_part() -> None:
    log = published_log()
    seq = log.seq_of("joint.published")
    assert findings(replaced(log, seq, actor=PROVIDERS[0].actor())) == [(seq, "party")]
    last_part = log.seq_of("joint.part_received", JOINT, 2)
    early = with_payload(log.entries[seq - 1], at=at_of(log, last_part - 2))
    entries = insert([e for e in log.entries if e.seq != seq], last_part - 2, early)
    found = findings(entries)
    assert found[0] == (last_part - 1, "joint")
    assert (last_part + 1, "lifecycle") in found  # the last part, after it


def test_a_publication_after_the_joint_failed() -> None:
    log = published_log()
    seq = log.seq_of("joint.published")
    failure = made("joint.failed", JOINT, SYSTEM, at_of(log, seq - 1), version=1,
                   reason="refused: sum: the masks do not cancel")
    found = findings(insert(log.entries, seq - 1, failure))
    assert found[:2] == [(seq + 1, "lifecycle"), (seq + 2, "lifecycle")]


def test_a_failure_with_no_code_or_missing_before_the_deadline_or_by_a_provider_alone(
        ) -> None:
    log = failed_log()
    seq = log.seq_of("joint.failed")
    assert findings(replaced(log, seq, reason="it broke")) == [(seq, "joint")]
    early = replaced(log, seq, actor=SYSTEM.actor(), at=at_of(log, seq, timedelta(seconds=1)),
                     reason="missing: provider-power sent no part")
    assert (seq, "joint") in findings(early)
    late = replaced(log, seq, actor=SYSTEM.actor(), at=at_of(log, seq, timedelta(hours=1)),
                    reason="missing: provider-power sent no part")
    assert (seq, "joint") not in findings(late)
    alone = replaced(log, seq, at=at_of(log, seq, timedelta(seconds=1)))
    assert findings(alone) == [(seq - 1, "joint_commit"), (seq, "joint_commit")]


def test_a_joint_computations_failure_that_leaves_its_joint_open() -> None:
    log = failed_log()
    seq = log.seq_of("joint.failed")
    assert findings(without(log, seq)) == [(seq - 1, "joint_commit")]


def test_a_refused_first_request_without_its_joint_failed() -> None:
    log = refused_log()
    seq = log.seq_of("joint.failed")
    assert findings(without(log, seq)) == [(seq - 2, "joint_commit")]


# -- clear queries and hidden queries -----------------------------------------------------------
def test_a_joint_products_order_with_a_clear_query() -> None:
    log = published_log()
    placed = log.seq_of("order.placed", ORDER)
    query = {"field": "credit_code", "values": ["91110000MA0000001X"]}
    assert findings(replaced(log, placed, query=query)) == [(placed, "hidden_query")]
    seq = log.seq_of("joint.published")
    submitted = made("contract.query_submitted", ORDER, BANK, at_of(log, seq),
                     version=99, query=query)
    assert findings(insert(log.entries, seq, submitted)) == [(seq + 1, "hidden_query")]


def test_a_hidden_query_by_another_bank_or_before_publication() -> None:
    log = published_log()
    seq = log.seq_of("joint.queried")
    other = replaced(log, seq, actor=OTHER_BANK.actor(), demander_id=OTHER_BANK.pid)
    assert findings(other) == [(seq, "party")]
    published = log.seq_of("joint.published")
    early = with_payload(log.entries[seq - 1], at=at_of(log, published - 1))
    entries = insert([e for e in log.entries if e.seq != seq], published - 1, early)
    assert findings(entries)[0] == (published, "lifecycle")


def test_a_hidden_query_after_termination_outside_the_window_or_a_revoked_grant() -> None:
    log = published_log()
    seq = log.seq_of("joint.queried")
    approved = log.entries[log.seq_of("contract.approved") - 1].version
    end = made("contract.terminated", ORDER, OPERATOR, at_of(log, seq - 1),
               version=approved + 1, reason="ended")
    assert findings(insert(log.entries, seq - 1, end)) == [(seq + 1, "contract_live"),
                                                          (seq + 2, "contract_live")]
    late = replaced(log, seq, at=iso(START + timedelta(days=91)))
    assert (seq, "usage_window") in findings(late)
    revoked = made("authorization.revoked", f"auth-{PROVIDERS[1].pid}", PROVIDERS[1],
                   at_of(log, seq - 1), version=2, reason="audit")
    assert findings(insert(log.entries, seq - 1, revoked))[0] == (seq + 1,
                                                                  "authorization_live")


def test_the_query_count_summed_over_the_contracts_queries() -> None:
    """The contract allows 50 codes; 20 and 25 were asked; 6 more is one too many."""
    log = published_log()
    last = log.seq_of("joint.queried", JOINT, 1)
    more = made("joint.queried", JOINT, BANK, at_of(log, last, timedelta(seconds=1)),
                version=99, contract_id=ORDER, demander_id=BANK.pid,
                request_commitment="d" * 64, request_size=6, answer_hash="e" * 64)
    assert findings(insert(log.entries, last, more)) == [(last + 1, "query_count")]
    fits = with_payload(more, request_size=5)
    assert findings(insert(log.entries, last, fits)) == []


def test_a_joint_product_needs_its_providers() -> None:
    log = published_log()
    seq = log.seq_of("product.registered")
    one = [{"dataset_id": DATASETS[0], "fields": ["credit_code"]}]
    found = findings(replaced(log, seq, inputs=one))
    assert found[0] == (seq, "joint")
