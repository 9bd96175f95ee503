"""compute_nodes.output_contract: a product's output checked against its proven terms."""

from __future__ import annotations

import re
from typing import Any

import pytest

from compute_nodes.output_contract import OutputContract, OutputViolation

SCHEMA = {"type": "array", "items": {
    "type": "object", "additionalProperties": False, "required": ["uscc", "points"],
    "properties": {"uscc": {"type": "string"}, "points": {"type": "integer"}}}}
REGISTERED = {
    "output_schema": SCHEMA, "key_column": "uscc",
    "inputs": [{"dataset_id": "tax", "fields": ["uscc", "tax_rating", "tax_paid_yuan_12m"]}],
    "sensitive_fields": {"tax": ["tax_paid_yuan_12m", "tax_rating"]},
}
QUERY = {"field": "uscc", "values": ["A1", "B2", "C3"]}


def terms(policy: dict[str, Any] | None = None, **changes: Any) -> OutputContract:
    return OutputContract.of({**REGISTERED, **changes}, policy)


def test_an_output_within_the_terms_passes() -> None:
    terms().check([{"uscc": "A1", "points": 40}, {"uscc": "B2", "points": 3}], QUERY)


def test_a_query_may_name_only_the_key_column() -> None:
    terms().check_query(QUERY)
    with pytest.raises(OutputViolation, match="'points', not the product's key column 'uscc'"):
        terms().check_query({"field": "points", "values": ["-100", "199"]})
    with pytest.raises(OutputViolation, match="declares no key column"):
        terms(key_column=None).check_query(QUERY)
    terms(key_column=None).check_query(None)


def test_a_column_outside_the_schema_is_refused_by_name_without_its_values() -> None:
    rows = [{"uscc": "A1", "points": 1, "tax_paid_yuan_12m": 987654}]
    permissive = terms(sensitive_fields={})
    with pytest.raises(OutputViolation) as caught:
        permissive.check(rows, QUERY)
    assert str(caught.value) == ("output_violation: column 'tax_paid_yuan_12m' is not in the "
                                 "product's output_schema")
    assert "987654" not in str(caught.value)


def test_a_made_up_column_name_is_withheld() -> None:
    """A column name the product invents could spell a private value."""
    with pytest.raises(OutputViolation) as caught:
        terms().check([{"uscc": "A1", "points": 1, "张三_owes_90000": 1}], QUERY)
    assert "张三" not in str(caught.value) and "withheld" in str(caught.value)


def test_a_sensitive_column_needs_the_contracts_leave() -> None:
    schema = {"type": "array"}
    rows = [{"uscc": "A1", "tax_rating": "A"}]
    with pytest.raises(OutputViolation, match="column 'tax_rating' is sensitive in dataset "
                                              "tax and the contract does not allow it"):
        terms(output_schema=schema).check(rows, QUERY)
    nested = {"by_firm": {"A1": {"tax_rating": "A"}}}
    with pytest.raises(OutputViolation, match="'tax_rating' is sensitive"):
        terms(output_schema={"type": "object"}).check(nested, None)
    terms({"allowed_fields": ["tax_rating"]}, output_schema=schema).check(rows, QUERY)


def test_types_and_required_columns_are_checked_without_quoting_values() -> None:
    with pytest.raises(OutputViolation) as caught:
        terms().check([{"uscc": "A1", "points": "secret-9"}], QUERY)
    assert str(caught.value) == "output_violation: column 'points' must be of type integer"
    with pytest.raises(OutputViolation, match="column 'points' is missing"):
        terms().check([{"uscc": "A1"}], QUERY)


def test_a_row_level_output_is_bounded_by_the_query() -> None:
    rows = [{"uscc": "A1", "points": i} for i in range(4)]
    with pytest.raises(OutputViolation) as caught:
        terms().check(rows, QUERY)
    assert str(caught.value) == ("output_violation: more rows than keys asked; at most one "
                                 "row per key the query names")  # no count: it could spell
    twice = {"field": "uscc", "values": ["A1", "A1", "A1"]}
    with pytest.raises(OutputViolation, match="more rows than keys asked"):
        terms().check(rows[:2], twice)  # a key asked twice still gets one row
    terms().check(rows, None)  # no query: the product's own output, schema-checked


@pytest.mark.parametrize(("schema", "why"), [
    ({"type": "tabel"}, "not a JSON Schema"),
    (None, "no output_schema object"),
    ({"type": "array", "items": {"$ref": "urn:x"}}, "uses '$ref'"),
    ({"type": "string", "pattern": "(a+)+$"}, "uses 'pattern'"),
])
def test_an_output_schema_the_node_cannot_check_lets_nothing_through(
        schema: Any, why: str) -> None:
    """Recorded as the execution's failure before anything runs (never retried forever)."""
    refused = terms(output_schema=schema)
    with pytest.raises(OutputViolation, match=f"output_schema_refused: .*{re.escape(why)}"):
        refused.check_query(QUERY)


def test_the_output_is_masked_by_the_grades_of_the_input_fields_it_is_named_like() -> None:
    """product.registered's field_grades: a column takes its input field's grade and kind
    (the stricter of two inputs); a column named like no field, or a v3 product (no
    field_grades), is left as it is."""
    grades = {"tax": {"uscc": {"grade": "L1", "kind": "none"},
                      "tax_paid_yuan_12m": {"grade": "L3", "kind": "none"},
                      "tax_rating": {"grade": "L2", "kind": "none"}},
              "people": {"tax_rating": {"grade": "L4", "kind": "none"},
                         "phone": {"grade": "L3", "kind": "phone"}}}
    rows = [{"uscc": "A1", "tax_paid_yuan_12m": 123456, "tax_rating": "A",
             "phone": "13812345678", "points": 7}]
    masked, applied = terms(field_grades=grades).mask(rows)
    assert masked == [{"uscc": "A1", "tax_paid_yuan_12m": 120000, "tax_rating": None,
                       "phone": "138****5678", "points": 7}]
    assert applied == {"phone": "L3:phone:partial", "tax_paid_yuan_12m": "L3:none:partial",
                       "tax_rating": "L4:none:withheld"}
    assert terms().mask(rows) == (rows, {})
