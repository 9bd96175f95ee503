"""audit/rules/masking.py: product.registered's field_grades are the input datasets' grades
at that seq (version 1 fields derived from the sensitivity), and computation.succeeded's
masking is the rule the product's grades give each masked column."""

from __future__ import annotations

from typing import Any

from audit.rules.book import RuleBook
from core.canonical import canonical_bytes
from core.record import LogEntry

ACTOR = {"participant": "p1", "member": "m1", "role": "provider"}
V1_FIELDS = [{"name": "phone", "type": "string", "sensitivity": "personal"},
             {"name": "code", "type": "string", "sensitivity": "public"}]
GRADED = [{**V1_FIELDS[0], "grade": "L3", "kind": "phone"},
          {**V1_FIELDS[1], "grade": "L1", "kind": "none"}]


def entry(seq: int, type_name: str, originator: str, version: int = 1,
          **payload: Any) -> LogEntry:
    body = {"at": f"2030-03-01T09:00:{seq:02d}Z", "actor": ACTOR, **payload}
    return LogEntry(seq, originator, version, type_name, canonical_bytes(body))


def product(seq: int, grades: Any, originator: str = "prod-1") -> LogEntry:
    return entry(seq, "product.registered", originator, class_version=4,
                 inputs=[{"dataset_id": "ds-1", "fields": ["phone", "code"]}],
                 field_grades=grades, operator_id="o", scenario_id="s",
                 authorization_ids=[], code_sha256="0" * 64)


def succeeded(seq: int, cid: str, masking: Any) -> list[LogEntry]:
    return [entry(seq, "computation.requested", cid, contract_id="c", product_id="prod-1",
                  provider_id="p1", demander_id="d", execution=0, dataset_ids=["ds-1"],
                  code_sha256="0" * 64),
            entry(seq + 1, "computation.succeeded", cid, 2, class_version=2,
                  result_sha256="1" * 64, masking=masking)]


def masking_findings(entries: list[LogEntry]) -> list[tuple[int, str]]:
    book = RuleBook()
    found = [f for e in entries for f in book.feed(e)] + book.finish()
    return [(f.seq, f.found) for f in found if f.rule == "masking"]


def test_field_grades_must_be_the_datasets_grades_at_registration() -> None:
    v1 = entry(1, "dataset.registered", "ds-1", owner_id="p1", fields=V1_FIELDS)
    derived = {"ds-1": {"phone": {"grade": "L3", "kind": "none"},
                        "code": {"grade": "L1", "kind": "none"}}}
    assert masking_findings([v1, product(2, derived)]) == []
    updated = entry(2, "dataset.updated", "ds-1", 2, class_version=2, description=None,
                    fields=GRADED)
    assert masking_findings([v1, updated, product(3, derived)]) == [
        (3, "['ds-1'] not as the datasets grade them")]
    assert masking_findings([v1, product(2, {})]) == [(2, "[] not as the datasets grade them")]


def test_the_recorded_masking_must_be_what_the_grades_call_for() -> None:
    grades = {"ds-1": {"phone": {"grade": "L3", "kind": "phone"},
                       "code": {"grade": "L1", "kind": "none"}}}
    start = [entry(1, "dataset.registered", "ds-1", class_version=2, owner_id="p1",
                   fields=GRADED), product(2, grades)]
    assert masking_findings([*start, *succeeded(3, "comp-1", {"phone": "L3:phone:partial"})]) \
        == []
    assert masking_findings([*start, *succeeded(3, "comp-1", {})]) == []
    assert masking_findings([*start, *succeeded(3, "comp-1", {
        "phone": "L4:none:withheld", "code": "L1:none:clear", "score": "L3:none:partial"})]) \
        == [(4, "code, phone, score not as graded")]
