"""The regulator's rule book (audit/rules/) over a real log: a whole market driven over the
HTTP API on a SQLite file breaks no rule; each change a dishonest operator could make to
that log behind the domain's back (an event inserted, moved or rewritten, a decision forged
with a key a party really holds) is found by the right rule at the right seq."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from audit.rules import STEP, Finding, RuleBook
from core.record import LogEntry
from tests.unit.audit.rules_log import (
    NOW,
    HonestLog,
    build_honest_log,
    forged,
    insert,
    renumbered,
    signature,
    with_payload,
)


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> HonestLog:
    return build_honest_log(Path(tmp_path_factory.mktemp("rules")))


def findings(entries: list[LogEntry], **options: Any) -> list[tuple[int, str]]:
    found = RuleBook(**options).run(entries)
    assert all(isinstance(f, Finding) and f.step == STEP for f in found)
    return [(f.seq, f.rule) for f in found]


def at(entry: LogEntry, delta: timedelta = timedelta(0)) -> str:
    """An instant just after ``entry``'s."""
    from datetime import datetime

    moved = datetime.fromisoformat(entry.payload()["at"]) + delta + timedelta(microseconds=1)
    return moved.isoformat().replace("+00:00", "Z")


def test_the_honest_market_breaks_no_rule(log: HonestLog) -> None:
    types = {e.type_name for e in log.entries}
    assert {"computation.failed", "contract.terminated", "participant.key_revoked",
            "participant.suspended", "delivery.accessed", "order.trial_granted"} <= types
    assert findings(log.entries) == []
    assert findings(log.entries, require_signatures=True) == []


def test_streaming_gives_the_same_findings_as_a_run(log: HonestLog) -> None:
    book = RuleBook()
    assert [f for e in log.entries for f in book.feed(e)] + book.finish() == []
    assert book.events == len(log.entries)


def test_a_forged_approval_by_a_member_of_no_party(log: HonestLog) -> None:
    """The power utility's admin signs an approval of a contract it is no party to."""
    power, order = log.parties["power"], log.ids["order"]
    accepted = log.seq_of("contract.accepted", order)
    version = log.entry(accepted).version + 1
    sig = signature(power.key, "contract.approval", order, version - 1, power.member_id, {})
    fake = forged(accepted + 1, "contract.party_approved", order, version, power,
                  at(log.entry(accepted)), class_version=2, party_id=power.id, signature=sig)
    assert findings(insert(log.entries, accepted, fake)) == [(accepted + 1, "party")]


def test_an_approval_by_someone_not_a_member_of_its_participant(log: HonestLog) -> None:
    provider, demander = log.parties["provider"], log.parties["demander"]
    order = log.ids["order"]
    approval = log.seq_of("contract.party_approved", order)
    entry = log.entry(approval)
    changed = with_payload(entry, actor={"participant": provider.id,
                                         "member": demander.member_id, "role": "provider"})
    entries = [*log.entries[:approval - 1], changed, *log.entries[approval:]]
    assert findings(entries)[0] == (approval, "actor_identity")


def test_a_delivery_after_its_contracts_termination(log: HonestLog) -> None:
    """The second execution's delivery, moved behind the provider's termination."""
    run = log.ids["run2"]
    delivery = log.seq_of("delivery.made", run)
    terminated = log.seq_of("contract.terminated", log.ids["order"])
    moved = with_payload(log.entry(delivery), at=at(log.entry(terminated)))
    rest = [e for e in log.entries if e.seq != delivery]
    entries = insert(rest, terminated - 1, moved)
    assert findings(entries) == [(terminated, "contract_live")]


def test_an_execution_beyond_the_processing_count(log: HonestLog) -> None:
    """A third execution of a contract that allows two, requested and delivered."""
    provider, order = log.parties["provider"], log.ids["order"]
    first = log.entry(log.seq_of("computation.requested", log.ids["run1"])).payload()
    after = log.seq_of("delivery.made", log.ids["run2"])
    when, cid = at(log.entry(after)), "6f1c9a52-0000-4000-8000-000000000003"
    request = {k: first[k] for k in ("contract_id", "product_id", "demander_id", "operator_id",
                                     "provider_id", "code_sha256", "datasite", "dataset_ids")}
    made = log.entry(log.seq_of("computation.succeeded", log.ids["run1"])).payload()
    result = {k: made[k] for k in ("datasite", "code_sha256", "input_hashes", "result_sha256",
                                   "result_rows")}
    new = [forged(0, "computation.requested", cid, 1, provider, when, execution=3, **request),
           forged(0, "computation.succeeded", cid, 2, provider, when, **result),
           forged(0, "delivery.made", cid, 3, provider, when, demander_id=first["demander_id"],
                  result_sha256=made["result_sha256"])]
    assert findings(insert(log.entries, after, *new)) == [(after + 1, "processing_count")]
    assert order == request["contract_id"]


def test_a_delivery_outside_the_usage_window(log: HonestLog) -> None:
    """The contract's window closes after 90 days; its authorization runs for a year."""
    delivery = log.seq_of("delivery.made", log.ids["run2"])
    late = (NOW + timedelta(days=91)).isoformat().replace("+00:00", "Z")
    entries = list(log.entries)
    entries[delivery - 1] = with_payload(log.entry(delivery), at=late)
    assert findings(entries) == [(delivery, "usage_window")]


def test_a_listing_without_an_approved_scenario(log: HonestLog) -> None:
    """A product on the scenario the regulator never decided, listed by the platform."""
    operator, platform = log.parties["operator"], log.parties["platform"]
    listed = log.seq_of("product.listed", log.ids["product"])
    product = log.entry(log.seq_of("product.registered", log.ids["product"])).payload()
    pid, when = "0a9e7c1d-0000-4000-8000-00000000000a", at(log.entry(listed))
    registered = {k: v for k, v in product.items() if k not in ("actor", "at")}
    registered.update(scenario_id=log.ids["pending_scenario"], inputs=[
        {"dataset_id": log.ids["dataset"], "fields": ["taxpayer_id"]}])
    body = {"approve": True, "comment": "looks fine"}
    sig = signature(platform.key, "product.listing_decision", pid, 2, platform.member_id, body)
    new = [forged(0, "product.registered", pid, 1, operator, when, **registered),
           forged(0, "product.listing_requested", pid, 2, operator, when),
           forged(0, "product.listed", pid, 3, platform, when, class_version=2,
                  comment="looks fine", signature=sig)]
    assert findings(insert(log.entries, listed, *new)) == [(listed + 3, "scenario_approved")]


def test_an_action_by_a_suspended_participant(log: HonestLog) -> None:
    insurer = log.parties["insurer"]
    suspended = log.seq_of("participant.suspended", insurer.id)
    placed = log.entry(log.seq_of("order.placed", log.ids["order"])).payload()
    order = forged(0, "order.placed", "5c3d0e7b-0000-4000-8000-00000000000b", 1, insurer,
                   at(log.entry(suspended)), class_version=2, demander_id=insurer.id,
                   product_id=placed["product_id"], operator_id=placed["operator_id"],
                   purpose="after the sanction", query=None)
    entries = insert(log.entries, suspended, order)
    assert findings(entries) == [(suspended + 1, "suspended_participant")]


def test_a_replayed_signature(log: HonestLog) -> None:
    """The provider's signed grant written again after its revocation: the authorization
    would live again on a signature made once."""
    auth = log.ids["authorization"]
    grant, revoked = log.seq_of("authorization.granted", auth), log.seq_of(
        "authorization.revoked", auth)
    again = with_payload(log.entry(grant), at=at(log.entry(revoked)))
    entries = insert(log.entries, revoked, again)
    assert sorted(findings(entries)) == [(revoked + 1, "lifecycle"),
                                         (revoked + 1, "signature_replayed")]


def test_a_statement_that_does_not_match_its_event(log: HonestLog) -> None:
    """The listing's comment rewritten: the signature still verifies over the statement
    the platform signed, but that statement no longer says what the event records."""
    listed = log.seq_of("product.listed", log.ids["product"])
    entries = list(log.entries)
    entries[listed - 1] = with_payload(log.entry(listed), comment="listed without review")
    assert findings(entries) == [(listed, "statement_mismatch")]


def test_a_signature_that_does_not_verify(log: HonestLog) -> None:
    """The comment rewritten in the event and in its statement alike."""
    listed = log.seq_of("product.listed", log.ids["product"])
    payload = log.entry(listed).payload()
    sig = payload["signature"]
    stmt = {**sig["statement"], "body": {**sig["statement"]["body"], "comment": "rewritten"}}
    entries = list(log.entries)
    entries[listed - 1] = with_payload(log.entry(listed), comment="rewritten",
                                       signature={**sig, "statement": stmt})
    assert findings(entries) == [(listed, "signature_invalid")]


def test_a_decision_signed_with_a_key_revoked_before(log: HonestLog) -> None:
    """After rotating its key the operator's old key proposes a contract."""
    operator, provider = log.parties["operator"], log.parties["provider"]
    order = log.ids["order2"]
    revoked = log.seq_of("participant.key_revoked", operator.id)
    body = {"usage_policy": {"processing_count": 1}, "price_fen": 5,
            "revenue_split": {"developer": 0, "operator": 5000, "platform": 0,
                              "provider": 5000}}
    sig = signature(log.old_keys["operator"], "contract.proposal", order, 1, operator.member_id,
                    body)
    proposal = forged(0, "contract.proposed", order, 2, operator, at(log.entry(revoked)),
                      class_version=2, required_approvals=sorted([operator.id, provider.id]),
                      signature=sig, **body)
    entries = insert(log.entries, revoked, proposal)
    assert findings(entries) == [(revoked + 1, "signature_key")]


def test_old_class_versions_are_read_as_stored(log: HonestLog) -> None:
    """A version-1 listing carries no signature (a finding only when signatures are
    required); a version-1 key registration has no key id, computed from its key."""
    listed = log.seq_of("product.listed", log.ids["product"])
    key = log.seq_of("participant.key_registered", log.parties["platform"].id)
    entries = list(log.entries)
    entries[listed - 1] = with_payload(log.entry(listed), class_version=None, signature=None)
    entries[key - 1] = with_payload(log.entry(key), class_version=None, key_id=None)
    assert findings(entries) == []
    assert findings(entries, require_signatures=True) == [(listed, "signature_missing")]


def test_a_refused_request_breaks_no_rule_but_an_unrefused_one_does(log: HonestLog) -> None:
    """The second order's trial was never granted: recorded with its failure, the request
    is no breach; with the failure taken out, it is one, found at the log's end."""
    failed = log.seq_of("computation.failed")
    entries = renumbered([e for e in log.entries if e.seq != failed])
    assert findings(entries) == [(failed - 1, "trial")]


def test_a_malformed_event_is_named_not_a_crash(log: HonestLog) -> None:
    seq = log.seq_of("contract.approved", log.ids["order"])
    entries = list(log.entries)
    entries[seq - 1] = with_payload(log.entry(seq), at="yesterday")
    assert findings(entries)[0] == (seq, "event_shape")
