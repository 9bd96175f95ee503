"""The aggregation node's turning of a summed vector into the joint table
(aggregation/service.py): exact integer sums, number columns as floats, and the sums no
honest parts can make refused."""

from __future__ import annotations

import json

import pytest

from aggregation.service import joint_table, sealed_rows, table_json
from core import secagg
from core.canonical import canonical_bytes
from domain.joint import JointExecution

KEYS = ["91110000MA01", "91110000MA02"]


def _joint(providers: int = 3) -> JointExecution:
    joint = JointExecution("joint-1")
    joint.providers = [f"p{i}" for i in range(providers)]
    joint.key_column, joint.value_columns = "credit_code", ["score", "weight"]
    return joint


def test_the_sum_becomes_the_table_row_major() -> None:
    total = [812 * secagg.SCALE, secagg.to_fixed([1.5])[0],
             -3 * secagg.SCALE, secagg.to_fixed([0.25])[0]]
    table = joint_table(_joint(), KEYS, total, ["integer", "number"])
    assert table == {KEYS[0]: {"score": 812, "weight": 1.5},
                     KEYS[1]: {"score": -3, "weight": 0.25}}
    assert isinstance(table[KEYS[0]]["score"], int)
    rows = sealed_rows(_joint(), table)
    assert json.loads(rows[KEYS[1]]) == {"credit_code": KEYS[1], "score": -3, "weight": 0.25}
    # with integer columns only, the canonical JSON is core.canonical's, byte for byte
    ints = {k: {"score": v["score"]} for k, v in table.items()}
    assert table_json(ints) == canonical_bytes(ints)


@pytest.mark.parametrize(("total", "reason"), [
    ([3 * secagg.VALUE_BOUND + 1, 0, 0, 0], "bound"),
    ([0, 0, 0, -(3 * secagg.VALUE_BOUND) - 1], "bound"),
    ([secagg.SCALE // 2, 0, 0, 0], "integer"),
])
def test_a_sum_no_honest_parts_make_is_refused(total: list[int], reason: str) -> None:
    with pytest.raises(secagg.AggregationRefused) as refused:
        joint_table(_joint(), KEYS, total, ["integer", "number"])
    assert refused.value.reason == reason
    assert str(refused.value).startswith(f"{reason}: ")


def test_masks_that_do_not_cancel_are_out_of_bounds() -> None:
    """A part masked for another execution, relabelled: the masks do not cancel, and the
    sum leaves the bound (each word passes with probability n/128 only)."""
    keys = {p: secagg.new_node_key() for p in ("a", "b", "c")}
    publics = {p: k.public_key() for p, k in keys.items()}
    values = [secagg.SCALE * 5] * 64

    def part(p: str, execution: str) -> secagg.MaskedPart:
        return secagg.mask(keys[p], execution, p, list(keys), publics, values,
                           layout_sha256="ab" * 32)

    old = part("c", "old")
    relabelled = secagg.MaskedPart({**old.header, "execution_id": "new"}, old.body)
    total = secagg.aggregate([part("a", "new"), part("b", "new"), relabelled], "new",
                             list(keys))
    joint = _joint()
    joint.value_columns = ["score"]
    with pytest.raises(secagg.AggregationRefused, match="bound"):
        joint_table(joint, [f"k{i:02d}" for i in range(64)], total, ["integer"])
