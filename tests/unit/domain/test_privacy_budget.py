"""Differential privacy with a metered budget: a product's ``dp`` declaration, the policy key
``privacy_budget`` (validated, combined as the smaller, bounding a contract), and the
metering of executions: spent as ``privacy.budget_spent`` events when a node asks to run
one, refused (``privacy_budget_exhausted``, recorded with ``usage.refused``) before it runs
once the contract's or the authorization's budget would be passed; exact decimals; the trial
spends nothing; spent budget is never refunded."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from domain.authorization import grant_authorization
from domain.computation import TRIAL, record_failure, request_computation, submit_query
from domain.errors import InvalidInput, WrongState
from domain.order import (
    accept_contract,
    approve_contract,
    grant_trial,
    place_order,
    propose_contract,
)
from domain.policy import looser_than, positive_decimal, strictest, validate_policy
from domain.privacy_budget import PrivacyBudget, budget_id, check_dp
from domain.product import Product, decide_listing, request_listing
from tests.unit.domain.test_authorization import POLICY as AUTH_POLICY
from tests.unit.domain.test_authorization import grant_kwargs, world
from tests.unit.domain.test_computation import SITE
from tests.unit.domain.test_dataset import PROVIDER
from tests.unit.domain.test_order import DEMANDER, POLICY, SPLIT
from tests.unit.domain.test_participant import PLATFORM, admitted, refused
from tests.unit.domain.test_product import (
    CODE_SHA256,
    OUTPUT_SCHEMA,
    register_kwargs,
    register_product,
)
from tests.unit.domain.test_scenario import OPERATOR
from tests.unit.fakes import MemoryUnitOfWork, run

DP = {"epsilon": "0.5", "columns": {"score": {"sensitivity": "1"}}}


def table(**columns: Any) -> dict[str, Any]:
    """A dp product's output schema: a table of ``columns`` (name -> type), nothing else."""
    return {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                       "properties": {c: {"type": t}
                                                      for c, t in columns.items()}}}


#: the output of a dp product keyed by credit code: its key column and its noised score
DP_SCHEMA = table(credit_code="string", score="integer")
TYPES = table(credit_code="string", score="integer", share="number")


# -- the declaration ----------------------------------------------------------------------
def test_dp_is_normalized_to_decimal_text() -> None:
    assert check_dp(None, TYPES, "credit_code", None) is None
    assert check_dp({"epsilon": "0.50", "columns": {"score": {"sensitivity": 2}}}, DP_SCHEMA,
                    "credit_code", None) == {"epsilon": "0.5",
                                             "columns": {"score": {"sensitivity": "2"}}}


@pytest.mark.parametrize(("dp", "field"), [
    ([], "dp"),
    ({"epsilon": "1"}, "dp"),
    ({"epsilon": "1", "columns": {}, "delta": "0"}, "dp"),
    ({"epsilon": 0.5, "columns": {"score": {"sensitivity": "1"}}}, "dp.epsilon"),
    ({"epsilon": "0", "columns": {"score": {"sensitivity": "1"}}}, "dp.epsilon"),
    ({"epsilon": "-1", "columns": {"score": {"sensitivity": "1"}}}, "dp.epsilon"),
    ({"epsilon": "1e3", "columns": {"score": {"sensitivity": "1"}}}, "dp.epsilon"),
    ({"epsilon": "1001", "columns": {"score": {"sensitivity": "1"}}}, "dp.epsilon"),
    ({"epsilon": "1", "columns": {}}, "dp.columns"),
    ({"epsilon": "1", "columns": ["score"]}, "dp.columns"),
    ({"epsilon": "1", "columns": {"nope": {"sensitivity": "1"}}}, "dp.columns.nope"),
    ({"epsilon": "1", "columns": {"share": {"sensitivity": "1"}}}, "dp.columns.share"),
    ({"epsilon": "1", "columns": {"credit_code": {"sensitivity": "1"}}},
     "dp.columns.credit_code"),
    ({"epsilon": "1", "columns": {"score": {}}}, "dp.columns.score"),
    ({"epsilon": "1", "columns": {"score": {"sensitivity": "0"}}},
     "dp.columns.score.sensitivity"),
    ({"epsilon": "1", "columns": {"score": {"sensitivity": 1.5}}},
     "dp.columns.score.sensitivity"),
])
def test_a_bad_declaration_is_refused_naming_the_field(dp: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_dp(dp, TYPES, "credit_code", None)
    assert info.value.field == field


@pytest.mark.parametrize(("schema", "field"), [
    ({"type": "object", "properties": {"credit_code": {"type": "string"},
                                       "score": {"type": "integer"}}}, "output_schema"),
    ({"type": "array", "items": {"type": "object", "properties": {
        "credit_code": {"type": "string"}, "score": {"type": "integer"}}}}, "output_schema"),
    ({**DP_SCHEMA, "items": {**DP_SCHEMA["items"], "additionalProperties": True}},
     "output_schema"),
    ({**DP_SCHEMA, "items": {**DP_SCHEMA["items"],
                             "patternProperties": {"^x": {"type": "integer"}}}},
     "output_schema"),
    ({**DP_SCHEMA, "prefixItems": [{"type": "object"}]}, "output_schema"),
    (table(credit_code="object", score="integer"), "output_schema"),
    (table(credit_code="string", score="integer", exact_tax="integer"), "dp.columns"),
    (table(credit_code="string", score="integer", detail="object"), "dp.columns"),
    (table(credit_code="string", score="integer", label="string"), "dp.columns"),
])
def test_a_dp_output_is_a_table_of_the_key_and_the_dp_columns_only(schema: Any,
                                                                    field: str) -> None:
    """F7: a column beside the key and the dp columns (an exact integer, a nested object, a
    label), or a schema letting other values through, would leave un-noised."""
    with pytest.raises(InvalidInput) as info:
        check_dp(DP, schema, "credit_code", None)
    assert info.value.field == field
    assert check_dp(DP, table(score="integer"), None, None) == DP


def test_a_joint_product_cannot_declare_dp() -> None:
    with pytest.raises(InvalidInput) as info:
        check_dp(DP, TYPES, "credit_code", {"value_columns": ["score"]})
    assert info.value.field == "dp"


def test_registration_records_the_normalized_declaration() -> None:
    uow = MemoryUnitOfWork()
    w = _world(uow, {})
    ids = run(uow, register_product, OPERATOR, **register_kwargs(
        w, dp={"epsilon": 1, "columns": {"score": {"sensitivity": "1.0"}}},
        output_schema=DP_SCHEMA))
    assert uow.get(Product, ids["product_id"]).dp == {
        "epsilon": "1", "columns": {"score": {"sensitivity": "1"}}}
    event = uow.streams[ids["product_id"]][0]
    assert (event.class_version, event.payload()["dp"]["epsilon"]) == (4, "1")
    err = refused(uow, InvalidInput, register_product, OPERATOR, **register_kwargs(
        w, dp={"epsilon": "1", "columns": {"credit_code": {"sensitivity": "1"}}},
        output_schema=DP_SCHEMA))
    assert err.field == "dp.columns.credit_code"
    err = refused(uow, InvalidInput, register_product, OPERATOR, **register_kwargs(w, dp=DP))
    assert err.field == "output_schema"  # OUTPUT_SCHEMA's rows may hold any other column


# -- the policy key -----------------------------------------------------------------------
def test_privacy_budget_is_exact_decimal_text() -> None:
    assert validate_policy({"privacy_budget": "2.50"}) == {"privacy_budget": "2.5"}
    assert validate_policy({"privacy_budget": 3}) == {"privacy_budget": "3"}
    assert positive_decimal("0.000001", "x") == "0.000001"
    for bad in (0.5, "0", "-1", "abc", "1.0000001", True, None, "1e2", "1001"):
        with pytest.raises(InvalidInput) as info:
            validate_policy({"privacy_budget": bad})
        assert info.value.field == "usage_policy.privacy_budget"


def test_the_smaller_budget_holds_and_a_larger_one_is_looser() -> None:
    assert strictest({"privacy_budget": "10"}, {"privacy_budget": "9.5"}) == {
        "privacy_budget": "9.5"}
    assert looser_than({"privacy_budget": "10"}, {"privacy_budget": "9.5"})[0] == (
        "privacy_budget")
    assert looser_than({"privacy_budget": "9.5"}, {"privacy_budget": "10"}) is None
    assert looser_than({}, {"privacy_budget": "1"})[0] == "privacy_budget"


def test_a_contract_budget_above_the_authorization_is_refused() -> None:
    uow = MemoryUnitOfWork()
    order_id = _ordered(uow, auth_budget="1")
    with pytest.raises(InvalidInput) as info:
        propose_contract(uow, OPERATOR, order_id, usage_policy={
            **POLICY, "privacy_budget": "1.5"}, price_fen=1, revenue_split=SPLIT)
    assert info.value.field == "usage_policy.privacy_budget"
    assert "1.5 is more than the authorization's 1" in str(info.value)


# -- metering -----------------------------------------------------------------------------
def _world(uow: MemoryUnitOfWork, auth_policy: dict[str, Any]) -> dict[str, str]:
    scenario_id, dataset_id = world(uow)
    auth = run(uow, grant_authorization, PROVIDER, **grant_kwargs(
        scenario_id, dataset_id, usage_policy={**AUTH_POLICY, **auth_policy}))
    return {"scenario_id": scenario_id, "dataset_id": dataset_id,
            "authorization_id": auth["authorization_id"]}


def _listed(uow: MemoryUnitOfWork, w: dict[str, str], dp: Any) -> str:
    schema = OUTPUT_SCHEMA if dp is None else DP_SCHEMA
    product_id = run(uow, register_product, OPERATOR,
                     **register_kwargs(w, dp=dp, output_schema=schema))["product_id"]
    run(uow, request_listing, OPERATOR, product_id)
    run(uow, decide_listing, PLATFORM, product_id, approve=True, comment="reviewed")
    return product_id


def _ordered(uow: MemoryUnitOfWork, auth_budget: str | None = None, dp: Any = DP,
             w: dict[str, str] | None = None) -> str:
    if w is None:
        w = _world(uow, {} if auth_budget is None else {"privacy_budget": auth_budget})
        w["product_id"] = _listed(uow, w, dp)
        admitted(uow, "demander")
    return run(uow, place_order, DEMANDER, product_id=w["product_id"],
               purpose="loan approval")["order_id"]


def _contract(uow: MemoryUnitOfWork, order_id: str, budget: str | None) -> str:
    policy = POLICY if budget is None else {**POLICY, "privacy_budget": budget}
    run(uow, propose_contract, OPERATOR, order_id, usage_policy=policy, price_fen=1,
        revenue_split=SPLIT)
    run(uow, accept_contract, DEMANDER, order_id)
    run(uow, approve_contract, PROVIDER, order_id)
    run(uow, approve_contract, OPERATOR, order_id)
    return order_id


QUERY = {"field": "credit_code", "values": ["91110000MA01"]}


def _ask(uow: MemoryUnitOfWork, order_id: str) -> int:
    """The demander asks for the next execution."""
    return int(run(uow, submit_query, DEMANDER, order_id, query=QUERY)["execution"])


def _request(uow: MemoryUnitOfWork, order_id: str, execution: int) -> dict[str, Any]:
    """The provider's node asks to run ``execution``."""
    return dict(run(uow, request_computation, PROVIDER, contract_id=order_id,
                    execution=execution, datasite=SITE, code_sha256=CODE_SHA256))


def _execute(uow: MemoryUnitOfWork, order_id: str, execution: int) -> dict[str, Any]:
    if execution > 1:
        assert _ask(uow, order_id) == execution
    return _request(uow, order_id, execution)


def _asking_refused(uow: MemoryUnitOfWork, order_id: str) -> str:
    """The demander's query for one more execution is refused for the budget, writing
    nothing."""
    err = refused(uow, WrongState, submit_query, DEMANDER, order_id, query=QUERY)
    assert str(err).startswith("privacy_budget_exhausted: execution "), err
    assert str(err).endswith("it cannot be asked for"), err
    return str(err)


def _spent(uow: MemoryUnitOfWork, w_auth: str, dataset_id: str) -> list[dict[str, Any]]:
    return [e.payload() for e in uow.streams.get(budget_id(w_auth, dataset_id), [])]


def _ids(uow: MemoryUnitOfWork, order_id: str) -> tuple[str, str]:
    from domain.order import Order
    product = uow.get(Product, uow.get(Order, order_id).product_id)
    return product.authorization_ids[0], product.dataset_ids()[0]


def test_each_execution_spends_epsilon_until_the_contract_budget_refuses() -> None:
    uow = MemoryUnitOfWork()
    order_id = _contract(uow, _ordered(uow, dp={**DP, "epsilon": "0.7"}), "2")
    auth_id, dataset_id = _ids(uow, order_id)
    assert _execute(uow, order_id, 1)["state"] == "requested"
    assert (_ask(uow, order_id), _ask(uow, order_id)) == (2, 3)  # 0.7 spent: both afford
    assert _request(uow, order_id, 2)["state"] == "requested"
    spent = _spent(uow, auth_id, dataset_id)
    assert [(s["contract_id"], s["execution"], s["dataset_id"], s["authorization_id"],
             s["epsilon"]) for s in spent] == [(order_id, 1, dataset_id, auth_id, "0.7"),
                                               (order_id, 2, dataset_id, auth_id, "0.7")]
    out = _request(uow, order_id, 3)
    assert out["state"] == "failed"
    assert out["reason"].startswith("privacy_budget_exhausted: execution 3 of contract ")
    assert "spent 1.4 of the contract's (budget 2)" in out["reason"]
    assert [e.type_name for e in uow.streams[out["computation_id"]]] == [
        "computation.requested", "computation.failed", "usage.refused"]
    refusal = uow.streams[out["computation_id"]][2].payload()
    assert (refusal["rule"], refusal["limit"]) == ("privacy_budget", "2")
    assert len(_spent(uow, auth_id, dataset_id)) == 2  # the refused one spent nothing
    assert "execution 4 of contract" in _asking_refused(uow, order_id)


def test_decimal_budgets_are_exact() -> None:
    uow = MemoryUnitOfWork()
    order_id = _contract(uow, _ordered(uow, dp={**DP, "epsilon": "0.1"}), "0.3")
    assert [_execute(uow, order_id, n)["state"] for n in (1, 2, 3)] == ["requested"] * 3
    assert "which has spent 0.3 of the contract's (budget 0.3)" in _asking_refused(uow, order_id)
    auth_id, dataset_id = _ids(uow, order_id)
    assert uow.get(PrivacyBudget, budget_id(auth_id, dataset_id)).spent == Decimal("0.3")


def test_the_authorization_budget_holds_over_all_its_contracts() -> None:
    uow = MemoryUnitOfWork()
    first = _contract(uow, _ordered(uow, auth_budget="1"), "1")
    from domain.order import Order
    product_id = uow.get(Order, first).product_id
    second = _contract(uow, _ordered(uow, w={"product_id": product_id}), "1")
    assert _execute(uow, first, 1)["state"] == "requested"
    assert _ask(uow, first) == 2  # 0.5 spent under the authorization: it affords one more
    assert _execute(uow, second, 1)["state"] == "requested"
    out = _request(uow, first, 2)
    assert out["state"] == "failed"
    assert "under authorization" in out["reason"] and "(budget 1)" in out["reason"]
    assert "under authorization" in _asking_refused(uow, second)


def test_a_failed_execution_is_not_refunded() -> None:
    uow = MemoryUnitOfWork()
    order_id = _contract(uow, _ordered(uow), "0.5")
    cid = _execute(uow, order_id, 1)["computation_id"]
    run(uow, record_failure, PROVIDER, cid, reason="the sandbox ran out of memory")
    _asking_refused(uow, order_id)


def test_the_trial_and_a_product_without_dp_spend_nothing() -> None:
    uow = MemoryUnitOfWork()
    order_id = _ordered(uow)
    run(uow, grant_trial, OPERATOR, order_id)
    trial = run(uow, request_computation, PROVIDER, contract_id=order_id, execution=TRIAL,
                datasite=SITE, code_sha256=CODE_SHA256)
    assert trial["state"] == "requested"
    auth_id, dataset_id = _ids(uow, order_id)
    assert _spent(uow, auth_id, dataset_id) == []
    plain = MemoryUnitOfWork()
    order_id = _contract(plain, _ordered(plain, dp=None), None)
    assert _execute(plain, order_id, 1)["state"] == "requested"
    auth_id, dataset_id = _ids(plain, order_id)
    assert _spent(plain, auth_id, dataset_id) == []


# -- a budget binds every product, and every dp product has one (F6) ----------------------
def test_under_an_authorization_budget_a_product_must_declare_dp() -> None:
    """A product without dp over a dataset whose authorization sets a budget would read it
    exactly, spending nothing: refused at registration (422 ``dp``); with dp it registers."""
    uow = MemoryUnitOfWork()
    w = _world(uow, {"privacy_budget": "1"})
    err = refused(uow, InvalidInput, register_product, OPERATOR, **register_kwargs(w))
    assert err.field == "dp"
    assert f"authorization {w['authorization_id']} sets a privacy_budget (1)" in str(err)
    assert _listed(uow, w, DP)


def test_a_contract_budget_for_a_product_without_dp_is_refused() -> None:
    uow = MemoryUnitOfWork()
    order_id = _ordered(uow, dp=None)
    err = refused(uow, InvalidInput, propose_contract, OPERATOR, order_id, usage_policy={
        **POLICY, "privacy_budget": "1"}, price_fen=1, revenue_split=SPLIT)
    assert err.field == "usage_policy.privacy_budget"
    assert "declares no dp" in str(err)


def test_a_contract_for_a_dp_product_needs_a_budget() -> None:
    """Its own, or one of an authorization granting each input dataset."""
    uow = MemoryUnitOfWork()
    order_id = _ordered(uow)
    err = refused(uow, InvalidInput, propose_contract, OPERATOR, order_id, usage_policy=POLICY,
                  price_fen=1, revenue_split=SPLIT)
    assert err.field == "usage_policy.privacy_budget"
    assert "needs a privacy_budget" in str(err)
    assert _contract(uow, order_id, "1")


def _old_contract(uow: MemoryUnitOfWork, order_id: str, budget: str | None,
                  monkeypatch: pytest.MonkeyPatch) -> str:
    """A contract proposed before ``check_contract_budget`` existed."""
    import domain.order
    with monkeypatch.context() as patched:
        patched.setattr(domain.order, "check_contract_budget", lambda *_: None)
        return _contract(uow, order_id, budget)


def test_an_old_contract_without_dp_under_a_budget_is_refused_before_it_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    uow = MemoryUnitOfWork()
    order_id = _old_contract(uow, _ordered(uow, dp=None), "1", monkeypatch)
    out = _request(uow, order_id, 1)
    assert out["state"] == "failed"
    assert out["reason"].startswith("privacy_budget_requires_dp: the contract sets a "
                                    "privacy_budget (1) on dataset "), out
    assert [e.type_name for e in uow.streams[out["computation_id"]]] == [
        "computation.requested", "computation.failed", "usage.refused"]
    refusal = uow.streams[out["computation_id"]][2].payload()
    assert (refusal["rule"], refusal["limit"]) == ("privacy_budget", "1")


def test_an_old_product_without_dp_under_an_authorization_budget_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered (and contracted) before the rules: its execution is refused."""
    import domain.product
    uow = MemoryUnitOfWork()
    monkeypatch.setattr(domain.product, "require_dp_under_budget", lambda *_: None)
    order_id = _old_contract(uow, _ordered(uow, auth_budget="2", dp=None), "2", monkeypatch)
    out = _request(uow, order_id, 1)
    assert out["state"] == "failed"
    assert out["reason"].startswith("privacy_budget_requires_dp: the contract sets "), out


def test_an_old_dp_contract_without_a_budget_is_refused_before_it_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    uow = MemoryUnitOfWork()
    order_id = _old_contract(uow, _ordered(uow), None, monkeypatch)
    out = _request(uow, order_id, 1)
    assert out["state"] == "failed"
    assert out["reason"].startswith("privacy_budget_missing: product "), out
    auth_id, dataset_id = _ids(uow, order_id)
    assert _spent(uow, auth_id, dataset_id) == []
    assert [e.type_name for e in uow.streams[out["computation_id"]]] == [
        "computation.requested", "computation.failed", "usage.refused"]
