"""The whole lifecycle over HTTP as the six parties drive it, then a rebuild of the read models.

Runs on a SQLite file and on PostgreSQL (the ``database_url`` fixture is parametrized).
"""

from __future__ import annotations

import base64
import hashlib

from core.canonical import decode
from runtime.build import Container
from tests.e2e.conftest import World

CREDIT_CODE = [
    {"name": "credit_code", "type": "string", "sensitivity": "public"},
    {"name": "tax_paid_fen", "type": "integer", "sensitivity": "sensitive"},
    {"name": "tax_grade", "type": "string", "sensitivity": "internal"},
    {"name": "legal_person_id", "type": "string", "sensitivity": "personal"},
]
UTILITY = [
    {"name": "credit_code", "type": "string", "sensitivity": "public"},
    {"name": "power_kwh", "type": "integer", "sensitivity": "internal"},
]
CODE = "def score(tax, power):\n    return {'score': 600}\n"


def test_the_whole_lifecycle_then_a_rebuild_gives_the_same_read_models(
        world: World, container: Container) -> None:
    w = world
    # the parties come on board (入驻 + 准入审核)
    tax = w.onboard("provider", "Tax bureau 税务局")
    power = w.onboard("provider", "Power utility 供电公司")
    operator = w.onboard("operator", "Data operator 授权运营方")
    developer = w.onboard("developer", "Developer Co. 开发利用方")
    bank = w.onboard("demander", "Bank 银行")
    expert1 = w.member(w.regulator, "expert one", ["expert"])
    expert2 = w.member(w.regulator, "expert two", ["expert"])

    # providers register their datasets (metadata only) and publish them to the catalog
    ds_tax = w.call("POST", "/datasets", tax, 201, json={
        "name": "Enterprise tax records", "description": "annual tax per enterprise",
        "source_system": "金税三期", "classification": "L3", "fields": CREDIT_CODE})["dataset_id"]
    ds_power = w.call("POST", "/datasets", power, 201, json={
        "name": "Enterprise power use", "description": "monthly kWh",
        "source_system": "营销系统", "classification": "L2", "fields": UTILITY})["dataset_id"]
    for ds, owner in ((ds_tax, tax), (ds_power, power)):
        w.call("POST", f"/datasets/{ds}/publication", owner)
    catalog = w.call("GET", "/datasets", bank)
    assert {d["id"] for d in catalog} >= {ds_tax, ds_power}

    # the operator submits a scenario (一场景一审核); experts give opinions; the regulator approves
    requested = [{"dataset_id": ds_tax, "fields": ["credit_code", "tax_paid_fen", "tax_grade"]},
                 {"dataset_id": ds_power, "fields": ["credit_code", "power_kwh"]}]
    scenario = w.call("POST", "/scenarios", operator, 201, json={
        "title": "SME credit assessment 普惠金融", "purpose": "score small enterprises for loans",
        "sector": "finance", "requested": requested,
        "circulation_mode": "trusted_exchange"})["scenario_id"]
    for expert in (expert1, expert2):
        w.call("POST", f"/scenarios/{scenario}/opinions", expert, 201,
               json={"verdict": "approve", "comment": "purpose is lawful and proportionate"})
    w.call("POST", f"/scenarios/{scenario}/decision", w.regulator,
           json={"approve": True, "comment": "approved after expert review"})
    assert w.call("GET", f"/scenarios/{scenario}", tax)["state"] == "approved"

    # each provider grants an authorization for the approved scenario
    policy = {"processing_count": 10, "view_count": 100, "download_count": 0,
              "provider_may_terminate": True, "circulation_modes": ["trusted_exchange"]}
    auths = []
    for owner, sel in ((tax, requested[0]), (power, requested[1])):
        auths.append(w.call("POST", "/authorizations", owner, 201, json={
            "scenario_id": scenario, "datasets": [sel], "not_before": "2026-01-01T00:00:00+00:00",
            "not_after": "2027-12-31T00:00:00+00:00", "usage_policy": policy})["authorization_id"])

    # the operator registers the product with its code and lists it (上架, platform review)
    product = w.call("POST", "/products", operator, 201, json={
        "scenario_id": scenario, "authorization_ids": auths, "name": "SME credit score",
        "kind": "model", "description": "credit score by unified social credit code",
        "code": CODE, "inputs": requested, "output_schema": {"score": "integer"},
        "quality_report": "backtested on 2025 defaults", "price_fen": 500_000,
        "developer_id": developer.participant_id})["product_id"]
    w.call("POST", f"/products/{product}/listing-request", operator)
    w.call("POST", f"/products/{product}/listing-decision", w.platform,
           json={"approve": True, "comment": "quality report reviewed"})
    seen = w.call("GET", f"/products/{product}", bank)
    assert seen["state"] == "listed"
    assert seen["code_sha256"] == hashlib.sha256(CODE.encode()).hexdigest()

    # the bank orders; the contract is proposed, accepted and approved by providers + operator
    order = w.call("POST", "/orders", bank, 201, json={
        "product_id": product, "purpose": "credit assessment of loan applicants"})["order_id"]
    w.call("POST", f"/orders/{order}/contract", operator, json={
        "usage_policy": policy, "price_fen": 500_000,
        "revenue_split": {"provider": 4000, "operator": 3000, "developer": 2000,
                          "platform": 1000}})
    w.call("POST", f"/orders/{order}/contract/acceptance", bank)
    for party in (tax, power):
        w.call("POST", f"/orders/{order}/contract/approvals", party)
    approved = w.call("POST", f"/orders/{order}/contract/approvals", operator)
    assert w.call("GET", f"/orders/{order}", bank)["state"] == "approved"

    # the log holds every step, gap-free, and the last command wrote contract.approved
    page = w.call("GET", "/ledger/events?after=0&limit=1000", w.regulator)
    events = page["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)) == list(
        range(1, page["head"] + 1))
    by_seq = {e["seq"]: e for e in events}
    assert by_seq[approved["seqs"][-1]]["type"] == "contract.approved"
    for e in events:
        whole = decode(base64.b64decode(e["canonical"]))
        assert whole == {"seq": e["seq"], "id": e["originator_id"], "version": e["version"],
                         "type": e["type"], "payload": e["payload"]}
    types = {e["type"] for e in events}
    assert {"participant.admission_approved", "dataset.published", "scenario.opinion_recorded",
            "scenario.approved", "authorization.granted", "product.listed", "order.placed",
            "contract.proposed", "contract.accepted", "contract.party_approved",
            "contract.approved"} <= types

    # drop and rebuild every read model from seq 1: the same state
    runner = container.runner
    assert runner.wait_for(page["head"])
    before = runner.digests()
    assert set(before) == {"participants", "datasets", "scenarios", "authorizations",
                           "products", "orders", "computations", "usage", "joint",
                           "forensics", "privacy_budget"}
    assert runner.rebuild() == page["head"]
    assert runner.digests() == before
    assert w.call("GET", f"/orders/{order}", bank)["state"] == "approved"
