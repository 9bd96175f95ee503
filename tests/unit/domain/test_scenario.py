"""Scenario: submission over published datasets, expert opinions, the regulator's decision.

Also home of ``submitted_scenario`` and ``approved_scenario``, shared by later tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from domain.base import Context
from domain.dataset import withdraw_dataset
from domain.errors import Forbidden, InvalidInput, NotFound, SeparationOfDuties, WrongState
from domain.scenario import (
    Scenario,
    decide_scenario,
    record_opinion,
    submit_scenario,
    suspend_scenario,
)
from tests.unit.domain.test_dataset import PROVIDER, published_dataset, registered_dataset
from tests.unit.domain.test_participant import refused
from tests.unit.fakes import MemoryUnitOfWork, ctx, run

OPERATOR = ctx("operator")
ADMIN = ctx("regulator", member_id="m-admin", member_roles=("admin",))
REQUESTED_FIELDS = ["credit_code", "tax_paid_fen"]


def expert(n: int) -> Context:
    return ctx("regulator", member_id=f"m-expert-{n}", member_roles=("expert",))


def submitted_scenario(uow: MemoryUnitOfWork, dataset_ids: list[str],
                       operator: Context = OPERATOR, mode: str = "ciphertext") -> str:
    requested = [{"dataset_id": d, "fields": REQUESTED_FIELDS} for d in dataset_ids]
    ids: dict[str, str] = run(uow, submit_scenario, operator, title="普惠金融信用评估",
                              purpose="credit scoring of small firms", sector="finance",
                              requested=requested, circulation_mode=mode)
    return ids["scenario_id"]


def approved_scenario(uow: MemoryUnitOfWork, dataset_ids: list[str],
                      operator: Context = OPERATOR) -> str:
    scenario_id = submitted_scenario(uow, dataset_ids, operator)
    run(uow, record_opinion, expert(1), scenario_id, verdict="approve", comment="sound")
    run(uow, decide_scenario, ADMIN, scenario_id, approve=True, comment="approved")
    return scenario_id


def submit_kwargs(requested: Any, mode: str = "ciphertext") -> dict[str, Any]:
    return {"title": "t", "purpose": "p", "sector": "finance", "requested": requested,
            "circulation_mode": mode}


def test_happy_path_submit_opinions_approve_suspend() -> None:
    uow = MemoryUnitOfWork()
    scenario_id = submitted_scenario(uow, [published_dataset(uow)])
    run(uow, record_opinion, expert(1), scenario_id, verdict="approve", comment="ok")
    run(uow, record_opinion, expert(2), scenario_id, verdict="approve", comment="ok")
    assert run(uow, record_opinion, expert(3), scenario_id, verdict="reject",
               comment="risky")["opinions"] == 3
    run(uow, decide_scenario, ADMIN, scenario_id, approve=True, comment="2 of 3")
    run(uow, suspend_scenario, ADMIN, scenario_id, reason="complaint")
    assert [e.type_name for e in uow.streams[scenario_id]] == [
        "scenario.submitted", *["scenario.opinion_recorded"] * 3, "scenario.approved",
        "scenario.suspended"]
    agg = uow.get(Scenario, scenario_id)
    assert agg.state == "suspended" and agg.operator_id == "p-operator"


def test_rejects_without_opinions() -> None:
    uow = MemoryUnitOfWork()
    scenario_id = submitted_scenario(uow, [published_dataset(uow)])
    assert run(uow, decide_scenario, ADMIN, scenario_id, approve=False,
               comment="no purpose")["state"] == "rejected"


def test_allows_plaintext_request_of_l3_dataset() -> None:
    uow = MemoryUnitOfWork()
    submitted_scenario(uow, [published_dataset(uow, classification="L3")], mode="plaintext")


def test_refuses_submission_by_non_operator() -> None:
    uow = MemoryUnitOfWork()
    requested = [{"dataset_id": published_dataset(uow), "fields": ["credit_code"]}]
    refused(uow, Forbidden, submit_scenario, PROVIDER, **submit_kwargs(requested))


def test_refuses_request_of_unknown_dataset() -> None:
    requested = [{"dataset_id": "no-such-id", "fields": ["credit_code"]}]
    refused(MemoryUnitOfWork(), NotFound, submit_scenario, OPERATOR, **submit_kwargs(requested))


def test_refuses_request_of_unpublished_dataset() -> None:
    uow = MemoryUnitOfWork()
    requested = [{"dataset_id": registered_dataset(uow), "fields": ["credit_code"]}]
    refused(uow, WrongState, submit_scenario, OPERATOR, **submit_kwargs(requested))


def test_refuses_request_of_withdrawn_dataset() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = published_dataset(uow)
    run(uow, withdraw_dataset, PROVIDER, dataset_id, reason="retired")
    requested = [{"dataset_id": dataset_id, "fields": ["credit_code"]}]
    refused(uow, WrongState, submit_scenario, OPERATOR, **submit_kwargs(requested))


def test_refuses_request_of_missing_field() -> None:
    uow = MemoryUnitOfWork()
    requested = [{"dataset_id": published_dataset(uow), "fields": ["credit_code", "salary"]}]
    err = refused(uow, InvalidInput, submit_scenario, OPERATOR, **submit_kwargs(requested))
    assert isinstance(err, InvalidInput) and err.field == "requested[0].fields"


def test_refuses_plaintext_request_of_l4_dataset() -> None:
    uow = MemoryUnitOfWork()
    requested = [{"dataset_id": published_dataset(uow, classification="L4"),
                  "fields": ["credit_code"]}]
    err = refused(uow, InvalidInput, submit_scenario, OPERATOR,
                  **submit_kwargs(requested, "plaintext"))
    assert isinstance(err, InvalidInput) and err.field == "circulation_mode"


@pytest.mark.parametrize(("requested", "mode", "field"), [
    ([], "ciphertext", "requested"),
    ([{"dataset_id": "d"}], "ciphertext", "requested[0]"),
    ([{"dataset_id": "d", "fields": []}], "ciphertext", "requested[0].fields"),
    ([{"dataset_id": "d", "fields": ["a", "a"]}], "ciphertext", "requested[0].fields"),
    ([{"dataset_id": "d", "fields": ["a"]}] * 2, "ciphertext", "requested[1].dataset_id"),
    ([{"dataset_id": "d", "fields": ["a"]}], "email", "circulation_mode"),
])
def test_refuses_malformed_request_naming_the_field(requested: Any, mode: str,
                                                     field: str) -> None:
    err = refused(MemoryUnitOfWork(), InvalidInput, submit_scenario, OPERATOR,
                  **submit_kwargs(requested, mode))
    assert isinstance(err, InvalidInput) and err.field == field


def test_refuses_empty_title() -> None:
    uow = MemoryUnitOfWork()
    requested = [{"dataset_id": published_dataset(uow), "fields": ["credit_code"]}]
    refused(uow, InvalidInput, submit_scenario, OPERATOR, **{**submit_kwargs(requested),
                                                             "title": ""})


def test_refuses_opinion_from_non_expert() -> None:
    uow = MemoryUnitOfWork()
    scenario_id = submitted_scenario(uow, [published_dataset(uow)])
    refused(uow, Forbidden, record_opinion, ADMIN, scenario_id, verdict="approve", comment="")
    refused(uow, Forbidden, record_opinion, ctx("platform", member_roles=("expert",)),
            scenario_id, verdict="approve", comment="")


def test_refuses_second_opinion_of_one_expert() -> None:
    uow = MemoryUnitOfWork()
    scenario_id = submitted_scenario(uow, [published_dataset(uow)])
    run(uow, record_opinion, expert(1), scenario_id, verdict="approve", comment="")
    refused(uow, WrongState, record_opinion, expert(1), scenario_id, verdict="reject", comment="")


def test_refuses_unknown_verdict() -> None:
    uow = MemoryUnitOfWork()
    scenario_id = submitted_scenario(uow, [published_dataset(uow)])
    refused(uow, InvalidInput, record_opinion, expert(1), scenario_id, verdict="maybe",
            comment="")


def test_refuses_decision_by_non_admin() -> None:
    uow = MemoryUnitOfWork()
    scenario_id = submitted_scenario(uow, [published_dataset(uow)])
    run(uow, record_opinion, expert(1), scenario_id, verdict="approve", comment="")
    refused(uow, Forbidden, decide_scenario, expert(1), scenario_id, approve=True, comment="")
    refused(uow, Forbidden, decide_scenario, ctx("platform"), scenario_id, approve=True,
            comment="")


@pytest.mark.parametrize("approve", [True, False])
def test_an_admin_who_gave_an_opinion_does_not_decide(approve: bool) -> None:
    # separation of duties: one member holding admin and expert is not a second person
    uow = MemoryUnitOfWork()
    scenario_id = submitted_scenario(uow, [published_dataset(uow)])
    both = ctx("regulator", member_id="m-both", member_roles=("admin", "expert"))
    run(uow, record_opinion, both, scenario_id, verdict="approve", comment="sound")
    err = refused(uow, SeparationOfDuties, decide_scenario, both, scenario_id,
                  approve=approve, comment="decided")
    assert err.code == "separation_of_duties"
    run(uow, decide_scenario, ADMIN, scenario_id, approve=approve, comment="decided")


def test_an_expert_member_suspends_no_scenario() -> None:
    uow = MemoryUnitOfWork()
    scenario_id = approved_scenario(uow, [published_dataset(uow)])
    refused(uow, Forbidden, suspend_scenario, expert(1), scenario_id, reason="x")
    refused(uow, Forbidden, suspend_scenario, ctx("regulator", member_roles=("member",)),
            scenario_id, reason="x")


def test_refuses_approval_without_opinions() -> None:
    uow = MemoryUnitOfWork()
    scenario_id = submitted_scenario(uow, [published_dataset(uow)])
    refused(uow, WrongState, decide_scenario, ADMIN, scenario_id, approve=True, comment="")


def test_refuses_approval_without_majority() -> None:
    uow = MemoryUnitOfWork()
    scenario_id = submitted_scenario(uow, [published_dataset(uow)])
    run(uow, record_opinion, expert(1), scenario_id, verdict="approve", comment="")
    run(uow, record_opinion, expert(2), scenario_id, verdict="reject", comment="")
    err = refused(uow, WrongState, decide_scenario, ADMIN, scenario_id, approve=True, comment="")
    assert "1 of 2" in err.detail


def test_refuses_rejection_without_reason() -> None:
    uow = MemoryUnitOfWork()
    scenario_id = submitted_scenario(uow, [published_dataset(uow)])
    refused(uow, InvalidInput, decide_scenario, ADMIN, scenario_id, approve=False, comment="")


def test_refuses_suspension_of_submitted_scenario() -> None:
    uow = MemoryUnitOfWork()
    scenario_id = submitted_scenario(uow, [published_dataset(uow)])
    refused(uow, WrongState, suspend_scenario, ADMIN, scenario_id, reason="x")


def test_refuses_suspension_by_non_regulator() -> None:
    uow = MemoryUnitOfWork()
    scenario_id = approved_scenario(uow, [published_dataset(uow)])
    refused(uow, Forbidden, suspend_scenario, ctx("platform"), scenario_id, reason="x")


def test_rejected_is_terminal() -> None:
    uow = MemoryUnitOfWork()
    scenario_id = submitted_scenario(uow, [published_dataset(uow)])
    run(uow, decide_scenario, ADMIN, scenario_id, approve=False, comment="no")
    refused(uow, WrongState, record_opinion, expert(1), scenario_id, verdict="approve", comment="")
    refused(uow, WrongState, decide_scenario, ADMIN, scenario_id, approve=False, comment="again")
    refused(uow, WrongState, suspend_scenario, ADMIN, scenario_id, reason="x")


def test_suspended_is_terminal() -> None:
    uow = MemoryUnitOfWork()
    scenario_id = approved_scenario(uow, [published_dataset(uow)])
    run(uow, suspend_scenario, ADMIN, scenario_id, reason="complaint")
    refused(uow, WrongState, suspend_scenario, ADMIN, scenario_id, reason="again")
    refused(uow, WrongState, decide_scenario, ADMIN, scenario_id, approve=True, comment="")
    refused(uow, WrongState, record_opinion, expert(9), scenario_id, verdict="approve", comment="")
