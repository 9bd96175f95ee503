"""Differential privacy on the datasite (差分隐私): the noise is diffprivlib's Laplace
mechanism at the scale ε and Δ set (a statistical test with fixed seeds), it cannot be
replayed from numpy's global state, and a dp product's execution through a real ledger
server and PySyft datasite delivers a noised aggregate, spends its ε, and is refused
(``privacy_budget_exhausted``) before it runs once the contract's budget is spent.

Runs inside the compute venv only (diffprivlib, scipy; a real ledger server and datasite).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from diffprivlib.mechanisms import Laplace
from scipy import stats

from compute_nodes.dp_noise import add_noise, dp_violation, mechanisms
from compute_nodes.output_contract import OutputContract, OutputViolation
from tests.compute.ledger import provider_view, until_settled

pytestmark = pytest.mark.timeout(240)

SITE = "tax-bureau-dp"
DP = {"epsilon": "0.5", "columns": {"firms": {"sensitivity": "1"},
                                    "tax_wan": {"sensitivity": "20"}}}


# -- the noise: the library's, at the declared scale ---------------------------------------
def test_the_noise_is_diffprivlibs_laplace_with_the_epsilon_split_over_the_columns() -> None:
    """Seeded, the noised rows are exactly diffprivlib's Laplace(ε / n, Δ) draws from one
    stream, in row then column order, rounded."""
    rows = [{"industry": "retail", "firms": 40, "tax_wan": 900},
            {"industry": "software", "firms": 12, "tax_wan": None}]
    noised = add_noise(rows, DP, random_state=np.random.RandomState(7))
    rng = np.random.RandomState(7)
    firms = Laplace(epsilon=0.25, sensitivity=1.0, random_state=rng)
    tax = Laplace(epsilon=0.25, sensitivity=20.0, random_state=rng)
    assert noised == [{"industry": "retail", "firms": round(firms.randomise(40.0)),
                       "tax_wan": round(tax.randomise(900.0))},
                      {"industry": "software", "firms": round(firms.randomise(12.0)),
                       "tax_wan": None}]
    assert all(isinstance(r["firms"], int) for r in noised)
    assert add_noise(rows, None) is rows


@pytest.mark.parametrize(("epsilon", "sensitivity"), [("0.5", "1"), ("2", "1"),
                                                       ("0.1", "20")])
def test_the_noise_scale_matches_epsilon(epsilon: str, sensitivity: str) -> None:
    """20,000 draws of one column's noise (fixed seed): the Kolmogorov-Smirnov test does
    not reject Laplace(0, Δ / ε) and does reject half and twice that scale; the mean
    absolute deviation is Δ / ε within 3 %, and so is that of the rounded values the node
    reports (rounding adds at most 1/4 on average to it)."""
    scale = float(sensitivity) / float(epsilon)
    dp = {"epsilon": epsilon, "columns": {"n": {"sensitivity": sensitivity}}}
    mechanism = mechanisms(dp, np.random.RandomState(20261204))["n"]
    noise = np.array([mechanism.randomise(0.0) for _ in range(20_000)])
    assert stats.kstest(noise, stats.laplace(scale=scale).cdf).pvalue > 0.01
    for wrong in (scale / 2, scale * 2):
        assert stats.kstest(noise, stats.laplace(scale=wrong).cdf).pvalue < 1e-6
    assert abs(np.mean(np.abs(noise)) / scale - 1) < 0.03
    assert abs(float(np.median(noise))) < 0.05 * scale
    reported = add_noise([{"n": 1000}] * 20_000, dp, np.random.RandomState(5))
    deviation = np.mean([abs(r["n"] - 1000) for r in reported])
    assert abs(deviation / scale - 1) < 0.03 + 0.25 / scale


def test_the_node_draws_from_the_systems_entropy_not_numpys_global_state() -> None:
    """Without a seed diffprivlib draws from ``secrets.SystemRandom``: seeding numpy (all a
    product or a forked process could share) replays nothing."""
    rows = [{"firms": 1000}] * 50
    np.random.seed(0)
    first = add_noise(rows, DP)
    np.random.seed(0)
    second = add_noise(rows, DP)
    assert first != second
    assert type(mechanisms(DP)["firms"]._rng).__name__ == "SystemRandom"


# -- a dp product through the ledger and the datasite ---------------------------------------
#: a row per tax band, in band order: its firms and tax, both noised (a dp output is a
#: table of its dp columns and its key column only: the band is the row's place)
BY_BAND = '''def by_band(data):
    groups = data.groupby(data["tax_paid_yuan"] // 50000)
    return [{"firms": int(len(g)), "tax_wan": int(g["tax_paid_yuan"].sum() // 10000)}
            for k, g in groups]
'''
SCHEMA = {"type": "array", "items": {"type": "object", "properties": {
    "firms": {"type": "integer"}, "tax_wan": {"type": "integer"}},
    "required": ["firms", "tax_wan"], "additionalProperties": False}}
#: untrusted code adding exact values beside the noised ones: a column, a nested object
EXACT_TOO = '''def by_band(data):
    groups = data.groupby(data["tax_paid_yuan"] // 50000)
    return [{"firms": int(len(g)), "tax_wan": int(g["tax_paid_yuan"].sum() // 10000),
             "exact_tax": int(g["tax_paid_yuan"].sum()), "detail": {"firms": int(len(g))}}
            for k, g in groups]
'''


def dp_product(w: SimpleNamespace, dp: dict[str, Any], code: str = BY_BAND) -> str:
    return w.api.api.list_product(w.p.operator, w.api.platform, {
        "scenario_id": w.p.scenario_id, "authorization_ids": [w.p.auth_id],
        "name": "Firms and tax by band", "kind": "dataset",
        "description": "counts and tax per tax band, differentially private",
        "code": code, "inputs": [{"dataset_id": w.p.dataset_id,
                                  "fields": ["uscc", "tax_paid_yuan"]}],
        "output_schema": SCHEMA, "quality_report": "n/a", "price_fen": 1,
        "developer_id": w.p.developer.id, "dp": dp})


def contract(w: SimpleNamespace, product: str, budget: str) -> str:
    api, p = w.api.api, w.p
    oid = api.place_order(p.demander, product, "tax band statistics")
    api.propose_contract(p.operator, oid, usage_policy={
        "processing_count": 5, "circulation_modes": ["plaintext"],
        "privacy_budget": budget}, price_fen=1,
        revenue_split={"developer": 1000, "operator": 3000, "platform": 1000,
                       "provider": 5000})
    api.accept_contract(p.demander, oid)
    w.api.approve(p, oid)
    return oid


def exact(w: SimpleNamespace) -> dict[int, tuple[int, int]]:
    bands = w.private.groupby(w.private["tax_paid_yuan"] // 50000)
    return {i: (len(g), int(g["tax_paid_yuan"].sum() // 10000))
            for i, (_, g) in enumerate(bands)}


def by_place(rows: list[dict[str, Any]]) -> dict[int, tuple[int, int]]:
    """The delivered rows by their place (the band's, in band order)."""
    return {i: (r["firms"], r["tax_wan"]) for i, r in enumerate(rows)}


def test_a_dp_product_is_noised_on_the_datasite_and_a_spent_budget_refuses_it(
        w: SimpleNamespace) -> None:
    """ε 0.1 per execution over two columns (scales 20 and 4,000). Under a contract with a
    budget of 0.2 execution 1 delivers a noised aggregate (a row per band, every count
    and sum off the exact one), spends 0.1 on the input dataset and the contract view says
    so; under a contract with a budget of 0.05 execution 1 is refused before it runs
    (``privacy_budget_exhausted``, with usage.refused), nothing spent."""
    product = dp_product(w, {"epsilon": "0.1", "columns": {
        "firms": {"sensitivity": 1}, "tax_wan": {"sensitivity": "20"}}})
    assert w.api.call("GET", f"/products/{product}", w.p.demander.token)["dp"] == {
        "epsilon": "0.1", "columns": {"firms": {"sensitivity": "1"},
                                      "tax_wan": {"sensitivity": "20"}}}
    node, truth = w.node(), exact(w)
    oid = contract(w, product, "0.2")
    [outcome] = until_settled(node, provider_view(w, oid, "contract.approved"), 60)
    assert outcome.status == "delivered" and outcome.execution == 1, outcome
    rows = w.api.call("GET", f"/deliveries/{outcome.computation_id}/result",
                      w.p.demander.token)
    noised = by_place(rows)
    assert sorted(noised) == sorted(truth)
    # P(a Laplace noise rounds to 0): of scale 4,000 about 1e-4, of scale 20 about 2.5 %
    assert sum(noised[b][1] != truth[b][1] for b in truth) >= len(truth) - 1, (noised, truth)
    assert any(noised[b][0] != truth[b][0] for b in truth), (noised, truth)
    budget = w.api.call("GET", f"/orders/{oid}", w.p.demander.token)["privacy_budget"]
    assert budget == {w.p.dataset_id: {"budget": "0.2", "spent": "0.1", "remaining": "0.1"}}
    spent = [e["payload"] for e in w.api.events() if e["type"] == "privacy.budget_spent"]
    assert [(s["contract_id"], s["execution"], s["epsilon"], s["dataset_id"])
            for s in spent] == [(oid, 1, "0.1", w.p.dataset_id)]

    short = contract(w, product, "0.05")
    [refused] = until_settled(node, provider_view(w, short, "contract.approved"), 60)
    assert refused.status == "failed" and refused.execution == 1, refused
    assert refused.detail.startswith("privacy_budget_exhausted: execution 1 of contract "), (
        refused)
    assert w.api.of(refused.computation_id) == ["computation.requested",
                                                "computation.failed", "usage.refused"]
    assert w.api.call("GET", f"/orders/{short}", w.p.demander.token)["privacy_budget"] == {
        w.p.dataset_id: {"budget": "0.05", "spent": "0", "remaining": "0.05"}}


def test_a_dp_product_adding_exact_values_delivers_nothing(w: SimpleNamespace) -> None:
    """F7, through the datasite: the code adds an exact column and a nested object beside
    the noised ones. The output is refused on the node (``output_violation``) before
    anything leaves: nothing delivered, and the ε it spent when it was requested stays
    spent (a run may have disclosed)."""
    product = dp_product(w, {"epsilon": "0.1", "columns": {
        "firms": {"sensitivity": 1}, "tax_wan": {"sensitivity": "20"}}}, EXACT_TOO)
    oid = contract(w, product, "0.2")
    [outcome] = until_settled(w.node(), provider_view(w, oid, "contract.approved"), 60)
    assert outcome.status == "failed" and outcome.execution == 1, outcome
    assert outcome.detail.startswith("output_violation: "), outcome
    assert w.api.of(outcome.computation_id) == ["computation.requested",
                                                "computation.failed"]
    w.api.call("GET", f"/deliveries/{outcome.computation_id}/result", w.p.demander.token,
               (404, 409))
    bands = w.private.groupby(w.private["tax_paid_yuan"] // 50000)
    logged = str(w.api.events())
    assert not [t for t in (str(int(g["tax_paid_yuan"].sum())) for _, g in bands)
                if t in logged]
    assert w.api.call("GET", f"/orders/{oid}", w.p.demander.token)["privacy_budget"] == {
        w.p.dataset_id: {"budget": "0.2", "spent": "0.1", "remaining": "0.1"}}


#: a dp product registered before a dp output had to be a table (its schema lets any
#: column through): the node refuses what its schema no longer does
LEGACY = {"output_schema": {},
          "key_column": "uscc", "inputs": [{"dataset_id": "d", "fields": ["uscc"]}],
          "dp": {"epsilon": "1", "columns": {"firms": {"sensitivity": "1"}}}}


@pytest.mark.parametrize("output", [
    [{"uscc": "9111", "firms": 3, "exact_tax": 123456}],
    [{"uscc": "9111", "firms": 3, "detail": {"firms": 3}}],
    [{"uscc": {"firms": 3}, "firms": 3}],
    [{"uscc": "9111", "firms": [3, 4]}],
    [{"uscc": "9111", "firms": "3"}],
    [["9111", 3]],
    {"uscc": "9111", "firms": 3},
])
def test_the_node_refuses_a_dp_output_holding_anything_but_key_and_dp_columns(
        output: Any) -> None:
    """F7 on the node: any other column, a nested value, a row that is not an object, an
    output that is not a table: OutputViolation, naming no value nor made-up name."""
    terms = OutputContract.of(LEGACY, None)
    terms.check(output, None)  # the legacy schema lets it through
    with pytest.raises(OutputViolation) as info:
        terms.noise(output)
    reason = str(info.value)
    assert reason.startswith("output_violation: ")
    assert "9111" not in reason and "123456" not in reason and "exact_tax" not in reason
    assert dp_violation(output, LEGACY["dp"], "uscc") is not None


def test_the_node_noises_a_table_of_key_and_dp_columns() -> None:
    terms = OutputContract.of(LEGACY, None)
    rows = [{"uscc": "9111", "firms": 3}, {"uscc": None, "firms": None}, {"firms": 7}]
    out = terms.noise(rows)
    assert [set(r) for r in out] == [set(r) for r in rows] and out[1]["firms"] is None
    assert dp_violation(rows, LEGACY["dp"], "uscc") is None
    assert dp_violation([{"anything": {}}], None, None) is None  # no dp: not this rule


def test_the_trial_on_mock_rows_is_noised_too_and_spends_nothing(w: SimpleNamespace) -> None:
    """The trial (execution 0) runs on the mock table: its aggregate is noised the same way
    and no ε is spent (mock data is not the provider's)."""
    import pandas as pd

    product = dp_product(w, {"epsilon": "0.1", "columns": {"firms": {"sensitivity": 1},
                                                           "tax_wan": {"sensitivity": 20}}})
    oid = w.api.api.place_order(w.p.demander, product, "a look before buying")
    w.api.call("POST", f"/orders/{oid}/trial", w.p.operator.token)
    [outcome] = until_settled(w.node(), provider_view(w, oid, "order.trial_granted"), 60)
    assert outcome.status == "delivered" and outcome.execution == 0, outcome
    mock = pd.read_csv(w.tmp / "mock.csv")
    bands = mock.groupby(mock["tax_paid_yuan"] // 50000)
    truth = {i: (len(g), int(g["tax_paid_yuan"].sum() // 10000))
             for i, (_, g) in enumerate(bands)}
    rows = w.api.call("GET", f"/deliveries/{outcome.computation_id}/result",
                      w.p.demander.token)
    noised = by_place(rows)
    assert sorted(noised) == sorted(truth)
    # tax_wan's scale is 400: P(its noise rounds to 0) is about 0.125 % a row
    assert sum(noised[b][1] != truth[b][1] for b in truth) >= len(truth) - 1, (noised, truth)
    assert not [e for e in w.api.events() if e["type"] == "privacy.budget_spent"
                and e["payload"]["contract_id"] == oid]
    assert w.api.call("GET", f"/orders/{oid}", w.p.demander.token)["privacy_budget"] == {
        w.p.dataset_id: {"budget": None, "spent": "0", "remaining": None}}


def test_an_object_output_and_nulls_are_noised_in_place() -> None:
    """An object output is noised like one row; a null stays null, other columns as they
    are, and the declared columns' values come back integers."""
    dp = {"epsilon": "1", "columns": {"n": {"sensitivity": "1"}}}
    out = add_noise({"n": 50, "label": "all", "m": 7}, dp, np.random.RandomState(3))
    assert set(out) == {"n", "label", "m"} and (out["label"], out["m"]) == ("all", 7)
    assert isinstance(out["n"], int)
    assert add_noise([{"n": None}, "not a row"], dp) == [{"n": None}, "not a row"]
