"""core/masking.py: the rule of each grade in a plaintext result, the format-preserving mask
of each identifier kind, integers generalised, and the column grades of several inputs."""

from __future__ import annotations

from typing import Any

import pytest

from core import masking as m

ID = "110101199003071234"


@pytest.mark.parametrize(("kind", "clear", "masked"), [
    ("id_number", ID, "110101********1234"),
    ("phone", "13812345678", "138****5678"),
    ("name", "张三丰", "张**"),
    ("name", "李四", "李*"),
    ("address", "北京市海淀区中关村大街1号", "北京市海淀区*******"),
    ("account", "6222020200112233", "************2233"),
    ("email", "alice@example.com", "a***@example.com"),
    ("none", "secret", "s****t"),
    ("none", "ab", "a*"),              # shorter than 5: the first character only
    ("none", "王小明", "王**"),
    ("none", "sunny", "s***y"),
    ("none", "a", "*"),
    ("none", "", ""),
    ("phone", "12345", "***45"),       # too short for 3 + 4: at most half shown
    ("id_number", "12345678", "12****78"),
    ("email", "not-an-email", "n**********l"),
])
def test_each_kind_has_its_format_preserving_mask(kind: str, clear: str, masked: str) -> None:
    assert m.mask_value(clear, kind) == masked
    if kind != "email":
        assert len(masked) == len(clear)  # the format is kept: one star per hidden character


@pytest.mark.parametrize(("number", "general"), [
    (0, 0), (4, 0), (7, 10), (42, 40), (-7, -10), (99, 100), (123, 120), (125, 130), (987, 990), (995, 1000),
    (123456, 120000), (-987, -990), (-123456, -120000), (12_345_678_901, 12_000_000_000),
    (1500.0, 1500), (1549.0, 1500),
])
def test_l3_integers_are_generalised_to_two_significant_digits_or_tens(number: Any,
                                                                general: int) -> None:
    assert m.mask_value(number, "none") == general
    assert m.mask_value(number, "phone") == general  # a number's kind does not matter


def test_what_cannot_be_masked_in_part_is_withheld() -> None:
    assert m.mask_value(None, "name") is None and m.mask_value(True, "none") is True
    assert m.mask_value([1, 2], "none") is None and m.mask_value({"a": 1}, "none") is None
    assert m.mask_value(0.5, "none") is None


GRADES = {"code": {"grade": "L1", "kind": "none"}, "amount": {"grade": "L2", "kind": "none"},
          "phone": {"grade": "L3", "kind": "phone"}, "id": {"grade": "L3", "kind": "id_number"},
          "tax": {"grade": "L3", "kind": "none"}, "secret": {"grade": "L4", "kind": "name"}}


def test_a_plaintext_result_keeps_l1_l2_masks_l3_and_withholds_l4() -> None:
    rows = [{"code": "91310000MA1", "amount": 123456, "phone": "13812345678", "id": ID,
             "tax": 987654, "secret": "王小明", "other": "x"},
            {"code": "91310000MA2", "amount": 5, "phone": None, "id": ID, "tax": 42,
             "secret": None, "other": "y"}]
    before = [dict(r) for r in rows]
    masked, applied = m.mask_rows(rows, GRADES, "plaintext")
    assert rows == before  # the input is not modified
    assert masked == [
        {"code": "91310000MA1", "amount": 123456, "phone": "138****5678",
         "id": "110101********1234", "tax": 990000, "secret": None, "other": "x"},
        {"code": "91310000MA2", "amount": 5, "phone": None, "id": "110101********1234",
         "tax": 40, "secret": None, "other": "y"}]
    assert applied == {"id": "L3:id_number:partial", "phone": "L3:phone:partial",
                       "secret": "L4:name:withheld", "tax": "L3:none:partial"}


def test_applied_names_only_columns_present_and_changed_by_a_rule() -> None:
    rows = [{"code": "c", "amount": 1}]
    masked, applied = m.mask_rows(rows, GRADES, "plaintext")
    assert masked == rows and applied == {}
    assert m.mask_rows([], GRADES, "plaintext") == ([], {})


def test_an_unknown_mode_or_grade_withholds() -> None:
    masked, applied = m.mask_rows([{"code": "c"}], GRADES, "ciphertext")
    assert masked == [{"code": None}] and applied == {"code": "L1:none:withheld"}
    assert m.rule("plaintext", "L9") == "withheld"


def test_a_result_that_is_not_a_table_is_masked_at_every_depth() -> None:
    value = {"summary": {"phone": "13812345678", "secret": "x"}, "rows": [{"tax": 123456}],
             "secret": {"nested": "all of it"}}
    masked, applied = m.mask_result(value, GRADES, "plaintext")
    assert masked == {"summary": {"phone": "138****5678", "secret": None},
                      "rows": [{"tax": 120000}], "secret": None}
    assert applied == {"phone": "L3:phone:partial", "secret": "L4:name:withheld",
                       "tax": "L3:none:partial"}
    assert m.mask_result(7, GRADES, "plaintext") == (7, {})
    nested = [{"code": "c", "extra": {"phone": "13812345678"}}, {"code": "d", "extra": None}]
    assert m.mask_result(nested, GRADES, "plaintext") == (
        [{"code": "c", "extra": {"phone": "138****5678"}}, {"code": "d", "extra": None}],
        {"phone": "L3:phone:partial"})


def test_column_grades_take_the_stricter_of_two_inputs() -> None:
    field_grades = {
        "d1": {"phone": {"grade": "L2", "kind": "none"}, "name": {"grade": "L3", "kind": "none"},
               "odd": {"grade": "L7", "kind": "weird"}},
        "d2": {"phone": {"grade": "L3", "kind": "phone"}, "name": {"grade": "L3", "kind": "name"},
               "code": {"grade": "L1", "kind": "none"}}}
    assert m.column_grades(field_grades) == {
        "phone": {"grade": "L3", "kind": "phone"}, "name": {"grade": "L3", "kind": "name"},
        "odd": {"grade": "L4", "kind": "none"}, "code": {"grade": "L1", "kind": "none"}}
