"""Masking goes by column name; the product's code is not trusted to keep the names. Through
a real PySyft datasite (the graded residents market of test_masking.py): a clear value of an
L3/L4 field under another column name, as an object key (a grouped sum turned into a dict) or
in a list without names is refused on the datasite, the reason naming the field and where,
never a value; an ordinary grouped Series leaves as rows, masked by its index's grade.

Runs inside the compute venv only (a real ledger server and a PySyft datasite).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.compute import test_masking as tm
from tests.compute.ledger import provider_view, until_settled

pytestmark = pytest.mark.timeout(240)

ROWS = {"type": "array", "items": {"type": "object"}}
RENAMED = ('''def residents(data):
    return [{"district": str(d), "ref": str(x)} for d, x in zip(data["district"], data["diagnosis"])]
''', {"type": "array", "items": {"type": "object", "properties": {
    "district": {"type": "string"}, "ref": {"type": "string"}}}}, "in column 'ref'")
AS_KEYS = ('''def residents(data):
    sums = data.groupby("diagnosis")["income_yuan"].sum()
    return [{"district": "all", "by": {str(k): int(v) for k, v in sums.items()}}]
''', {"type": "array", "items": {"type": "object", "properties": {
    "district": {"type": "string"},
    "by": {"type": "object", "additionalProperties": {"type": "integer"}}}}},
    "as an object key")
NAMELESS = ('''def residents(data):
    return data[["person_id", "income_yuan"]].values.tolist()
''', {"type": "array", "items": {"type": "array"}}, "in a value without a column name")


@pytest.mark.parametrize(("code", "schema", "where"), [RENAMED, AS_KEYS, NAMELESS],
                         ids=["renamed", "as-keys", "nameless"])
def test_a_clear_value_under_any_name_is_refused_on_the_datasite(
        w: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, code: str,
        schema: dict, where: str) -> None:
    monkeypatch.setattr(tm, "CODE", code)
    monkeypatch.setattr(tm, "SCHEMA", schema)
    made = tm.residents_market(w)
    [outcome] = until_settled(w.node(), provider_view(w, made["order"], "contract.approved"),
                              90)
    assert outcome.status == "failed", outcome
    reason = w.api.event(outcome.computation_id, "computation.failed")["payload"]["reason"]
    assert reason.startswith("output_violation: a clear value of the L"), reason
    assert where in reason, reason
    assert ("'diagnosis'" if "person_id" not in code else "'person_id'") in reason
    for column in tm.COLUMNS:  # the reason quotes no value of the private table
        for clear in tm.PRIVATE[column]:
            assert len(str(clear)) < 4 or str(clear) not in reason
    assert w.api.of(outcome.computation_id) == ["computation.requested", "computation.failed"]


def test_a_grouped_series_leaves_as_rows_masked_by_its_index_grade(
        w: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tm, "CODE", '''def residents(data):
    return data.groupby("diagnosis")["income_yuan"].sum()
''')
    monkeypatch.setattr(tm, "SCHEMA", ROWS)
    made = tm.residents_market(w)
    [outcome] = until_settled(w.node(), provider_view(w, made["order"], "contract.approved"),
                              90)
    assert outcome.status == "delivered", outcome
    succeeded = w.api.event(outcome.computation_id, "computation.succeeded")["payload"]
    assert succeeded["masking"] == {"diagnosis": "L4:none:withheld",
                                    "income_yuan": "L3:none:partial"}
    served = w.api.api.delivery(w.p.demander, outcome.computation_id).decode()
    rows = json.loads(served)
    assert [r["diagnosis"] for r in rows] == [None, None, None]
    # generalised (L3); a delivery's watermark may move an integer by one
    assert [abs(a - b) <= 1 for a, b in zip(sorted(r["income_yuan"] for r in rows),
                                            [10, 99000, 120000], strict=True)] == [True] * 3
    for clear in tm.PRIVATE["diagnosis"]:
        assert clear not in served
