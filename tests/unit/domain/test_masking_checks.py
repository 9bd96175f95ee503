"""The ledger's own masking checks: an execution refused while a field it reads is graded
stricter than the product's snapshot (``grades_refusal``; a product registered before grades
existed has none), and a posted result the product's grades would mask further refused
(``verify_masked``) naming the column and grade, never a value."""

from __future__ import annotations

from typing import Any

import pytest

from domain.dataset import Dataset, grades_refusal, update_dataset
from domain.errors import InvalidInput
from domain.succeeded import verify_masked
from tests.unit.domain.test_dataset import FIELDS, PROVIDER, published_dataset
from tests.unit.fakes import MemoryUnitOfWork, run

USED = ["credit_code", "tax_paid_fen", "legal_person_id"]


def _snapshot(uow: MemoryUnitOfWork, dataset_id: str) -> dict[str, Any]:
    return {dataset_id: uow.get(Dataset, dataset_id).field_grades()}


def test_no_refusal_while_the_snapshot_is_current() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = published_dataset(uow)
    inputs = [{"dataset_id": dataset_id, "fields": USED}]
    assert grades_refusal(uow, "p-1", inputs, _snapshot(uow, dataset_id)) is None


def test_a_field_graded_up_past_its_snapshot_refuses() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = published_dataset(uow)
    inputs = [{"dataset_id": dataset_id, "fields": USED}]
    snapshot = _snapshot(uow, dataset_id)
    run(uow, update_dataset, PROVIDER, dataset_id,
        fields=[*FIELDS[:2], {**FIELDS[2], "grade": "L4"}])
    reason = grades_refusal(uow, "p-1", inputs, snapshot)
    assert reason is not None and reason.startswith("grades_raised: field 'legal_person_id'")
    assert "L4 now" in reason and "with L3" in reason
    # a field the product does not read is no reason
    assert grades_refusal(uow, "p-1", [{"dataset_id": dataset_id,
                                        "fields": ["credit_code"]}], snapshot) is None


def test_a_product_registered_before_grades_is_refused_over_l3_fields() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = published_dataset(uow)  # tax_paid_fen sensitive: L3
    reason = grades_refusal(uow, "p-1", [{"dataset_id": dataset_id, "fields": USED}], {})
    assert reason is not None and "'tax_paid_fen'" in reason and "no grade" in reason
    # over public/internal fields only (L1/L2: clear anyway) it runs
    assert grades_refusal(uow, "p-1", [{"dataset_id": dataset_id,
                                        "fields": ["credit_code"]}], {}) is None


GRADES = {"d": {"tid": {"grade": "L3", "kind": "id_number"},
                "dx": {"grade": "L4", "kind": "none"},
                "n": {"grade": "L1", "kind": "none"}}}


def test_a_masked_result_is_verified_and_its_masking_derived() -> None:
    result = [{"tid": "110101********1234", "dx": None, "n": "x"}]
    applied = {"dx": "L4:none:withheld", "tid": "L3:id_number:partial"}
    assert verify_masked(result, GRADES, applied) == applied
    assert verify_masked([{"n": "clear"}], GRADES, None) == {}


@pytest.mark.parametrize(("result", "column", "grade"), [
    ([{"tid": "110101199003071234", "dx": None}], "tid", "L3"),
    ([{"tid": "110101********1234", "dx": "asthma-chronic"}], "dx", "L4"),
    ({"rows": [{"n": "x", "info": {"dx": "asthma-chronic"}}]}, "dx", "L4"),
])
def test_a_result_not_masked_is_refused_naming_column_and_grade(
        result: Any, column: str, grade: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        verify_masked(result, GRADES, None)
    assert caught.value.field == "result"
    assert f"column {column!r} of grade {grade}" in str(caught.value)
    assert "1990" not in str(caught.value) and "asthma" not in str(caught.value)


def test_a_masking_report_other_than_the_servers_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        verify_masked([{"dx": None}], GRADES, None)
    assert caught.value.field == "masking"
