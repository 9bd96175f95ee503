"""The content check after masking (compute_nodes/clear_values.py), on tables in memory:
which clear values take part, where they are found, and that masked values and honest
counts pass."""

from __future__ import annotations

import pandas as pd
import pytest

from compute_nodes.clear_values import ClearValues
from compute_nodes.output_contract import OutputContract, OutputViolation
from core.masking import mask_result

GRADES = {"id_number": {"grade": "L4", "kind": "id_number"},
          "phone": {"grade": "L3", "kind": "phone"},
          "name": {"grade": "L3", "kind": "name"},
          "code": {"grade": "L3", "kind": "none"},
          "amount": {"grade": "L4", "kind": "none"},
          "district": {"grade": "L1", "kind": "none"}}
TABLE = pd.DataFrame({
    "id_number": ["110101199003071234", "310101198512120021"],
    "phone": [13812345678, 13987654321],  # an identifier held as a number
    "name": ["王小明", "李四"],
    "code": ["ab", "x9"],  # too short to take part
    "amount": [5000, 7000],  # integers of kind none: left out
    "district": ["Haidian-district", "Xuhui-district"]})  # L1: left out
CLEAR = ClearValues.of([TABLE], GRADES)
TERMS = OutputContract(declared=frozenset({"ref", "district"}))


def refused(value: object) -> str:
    with pytest.raises(OutputViolation) as caught:
        CLEAR.check(value, TERMS.quote)
    return str(caught.value)


def test_which_clear_values_take_part() -> None:
    assert set(CLEAR.owner) == {"110101199003071234", "310101198512120021", "13812345678",
                                "13987654321", "王小明", "李四"}


@pytest.mark.parametrize(("value", "where"), [
    ([{"ref": "110101199003071234"}], "in column 'ref'"),
    ([{"REF ": " 110101199003071234 "}], "in column (a name the product made up, withheld)"),
    ({"110101199003071234": 5000}, "as an object key"),
    ([["310101198512120021", 7000]], "in a value without a column name"),
    ([{"ref": {"deep": ["x", "id: 310101198512120021"]}}], "in column 'deep'"),
    ([{"ref": 13812345678}], "in column 'ref'"),
    ([{"district": "李四"}], "in column 'district'"),
])
def test_a_clear_value_is_found_under_any_name_key_or_depth(value: object,
                                                             where: str) -> None:
    reason = refused(value)
    assert where.replace("'deep'", "(a name the product made up, withheld)") in reason
    assert "1101011990" not in reason and "3101011985" not in reason and "李四" not in reason


def test_the_reason_names_the_field_and_its_grade() -> None:
    assert refused([{"ref": "13812345678"}]).startswith(
        "output_violation: a clear value of the L3 field 'phone' appears in column 'ref'")


def test_masked_values_and_honest_output_pass() -> None:
    rows = [{"id_number": v, "phone": p, "name": n} for v, p, n in
            zip(TABLE["id_number"], TABLE["phone"].tolist(), TABLE["name"], strict=True)]
    masked, _ = mask_result(rows, GRADES, "plaintext")
    CLEAR.check(masked, TERMS.quote)
    CLEAR.check([{"district": "Haidian-district", "count": 5000, "code": "ab",
                  "total": 12000}], TERMS.quote)
    ClearValues().check({"110101199003071234": 1}, TERMS.quote)  # nothing graded L3/L4
