"""Differential privacy's budget over HTTP, on SQLite and PostgreSQL: a dp product's
executions spend ε per input dataset (``privacy.budget_spent``), the contract view shows
each dataset's budget, spent and remaining, and an execution past the budget is refused
before it runs (``privacy_budget_exhausted``, with usage.refused), also after the server
restarts on the same database and after the read models are rebuilt from the log; a bad
declaration or budget is a 422 naming the field, writing nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from runtime.settings import Settings
from tests.e2e.conftest import (
    ADMIN_TOKEN,
    USED,
    Chain,
    World,
    head,
    list_product,
    product_body,
)
from tests.e2e.test_computations_api import QUERY, ask, events_of
from tests.e2e.test_market_api import SPLIT, invalid, place
from tests.e2e.test_usage_controls import NOW, Server, contract, delivered, policy

DP = {"epsilon": "0.5", "columns": {"score": {"sensitivity": "1"}}}
#: a dp product's output: a table of its key column and its noised column, nothing else
DP_SCHEMA = {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                        "properties": {"taxpayer_id": {"type": "string"},
                                                       "score": {"type": "integer"}}}}


def dp_product(world: World, chain: Chain, **changes: Any) -> str:
    """A listed dp product of the chain (``DP`` over ``DP_SCHEMA``)."""
    return list_product(world, chain, **{"dp": DP, "output_schema": DP_SCHEMA, **changes})


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    s = Server(Settings(data_dir=tmp_path / "var", database_url=database_url,
                        admin_token=ADMIN_TOKEN, checkpoint_every_seconds=0.3))
    yield s
    s.stop()


@pytest.fixture
def client(server: Server) -> TestClient:
    return server.client


def budget_of(world: World, chain: Chain, oid: str) -> dict[str, Any]:
    view: dict[str, Any] = world.call("GET", f"/orders/{oid}", chain.demander)
    return dict(view["privacy_budget"])


def line(budget: str, spent: str, remaining: str) -> dict[str, str]:
    return {"budget": budget, "spent": spent, "remaining": remaining}


def test_an_execution_past_the_budget_is_refused_before_it_runs_across_a_restart(
        world: World, chain: Chain, server: Server) -> None:
    product = dp_product(world, chain)
    assert world.call("GET", f"/products/{product}", chain.demander)["dp"] == DP
    oid = contract(world, chain, policy(privacy_budget="1"), product)
    assert budget_of(world, chain, oid) == {chain.dataset_id: line("1", "0", "1")}
    delivered(world, chain, oid)
    assert budget_of(world, chain, oid) == {chain.dataset_id: line("1", "0.5", "0.5")}
    for _ in (2, 3):  # 0.5 spent: each, asked alone, would fit
        world.call("POST", f"/orders/{oid}/queries", chain.demander, 201,
                   json={"query": QUERY})
    second = world.call("POST", "/computations", chain.provider, 201, json=ask(oid, 2))
    assert second["state"] == "requested"
    assert budget_of(world, chain, oid) == {chain.dataset_id: line("1", "1", "0")}

    server.restart(world)
    assert budget_of(world, chain, oid) == {chain.dataset_id: line("1", "1", "0")}
    third = world.call("POST", "/computations", chain.provider, 201, json=ask(oid, 3))
    assert third["state"] == "failed"
    assert third["reason"].startswith(f"privacy_budget_exhausted: execution 3 of contract {oid}")
    assert [e["type"] for e in events_of(world, third["computation_id"])] == [
        "computation.requested", "computation.failed", "usage.refused"]
    refusal = events_of(world, third["computation_id"])[2]["payload"]
    assert (refusal["rule"], refusal["limit"], refusal["action"]) == (
        "privacy_budget", "1", "processing")
    r = world.client.post(f"/computations/{third['computation_id']}/result",
                          headers=chain.provider.headers, json={
                              "result": [], "input_hashes": {}, "result_rows": 0,
                              "datasite": "x"})
    assert r.status_code == 409, r.text  # nothing of it runs or is delivered
    spent = [e for e in world.call("GET", "/ledger/events?limit=1000", world.regulator)[
        "events"] if e["type"] == "privacy.budget_spent"]
    assert [(e["payload"]["execution"], e["payload"]["epsilon"],
             e["payload"]["authorization_id"]) for e in spent] == [
        (1, "0.5", chain.authorization_id), (2, "0.5", chain.authorization_id)]
    assert world.call("GET", f"/orders/{oid}", chain.demander)["usage"]["refused"] == 1
    before = head(world)
    r = world.client.post(f"/orders/{oid}/queries", headers=chain.demander.headers,
                          json={"query": QUERY})
    assert r.status_code == 409, r.text
    assert r.json()["detail"].startswith(f"privacy_budget_exhausted: execution 4 of contract "
                                         f"{oid} would spend ε 0.5 on dataset "), r.text
    assert head(world) == before

    server.container.runner.rebuild()
    assert budget_of(world, chain, oid) == {chain.dataset_id: line("1", "1", "0")}


def test_the_authorization_budget_bounds_all_its_contracts(world: World, chain: Chain) -> None:
    requested = [{"dataset_id": chain.dataset_id, "fields": USED}]
    auth = world.api.authorize(chain.provider, chain.scenario_id, requested,
                               (NOW - timedelta(days=1), NOW + timedelta(days=365)),
                               {"processing_count": 100, "privacy_budget": "0.5"})
    product = dp_product(world, chain, authorization_ids=[auth])
    first = contract(world, chain, policy(privacy_budget="0.5"), product)
    second = contract(world, chain, policy(privacy_budget="0.5"), product)
    delivered(world, chain, first)
    out = world.call("POST", "/computations", chain.provider, 201, json=ask(second))
    assert out["state"] == "failed" and f"under authorization {auth}" in out["reason"], out
    assert budget_of(world, chain, second) == {chain.dataset_id: line("0.5", "0", "0.5")}
    for who in (chain.provider, chain.operator, world.regulator):
        view = world.call("GET", f"/authorizations/{auth}", who)
        assert view["privacy_budget"] == {chain.dataset_id: line("0.5", "0.5", "0")}
    unbounded = world.call("GET", f"/authorizations/{chain.authorization_id}", chain.provider)
    assert unbounded["privacy_budget"] is None
    listed = {a["id"]: a["privacy_budget"]
              for a in world.call("GET", "/authorizations", chain.provider)}
    assert listed[auth] == {chain.dataset_id: line("0.5", "0.5", "0")}
    spent = [e for e in world.call("GET", "/ledger/events?limit=1000", chain.provider)[
        "events"] if e["type"] == "privacy.budget_spent"]
    assert len(spent) == 1  # the grantor sees its budget stream; the demander does not
    assert not [e for e in world.call("GET", "/ledger/events?limit=1000", chain.demander)[
        "events"] if e["type"] == "privacy.budget_spent"]


def test_a_contract_for_a_dp_product_needs_a_budget(world: World, chain: Chain) -> None:
    """Its own or one of its authorizations': else 422, writing nothing; a contract with
    one shows it, and a contract of a product without dp shows none."""
    oid = place(world, chain, dp_product(world, chain))
    body = {"usage_policy": policy(), "price_fen": 1, "revenue_split": dict(SPLIT)}
    assert invalid(world, f"/orders/{oid}/contract", chain.operator, body) == {
        "usage_policy.privacy_budget"}
    oid = contract(world, chain, policy(privacy_budget="2"), dp_product(world, chain))
    assert budget_of(world, chain, oid) == {chain.dataset_id: line("2", "0", "2")}
    plain = contract(world, chain, policy())
    assert world.call("GET", f"/orders/{plain}", chain.demander)["privacy_budget"] is None


def test_a_budget_binds_every_product_over_the_dataset(world: World, chain: Chain) -> None:
    """F6: exact results would bypass the budget. A product without dp is refused at
    registration under an authorization setting a budget on its dataset (422 ``dp``), and
    a contract setting a budget for a product without dp is refused (422)."""
    requested = [{"dataset_id": chain.dataset_id, "fields": USED}]
    auth = world.api.authorize(chain.provider, chain.scenario_id, requested,
                               (NOW - timedelta(days=1), NOW + timedelta(days=365)),
                               {"processing_count": 100, "privacy_budget": "1"})
    assert invalid(world, "/products", chain.operator,
                   product_body(chain, authorization_ids=[auth])) == {"dp"}
    assert invalid(world, "/products", chain.operator, product_body(
        chain, authorization_ids=[auth, chain.authorization_id])) == {"dp"}
    assert dp_product(world, chain, authorization_ids=[auth])
    oid = place(world, chain, list_product(world, chain))
    before = head(world)
    assert invalid(world, f"/orders/{oid}/contract", chain.operator, {
        "usage_policy": policy(privacy_budget="1"), "price_fen": 1,
        "revenue_split": dict(SPLIT)}) == {"usage_policy.privacy_budget"}
    assert head(world) == before


def test_an_old_contract_of_a_product_without_dp_under_a_budget_is_refused_before_it_runs(
        world: World, chain: Chain, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A contract proposed before the rule (the check skipped here) sets a budget over a
    product without dp: its node's request is refused (``privacy_budget_requires_dp``,
    recorded with usage.refused), also after a restart, and nothing is spent."""
    import domain.order
    product = list_product(world, chain)
    with monkeypatch.context() as patched:
        patched.setattr(domain.order, "check_contract_budget", lambda *_: None)
        oid = contract(world, chain, policy(privacy_budget="1"), product)
    server.restart(world)
    out = world.call("POST", "/computations", chain.provider, 201, json=ask(oid))
    assert out["state"] == "failed", out
    assert out["reason"].startswith("privacy_budget_requires_dp: the contract sets a "
                                    f"privacy_budget (1) on dataset {chain.dataset_id}"), out
    assert [e["type"] for e in events_of(world, out["computation_id"])] == [
        "computation.requested", "computation.failed", "usage.refused"]
    assert not [e for e in world.call("GET", "/ledger/events?limit=1000", world.regulator)[
        "events"] if e["type"] == "privacy.budget_spent"]


@pytest.mark.parametrize(("dp", "field"), [
    ({"epsilon": 0.5, "columns": {"score": {"sensitivity": "1"}}}, "dp.epsilon"),
    ({"epsilon": "0", "columns": {"score": {"sensitivity": "1"}}}, "dp.epsilon"),
    ({"epsilon": "1", "columns": {"score": {"sensitivity": "-1"}}},
     "dp.columns.score.sensitivity"),
    ({"epsilon": "1", "columns": {"taxpayer_id": {"sensitivity": "1"}}},
     "dp.columns.taxpayer_id"),
    ({"epsilon": "1", "columns": {"nope": {"sensitivity": "1"}}}, "dp.columns.nope"),
    ({"epsilon": "1", "columns": {}}, "dp.columns"),
    ({"epsilon": "1"}, "dp.columns"),
])
def test_a_bad_dp_declaration_is_a_422_naming_the_field(world: World, chain: Chain,
                                                        dp: Any, field: str) -> None:
    assert invalid(world, "/products", chain.operator, product_body(
        chain, dp=dp, output_schema=DP_SCHEMA)) == {field}


ROW = DP_SCHEMA["items"]


@pytest.mark.parametrize(("schema", "field"), [
    ({"type": "object", "properties": ROW["properties"]}, "output_schema"),
    ({"type": "array", "items": {"type": "object", "properties": ROW["properties"]}},
     "output_schema"),
    ({**DP_SCHEMA, "items": {**ROW, "patternProperties": {".*": {}}}}, "output_schema"),
    ({**DP_SCHEMA, "items": {**ROW, "properties": {**ROW["properties"],
                                                   "exact_tax": {"type": "integer"}}}},
     "dp.columns"),
    ({**DP_SCHEMA, "items": {**ROW, "properties": {**ROW["properties"],
                                                   "detail": {"type": "object"}}}},
     "dp.columns"),
])
def test_a_dp_output_other_than_a_table_of_key_and_dp_columns_is_a_422(
        world: World, chain: Chain, schema: dict[str, Any], field: str) -> None:
    """F7: an exact column beside the noised ones (or a schema letting one through)."""
    assert invalid(world, "/products", chain.operator, product_body(
        chain, dp=DP, output_schema=schema)) == {field}


@pytest.mark.parametrize("budget", [0.5, "0", "-1", "abc", "1.0000001", True])
def test_a_bad_budget_is_a_422_naming_the_field(world: World, chain: Chain,
                                                budget: Any) -> None:
    oid = place(world, chain, dp_product(world, chain))
    assert invalid(world, f"/orders/{oid}/contract", chain.operator, {
        "usage_policy": policy(privacy_budget=budget), "price_fen": 1,
        "revenue_split": dict(SPLIT)}) == {"usage_policy.privacy_budget"}
    assert invalid(world, "/authorizations", chain.provider, {
        "scenario_id": chain.scenario_id,
        "datasets": [{"dataset_id": chain.dataset_id, "fields": USED}],
        "not_before": NOW.isoformat(), "not_after": (NOW + timedelta(days=9)).isoformat(),
        "usage_policy": {"privacy_budget": budget}}) == {"usage_policy.privacy_budget"}


def test_a_contract_budget_above_its_authorizations_is_a_422(world: World,
                                                             chain: Chain) -> None:
    requested = [{"dataset_id": chain.dataset_id, "fields": USED}]
    auth = world.api.authorize(chain.provider, chain.scenario_id, requested,
                               (NOW - timedelta(days=1), NOW + timedelta(days=365)),
                               {"processing_count": 100, "privacy_budget": "2"})
    oid = place(world, chain, dp_product(world, chain, authorization_ids=[auth]))
    body = {"usage_policy": policy(privacy_budget="2.5"), "price_fen": 1,
            "revenue_split": dict(SPLIT)}
    assert invalid(world, f"/orders/{oid}/contract", chain.operator, body) == {
        "usage_policy.privacy_budget"}
    assert invalid(world, f"/orders/{oid}/contract", chain.operator, {
        **body, "usage_policy": policy()}) == {"usage_policy.privacy_budget"}


def test_the_rule_book_replays_the_spending_and_finds_a_forged_one(
        world: World, chain: Chain, server: Server) -> None:
    """The honest log (spent, delivered, refused past the budget) breaks no rule, signed
    decisions required; a spending past the contract's budget, of another ε than the
    product's, or a dp execution delivered without its spending, is a ``privacy_budget``
    finding at its seq."""
    from dataclasses import replace

    from audit.rules import RuleBook
    from tests.unit.audit.rules_log import insert, with_payload

    product = dp_product(world, chain)
    oid = contract(world, chain, policy(privacy_budget="1"), product)
    delivered(world, chain, oid)
    for _ in (2, 3):
        world.call("POST", f"/orders/{oid}/queries", chain.demander, 201,
                   json={"query": QUERY})
    delivered(world, chain, oid, execution=2)
    refused = world.call("POST", "/computations", chain.provider, 201, json=ask(oid, 3))
    assert refused["state"] == "failed"
    head = int(world.client.get("/health").json()["head"])
    entries = server.container.store.read(0, head + 1)
    assert RuleBook(require_signatures=True).run(entries) == []

    spends = [e for e in entries if e.type_name == "privacy.budget_spent"]
    assert len(spends) == 2
    first, second = spends
    wrong = [e if e.seq != first.seq else with_payload(e, epsilon="0.25") for e in entries]
    assert [(f.seq, f.rule) for f in RuleBook().run(wrong)] == [(first.seq, "privacy_budget")]
    request = next(e for e in entries if e.type_name == "computation.requested"
                   and e.originator_id == refused["computation_id"])
    past = replace(with_payload(second, execution=3,
                                computation_id=refused["computation_id"]),
                   originator_id=second.originator_id, version=second.version + 1)
    # the refused request recorded as if it had spent (its failure dropped): 1.5 > 1
    forged = [e for e in insert(entries, request.seq, past)
              if not (e.type_name in ("computation.failed", "usage.refused")
                      and e.originator_id == refused["computation_id"])]
    found = [(f.seq, f.rule) for f in RuleBook().run(forged)]
    assert (request.seq + 1, "privacy_budget") in found
    unspent = [e for e in entries if e.seq != second.seq]
    found = [f.rule for f in RuleBook().run(unspent)]
    assert found == ["privacy_budget"]


def test_two_requests_decided_on_the_same_budget_are_not_both_stored(
        world: World, chain: Chain, server: Server) -> None:
    """The authorization's budget affords one execution; two contracts' requests are decided
    at once on the same (authorization, dataset) stream: the append refuses the one decided
    on the spending the other moved since; decided again, it is refused for the budget."""
    from domain.base import Actor
    from domain.computation import request_computation
    from domain.errors import ConcurrencyConflict

    requested = [{"dataset_id": chain.dataset_id, "fields": USED}]
    auth = world.api.authorize(chain.provider, chain.scenario_id, requested,
                               (NOW - timedelta(days=1), NOW + timedelta(days=365)),
                               {"processing_count": 100, "privacy_budget": "0.5"})
    product = dp_product(world, chain, authorization_ids=[auth])
    first, second = (contract(world, chain, policy(privacy_budget="0.5"), product)
                     for _ in range(2))
    ledger = server.container.ledger
    actor = Actor(chain.provider.participant_id, chain.provider.member_id, "provider",
                  ("admin",))

    def racing(uow: Any, ctx: Any, **kwargs: Any) -> dict[str, Any]:
        out = request_computation(uow, ctx, **kwargs)  # decided: nothing spent yet
        ledger.execute(request_computation, actor, **ask(second))  # the other spends
        return out

    with pytest.raises(ConcurrencyConflict):
        ledger.execute(racing, actor, **ask(first))
    again = world.call("POST", "/computations", chain.provider, 201, json=ask(first))
    assert again["state"] == "failed", again
    assert again["reason"].startswith("privacy_budget_exhausted: ")
    spent = [e["payload"]["contract_id"] for e in world.call(
        "GET", "/ledger/events?limit=1000", world.regulator)["events"]
        if e["type"] == "privacy.budget_spent"]
    assert spent == [second]


def test_the_rule_book_finds_an_exact_result_delivered_under_a_budget(
        world: World, chain: Chain, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """F6 on replay: a ledger that let a product without dp run under a contract's budget
    (both checks skipped here, as an older or a forged ledger would) is a ``privacy_budget``
    finding at the execution's ``computation.succeeded``; the honest log has none."""
    import domain.order
    import domain.privacy_budget
    from audit.rules import RuleBook

    product = list_product(world, chain)
    monkeypatch.setattr(domain.order, "check_contract_budget", lambda *_: None)
    monkeypatch.setattr(domain.privacy_budget, "budget_refusal", lambda *_: None)
    oid = contract(world, chain, policy(privacy_budget="1"), product)
    cid = delivered(world, chain, oid)
    head = int(world.client.get("/health").json()["head"])
    entries = server.container.store.read(0, head + 1)
    succeeded = next(e for e in entries if e.type_name == "computation.succeeded"
                     and e.originator_id == cid)
    assert [(f.seq, f.rule) for f in RuleBook().run(entries)] == [
        (succeeded.seq, "privacy_budget")]
