"""Allowed fields (字段控制) on the datasite: the product's code is handed only the columns the
product names, cut to the contract's ``allowed_fields`` and to the fields the provider's
proven authorizations grant; the table's other columns never reach it.

Runs inside the compute venv only (a real ledger server and a PySyft datasite).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from compute_nodes.executor import Job
from compute_nodes.node import allowed_columns
from compute_nodes.output_contract import OutputContract
from tests.compute import hostile_products as hp
from tests.compute.ledger import USED, provider_view, until_settled

pytestmark = pytest.mark.timeout(180)

SITE = "tax-bureau-fields"
SEEN_SCHEMA = {"type": "array", "items": {"type": "object", "properties": {
    "uscc": {"type": "string"}, "seen": {"type": "array", "items": {"type": "string"}}},
    "required": ["uscc"], "additionalProperties": False}}


def listed(w: SimpleNamespace, fields: list[str], name: str) -> str:
    """A listed product whose code lists the columns it is handed (``hp.COLUMNS``)."""
    return w.api.api.list_product(w.p.operator, w.api.platform, {
        "scenario_id": w.p.scenario_id, "authorization_ids": [w.p.auth_id], "name": name,
        "kind": "api", "description": "lists its columns", "code": hp.COLUMNS,
        "inputs": [{"dataset_id": w.p.dataset_id, "fields": fields}],
        "output_schema": SEEN_SCHEMA, "key_column": "uscc", "quality_report": "n/a",
        "price_fen": 1, "developer_id": w.p.developer.id})


def contract(w: SimpleNamespace, product: str, allowed: list[str]) -> str:
    api, p = w.api.api, w.p
    oid = api.place_order(p.demander, product, "credit decisions on SMEs")
    now = datetime.now(UTC)
    api.propose_contract(p.operator, oid, usage_policy={
        "processing_count": 1, "circulation_modes": ["plaintext"], "allowed_fields": allowed,
        "not_before": (now - timedelta(minutes=1)).isoformat(),
        "not_after": (now + timedelta(days=90)).isoformat()}, price_fen=1,
        revenue_split={"developer": 1000, "operator": 3000, "platform": 1000,
                       "provider": 5000})
    api.accept_contract(p.demander, oid)
    w.api.approve(p, oid)
    return oid


def seen(w: SimpleNamespace, computation_id: str) -> list[str]:
    [row] = w.api.call("GET", f"/deliveries/{computation_id}/result", w.p.demander.token)
    columns: list[str] = row["seen"]
    return columns


def test_the_code_sees_only_the_allowed_fields(w: SimpleNamespace) -> None:
    """The table holds uscc, industry, tax_paid_yuan and power_kwh; the authorization
    grants three of them; the product reads two, which the contract allows: the code sees
    those two only."""
    read = ["uscc", "tax_paid_yuan"]
    oid = contract(w, listed(w, read, "two columns"), read)
    [outcome] = until_settled(w.node(), provider_view(w, oid, "contract.approved"), 60)
    assert outcome.status == "delivered", outcome
    assert seen(w, outcome.computation_id) == sorted(read)


def test_the_node_cuts_the_inputs_to_the_contracts_allowed_fields(w: SimpleNamespace) -> None:
    """Were a contract to allow fewer fields than its product reads (the ledger refuses
    such a proposal now; one from before, or a newer writer's), the node hands the code
    only the allowed ones."""
    product = listed(w, USED, "three columns")
    oid = contract(w, product, USED)
    registered = w.api.event(product, "product.registered")
    policy: dict[str, Any] = w.api.event(oid, "contract.proposed")["payload"]["usage_policy"]
    granted = {w.p.dataset_id: set(USED)}
    columns = allowed_columns((tuple(USED),), [w.p.dataset_id], ["uscc", "power_kwh"],
                              granted)
    assert columns == (("uscc", "power_kwh"),)
    node = w.node()
    job = Job(oid, 1, hp.COLUMNS, hashlib.sha256(hp.COLUMNS.encode()).hexdigest(),
              registered["seq"], [w.p.dataset_id], None,
              OutputContract.of(registered["payload"], policy), columns)
    outcome = node.executor.run(job)
    assert outcome.status == "delivered", outcome
    assert seen(w, outcome.computation_id) == ["power_kwh", "uscc"]


def test_fields_no_proven_grant_covers_are_not_handed_over() -> None:
    columns = (("uscc", "tax_paid_yuan"), ("uscc", "overdue_days"))
    assert allowed_columns(columns, ["d-1", "d-2"], None,
                           {"d-1": {"uscc", "tax_paid_yuan"}}) == (
        ("uscc", "tax_paid_yuan"), ())
    assert allowed_columns(columns, ["d-1", "d-2"], ["uscc"],
                           {"d-1": {"uscc"}, "d-2": {"uscc", "overdue_days"}}) == (
        ("uscc",), ("uscc",))
