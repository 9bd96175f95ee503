"""Masking (脱敏) through a real PySyft datasite: a product reading a residents table whose
fields are graded L1 to L4 with identifier kinds runs on the private rows; the node masks
the result's columns by grade and kind before it leaves the datasite (L1/L2 clear, L3
partially masked by kind, integers generalised, L4 withheld), the ledger records the
applied rules with the masked result's hash, and no clear L4 value is in the bytes served.

Runs inside the compute venv only (a real ledger server and a PySyft datasite).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from core.canonical import canonical_bytes
from tests.compute.ledger import provider_view, until_settled
from tests.compute.test_allowed_fields import contract

pytestmark = pytest.mark.timeout(240)

SITE = "civil-affairs-masking"
FIELDS = [
    {"name": "person_id", "type": "string", "sensitivity": "personal", "kind": "id_number"},
    {"name": "phone", "type": "string", "sensitivity": "personal", "kind": "phone"},
    {"name": "full_name", "type": "string", "sensitivity": "personal", "kind": "name"},
    {"name": "home_address", "type": "string", "sensitivity": "personal", "kind": "address"},
    {"name": "bank_account", "type": "string", "sensitivity": "sensitive", "kind": "account"},
    {"name": "email", "type": "string", "sensitivity": "personal", "kind": "email"},
    {"name": "income_yuan", "type": "integer", "sensitivity": "sensitive"},
    {"name": "nickname", "type": "string", "sensitivity": "sensitive"},
    {"name": "diagnosis", "type": "string", "sensitivity": "personal", "grade": "L4"},
    {"name": "district", "type": "string", "sensitivity": "public"},
    {"name": "age_band", "type": "string", "sensitivity": "internal"},
]
COLUMNS = [f["name"] for f in FIELDS]
PRIVATE = pd.DataFrame({
    "person_id": ["11010119900307123X", "310104198512125678", "440305197001014321"],
    "phone": ["13812345678", "13987654321", "15011112222"],
    "full_name": ["王小明", "李四", "欧阳娜娜"],
    "home_address": ["北京市海淀区中关村大街1号", "上海市徐汇区漕溪北路88号", "深圳市南山区科技园"],
    "bank_account": ["6222020200112233", "6217000010002345", "6228480400556677"],
    "email": ["xiaoming@example.com", "lisi@corp.cn", "nana@mail.org"],
    "income_yuan": [123456, 98765, 7],
    "nickname": ["sunny", "ok", "z"],
    "diagnosis": ["hypertension-stage-2", "type-2-diabetes", "asthma-chronic"],
    "district": ["海淀", "徐汇", "南山"],
    "age_band": ["30-39", "40-49", "50-59"],
})
#: the result as the node must post it (rows sorted by person_id, like the code)
MASKED = [
    {"person_id": "110101********123X", "phone": "138****5678", "full_name": "王**",
     "home_address": "北京市海淀区*******", "bank_account": "************2233",
     "email": "x***@example.com", "income_yuan": 120000, "nickname": "s***y",
     "diagnosis": None, "district": "海淀", "age_band": "30-39"},
    {"person_id": "310104********5678", "phone": "139****4321", "full_name": "李*",
     "home_address": "上海市徐汇区*******", "bank_account": "************2345",
     "email": "l***@corp.cn", "income_yuan": 99000, "nickname": "o*",
     "diagnosis": None, "district": "徐汇", "age_band": "40-49"},
    {"person_id": "440305********4321", "phone": "150****2222", "full_name": "欧***",
     "home_address": "深圳市南山区***", "bank_account": "************6677",
     "email": "n***@mail.org", "income_yuan": 10, "nickname": "*",
     "diagnosis": None, "district": "南山", "age_band": "50-59"},
]
APPLIED = {"bank_account": "L3:account:partial", "diagnosis": "L4:none:withheld",
           "email": "L3:email:partial", "full_name": "L3:name:partial",
           "home_address": "L3:address:partial", "income_yuan": "L3:none:partial",
           "nickname": "L3:none:partial", "person_id": "L3:id_number:partial",
           "phone": "L3:phone:partial"}
CODE = '''def residents(data):
    table = data.sort_values("person_id")
    columns = ''' + repr(COLUMNS) + '''
    return [{c: (int(row[c]) if c == "income_yuan" else str(row[c])) for c in columns}
            for _, row in table.iterrows()]
'''
SCHEMA = {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                     "properties": {c: {"type": "integer" if c == "income_yuan"
                                                        else "string"} for c in COLUMNS}}}


def residents_market(w: SimpleNamespace) -> dict[str, str]:
    """The provider's graded residents dataset, loaded on the datasite; a scenario, an
    authorization and a listed product over it; an approved contract allowing every field."""
    api, p = w.api.api, w.p
    dataset = api.register_dataset(p.provider, name="Residents 居民信息", description="graded",
                                   source_system="civil-affairs", fields=FIELDS,
                                   classification="L4")
    api.publish_dataset(p.provider, dataset)
    PRIVATE.to_csv(w.tmp / "residents.csv", index=False)
    PRIVATE.iloc[:2].to_csv(w.tmp / "residents-mock.csv", index=False)
    w.node().load(dataset, w.tmp / "residents.csv", w.tmp / "residents-mock.csv")
    selection = [{"dataset_id": dataset, "fields": COLUMNS}]
    scenario = api.propose_scenario(p.operator, title="Resident services",
                                    purpose="contact residents", sector="civil",
                                    requested=selection)
    api.give_opinion(p.expert, scenario, "approve", "proportionate")
    api.decide_scenario(w.api.regulator, scenario, "approved")
    now = datetime.now(UTC)
    auth = api.authorize(p.provider, scenario, selection,
                         (now - timedelta(days=1), now + timedelta(days=365)),
                         {"processing_count": 10})
    product = api.list_product(p.operator, w.api.platform, {
        "scenario_id": scenario, "authorization_ids": [auth], "name": "resident contacts",
        "kind": "dataset", "description": "rows", "code": CODE, "inputs": selection,
        "output_schema": SCHEMA, "quality_report": "n/a", "price_fen": 1,
        "developer_id": p.developer.id})
    return {"dataset": dataset, "product": product, "order": contract(w, product, COLUMNS)}


def test_a_real_execution_is_masked_by_grade_and_kind_before_it_leaves(
        w: SimpleNamespace) -> None:
    made = residents_market(w)
    registered = w.api.event(made["product"], "product.registered")["payload"]
    assert registered["field_grades"][made["dataset"]]["diagnosis"] == {
        "grade": "L4", "kind": "none"}
    [outcome] = until_settled(w.node(), provider_view(w, made["order"], "contract.approved"),
                              90)
    assert outcome.status == "delivered", outcome
    # the node posted the masked rows: the hash on the log is theirs
    succeeded = w.api.event(outcome.computation_id, "computation.succeeded")["payload"]
    assert succeeded["result_sha256"] == hashlib.sha256(canonical_bytes(MASKED)).hexdigest()
    assert succeeded["masking"] == APPLIED
    view = w.api.call("GET", f"/computations/{outcome.computation_id}", w.p.demander.token)
    assert view["masking"] == APPLIED
    served = w.api.api.delivery(w.p.demander, outcome.computation_id)
    rows: list[dict[str, Any]] = json.loads(served)
    assert [{k: v for k, v in r.items() if k != "income_yuan"} for r in rows] == [
        {k: v for k, v in r.items() if k != "income_yuan"} for r in MASKED]
    # a delivery's watermark may move an integer by one: the generalised figure stays
    assert all(abs(r["income_yuan"] - m["income_yuan"]) <= 1
               for r, m in zip(rows, MASKED, strict=True))
    text = served.decode("utf-8")
    for clear in PRIVATE["diagnosis"]:  # L4: never in a plaintext result
        assert clear not in text
    for column in ("person_id", "phone", "full_name", "bank_account", "email"):
        for clear in PRIVATE[column]:  # L3: only their masked forms
            assert str(clear) not in text
