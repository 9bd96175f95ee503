"""A dataset field's grade (分级) and identifier kind, and product.registered's field grades:
validation, derivation from the sensitivity, the no-lowering rule, and the upcasts."""

from __future__ import annotations

from typing import Any

import pytest

from core.canonical import canonical_bytes, decode
from core.event import event_class
from domain.dataset import Dataset, register_dataset, update_dataset
from domain.errors import InvalidInput, WrongState
from domain.product import Product
from tests.unit.domain.test_dataset import FIELDS, PROVIDER, published_dataset, registered_dataset
from tests.unit.domain.test_participant import refused
from tests.unit.domain.test_product import CODE, CODE_SHA256, product_world, registered_product
from tests.unit.fakes import MemoryUnitOfWork, run

ACTOR = {"participant": "p", "member": "m", "role": "provider"}


def test_a_field_without_grade_or_kind_gets_them_from_its_sensitivity() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = run(uow, register_dataset, PROVIDER, name="n", description="",
                     source_system="s", classification="L3", fields=[
                         {"name": "a", "type": "str", "sensitivity": "public"},
                         {"name": "b", "type": "str", "sensitivity": "internal"},
                         {"name": "c", "type": "str", "sensitivity": "sensitive"},
                         {"name": "d", "type": "str", "sensitivity": "personal"},
                         {"name": "e", "type": "str", "sensitivity": "public",
                          "grade": "L4", "kind": "phone"}])["dataset_id"]
    grades = uow.get(Dataset, dataset_id).field_grades()
    assert grades == {"a": {"grade": "L1", "kind": "none"}, "b": {"grade": "L2", "kind": "none"},
                      "c": {"grade": "L3", "kind": "none"}, "d": {"grade": "L3", "kind": "none"},
                      "e": {"grade": "L4", "kind": "phone"}}
    stored = uow.streams[dataset_id][0].payload()
    assert stored["class_version"] == 2
    assert all(set(f) == {"name", "type", "sensitivity", "grade", "kind"}
               for f in stored["fields"])


@pytest.mark.parametrize(("field", "where"), [
    ({"grade": "L5"}, "fields[0].grade"),
    ({"grade": 3}, "fields[0].grade"),
    ({"kind": "passport"}, "fields[0].kind"),
    ({"colour": "red"}, "fields[0]"),
])
def test_refuses_a_bad_grade_or_kind_naming_the_field(field: dict[str, Any], where: str) -> None:
    uow = MemoryUnitOfWork()
    err = refused(uow, InvalidInput, register_dataset, PROVIDER, name="n", description="",
                  source_system="s", classification="L1",
                  fields=[{"name": "a", "type": "str", "sensitivity": "public", **field}])
    assert isinstance(err, InvalidInput) and err.field == where


def test_a_published_field_may_not_get_a_lower_grade_but_a_higher_one() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = published_dataset(uow)
    raised = [{**FIELDS[0], "grade": "L2", "kind": "account"}, *FIELDS[1:]]
    run(uow, update_dataset, PROVIDER, dataset_id, fields=raised)
    lowered = [{**FIELDS[0], "grade": "L1"}, *FIELDS[1:]]
    refused(uow, WrongState, update_dataset, PROVIDER, dataset_id, fields=lowered)
    under_derived = [*FIELDS[:2], {**FIELDS[2], "grade": "L2"}]  # personal: L3 at least
    err = refused(uow, InvalidInput, update_dataset, PROVIDER, dataset_id, fields=under_derived)
    assert isinstance(err, InvalidInput) and err.field == "fields[2].grade"
    assert uow.get(Dataset, dataset_id).field_grades()["credit_code"] == {
        "grade": "L2", "kind": "account"}


def test_a_registered_field_may_change_its_grade_freely() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = registered_dataset(uow)
    run(uow, update_dataset, PROVIDER, dataset_id,
        fields=[*FIELDS[:2], {**FIELDS[2], "grade": "L4"}])
    run(uow, update_dataset, PROVIDER, dataset_id,
        fields=[*FIELDS[:2], {**FIELDS[2], "grade": "L3"}])
    assert uow.get(Dataset, dataset_id).field_grades()["legal_person_id"]["grade"] == "L3"


@pytest.mark.parametrize(("sensitivity", "grade", "floor"), [
    ("internal", "L1", "L2"), ("sensitive", "L2", "L3"), ("personal", "L1", "L3")])
def test_a_grade_below_the_one_its_sensitivity_derives_is_refused(
        sensitivity: str, grade: str, floor: str) -> None:
    uow = MemoryUnitOfWork()
    err = refused(uow, InvalidInput, register_dataset, PROVIDER, name="n", description="",
                  source_system="s", classification="L3", fields=[
                      {"name": "a", "type": "str", "sensitivity": "public", "grade": "L4"},
                      {"name": "b", "type": "str", "sensitivity": sensitivity,
                       "grade": grade}])
    assert isinstance(err, InvalidInput) and err.field == "fields[1].grade"
    assert f"at least {floor}" in str(err)


def _read(type_name: str, payload: dict[str, Any]) -> Any:
    return event_class(type_name).from_payload("x-1", 1, decode(canonical_bytes(payload)))


def test_version_1_dataset_events_read_with_derived_grades_and_kinds() -> None:
    v1_fields = [{"name": "a", "type": "str", "sensitivity": "personal"},
                 {"name": "b", "type": "int", "sensitivity": "internal"}]
    derived = [{**v1_fields[0], "grade": "L3", "kind": "none"},
               {**v1_fields[1], "grade": "L2", "kind": "none"}]
    registered = _read("dataset.registered", {
        "at": "2026-01-01T00:00:00Z", "actor": ACTOR, "owner_id": "p", "name": "n",
        "description": "", "source_system": "s", "classification": "L2", "fields": v1_fields})
    assert registered.fields == derived
    assert registered.payload()["class_version"] == 2
    updated = _read("dataset.updated", {"at": "2026-01-01T00:00:00Z", "actor": ACTOR,
                                        "description": None, "fields": v1_fields})
    assert updated.fields == derived
    described = _read("dataset.updated", {"at": "2026-01-01T00:00:00Z", "actor": ACTOR,
                                          "description": "d", "fields": None})
    assert described.fields is None


def test_product_registered_records_each_input_fields_grade_and_kind() -> None:
    """``field_grades`` comes from the datasets (the domain fills it, like sensitive_fields)."""
    uow = MemoryUnitOfWork()
    w = product_world(uow)
    product_id = registered_product(uow, w)
    payload = uow.streams[product_id][0].payload()
    expected = {w["dataset_id"]: {"credit_code": {"grade": "L1", "kind": "none"},
                                  "tax_paid_fen": {"grade": "L3", "kind": "none"},
                                  "legal_person_id": {"grade": "L3", "kind": "none"}}}
    assert payload["class_version"] == 4
    assert payload["field_grades"] == expected
    assert payload["dp"] is None
    product = uow.get(Product, product_id)
    assert product.field_grades == expected and product.dp is None


def test_a_v3_product_registered_reads_with_no_field_grades_and_no_dp() -> None:
    stored_v3 = {"at": "2026-01-01T00:00:00Z", "actor": ACTOR, "class_version": 3,
                 "operator_id": "o", "scenario_id": "s", "authorization_ids": ["a"],
                 "name": "n", "kind": "api", "description": "", "code": CODE,
                 "code_sha256": CODE_SHA256, "inputs": [], "output_schema": {},
                 "quality_report": "", "price_fen": 1, "developer_id": None,
                 "key_column": None, "sensitive_fields": {}, "joint": None}
    event = _read("product.registered", stored_v3)
    assert (event.field_grades, event.dp) == ({}, None)
    assert event.payload()["class_version"] == 4


def test_a_v1_computation_succeeded_reads_with_nothing_masked() -> None:
    event = _read("computation.succeeded", {
        "at": "2026-01-01T00:00:00Z", "actor": ACTOR, "datasite": "d", "code_sha256": "0" * 64,
        "input_hashes": {}, "result_sha256": "1" * 64, "result_rows": 1})
    assert event.masking == {} and event.payload()["class_version"] == 2


def test_the_reported_masking_must_be_what_the_grades_call_for() -> None:
    from domain.succeeded import check_masking

    grades = {"d1": {"phone": {"grade": "L3", "kind": "phone"},
                     "code": {"grade": "L1", "kind": "none"}},
              "d2": {"phone": {"grade": "L4", "kind": "none"}}}
    assert check_masking(None, grades) == {}
    assert check_masking({"phone": "L4:none:withheld"}, grades) == {"phone": "L4:none:withheld"}
    for bad in ({"phone": "L3:phone:partial"}, {"code": "L1:none:clear"},
                {"score": "L3:none:partial"}, ["phone"], {7: "L4:none:withheld"}):
        with pytest.raises(InvalidInput) as caught:
            check_masking(bad, grades)
        assert caught.value.field == "masking"
