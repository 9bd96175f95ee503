"""The masking a compute node applied (脱敏, docs/PRIVACY.md) is recorded with the result:
``computation.succeeded``'s ``masking`` beside the masked result's hash, shown in the
computation view, checked against the product's field grades (422 naming ``masking``)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from core.canonical import canonical_bytes
from runtime.build import Container
from tests.e2e.conftest import Chain, World, head
from tests.e2e.test_audit_rules import findings
from tests.e2e.test_computations_api import DATA_SHA, ask, events_of, report
from tests.e2e.test_market_api import approved_contract, refused

#: the e2e dataset: taxpayer_id is personal (L3), annual_revenue sensitive (L3)
MASKED = [{"taxpayer_id": "9********1", "annual_revenue": 120000},
          {"taxpayer_id": "9********2", "annual_revenue": 99000}]
APPLIED = {"annual_revenue": "L3:none:partial", "taxpayer_id": "L3:none:partial"}


def requested(world: World, chain: Chain) -> tuple[str, str]:
    """A computation requested on an approved contract; its id and the product's."""
    world.call("POST", f"/datasets/{chain.dataset_id}/data-loaded", chain.provider,
               json={"rows": 2, "schema": [{"name": "taxpayer_id", "type": "string"},
                                           {"name": "annual_revenue", "type": "int"}],
                     "sha256": DATA_SHA, "mock_rows": 2})
    product_id, oid = approved_contract(world, chain)
    made = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))
    return str(made["computation_id"]), product_id


def test_the_applied_masking_is_recorded_and_shown(world: World, chain: Chain,
                                                   container: Container) -> None:
    cid, product_id = requested(world, chain)
    product = world.call("GET", f"/products/{product_id}", chain.operator)
    assert product["field_grades"][chain.dataset_id]["taxpayer_id"] == {
        "grade": "L3", "kind": "none"}
    posted = world.call("POST", f"/computations/{cid}/result", chain.provider,
                        json={**report(chain, MASKED), "masking": APPLIED})
    assert posted["state"] == "succeeded"
    assert posted["result_sha256"] == hashlib.sha256(canonical_bytes(MASKED)).hexdigest()
    succeeded = [e for e in events_of(world, cid) if e["type"] == "computation.succeeded"]
    assert succeeded[0]["payload"]["masking"] == APPLIED
    assert succeeded[0]["payload"]["class_version"] == 2
    for party in (chain.demander, chain.operator, chain.provider):
        assert world.call("GET", f"/computations/{cid}", party)["masking"] == APPLIED
    assert findings(container) == []  # the rule book agrees: grades and masking


def test_a_result_reported_without_masking_records_none(world: World, chain: Chain) -> None:
    cid, _ = requested(world, chain)
    world.call("POST", f"/computations/{cid}/result", chain.provider, json=report(chain))
    assert world.call("GET", f"/computations/{cid}", chain.demander)["masking"] == {}


@pytest.mark.parametrize("masking", [
    {"score": "L3:none:partial"},                        # no input field of that name
    {"taxpayer_id": "L4:none:withheld"},                 # not what its grade calls for
    {"taxpayer_id": "L3:phone:partial"},
    {"industry": "L1:none:clear"},                       # L1: a plaintext result keeps it
    ["taxpayer_id"],
])
def test_a_masking_the_product_grades_do_not_call_for_is_422(
        world: World, chain: Chain, masking: Any) -> None:
    cid, _ = requested(world, chain)
    before = head(world)
    body = refused(world, "POST", f"/computations/{cid}/result", chain.provider, 422,
                   json={**report(chain, MASKED), "masking": masking})
    assert "masking" in str(body)
    assert head(world) == before
    assert world.call("GET", f"/computations/{cid}", chain.provider)["state"] == "requested"
