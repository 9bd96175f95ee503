"""The chain a market test needs: provider → dataset (published) → scenario (approved) →
authorization → product (listed), with a developer and a demander.

Every step goes over HTTP, as the parties would drive it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.e2e.conftest import Party, World

FIELDS = [{"name": "taxpayer_id", "type": "string", "sensitivity": "personal"},
          {"name": "annual_revenue", "type": "integer", "sensitivity": "sensitive"},
          {"name": "industry", "type": "string", "sensitivity": "public"}]
USED = ["taxpayer_id", "annual_revenue"]
CODE = "def run(rows):\n    return [{'score': r['annual_revenue'] // 1000} for r in rows]\n"


@dataclass
class Chain:
    provider: Party
    operator: Party
    developer: Party
    demander: Party
    expert: Party
    dataset_id: str
    scenario_id: str
    authorization_id: str


def build_chain(world: World) -> Chain:
    """Onboard the parties and make an authorization that a product can use."""
    provider = world.onboard("provider", "Tax bureau 税务局")
    operator = world.onboard("operator", "Data operator 数据运营公司")
    developer = world.onboard("developer", "Model studio 模型工作室")
    demander = world.onboard("demander", "City bank 城市商业银行")
    expert = world.member(world.regulator, "expert reviewer 专家", ["expert"])

    ds = world.call("POST", "/datasets", provider, 201, json={
        "name": "Enterprise tax records", "description": "annual filings",
        "source_system": "tax-core", "classification": "L3", "fields": FIELDS})["dataset_id"]
    world.call("POST", f"/datasets/{ds}/publication", provider)

    sc = world.call("POST", "/scenarios", operator, 201, json={
        "title": "SME credit scoring", "purpose": "score small firms for loans",
        "sector": "finance", "requested": [{"dataset_id": ds, "fields": USED}],
        "circulation_mode": "ciphertext"})["scenario_id"]
    world.call("POST", f"/scenarios/{sc}/opinions", expert, 201,
               json={"verdict": "approve", "comment": "proportionate"})
    world.call("POST", f"/scenarios/{sc}/decision", world.regulator,
               json={"approve": True, "comment": "approved"})

    now = datetime.now(UTC)
    auth = world.call("POST", "/authorizations", provider, 201, json={
        "scenario_id": sc, "datasets": [{"dataset_id": ds, "fields": USED}],
        "not_before": (now - timedelta(days=1)).isoformat(),
        "not_after": (now + timedelta(days=365)).isoformat(),
        "usage_policy": {"processing_count": 100}})["authorization_id"]
    return Chain(provider, operator, developer, demander, expert, str(ds), str(sc), str(auth))


def product_body(chain: Chain, **changes: Any) -> dict[str, Any]:
    """A valid POST /products body over the chain's authorization."""
    body: dict[str, Any] = {
        "scenario_id": chain.scenario_id, "authorization_ids": [chain.authorization_id],
        "name": "SME credit score", "kind": "api", "description": "a score per firm",
        "code": CODE, "inputs": [{"dataset_id": chain.dataset_id, "fields": USED}],
        "output_schema": {"type": "object", "properties": {"score": {"type": "integer"}}},
        "quality_report": "AUC 0.81 on the 2023 holdout", "price_fen": 1_250_000,
        "developer_id": chain.developer.participant_id}
    body.update(changes)
    return body


def register_product(world: World, chain: Chain, **changes: Any) -> str:
    """A registered (not listed) product of the chain's operator."""
    made = world.call("POST", "/products", chain.operator, 201, json=product_body(chain, **changes))
    product_id: str = made["product_id"]
    return product_id


def list_product(world: World, chain: Chain, **changes: Any) -> str:
    """A listed product: registered, listing requested, approved by the platform."""
    product_id = register_product(world, chain, **changes)
    world.call("POST", f"/products/{product_id}/listing-request", chain.operator)
    world.call("POST", f"/products/{product_id}/listing-decision", world.platform,
               json={"approve": True, "comment": "complete and documented"})
    return product_id
