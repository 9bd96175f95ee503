"""Computation and delivery: request (idempotent per contract and execution), success with
its delivery, failure; the guards of the contract, the code, the count and the authorizations.
Also ``dataset.data_loaded``, and the application running a command that writes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from core.event import Event
from domain.application import Batch, Idempotency
from domain.authorization import revoke_authorization
from domain.base import Actor, Context
from domain.computation import (
    NAMESPACE,
    TRIAL,
    Computation,
    check_reporter,
    computation_id,
    record_failure,
    record_success,
    request_computation,
    submit_query,
)
from domain.dataset import Dataset, record_data_loaded, withdraw_dataset
from domain.errors import Forbidden, InvalidInput, NotFound, WrongState
from domain.order import (
    ContractProposed,
    Order,
    accept_contract,
    approve_contract,
    cancel_order,
    grant_trial,
    place_order,
    propose_contract,
    terminate_contract,
)
from domain.participant import AdmissionApproved, Participant, ParticipantRegistered
from domain.product import (
    Product,
    ProductRegistered,
    decide_listing,
    delist_product,
    request_listing,
)
from domain.scenario import suspend_scenario
from domain.succeeded import Reported
from events.commit import new_ledger
from events.store import LedgerLog, open_store
from events.url import DatabaseURL
from tests.unit.domain.test_authorization import granted_authorization
from tests.unit.domain.test_dataset import PROVIDER, published_dataset
from tests.unit.domain.test_order import (
    DEMANDER,
    POLICY,
    accepted,
    approved,
    ordered,
    propose_kwargs,
)
from tests.unit.domain.test_participant import PLATFORM, REGULATOR, admitted, refused
from tests.unit.domain.test_product import CODE_SHA256, registered_product
from tests.unit.domain.test_scenario import ADMIN, OPERATOR, approved_scenario
from tests.unit.fakes import MemoryUnitOfWork, ctx, run

SITE = "tax-bureau-datasite"
RESULT_SHA = hashlib.sha256(b'[{"score":1}]').hexdigest()
DATA_SHA = hashlib.sha256(b"credit_code,tax_paid_fen\n").hexdigest()
OTHER_PROVIDER = ctx("provider", "p-provider-2")


def request_kwargs(order_id: str, execution: int = 1, **overrides: Any) -> dict[str, Any]:
    return {"contract_id": order_id, "execution": execution, "datasite": SITE,
            "code_sha256": CODE_SHA256, **overrides}


def requested(uow: MemoryUnitOfWork, policy: dict[str, Any] = POLICY) -> tuple[str, str]:
    """An approved contract and execution 1 of it: (order_id, computation_id)."""
    order_id = approved(uow, policy)
    ids = run(uow, request_computation, PROVIDER, **request_kwargs(order_id))
    return order_id, ids["computation_id"]


def recorded_refusal(uow: MemoryUnitOfWork, code: str, who: Any = PROVIDER,
                     **kwargs: Any) -> dict[str, Any]:
    """The request is refused for a policy reason: exactly computation.requested and
    computation.failed are written (and usage.refused when a usage control refused: the
    processing count, the window), the reason starts with ``code``; a repeat writes
    nothing."""
    before = {k: len(v) for k, v in uow.streams.items()}
    out = run(uow, request_computation, who, **kwargs)
    cid = out["computation_id"]
    assert (out["state"], out["existing"]) == ("failed", False)
    assert out["reason"].startswith(f"{code}: ")
    changed = {k for k, v in uow.streams.items() if len(v) != before.get(k, 0)}
    assert changed == {cid}
    usage = ["usage.refused"] if code in ("count_exhausted", "outside_contract_window") else []
    assert [e.type_name for e in uow.streams[cid]] == ["computation.requested",
                                                        "computation.failed", *usage]
    assert uow.streams[cid][1].payload()["reason"] == out["reason"]
    again = request_computation(uow, who, **kwargs)
    assert again == {**out, "existing": True}
    assert uow.commit() == []
    return dict(out)


def inputs_of(uow: MemoryUnitOfWork, cid: str, digest: str = DATA_SHA) -> dict[str, str]:
    return {d: digest for d in uow.get(Computation, cid).dataset_ids}


def success_kwargs(uow: MemoryUnitOfWork, cid: str, **overrides: Any) -> dict[str, Any]:
    """``record_success``'s keywords; ``result_sha256``, ``result_rows`` and ``masking``
    overrides go into its ``result`` (``Reported``)."""
    given = {"result_sha256": RESULT_SHA, "result_rows": 1, "masking": None,
             "input_hashes": inputs_of(uow, cid), "datasite": SITE, **overrides}
    result = Reported(given.pop("result_sha256"), given.pop("result_rows"),
                      given.pop("masking"))
    return {"result": result, **given}


# -- happy paths --------------------------------------------------------------------------
def test_computation_id_is_a_uuid5_of_contract_execution_and_provider() -> None:
    assert computation_id("c-1", 1, "p-1") == computation_id("c-1", 1, "p-1")
    assert computation_id("c-1", 1, "p-1") == str(uuid.uuid5(NAMESPACE, "c-1#1#p-1"))
    assert len({computation_id("c-1", 1, "p-1"), computation_id("c-1", 2, "p-1"),
                computation_id("c-2", 1, "p-1"), computation_id("c-1", 1, "p-2")}) == 4


def test_request_succeed_and_deliver() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    ids = run(uow, request_computation, PROVIDER, **request_kwargs(order_id))
    cid = ids["computation_id"]
    assert cid == computation_id(order_id, 1, "p-provider")
    assert (ids["state"], ids["existing"], ids["execution"]) == ("requested", False, 1)
    done = run(uow, record_success, PROVIDER, cid, **success_kwargs(uow, cid))
    assert (done["state"], done["result_sha256"]) == ("succeeded", RESULT_SHA)
    events = uow.streams[cid]
    assert [e.type_name for e in events] == [
        "computation.requested", "computation.succeeded", "delivery.made"]
    first = events[0].payload()
    order = uow.get(Order, order_id)
    assert first["contract_id"] == order_id and first["demander_id"] == "p-demander"
    assert first["operator_id"] == "p-operator" and first["provider_id"] == "p-provider"
    assert first["code_sha256"] == CODE_SHA256 and first["datasite"] == SITE
    assert first["execution"] == 1 and order.state == "approved"
    assert first["dataset_ids"] == [i["dataset_id"] for i in
                                    uow.get(Product, order.product_id).inputs]
    succeeded = events[1].payload()
    assert succeeded["code_sha256"] == CODE_SHA256
    assert succeeded["result_sha256"] == RESULT_SHA and succeeded["result_rows"] == 1
    assert events[2].payload()["demander_id"] == "p-demander"
    assert events[2].payload()["result_sha256"] == RESULT_SHA


def test_success_and_delivery_come_from_one_command() -> None:
    uow = MemoryUnitOfWork()
    _, cid = requested(uow)
    agg = uow.get(Computation, cid)
    agg.succeed(PROVIDER, result_sha256=RESULT_SHA, input_hashes=inputs_of(uow, cid),
                result_rows=3, datasite=SITE)
    assert [e.type_name for e in agg.pending] == ["computation.succeeded", "delivery.made"]


def test_existing_computation_is_returned_without_events() -> None:
    uow = MemoryUnitOfWork()
    order_id, cid = requested(uow)
    before = len(uow.streams[cid])
    again = request_computation(uow, PROVIDER, **request_kwargs(order_id))
    assert again == {"computation_id": cid, "contract_id": order_id, "execution": 1,
                     "state": "requested", "existing": True, "reason": None,
                     "joint_id": None}
    assert uow.commit() == [] and len(uow.streams[cid]) == before


def test_existing_computation_is_returned_even_after_the_contract_ended() -> None:
    uow = MemoryUnitOfWork()
    order_id, cid = requested(uow)
    run(uow, record_failure, PROVIDER, cid, reason="datasite out of memory")
    run(uow, terminate_contract, OPERATOR, order_id, reason="ended")
    again = request_computation(uow, PROVIDER, **request_kwargs(order_id))
    assert (again["existing"], again["state"]) == (True, "failed")
    assert uow.commit() == []


def terminate(uow: MemoryUnitOfWork, order_id: str) -> None:
    run(uow, terminate_contract, OPERATOR, order_id, reason="ended")


def revoke(uow: MemoryUnitOfWork, order_id: str) -> None:
    for auth_id in uow.get(Product, uow.get(Order, order_id).product_id).authorization_ids:
        run(uow, revoke_authorization, PROVIDER, auth_id, reason="consent withdrawn")


def suspend(uow: MemoryUnitOfWork, order_id: str) -> None:
    scenario_id = uow.get(Product, uow.get(Order, order_id).product_id).scenario_id
    run(uow, suspend_scenario, ADMIN, scenario_id, reason="complaints")


@pytest.mark.parametrize(("change", "code"), [(terminate, "contract_terminated"),
                                              (revoke, "authorization_revoked"),
                                              (suspend, "scenario_suspended")])
def test_a_requested_execution_is_checked_again_when_asked_for_again(
        change: Any, code: str) -> None:
    """A node that crashed after requesting asks again after the policy changed: the
    refusal is recorded (computation.failed only) and answered as existing, failed."""
    uow = MemoryUnitOfWork()
    order_id, cid = requested(uow)
    still = request_computation(uow, PROVIDER, **request_kwargs(order_id))
    assert (still["existing"], still["state"]) == (True, "requested")
    assert uow.commit() == []  # nothing changed: nothing written
    change(uow, order_id)
    again = run(uow, request_computation, PROVIDER, **request_kwargs(order_id))
    assert (again["computation_id"], again["existing"], again["state"]) == (cid, True, "failed")
    assert again["reason"].startswith(f"{code}: ")
    assert [e.type_name for e in uow.streams[cid]] == ["computation.requested",
                                                        "computation.failed"]
    assert uow.get(Computation, cid).reason == again["reason"]
    assert request_computation(uow, PROVIDER, **request_kwargs(order_id)) == again
    assert uow.commit() == []


@pytest.mark.parametrize(("change", "says"), [
    (terminate, "contract {order} was terminated"),
    (revoke, "authorization {auth} covering dataset {dataset}"),
    (suspend, "scenario {scenario} of product {product} is suspended")])
def test_a_result_posted_after_the_policy_lapsed_is_recorded_failed_not_delivered(
        change: Any, says: str) -> None:
    """The code ran, then the contract was terminated, an authorization revoked or the
    scenario suspended: the result is recorded as failed (policy_lapsed), nothing is
    delivered, and the computation takes no other result."""
    uow = MemoryUnitOfWork()
    order_id, cid = requested(uow)
    change(uow, order_id)
    out = run(uow, record_success, PROVIDER, cid, **success_kwargs(uow, cid))
    product = uow.get(Product, uow.get(Order, order_id).product_id)
    named = says.format(order=order_id, auth=product.authorization_ids[0],
                        dataset=product.dataset_ids()[0], scenario=product.scenario_id,
                        product=product.id)
    assert (out["state"], out["result_sha256"]) == ("failed", None)
    assert out["reason"].startswith(f"policy_lapsed: {named}"), out["reason"]
    assert out["reason"].endswith(f"the result of execution 1 of contract {order_id} is not "
                                  "delivered")
    assert [e.type_name for e in uow.streams[cid]] == ["computation.requested",
                                                        "computation.failed"]
    assert uow.get(Computation, cid).reason == out["reason"]
    refused(uow, WrongState, record_success, PROVIDER, cid, **success_kwargs(uow, cid))
    refused(uow, WrongState, check_reporter, PROVIDER, cid, RESULT_SHA)


def test_a_result_posted_after_the_usage_window_closed_is_recorded_failed() -> None:
    window = {**POLICY, "not_before": "2026-11-26T09:00:00Z", "not_after": "2026-11-26T11:00:00Z"}
    uow = MemoryUnitOfWork()
    order_id, cid = requested(uow, window)  # at 10:00, inside the window
    late = ctx("provider", "p-provider", at="2026-11-26T11:00:00Z")
    out = run(uow, record_success, late, cid, **success_kwargs(uow, cid))
    assert out["state"] == "failed"
    assert out["reason"].startswith("policy_lapsed: the usage window closed at "
                                    "2026-11-26T11:00:00Z")
    assert out["reason"].endswith(f"of contract {order_id} is not delivered")


def test_a_result_posted_after_an_authorizations_window_closed_is_recorded_failed() -> None:
    """The window checked again at the post is the effective one: an authorization's
    window, stricter than the contract's, lapses the result too."""
    uow = MemoryUnitOfWork()
    order_id, cid = requested(uow, POLICY)  # at 10:00
    product = uow.get(Product, uow.get(Order, order_id).product_id)
    uow.seen.clear()
    for aid in product.authorization_ids:  # as if granted with a window closing at 10:30
        granted = uow.streams[aid][0]
        uow.streams[aid][0] = dataclasses.replace(granted, usage_policy={
            **granted.usage_policy, "not_after": "2026-11-26T10:30:00Z"})
    late = ctx("provider", "p-provider", at="2026-11-26T11:00:00Z")
    out = run(uow, record_success, late, cid, **success_kwargs(uow, cid))
    assert out["state"] == "failed"
    assert out["reason"].startswith("policy_lapsed: the usage window closed at "
                                    "2026-11-26T10:30:00Z")
    assert "delivery.made" not in [e.type_name for e in uow.streams[cid]]


def test_an_invalid_report_writes_nothing_even_once_the_policy_lapsed() -> None:
    """The re-check comes after the report's own checks: an invalid report is refused
    (nothing written) even once the policy lapsed."""
    uow = MemoryUnitOfWork()
    order_id, cid = requested(uow)
    terminate(uow, order_id)
    refused(uow, InvalidInput, record_success, PROVIDER, cid,
            **success_kwargs(uow, cid, datasite="elsewhere"))
    assert [e.type_name for e in uow.streams[cid]] == ["computation.requested"]


def test_the_trial_s_result_is_not_checked_against_the_contract() -> None:
    """The trial ran on mock data before approval: its result is delivered although the
    grant was revoked meanwhile (the trial never rested on it)."""
    uow = MemoryUnitOfWork()
    order_id = trial_order(uow)
    cid = run(uow, request_computation, PROVIDER,
              **request_kwargs(order_id, TRIAL))["computation_id"]
    revoke(uow, order_id)
    out = run(uow, record_success, PROVIDER, cid, **success_kwargs(uow, cid))
    assert out["state"] == "succeeded"
    assert [e.type_name for e in uow.streams[cid]][-1] == "delivery.made"


def test_check_reporter_refuses_a_post_bound_to_be_refused() -> None:
    """Asked before the bytes are stored: the requester only, and only a result the
    computation still takes (the same again after success, anything while requested)."""
    uow = MemoryUnitOfWork()
    _, cid = requested(uow)
    check_reporter(uow, PROVIDER, cid, RESULT_SHA)
    other = hashlib.sha256(b"other").hexdigest()
    check_reporter(uow, PROVIDER, cid, other)
    refused(uow, Forbidden, check_reporter, OTHER_PROVIDER, cid, RESULT_SHA)
    run(uow, record_success, PROVIDER, cid, **success_kwargs(uow, cid))
    check_reporter(uow, PROVIDER, cid, RESULT_SHA)
    refused(uow, WrongState, check_reporter, PROVIDER, cid, other)


def test_a_requested_trial_is_checked_again_when_asked_for_again() -> None:
    uow = MemoryUnitOfWork()
    order_id = trial_order(uow)
    cid = run(uow, request_computation, PROVIDER,
              **request_kwargs(order_id, TRIAL))["computation_id"]
    run(uow, propose_contract, OPERATOR, order_id, **propose_kwargs())
    run(uow, accept_contract, DEMANDER, order_id)
    run(uow, approve_contract, PROVIDER, order_id)
    run(uow, approve_contract, OPERATOR, order_id)
    again = run(uow, request_computation, PROVIDER, **request_kwargs(order_id, TRIAL))
    assert (again["computation_id"], again["existing"], again["state"]) == (cid, True, "failed")
    assert again["reason"].startswith("trial_after_approval: ")
    assert [e.type_name for e in uow.streams[cid]] == ["computation.requested",
                                                        "computation.failed"]


def ask_next(uow: MemoryUnitOfWork, order_id: str) -> int:
    """The demander asks for the next execution (a query); its number."""
    out = run(uow, submit_query, DEMANDER, order_id,
              query={"field": "credit_code", "values": ["91110000MA01"]})
    return int(out["execution"])


def test_next_execution_after_the_previous_one() -> None:
    uow = MemoryUnitOfWork()
    order_id, first = requested(uow)
    run(uow, record_failure, PROVIDER, first, reason="node restarted")
    err = refused(uow, WrongState, request_computation, PROVIDER, **request_kwargs(order_id, 2))
    assert "not asked for" in err.detail and err.context["executions"] == 1
    assert ask_next(uow, order_id) == 2
    second = run(uow, request_computation, PROVIDER, **request_kwargs(order_id, 2))
    assert second["computation_id"] == computation_id(order_id, 2, "p-provider")
    assert second["state"] == "requested"


def test_the_same_result_reported_again_writes_nothing() -> None:
    uow = MemoryUnitOfWork()
    _, cid = requested(uow)
    run(uow, record_success, PROVIDER, cid, **success_kwargs(uow, cid))
    again = record_success(uow, PROVIDER, cid, **success_kwargs(uow, cid))
    assert (again["existing"], again["state"]) == (True, "succeeded")
    assert uow.commit() == []


def test_failure_is_terminal() -> None:
    uow = MemoryUnitOfWork()
    _, cid = requested(uow)
    done = run(uow, record_failure, PROVIDER, cid, reason="code raised KeyError")
    assert done["state"] == "failed"
    assert uow.get(Computation, cid).reason == "code raised KeyError"
    refused(uow, WrongState, record_failure, PROVIDER, cid, reason="again")
    refused(uow, WrongState, record_success, PROVIDER, cid, **success_kwargs(uow, cid))


# -- request guards -------------------------------------------------------------------------
@pytest.mark.parametrize("who", [DEMANDER, OPERATOR, REGULATOR, PLATFORM, OTHER_PROVIDER])
def test_refuses_a_request_by_anyone_but_a_party_provider(who: Any) -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    refused(uow, Forbidden, request_computation, who, **request_kwargs(order_id))


def test_refuses_a_party_provider_that_owns_no_input_dataset() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    stream = uow.streams[order_id]  # a contract that also names a provider without inputs
    at = next(i for i, e in enumerate(stream) if isinstance(e, ContractProposed))
    proposal = stream[at]
    assert isinstance(proposal, ContractProposed)
    stream[at] = dataclasses.replace(proposal, required_approvals=[
        *proposal.required_approvals, OTHER_PROVIDER.actor.participant_id])
    err = refused(uow, WrongState, request_computation, OTHER_PROVIDER,
                  **request_kwargs(order_id))
    assert "owns none of the input datasets" in err.detail


def test_refuses_a_non_party_even_for_an_existing_computation() -> None:
    uow = MemoryUnitOfWork()
    order_id, _ = requested(uow)
    refused(uow, Forbidden, request_computation, OTHER_PROVIDER, **request_kwargs(order_id))


def test_records_a_contract_not_yet_approved() -> None:
    uow = MemoryUnitOfWork()
    order_id = accepted(uow)
    out = recorded_refusal(uow, "contract_not_approved", **request_kwargs(order_id))
    assert order_id in out["reason"] and "accepted" in out["reason"]


def test_records_a_terminated_contract() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    run(uow, terminate_contract, OPERATOR, order_id, reason="breach")
    out = recorded_refusal(uow, "contract_terminated", **request_kwargs(order_id))
    assert order_id in out["reason"]


def test_refuses_an_unknown_contract() -> None:
    uow = MemoryUnitOfWork()
    refused(uow, NotFound, request_computation, PROVIDER, **request_kwargs("nope"))


def test_records_code_that_differs_from_the_listed_one() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    other = hashlib.sha256(b"print('hi')").hexdigest()
    out = recorded_refusal(uow, "code_hash_mismatch",
                           **request_kwargs(order_id, code_sha256=other))
    assert other in out["reason"] and CODE_SHA256 in out["reason"]
    assert uow.get(Computation, out["computation_id"]).code_sha256 == other
    # the same execution asked for with another code is an invalid request, not a new run
    err = refused(uow, InvalidInput, request_computation, PROVIDER, **request_kwargs(order_id))
    assert isinstance(err, InvalidInput) and err.field == "code_sha256"


def test_accepts_the_code_hash_in_upper_case() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    run(uow, request_computation, PROVIDER,
        **request_kwargs(order_id, code_sha256=CODE_SHA256.upper()))


@pytest.mark.parametrize(("override", "field"), [
    ({"execution": -1}, "execution"), ({"execution": True}, "execution"),
    ({"execution": "1"}, "execution"), ({"datasite": " "}, "datasite"),
    ({"code_sha256": "abc"}, "code_sha256"),
])
def test_refuses_bad_request_fields(override: dict[str, Any], field: str) -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    err = refused(uow, InvalidInput, request_computation, PROVIDER,
                  **request_kwargs(order_id, **override))
    assert isinstance(err, InvalidInput) and err.field == field


def count_exhausted(uow: MemoryUnitOfWork, order_id: str) -> str:
    """The demander's next query is refused for the processing count, writing nothing."""
    before = {k: len(v) for k, v in uow.streams.items()}
    err = refused(uow, WrongState, submit_query, DEMANDER, order_id,
                  query={"field": "credit_code", "values": ["91110000MA01"]})
    assert err.detail.startswith("count_exhausted: the contract's processing_count ")
    assert {k: len(v) for k, v in uow.streams.items()} == before
    return err.detail


def test_the_processing_count_meters_requested_and_succeeded_executions_not_failed_ones(
) -> None:
    uow = MemoryUnitOfWork()
    order_id, first = requested(uow, {**POLICY, "processing_count": 1})
    run(uow, record_failure, PROVIDER, first, reason="node restarted")  # a failure is free
    assert ask_next(uow, order_id) == 2
    # execution 2, asked for and not requested yet, will count: no execution 3
    assert "executions 2)" in count_exhausted(uow, order_id)
    second = run(uow, request_computation, PROVIDER, **request_kwargs(order_id, 2))
    cid = second["computation_id"]
    run(uow, record_success, PROVIDER, cid, **success_kwargs(uow, cid))
    detail = count_exhausted(uow, order_id)
    assert order_id in detail and "processing_count 1 is used up" in detail


def test_an_execution_in_flight_counts_against_the_processing_count() -> None:
    """Two executions in flight could both succeed past the count: a requested one counts,
    for the query asking for the next execution as for the node's request of it."""
    uow = MemoryUnitOfWork()
    order_id, first = requested(uow, {**POLICY, "processing_count": 1})
    assert "executions 1)" in count_exhausted(uow, order_id)
    run(uow, record_success, PROVIDER, first, **success_kwargs(uow, first))
    count_exhausted(uow, order_id)


def test_executions_in_flight_fill_a_larger_processing_count() -> None:
    uow = MemoryUnitOfWork()
    order_id, _ = requested(uow, {**POLICY, "processing_count": 2})
    assert ask_next(uow, order_id) == 2
    assert "executions 1, 2)" in count_exhausted(uow, order_id)
    second = run(uow, request_computation, PROVIDER, **request_kwargs(order_id, 2))
    assert second["state"] == "requested"
    count_exhausted(uow, order_id)


def two_providers_approved(uow: MemoryUnitOfWork, policy: dict[str, Any]) -> str:
    """An approved contract on a product reading a dataset of each of two providers."""
    datasets = [published_dataset(uow), published_dataset(uow, OTHER_PROVIDER)]
    scenario_id = approved_scenario(uow, datasets)
    auths = [granted_authorization(uow, scenario_id, datasets[0]),
             granted_authorization(uow, scenario_id, datasets[1], OTHER_PROVIDER)]
    w = {"scenario_id": scenario_id, "dataset_id": datasets[0], "authorization_id": auths[0]}
    product_id = registered_product(uow, w, authorization_ids=auths, inputs=[
        {"dataset_id": d, "fields": ["credit_code", "tax_paid_fen"]} for d in datasets])
    run(uow, request_listing, OPERATOR, product_id)
    run(uow, decide_listing, PLATFORM, product_id, approve=True, comment="")
    admitted(uow, "demander")
    order_id: str = run(uow, place_order, DEMANDER, product_id=product_id,
                        purpose="loans")["order_id"]
    run(uow, propose_contract, OPERATOR, order_id, **propose_kwargs(usage_policy=policy))
    run(uow, accept_contract, DEMANDER, order_id)
    for party in (PROVIDER, OTHER_PROVIDER, OPERATOR):
        run(uow, approve_contract, party, order_id)
    return order_id


def test_a_request_beyond_the_count_is_recorded_as_refused() -> None:
    """The node's request is checked by the same count: with two input providers, the
    query stands while one may still run it; the other's request is refused."""
    uow = MemoryUnitOfWork()
    order_id = two_providers_approved(uow, {**POLICY, "processing_count": 1})
    first = run(uow, request_computation, PROVIDER, **request_kwargs(order_id))
    run(uow, record_success, PROVIDER, first["computation_id"],
        **success_kwargs(uow, first["computation_id"]))
    theirs = run(uow, request_computation, OTHER_PROVIDER, **request_kwargs(order_id))
    run(uow, record_failure, OTHER_PROVIDER, theirs["computation_id"], reason="oom")
    assert ask_next(uow, order_id) == 2  # the second provider may still process once
    out = recorded_refusal(uow, "count_exhausted", **request_kwargs(order_id, 2))
    assert "1 execution(s) requested or succeeded (executions 1)" in out["reason"]
    again = run(uow, request_computation, OTHER_PROVIDER, **request_kwargs(order_id, 2))
    assert again["state"] == "requested"
    detail = count_exhausted(uow, order_id)
    assert "p-provider: executions 1" in detail and "p-provider-2: executions 2" in detail


def test_a_processing_count_of_zero_allows_no_execution() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow, {**POLICY, "processing_count": 0})
    recorded_refusal(uow, "count_exhausted", **request_kwargs(order_id))


def test_refuses_an_execution_whose_predecessor_was_not_requested() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    ask_next(uow, order_id)
    err = refused(uow, WrongState, request_computation, PROVIDER, **request_kwargs(order_id, 2))
    assert "execution 1" in err.detail and "without gaps" in err.detail


def test_refuses_an_execution_the_demander_has_not_asked_for() -> None:
    uow = MemoryUnitOfWork()
    order_id, _ = requested(uow)
    err = refused(uow, WrongState, request_computation, PROVIDER, **request_kwargs(order_id, 2))
    assert "not asked for" in err.detail
    run(uow, terminate_contract, OPERATOR, order_id, reason="ended")
    refused(uow, WrongState, request_computation, PROVIDER, **request_kwargs(order_id, 2))


def test_an_asked_for_execution_of_a_terminated_contract_is_recorded_as_refused() -> None:
    uow = MemoryUnitOfWork()
    order_id, _ = requested(uow)
    ask_next(uow, order_id)
    run(uow, terminate_contract, OPERATOR, order_id, reason="ended")
    recorded_refusal(uow, "contract_terminated", **request_kwargs(order_id, 2))


def test_refuses_when_an_input_authorization_was_revoked() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    product = uow.get(Product, uow.get(Order, order_id).product_id)
    for auth_id in product.authorization_ids:
        run(uow, revoke_authorization, PROVIDER, auth_id, reason="consent withdrawn")
    out = recorded_refusal(uow, "authorization_revoked", **request_kwargs(order_id))
    assert product.dataset_ids()[0] in out["reason"]
    assert product.authorization_ids[0] in out["reason"]


@pytest.mark.parametrize("at", ["2099-01-01T00:00:00Z", "2001-01-01T00:00:00Z"])
def test_records_when_the_authorization_period_is_over_or_not_begun(at: str) -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    recorded_refusal(uow, "authorization_expired", ctx("provider", at=at),
                     **request_kwargs(order_id))


def test_records_when_no_authorization_of_the_product_covers_the_inputs() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    product_id = uow.get(Order, order_id).product_id
    registered = uow.streams[product_id][0]
    assert isinstance(registered, ProductRegistered)  # a product whose grant covers less
    narrowed = [{**i, "fields": [*i["fields"], "not_granted"]} for i in registered.inputs]
    uow.streams[product_id][0] = dataclasses.replace(registered, inputs=narrowed)
    out = recorded_refusal(uow, "no_authorization", **request_kwargs(order_id))
    assert product_id in out["reason"]


def test_records_a_delisted_product() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow)
    product_id = uow.get(Order, order_id).product_id
    run(uow, delist_product, PLATFORM, product_id, reason="recall")
    out = recorded_refusal(uow, "product_not_listed", **request_kwargs(order_id))
    assert product_id in out["reason"] and "delisted" in out["reason"]


def test_a_policy_refusal_is_terminal_and_the_reason_is_kept() -> None:
    uow = MemoryUnitOfWork()
    order_id = approved(uow, {**POLICY, "processing_count": 0})
    cid = recorded_refusal(uow, "count_exhausted", **request_kwargs(order_id))["computation_id"]
    assert uow.get(Computation, cid).reason.startswith("count_exhausted: ")
    refused(uow, WrongState, record_success, PROVIDER, cid, **success_kwargs(uow, cid))
    refused(uow, WrongState, record_failure, PROVIDER, cid, reason="x")


# -- report guards --------------------------------------------------------------------------
@pytest.mark.parametrize("who", [DEMANDER, OPERATOR, REGULATOR, OTHER_PROVIDER])
def test_only_the_requesting_provider_reports(who: Any) -> None:
    uow = MemoryUnitOfWork()
    _, cid = requested(uow)
    refused(uow, Forbidden, record_success, who, cid, **success_kwargs(uow, cid))
    refused(uow, Forbidden, record_failure, who, cid, reason="x")


def test_refuses_a_different_result_after_success() -> None:
    uow = MemoryUnitOfWork()
    _, cid = requested(uow)
    run(uow, record_success, PROVIDER, cid, **success_kwargs(uow, cid))
    other = hashlib.sha256(b"other").hexdigest()
    refused(uow, WrongState, record_success, PROVIDER, cid,
            **success_kwargs(uow, cid, result_sha256=other))
    refused(uow, WrongState, record_failure, PROVIDER, cid, reason="too late")


def test_refuses_reports_on_an_unknown_computation() -> None:
    uow = MemoryUnitOfWork()
    refused(uow, NotFound, record_failure, PROVIDER, "nope", reason="x")


@pytest.mark.parametrize(("override", "field"), [
    ({"result_sha256": "xyz"}, "result_sha256"),
    ({"result_rows": -1}, "result_rows"),
    ({"result_rows": 1.5}, "result_rows"),
    ({"datasite": "another-site"}, "datasite"),
    ({"input_hashes": {}}, "input_hashes"),
])
def test_refuses_bad_result_fields(override: dict[str, Any], field: str) -> None:
    uow = MemoryUnitOfWork()
    _, cid = requested(uow)
    err = refused(uow, InvalidInput, record_success, PROVIDER, cid,
                  **success_kwargs(uow, cid, **override))
    assert isinstance(err, InvalidInput) and err.field == field


def test_input_hashes_must_match_the_loaded_data() -> None:
    uow = MemoryUnitOfWork()
    _, cid = requested(uow)
    dataset_id = uow.get(Computation, cid).dataset_ids[0]
    run(uow, record_data_loaded, PROVIDER, dataset_id, rows=10,
        schema=[{"name": "credit_code", "type": "str"}], sha256=DATA_SHA, mock_rows=3)
    wrong = hashlib.sha256(b"other data").hexdigest()
    err = refused(uow, InvalidInput, record_success, PROVIDER, cid,
                  **success_kwargs(uow, cid, input_hashes=inputs_of(uow, cid, wrong)))
    assert isinstance(err, InvalidInput) and err.field == f"input_hashes.{dataset_id}"
    run(uow, record_success, PROVIDER, cid, **success_kwargs(uow, cid))


def test_refuses_an_empty_failure_reason() -> None:
    uow = MemoryUnitOfWork()
    _, cid = requested(uow)
    refused(uow, InvalidInput, record_failure, PROVIDER, cid, reason=" ")


# -- dataset.data_loaded ------------------------------------------------------------------
def test_records_the_data_loaded_keeping_the_latest_hash() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = published_dataset(uow)
    schema = [{"name": "credit_code", "type": "str"}, {"name": "tax_paid_fen", "type": "int"}]
    ids = run(uow, record_data_loaded, PROVIDER, dataset_id, rows=100, schema=schema,
              sha256=DATA_SHA.upper(), mock_rows=10)
    assert ids == {"dataset_id": dataset_id, "state": "published", "sha256": DATA_SHA,
                   "rows": 100}
    newer = hashlib.sha256(b"newer").hexdigest()
    run(uow, record_data_loaded, PROVIDER, dataset_id, rows=120, schema=schema, sha256=newer,
        mock_rows=10)
    agg = uow.get(Dataset, dataset_id)
    assert (agg.data_sha256, agg.data_rows, agg.state) == (newer, 120, "published")
    assert [e.type_name for e in uow.streams[dataset_id]][-2:] == [
        "dataset.data_loaded", "dataset.data_loaded"]
    assert uow.streams[dataset_id][-1].payload()["schema"] == schema


def test_data_loaded_guards() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = published_dataset(uow)
    good: dict[str, Any] = {"rows": 1, "schema": [{"name": "a", "type": "int"}],
                            "sha256": DATA_SHA, "mock_rows": 1}
    refused(uow, Forbidden, record_data_loaded, OTHER_PROVIDER, dataset_id, **good)
    refused(uow, Forbidden, record_data_loaded, OPERATOR, dataset_id, **good)
    for field, value in [("rows", -1), ("sha256", "00"), ("mock_rows", True),
                         ("schema", []), ("schema", [{"name": "a"}]),
                         ("schema", [{"name": "a", "type": "x"}, {"name": "a", "type": "y"}])]:
        err = refused(uow, InvalidInput, record_data_loaded, PROVIDER, dataset_id,
                      **{**good, field: value})
        assert isinstance(err, InvalidInput) and err.field.startswith(field)
    run(uow, withdraw_dataset, PROVIDER, dataset_id, reason="retired")
    refused(uow, WrongState, record_data_loaded, PROVIDER, dataset_id, **good)


# -- the application: a command that triggers no event ----------------------------------
class MemoryLog:
    """An EventLog over the streams of a MemoryUnitOfWork."""

    def __init__(self, streams: dict[str, list[Event]]) -> None:
        self.streams = streams
        self.appended: list[tuple[list[Event], list[Batch]]] = []
        self.answers: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        self.seq = 0

    def load(self, originator_id: str, after_version: int = 0) -> list[Event]:
        return [e for e in self.streams.get(originator_id, [])
                if e.originator_version > after_version]

    def append_batches(self, events: list[Event], batches: list[Batch]) -> list[int]:
        self.appended.append((list(events), list(batches)))
        seqs = list(range(self.seq + 1, self.seq + 1 + len(events)))
        self.seq += len(events)
        start = 0
        for batch in batches:
            if batch.idempotency is not None:
                idem = batch.idempotency
                self.answers[(idem.member_id, idem.key)] = (
                    idem.fingerprint, dict(batch.response, seqs=seqs[start:start + batch.count]))
            start += batch.count
        for e in events:
            self.streams.setdefault(e.originator_id, []).append(e)
        return seqs

    def idempotent_answer(self, member_id: str, key: str) -> tuple[str, dict[str, Any]] | None:
        return self.answers.get((member_id, key))


def _actor(context: Context, uow: MemoryUnitOfWork) -> Actor:
    """The context's actor, its participant admitted in ``uow`` (the Ledger checks that)."""
    pid = context.actor.participant_id
    if pid not in uow.streams:
        system = Context(Actor("system", "system", "system"), context.at)
        agg = Participant(pid)
        agg.trigger(ParticipantRegistered, system, name="node's provider", role="provider",
                    credit_code="9111")
        agg.trigger(AdmissionApproved, system, comment="")
        uow.streams[pid] = agg.collect()
    return context.actor


@pytest.mark.parametrize("group_commit", [True, False])
def test_ledger_runs_a_command_that_writes_nothing(group_commit: bool) -> None:
    uow = MemoryUnitOfWork()
    order_id, cid = requested(uow)
    log = MemoryLog(uow.streams)
    ledger = new_ledger(log, clock=lambda: "2026-11-26T11:00:00Z", group_commit=group_commit)
    try:
        result = ledger.execute(request_computation, _actor(PROVIDER, uow),
                                **request_kwargs(order_id))
        assert result.body["existing"] is True and result.body["computation_id"] == cid
        assert result.seqs == [] and not result.replayed
        again = asyncio.run(ledger.execute_async(request_computation, _actor(PROVIDER, uow),
                                                 **request_kwargs(order_id)))
        assert again.body["existing"] is True and again.seqs == []
        assert all(events == [] for events, _ in log.appended)
        assert len(uow.streams[cid]) == 1 and ledger.last_seq == 0
    finally:
        ledger.close()


@pytest.mark.parametrize("group_commit", [True, False])
def test_ledger_on_a_real_store_runs_a_command_that_writes_nothing(
        tmp_path: Path, group_commit: bool) -> None:
    uow = MemoryUnitOfWork()
    order_id, cid = requested(uow)
    actor = _actor(PROVIDER, uow)
    store = open_store(DatabaseURL.parse(f"sqlite:///{tmp_path / 'ledger.db'}"))
    seqs = store.append([e for stream in uow.streams.values() for e in stream])
    ledger = new_ledger(LedgerLog(store), clock=lambda: "2026-11-26T11:00:00Z",
                        group_commit=group_commit)
    try:
        idem = Idempotency("m-1", "node-restart-1", "fp")
        for attempt in range(2):
            result = ledger.execute(request_computation, actor,
                                    idempotency=idem, **request_kwargs(order_id))
            assert result.body["existing"] is True and result.body["computation_id"] == cid
            assert result.seqs == [] and result.replayed is (attempt == 1)
        result = ledger.execute(request_computation, actor,
                                **request_kwargs(order_id))
        assert result.seqs == [] and result.body["state"] == "requested"
        assert store.max_seq() == seqs[-1]
    finally:
        ledger.close()
        store.close()


# -- the trial (试用): execution 0, on mock data, before approval -------------------------
def trial_order(uow: MemoryUnitOfWork) -> str:
    """A placed order (no contract proposed yet) with a trial granted."""
    order_id = ordered(uow)["order_id"]
    run(uow, grant_trial, OPERATOR, order_id)
    return order_id


def test_the_trial_runs_before_the_contract_is_proposed_and_delivers() -> None:
    uow = MemoryUnitOfWork()
    order_id = trial_order(uow)
    out = run(uow, request_computation, PROVIDER, **request_kwargs(order_id, TRIAL))
    cid = out["computation_id"]
    assert cid == computation_id(order_id, 0, PROVIDER.actor.participant_id)
    assert (out["state"], out["execution"], out["reason"]) == ("requested", 0, None)
    # mock tables: not checked against the private file's hash of dataset.data_loaded
    dataset_id = uow.get(Computation, cid).dataset_ids[0]
    run(uow, record_data_loaded, PROVIDER, dataset_id, rows=10,
        schema=[{"name": "credit_code", "type": "str"}], sha256=DATA_SHA, mock_rows=3)
    mock = hashlib.sha256(b"mock rows").hexdigest()
    run(uow, record_success, PROVIDER, cid,
        **success_kwargs(uow, cid, input_hashes=inputs_of(uow, cid, mock)))
    assert [e.type_name for e in uow.streams[cid]] == [
        "computation.requested", "computation.succeeded", "delivery.made"]
    assert run(uow, request_computation, PROVIDER,
               **request_kwargs(order_id, TRIAL))["existing"] is True


def test_a_trial_without_a_grant_is_recorded_as_refused() -> None:
    uow = MemoryUnitOfWork()
    order_id = ordered(uow)["order_id"]
    out = recorded_refusal(uow, "trial_not_granted", **request_kwargs(order_id, TRIAL))
    assert order_id in out["reason"]


def approved_after_trial(uow: MemoryUnitOfWork) -> str:
    """An approved contract whose order had a trial granted while placed."""
    order_id = trial_order(uow)
    run(uow, propose_contract, OPERATOR, order_id, **propose_kwargs())
    run(uow, accept_contract, DEMANDER, order_id)
    run(uow, approve_contract, PROVIDER, order_id)
    run(uow, approve_contract, OPERATOR, order_id)
    return order_id


@pytest.mark.parametrize("end", ["approved", "terminated", "cancelled"])
def test_a_trial_after_approval_is_recorded_as_refused(end: str) -> None:
    uow = MemoryUnitOfWork()
    if end == "cancelled":
        order_id = trial_order(uow)
        run(uow, cancel_order, DEMANDER, order_id, reason="changed our mind")
    else:
        order_id = approved_after_trial(uow)
        if end == "terminated":
            run(uow, terminate_contract, REGULATOR, order_id, reason="ended")
    out = recorded_refusal(uow, "trial_after_approval", **request_kwargs(order_id, TRIAL))
    assert order_id in out["reason"] and end in out["reason"]


def test_an_approved_contract_without_a_trial_refuses_it_as_not_granted() -> None:
    uow = MemoryUnitOfWork()
    recorded_refusal(uow, "trial_not_granted", **request_kwargs(approved(uow), TRIAL))


def test_the_trial_checks_the_code_and_the_listing_not_the_authorizations() -> None:
    uow = MemoryUnitOfWork()
    order_id = trial_order(uow)
    other = hashlib.sha256(b"other code").hexdigest()
    recorded_refusal(uow, "code_hash_mismatch", **request_kwargs(order_id, TRIAL,
                                                                 code_sha256=other))
    uow2 = MemoryUnitOfWork()
    order2 = trial_order(uow2)
    auth_id = uow2.get(Product, uow2.get(Order, order2).product_id).authorization_ids[0]
    run(uow2, revoke_authorization, PROVIDER, auth_id, reason="consent withdrawn")
    assert run(uow2, request_computation, PROVIDER,
               **request_kwargs(order2, TRIAL))["state"] == "requested"
    uow3 = MemoryUnitOfWork()
    order3 = trial_order(uow3)
    run(uow3, delist_product, PLATFORM, uow3.get(Order, order3).product_id, reason="recall")
    recorded_refusal(uow3, "product_not_listed", **request_kwargs(order3, TRIAL))


def test_only_an_input_owner_requests_the_trial() -> None:
    uow = MemoryUnitOfWork()
    order_id = trial_order(uow)
    for who in (OTHER_PROVIDER, DEMANDER, OPERATOR):
        refused(uow, Forbidden, request_computation, who, **request_kwargs(order_id, TRIAL))
    refused(uow, NotFound, request_computation, PROVIDER, **request_kwargs("nope", TRIAL))


def test_execution_one_still_needs_approval_after_a_trial() -> None:
    uow = MemoryUnitOfWork()
    order_id = trial_order(uow)
    run(uow, request_computation, PROVIDER, **request_kwargs(order_id, TRIAL))
    # before the proposal the provider is not yet a party to the contract
    refused(uow, Forbidden, request_computation, PROVIDER, **request_kwargs(order_id))


def test_records_an_execution_outside_the_contract_s_usage_window() -> None:
    window = {**POLICY, "not_before": "2026-11-26T09:00:00Z", "not_after": "2026-11-26T11:00:00Z"}
    uow = MemoryUnitOfWork()  # the ctx's clock: 2026-11-26T10:00:00Z, inside the window
    order_id, cid = requested(uow, window)
    assert uow.get(Computation, cid).state == "requested"
    late = ctx("provider", "p-provider", at="2026-11-26T11:00:00Z")  # not_after is exclusive
    out = recorded_refusal(uow, "outside_contract_window", who=late,
                           **request_kwargs(order_id, ask_next(uow, order_id)))
    assert "closed at 2026-11-26T11:00:00Z" in out["reason"]
    early = MemoryUnitOfWork()
    order_id = approved(early, {**POLICY, "not_before": "2026-11-27T00:00:00Z",
                                "not_after": "2026-12-01T00:00:00Z"})
    out = recorded_refusal(early, "outside_contract_window", **request_kwargs(order_id))
    assert "opens at 2026-11-27T00:00:00Z" in out["reason"]
