"""The masking a compute node applied (脱敏, docs/PRIVACY.md) is recorded with the result:
``computation.succeeded``'s ``masking`` beside the masked result's hash, shown in the
computation view, checked against the product's field grades (422 naming ``masking``); a
posted result the product's grades would mask further is refused (422 naming ``result``)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import func, select

from core.canonical import canonical_bytes
from delivery import results
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


@pytest.mark.parametrize("posted", [
    [{"taxpayer_id": "91110000123456789X", "annual_revenue": 120000}],  # L3 text in clear
    [{"taxpayer_id": "9********1", "annual_revenue": 123456}],          # L3 number exact
    [{"firm": "A", "detail": {"taxpayer_id": "91110000123456789X"}}],    # nested
])
def test_a_result_the_node_did_not_mask_is_422_and_nothing_is_stored(
        world: World, chain: Chain, container: Container, posted: Any) -> None:
    cid, _ = requested(world, chain)
    before = head(world)
    body = refused(world, "POST", f"/computations/{cid}/result", chain.provider, 422,
                   json={**report(chain, posted), "masking": APPLIED})
    text = str(body)
    assert "result" in text and "is not masked as the product's grades call for" in text
    column = "annual_revenue" if posted[0].get("annual_revenue") == 123456 else "taxpayer_id"
    assert f"column '{column}' of grade L3" in text
    assert "123456789X" not in text and "123456" not in text
    assert head(world) == before
    with container.engine.connect() as conn:  # no bytes stored for it
        stored = conn.execute(select(func.count()).select_from(results.results).where(
            results.results.c.computation_id == cid)).scalar()
    assert stored == 0
    # the masked result is then taken, with the server's masking
    posted = world.call("POST", f"/computations/{cid}/result", chain.provider,
                        json={**report(chain, MASKED), "masking": APPLIED})
    assert posted["state"] == "succeeded"


def test_a_masking_report_other_than_the_servers_is_422(world: World, chain: Chain) -> None:
    cid, _ = requested(world, chain)
    body = refused(world, "POST", f"/computations/{cid}/result", chain.provider, 422,
                   json={**report(chain, MASKED),
                         "masking": {"taxpayer_id": "L3:none:partial"}})
    assert "masking" in str(body) and "differs" in str(body)
