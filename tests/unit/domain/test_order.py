"""Order and contract: place, trial, propose, accept, approve by every party, terminate, cancel."""

from __future__ import annotations

from typing import Any

import pytest

from domain.authorization import revoke_authorization
from domain.computation import submit_query
from domain.errors import (
    AuthorizationRevokedError,
    Forbidden,
    InvalidInput,
    NotFound,
    ProductDelistedError,
    ScenarioSuspendedError,
    WrongState,
)
from domain.order import (
    Order,
    accept_contract,
    approve_contract,
    cancel_order,
    grant_trial,
    place_order,
    propose_contract,
    terminate_contract,
)
from domain.participant import Participant
from domain.product import decide_listing, delist_product, request_listing
from domain.scenario import suspend_scenario
from tests.unit.domain.test_authorization import granted_authorization
from tests.unit.domain.test_dataset import PROVIDER, published_dataset
from tests.unit.domain.test_participant import PLATFORM, REGULATOR, admitted, refused
from tests.unit.domain.test_product import listed_product, registered_product
from tests.unit.domain.test_scenario import OPERATOR, approved_scenario
from tests.unit.fakes import MemoryUnitOfWork, ctx, run

DEMANDER = ctx("demander")
SPLIT = {"provider": 4000, "operator": 4000, "developer": 0, "platform": 2000}
#: within the authorizations' policy (test_authorization.POLICY), which bounds it
POLICY: dict[str, Any] = {"view_count": 10, "download_count": 3,
                          "circulation_modes": ["plaintext", "ciphertext"]}


def ordered(uow: MemoryUnitOfWork, **product_overrides: Any) -> dict[str, str]:
    """A listed product and an admitted demander's order for it (``order_id``)."""
    w = listed_product(uow, **product_overrides)
    admitted(uow, "demander")
    ids = run(uow, place_order, DEMANDER, product_id=w["product_id"], purpose="loan approval")
    return {**w, "order_id": ids["order_id"]}


def proposed(uow: MemoryUnitOfWork, policy: dict[str, Any] = POLICY) -> str:
    order_id = ordered(uow)["order_id"]
    run(uow, propose_contract, OPERATOR, order_id, usage_policy=policy, price_fen=500_000,
        revenue_split=SPLIT)
    return order_id


def accepted(uow: MemoryUnitOfWork, policy: dict[str, Any] = POLICY) -> str:
    order_id = proposed(uow, policy)
    run(uow, accept_contract, DEMANDER, order_id)
    return order_id


def approved(uow: MemoryUnitOfWork, policy: dict[str, Any] = POLICY) -> str:
    order_id = accepted(uow, policy)
    run(uow, approve_contract, PROVIDER, order_id)
    run(uow, approve_contract, OPERATOR, order_id)
    return order_id


def propose_kwargs(**overrides: Any) -> dict[str, Any]:
    return {"usage_policy": POLICY, "price_fen": 500_000, "revenue_split": SPLIT, **overrides}


def test_happy_path_place_trial_propose_accept_approve_terminate() -> None:
    uow = MemoryUnitOfWork()
    order_id = ordered(uow)["order_id"]
    assert run(uow, grant_trial, OPERATOR, order_id)["trial_granted"] is True
    ids = run(uow, propose_contract, OPERATOR, order_id, **propose_kwargs())
    assert ids["required_approvals"] == ["p-operator", "p-provider"]
    assert ids["contract_id"] == order_id
    run(uow, accept_contract, DEMANDER, order_id)
    first = run(uow, approve_contract, PROVIDER, order_id)
    assert (first["state"], first["pending_approvals"]) == ("accepted", ["p-operator"])
    assert run(uow, approve_contract, OPERATOR, order_id)["state"] == "approved"
    run(uow, terminate_contract, OPERATOR, order_id, reason="demander left")
    assert [e.type_name for e in uow.streams[order_id]] == [
        "order.placed", "order.trial_granted", "contract.proposed", "contract.accepted",
        "contract.party_approved", "contract.party_approved", "contract.approved",
        "contract.terminated"]
    agg = uow.get(Order, order_id)
    assert (agg.state, agg.demander_id, agg.revenue_split) == ("terminated", "p-demander", SPLIT)


def test_last_approval_emits_party_approval_then_contract_approved_in_one_command() -> None:
    uow = MemoryUnitOfWork()
    order_id = accepted(uow)
    run(uow, approve_contract, PROVIDER, order_id)
    agg = uow.get(Order, order_id)
    agg.approve(OPERATOR)
    assert [e.type_name for e in agg.pending] == ["contract.party_approved", "contract.approved"]


def test_platform_may_grant_a_trial() -> None:
    uow = MemoryUnitOfWork()
    order_id = ordered(uow)["order_id"]
    run(uow, grant_trial, PLATFORM, order_id)


def test_requires_every_input_provider_and_the_operator() -> None:
    uow = MemoryUnitOfWork()
    second = ctx("provider", "p-provider-2")
    datasets = [published_dataset(uow), published_dataset(uow, second)]
    scenario_id = approved_scenario(uow, datasets)
    auths = [granted_authorization(uow, scenario_id, datasets[0]),
             granted_authorization(uow, scenario_id, datasets[1], second)]
    w = {"scenario_id": scenario_id, "dataset_id": datasets[0], "authorization_id": auths[0]}
    inputs = [{"dataset_id": d, "fields": ["tax_paid_fen"]} for d in datasets]
    product_id = registered_product(uow, w, authorization_ids=auths, inputs=inputs,
                                    key_column=None)
    run(uow, request_listing, OPERATOR, product_id)
    run(uow, decide_listing, PLATFORM, product_id, approve=True, comment="")
    admitted(uow, "demander")
    order_id = run(uow, place_order, DEMANDER, product_id=product_id, purpose="p")["order_id"]
    ids = run(uow, propose_contract, OPERATOR, order_id, **propose_kwargs())
    assert ids["required_approvals"] == ["p-operator", "p-provider", "p-provider-2"]
    run(uow, accept_contract, DEMANDER, order_id)
    for party in (PROVIDER, OPERATOR):
        assert run(uow, approve_contract, party, order_id)["state"] == "accepted"
    assert run(uow, approve_contract, second, order_id)["state"] == "approved"


def test_developer_share_allowed_when_the_product_has_a_developer() -> None:
    uow = MemoryUnitOfWork()
    developer = admitted(uow, "developer")
    order_id = ordered(uow, developer_id=developer)["order_id"]
    split = {"provider": 3000, "operator": 3000, "developer": 2000, "platform": 2000}
    run(uow, propose_contract, OPERATOR, order_id, **propose_kwargs(revenue_split=split))


def test_regulator_may_terminate() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    assert run(uow, terminate_contract, REGULATOR, order_id, reason="audit")["state"] == (
        "terminated")


def test_provider_may_terminate_when_the_policy_allows() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow, {**POLICY, "provider_may_terminate": True})
    run(uow, terminate_contract, PROVIDER, order_id, reason="data recalled")


def placed(uow: MemoryUnitOfWork) -> str:
    return ordered(uow)["order_id"]


@pytest.mark.parametrize("stage", [placed, proposed, accepted])
def test_demander_may_cancel_before_approval(stage: Any) -> None:
    uow = MemoryUnitOfWork()
    order_id = stage(uow)
    assert run(uow, cancel_order, DEMANDER, order_id, reason="budget")["state"] == "cancelled"


# -- place ----------------------------------------------------------------------
def test_refuses_order_by_non_demander() -> None:
    uow = MemoryUnitOfWork()
    product_id = listed_product(uow)["product_id"]
    refused(uow, Forbidden, place_order, OPERATOR, product_id=product_id, purpose="p")


def test_refuses_order_by_demander_not_admitted() -> None:
    uow = MemoryUnitOfWork()
    product_id = listed_product(uow)["product_id"]
    pending = Participant.register("p-demander", PLATFORM, name="bank", role="demander",
                                   credit_code="c")
    uow.add(pending)
    uow.commit()
    refused(uow, WrongState, place_order, DEMANDER, product_id=product_id, purpose="p")


def test_refuses_order_by_unknown_demander() -> None:
    uow = MemoryUnitOfWork()
    product_id = listed_product(uow)["product_id"]
    refused(uow, NotFound, place_order, DEMANDER, product_id=product_id, purpose="p")


def test_refuses_order_of_unlisted_product() -> None:
    uow = MemoryUnitOfWork()
    w = listed_product(uow)
    run(uow, delist_product, PLATFORM, w["product_id"], reason="x")
    admitted(uow, "demander")
    refused(uow, WrongState, place_order, DEMANDER, product_id=w["product_id"], purpose="p")


def test_refuses_order_of_unknown_product() -> None:
    uow = MemoryUnitOfWork()
    admitted(uow, "demander")
    refused(uow, NotFound, place_order, DEMANDER, product_id="nope", purpose="p")


def test_refuses_order_without_purpose() -> None:
    uow = MemoryUnitOfWork()
    product_id = listed_product(uow)["product_id"]
    admitted(uow, "demander")
    refused(uow, InvalidInput, place_order, DEMANDER, product_id=product_id, purpose="")


# -- trial ----------------------------------------------------------------------
def test_refuses_trial_by_another_operator_or_the_demander() -> None:
    uow = MemoryUnitOfWork()
    order_id = ordered(uow)["order_id"]
    refused(uow, Forbidden, grant_trial, ctx("operator", "p-op-2"), order_id)
    refused(uow, Forbidden, grant_trial, DEMANDER, order_id)


def test_refuses_second_trial() -> None:
    uow = MemoryUnitOfWork()
    order_id = ordered(uow)["order_id"]
    run(uow, grant_trial, OPERATOR, order_id)
    refused(uow, WrongState, grant_trial, PLATFORM, order_id)


def test_refuses_trial_after_approval() -> None:
    uow = MemoryUnitOfWork()
    refused(uow, WrongState, grant_trial, OPERATOR, approved(uow))


# -- propose ----------------------------------------------------------------------
def test_refuses_proposal_by_another_operator_or_the_demander() -> None:
    uow = MemoryUnitOfWork()
    order_id = ordered(uow)["order_id"]
    refused(uow, Forbidden, propose_contract, ctx("operator", "p-op-2"), order_id,
            **propose_kwargs())
    refused(uow, Forbidden, propose_contract, DEMANDER, order_id, **propose_kwargs())


def test_refuses_second_proposal() -> None:
    uow = MemoryUnitOfWork()
    refused(uow, WrongState, propose_contract, OPERATOR, proposed(uow), **propose_kwargs())


@pytest.mark.parametrize(("override", "field"), [
    ({"usage_policy": {"resell": True}}, "usage_policy.resell"),
    ({"price_fen": -1}, "price_fen"),
    ({"price_fen": 10.5}, "price_fen"),
    ({"revenue_split": {**SPLIT, "platform": 1999}}, "revenue_split"),
    ({"revenue_split": {"provider": 10000}}, "revenue_split"),
    ({"revenue_split": {**SPLIT, "provider": -1, "operator": 6001}}, "revenue_split.provider"),
    ({"revenue_split": {**SPLIT, "operator": 40.0}}, "revenue_split.operator"),
    ({"revenue_split": {**SPLIT, "operator": 3000, "developer": 1000}},
     "revenue_split.developer"),
])
def test_refuses_bad_contract_terms_naming_the_field(override: dict[str, Any],
                                                     field: str) -> None:
    uow = MemoryUnitOfWork()
    order_id = ordered(uow)["order_id"]
    err = refused(uow, InvalidInput, propose_contract, OPERATOR, order_id,
                  **propose_kwargs(**override))
    assert isinstance(err, InvalidInput) and err.field == field


def test_refuses_proposal_for_a_product_delisted_since() -> None:
    uow = MemoryUnitOfWork()
    w = ordered(uow)
    run(uow, delist_product, PLATFORM, w["product_id"], reason="x")
    refused(uow, ProductDelistedError, propose_contract, OPERATOR, w["order_id"], **propose_kwargs())


def test_refuses_proposal_when_an_input_authorization_was_revoked() -> None:
    uow = MemoryUnitOfWork()
    w = ordered(uow)
    run(uow, revoke_authorization, PROVIDER, w["authorization_id"], reason="misuse")
    refused(uow, AuthorizationRevokedError, propose_contract, OPERATOR, w["order_id"],
            **propose_kwargs())


# -- accept / approve -----------------------------------------------------------
def test_refuses_acceptance_by_another_demander() -> None:
    uow = MemoryUnitOfWork()
    refused(uow, Forbidden, accept_contract, ctx("demander", "p-bank-2"), proposed(uow))


def test_refuses_acceptance_before_proposal() -> None:
    uow = MemoryUnitOfWork()
    refused(uow, WrongState, accept_contract, DEMANDER, ordered(uow)["order_id"])


def test_refuses_approval_by_non_party() -> None:
    uow = MemoryUnitOfWork()
    order_id = accepted(uow)
    refused(uow, Forbidden, approve_contract, ctx("provider", "p-other"), order_id)
    refused(uow, Forbidden, approve_contract, DEMANDER, order_id)


def test_refuses_second_approval_by_one_party() -> None:
    uow = MemoryUnitOfWork()
    order_id = accepted(uow)
    run(uow, approve_contract, PROVIDER, order_id)
    refused(uow, WrongState, approve_contract, PROVIDER, order_id)


def test_refuses_approval_before_acceptance() -> None:
    uow = MemoryUnitOfWork()
    refused(uow, WrongState, approve_contract, PROVIDER, proposed(uow))


# -- terminate / cancel ----------------------------------------------------------
def test_refuses_termination_by_provider_unless_the_policy_allows() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    err = refused(uow, Forbidden, terminate_contract, PROVIDER, order_id, reason="x")
    assert "provider_may_terminate" in err.detail


def test_refuses_termination_by_a_provider_not_party_to_the_contract() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow, {**POLICY, "provider_may_terminate": True})
    refused(uow, Forbidden, terminate_contract, ctx("provider", "p-other"), order_id, reason="x")


def test_refuses_termination_by_others() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    for who in (PLATFORM, DEMANDER, ctx("operator", "p-op-2")):
        refused(uow, Forbidden, terminate_contract, who, order_id, reason="x")


def test_refuses_termination_before_approval() -> None:
    uow = MemoryUnitOfWork()
    refused(uow, WrongState, terminate_contract, OPERATOR, accepted(uow), reason="x")


def test_refuses_termination_without_reason() -> None:
    uow = MemoryUnitOfWork()
    refused(uow, InvalidInput, terminate_contract, OPERATOR, approved(uow), reason="")


def test_refuses_cancellation_by_anyone_but_the_demander() -> None:
    uow = MemoryUnitOfWork()
    order_id = ordered(uow)["order_id"]
    refused(uow, Forbidden, cancel_order, OPERATOR, order_id)
    refused(uow, Forbidden, cancel_order, ctx("demander", "p-bank-2"), order_id)


def test_refuses_cancellation_after_approval() -> None:
    uow = MemoryUnitOfWork()
    refused(uow, WrongState, cancel_order, DEMANDER, approved(uow))


def test_terminated_is_terminal() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    run(uow, terminate_contract, REGULATOR, order_id, reason="audit")
    refused(uow, WrongState, terminate_contract, OPERATOR, order_id, reason="again")
    refused(uow, WrongState, cancel_order, DEMANDER, order_id)
    refused(uow, WrongState, grant_trial, OPERATOR, order_id)
    refused(uow, WrongState, approve_contract, PROVIDER, order_id)


def test_cancelled_is_terminal() -> None:
    uow = MemoryUnitOfWork()
    order_id = proposed(uow)
    run(uow, cancel_order, DEMANDER, order_id)
    refused(uow, WrongState, cancel_order, DEMANDER, order_id)
    refused(uow, WrongState, accept_contract, DEMANDER, order_id)
    refused(uow, WrongState, grant_trial, OPERATOR, order_id)
    refused(uow, WrongState, propose_contract, OPERATOR, order_id, **propose_kwargs())
    refused(uow, WrongState, approve_contract, PROVIDER, order_id)
    refused(uow, WrongState, terminate_contract, OPERATOR, order_id, reason="x")


# -- queries --------------------------------------------------------------------------------
QUERY: dict[str, Any] = {"field": "credit_code", "values": ["91110000MA01", "91110000MA02"]}


def test_the_order_query_is_execution_one_and_queries_ask_for_more() -> None:
    uow = MemoryUnitOfWork()
    w = listed_product(uow)
    admitted(uow, "demander")
    order_id = run(uow, place_order, DEMANDER, product_id=w["product_id"], purpose="loans",
                   query=QUERY)["order_id"]
    placed = uow.streams[order_id][0]
    assert placed.payload()["query"] == QUERY and placed.payload()["class_version"] == 2
    order = uow.get(Order, order_id)
    assert (order.query, order.executions) == (QUERY, 0)
    run(uow, propose_contract, OPERATOR, order_id, **propose_kwargs())
    run(uow, accept_contract, DEMANDER, order_id)
    run(uow, approve_contract, PROVIDER, order_id)
    run(uow, approve_contract, OPERATOR, order_id)
    assert uow.get(Order, order_id).executions == 1
    second = {"field": "credit_code", "values": ["x"]}
    assert run(uow, submit_query, DEMANDER, order_id, query=second) == {
        "order_id": order_id, "execution": 2}
    assert run(uow, submit_query, DEMANDER, order_id, query=QUERY)["execution"] == 3
    events = uow.streams[order_id][-2:]
    assert [e.type_name for e in events] == ["contract.query_submitted"] * 2
    assert [(e.payload()["execution"], e.payload()["query"]) for e in events] == [
        (2, second), (3, QUERY)]
    assert uow.get(Order, order_id).executions == 3


def test_an_order_without_a_query_records_null() -> None:
    uow = MemoryUnitOfWork()
    order_id = ordered(uow)["order_id"]
    assert uow.streams[order_id][0].payload()["query"] is None


def test_queries_need_an_approved_contract() -> None:
    uow = MemoryUnitOfWork()
    order_id = accepted(uow)
    err = refused(uow, WrongState, submit_query, DEMANDER, order_id, query=QUERY)
    assert err.context["state"] == "accepted"
    run(uow, approve_contract, PROVIDER, order_id)
    run(uow, approve_contract, OPERATOR, order_id)
    run(uow, terminate_contract, OPERATOR, order_id, reason="ended")
    refused(uow, WrongState, submit_query, DEMANDER, order_id, query=QUERY)


@pytest.mark.parametrize("who", [OPERATOR, PROVIDER, REGULATOR, PLATFORM,
                                 ctx("demander", "p-demander-2")])
def test_only_the_demander_submits_queries(who: Any) -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    refused(uow, Forbidden, submit_query, who, order_id, query=QUERY)


@pytest.mark.parametrize(("query", "field"), [
    (None, "query"), ([], "query"), ({"field": "a"}, "query"),
    ({**QUERY, "extra": 1}, "query"),
    ({**QUERY, "field": ""}, "query.field"), ({**QUERY, "field": "1abc"}, "query.field"),
    ({**QUERY, "field": "a-b"}, "query.field"), ({**QUERY, "field": "a" * 65}, "query.field"),
    ({**QUERY, "field": 7}, "query.field"),
    ({**QUERY, "values": []}, "query.values"), ({**QUERY, "values": "x"}, "query.values"),
    ({**QUERY, "values": [str(i) for i in range(10_001)]}, "query.values"),
    ({**QUERY, "values": ["a", "b", "c", ""]}, "query.values[3]"),
    ({**QUERY, "values": ["a", 1]}, "query.values[1]"),
    ({**QUERY, "values": ["a", "x" * 201]}, "query.values[1]"),
    ({**QUERY, "values": ["a", "b\x00"]}, "query.values[1]"),
    ({**QUERY, "values": ["a", "b", "a"]}, "query.values[2]"),
])
def test_refuses_an_invalid_query_naming_the_field(query: Any, field: str) -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    err = refused(uow, InvalidInput, submit_query, DEMANDER, order_id, query=query)
    assert isinstance(err, InvalidInput) and err.field == field
    if query is not None:
        product_id = uow.get(Order, order_id).product_id
        err = refused(uow, InvalidInput, place_order, DEMANDER, product_id=product_id,
                      purpose="loans", query=query)
        assert isinstance(err, InvalidInput) and err.field == field


def test_the_largest_query_is_accepted() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    query = {"field": "credit_code", "values": [f"{i:0200d}" for i in range(10_000)]}
    assert run(uow, submit_query, DEMANDER, order_id, query=query)["execution"] == 2


def test_a_query_names_only_the_product_s_key_column() -> None:
    """A query selects rows by the product's key column; on any other column it is no
    access control (a range of scores would bring back every row), so it is refused."""
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    product_id = uow.get(Order, order_id).product_id
    other = {"field": "tax_paid_fen", "values": ["-100", "0", "100"]}
    for use_case, args in ((submit_query, (order_id,)), (place_order, ())):
        kwargs = {"product_id": product_id, "purpose": "p"} if use_case is place_order else {}
        err = refused(uow, InvalidInput, use_case, DEMANDER, *args, query=other, **kwargs)
        assert isinstance(err, InvalidInput) and err.field == "query.field"
        assert err.detail == "query.field: must be the product's key column 'credit_code'"


def test_a_product_without_a_key_column_takes_no_query() -> None:
    uow = MemoryUnitOfWork()
    w = ordered(uow, key_column=None)
    assert run(uow, place_order, DEMANDER, product_id=w["product_id"], purpose="p",
               query=None)["state"] == "placed"
    err = refused(uow, InvalidInput, place_order, DEMANDER, product_id=w["product_id"],
                  purpose="p", query=QUERY)
    assert isinstance(err, InvalidInput) and err.field == "query.field"
    assert "declares no key column: it takes no query" in err.detail


def test_a_query_beyond_the_processing_count_is_refused_and_not_written() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow, {**POLICY, "processing_count": 2})
    assert run(uow, submit_query, DEMANDER, order_id, query=QUERY)["execution"] == 2
    before = len(uow.streams[order_id])
    err = refused(uow, WrongState, submit_query, DEMANDER, order_id, query=QUERY)
    assert err.detail.startswith("count_exhausted: the contract's processing_count 2 is "
                                 "used up")
    assert err.context["processing_count"] == 2 and order_id in err.detail
    assert len(uow.streams[order_id]) == before
    # no processing count: asking is not limited
    unlimited = approved(uow)
    for n in range(2, 6):
        assert run(uow, submit_query, DEMANDER, unlimited, query=QUERY)["execution"] == n


# -- the product must stay usable: listed, its scenario approved, its inputs authorized ------
def _revoke(uow: MemoryUnitOfWork, w: dict[str, str]) -> None:
    run(uow, revoke_authorization, PROVIDER, w["authorization_id"], reason="misuse")


def _suspend(uow: MemoryUnitOfWork, w: dict[str, str]) -> None:
    run(uow, suspend_scenario, REGULATOR, w["scenario_id"], reason="under review")


@pytest.mark.parametrize(("stop", "error"), [(_revoke, AuthorizationRevokedError),
                                             (_suspend, ScenarioSuspendedError)])
def test_refuses_an_order_once_the_product_lost_its_grant_or_scenario(
        stop: Any, error: type[Exception]) -> None:
    uow = MemoryUnitOfWork()
    w = listed_product(uow)
    admitted(uow, "demander")
    stop(uow, w)
    refused(uow, error, place_order, DEMANDER, product_id=w["product_id"], purpose="loans")


@pytest.mark.parametrize(("stop", "error"), [(_revoke, AuthorizationRevokedError),
                                             (_suspend, ScenarioSuspendedError)])
def test_refuses_every_approval_once_the_product_lost_its_grant_or_scenario(
        stop: Any, error: type[Exception]) -> None:
    uow = MemoryUnitOfWork()
    order_id = accepted(uow)
    w = {"authorization_id": _only(uow, "authorization"), "scenario_id": _only(uow, "scenario")}
    stop(uow, w)
    refused(uow, error, approve_contract, PROVIDER, order_id)
    refused(uow, error, approve_contract, OPERATOR, order_id)
    assert uow.get(Order, order_id).state == "accepted"


def test_refuses_proposal_once_the_scenario_was_suspended() -> None:
    uow = MemoryUnitOfWork()
    w = ordered(uow)
    _suspend(uow, w)
    err = refused(uow, WrongState, propose_contract, OPERATOR, w["order_id"], **propose_kwargs())
    assert "suspended, not approved" in str(err)


def _only(uow: MemoryUnitOfWork, kind: str) -> str:
    """The id of the one aggregate of ``kind`` in the store."""
    ids = [i for i, events in uow.streams.items() if events[0].type_name.startswith(f"{kind}.")]
    assert len(ids) == 1
    return ids[0]


def test_refuses_a_contract_whose_usage_window_is_already_past() -> None:
    uow = MemoryUnitOfWork()  # the ctx's clock: 2026-11-26T10:00:00Z
    order_id = ordered(uow)["order_id"]
    err = refused(uow, InvalidInput, propose_contract, OPERATOR, order_id, **propose_kwargs(
        usage_policy={**POLICY, "not_after": "2026-11-26T10:00:00Z"}))
    assert err.field == "usage_policy.not_after"  # type: ignore[attr-defined]
