"""A field graded up after a product was registered (docs/PRIVACY.md, Masking): the node
masks by the product's ``field_grades`` snapshot, so an execution whose snapshot is less
strict than an input dataset's current grade is refused as a policy refusal
(``grades_raised: …``, computation.requested + computation.failed) until the operator
registers the product again; the same for a product registered before fields had grades."""

from __future__ import annotations

from typing import Any

from runtime.build import Container
from tests.e2e.conftest import FIELDS, Chain, World
from tests.e2e.test_audit_rules import findings
from tests.e2e.test_computations_api import DATA_SHA, ask, recorded
from tests.e2e.test_market_api import approved_contract


def _regrade(world: World, chain: Chain, **changes: Any) -> None:
    fields = [dict(f) for f in FIELDS]
    fields[0].update(changes)  # taxpayer_id
    world.call("PATCH", f"/datasets/{chain.dataset_id}", chain.provider, json={"fields": fields})


def _loaded(world: World, chain: Chain) -> None:
    world.call("POST", f"/datasets/{chain.dataset_id}/data-loaded", chain.provider,
               json={"rows": 2, "schema": [{"name": "taxpayer_id", "type": "string"},
                                           {"name": "annual_revenue", "type": "int"}],
                     "sha256": DATA_SHA, "mock_rows": 2})


def test_a_field_graded_up_refuses_the_products_executions(
        world: World, chain: Chain, container: Container) -> None:
    _loaded(world, chain)
    _, oid = approved_contract(world, chain)
    _regrade(world, chain, grade="L4", kind="id_number")
    made = recorded(world, chain.provider, "grades_raised", ask(oid))
    reason = made["reason"]
    assert "'taxpayer_id'" in reason and chain.dataset_id in reason and "L4 now" in reason
    assert "registers the product again" in reason
    assert findings(container) == []  # the rule book takes the refusal


def test_a_grade_raised_within_the_same_rule_or_a_kind_changed_still_runs(
        world: World, chain: Chain) -> None:
    _loaded(world, chain)
    _, oid = approved_contract(world, chain)
    _regrade(world, chain, kind="phone")  # still L3 (derived from personal): same rule
    made = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))
    assert made["state"] == "requested", made
