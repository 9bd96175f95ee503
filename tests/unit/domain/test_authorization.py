"""Authorization: a provider grants an approved scenario some of its datasets' fields.

Also home of ``granted_authorization``, shared by later tests.
"""

from __future__ import annotations

from typing import Any

from domain.authorization import (
    Authorization,
    expire_authorization,
    grant_authorization,
    revoke_authorization,
)
from domain.base import Context
from domain.dataset import withdraw_dataset
from domain.errors import Forbidden, InvalidInput, NotFound, WrongState
from domain.scenario import suspend_scenario
from tests.unit.domain.test_dataset import PROVIDER, published_dataset
from tests.unit.domain.test_participant import refused
from tests.unit.domain.test_scenario import (
    ADMIN,
    OPERATOR,
    REQUESTED_FIELDS,
    approved_scenario,
    submitted_scenario,
)
from tests.unit.fakes import MemoryUnitOfWork, ctx, run

NOT_BEFORE = "2026-01-01T00:00:00Z"
NOT_AFTER = "2027-01-01T00:00:00Z"
POLICY: dict[str, Any] = {"view_count": 10, "circulation_modes": ["plaintext", "ciphertext"]}


def grant_kwargs(scenario_id: str, dataset_id: str, fields: list[str] | None = None,
                 **overrides: Any) -> dict[str, Any]:
    return {"scenario_id": scenario_id,
            "datasets": [{"dataset_id": dataset_id, "fields": fields or REQUESTED_FIELDS}],
            "not_before": NOT_BEFORE, "not_after": NOT_AFTER, "usage_policy": POLICY,
            **overrides}


def granted_authorization(uow: MemoryUnitOfWork, scenario_id: str, dataset_id: str,
                          provider: Context = PROVIDER) -> str:
    ids: dict[str, str] = run(uow, grant_authorization, provider,
                              **grant_kwargs(scenario_id, dataset_id))
    return ids["authorization_id"]


def world(uow: MemoryUnitOfWork) -> tuple[str, str]:
    """A published dataset and a scenario approved for it: (scenario_id, dataset_id)."""
    dataset_id = published_dataset(uow)
    return approved_scenario(uow, [dataset_id]), dataset_id


def test_happy_path_grant_covers_revoke() -> None:
    uow = MemoryUnitOfWork()
    scenario_id, dataset_id = world(uow)
    auth_id = granted_authorization(uow, scenario_id, dataset_id)
    auth = uow.get(Authorization, auth_id)
    assert (auth.operator_id, auth.provider_id, auth.usage_policy) == (
        "p-operator", "p-provider", POLICY)
    assert auth.covers(dataset_id, ["tax_paid_fen"], "2026-06-01T00:00:00Z")
    run(uow, revoke_authorization, PROVIDER, auth_id, reason="misuse")
    assert [e.type_name for e in uow.streams[auth_id]] == [
        "authorization.granted", "authorization.revoked"]
    assert not uow.get(Authorization, auth_id).covers(dataset_id, [], "2026-06-01T00:00:00Z")


def test_covers_only_granted_fields_within_the_period() -> None:
    uow = MemoryUnitOfWork()
    scenario_id, dataset_id = world(uow)
    ids = run(uow, grant_authorization, PROVIDER, **grant_kwargs(scenario_id, dataset_id,
                                                                 ["credit_code"]))
    auth = uow.get(Authorization, ids["authorization_id"])
    inside = "2026-06-01T08:00:00+08:00"
    assert auth.covers(dataset_id, ["credit_code"], inside)
    assert not auth.covers(dataset_id, ["credit_code", "tax_paid_fen"], inside)
    assert not auth.covers("other-dataset", ["credit_code"], inside)
    assert not auth.covers(dataset_id, ["credit_code"], "2025-12-31T23:59:59Z")
    assert not auth.covers(dataset_id, ["credit_code"], NOT_AFTER)


def test_normalizes_the_period_to_utc() -> None:
    uow = MemoryUnitOfWork()
    scenario_id, dataset_id = world(uow)
    ids = run(uow, grant_authorization, PROVIDER, **grant_kwargs(
        scenario_id, dataset_id, not_before="2026-01-01T08:00:00+08:00"))
    assert uow.get(Authorization, ids["authorization_id"]).not_before == NOT_BEFORE


def test_expires_at_not_after() -> None:
    uow = MemoryUnitOfWork()
    auth_id = granted_authorization(uow, *world(uow))
    assert run(uow, expire_authorization, ctx("platform", at=NOT_AFTER), auth_id) == {
        "authorization_id": auth_id, "state": "expired"}


def test_refuses_grant_by_non_provider() -> None:
    uow = MemoryUnitOfWork()
    refused(uow, Forbidden, grant_authorization, OPERATOR, **grant_kwargs(*world(uow)))


def test_refuses_grant_for_unknown_scenario() -> None:
    uow = MemoryUnitOfWork()
    _, dataset_id = world(uow)
    refused(uow, NotFound, grant_authorization, PROVIDER, **grant_kwargs("nope", dataset_id))


def test_refuses_grant_for_unapproved_scenario() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = published_dataset(uow)
    scenario_id = submitted_scenario(uow, [dataset_id])
    refused(uow, WrongState, grant_authorization, PROVIDER, **grant_kwargs(scenario_id,
                                                                           dataset_id))


def test_refuses_grant_for_suspended_scenario() -> None:
    uow = MemoryUnitOfWork()
    scenario_id, dataset_id = world(uow)
    run(uow, suspend_scenario, ADMIN, scenario_id, reason="complaint")
    refused(uow, WrongState, grant_authorization, PROVIDER, **grant_kwargs(scenario_id,
                                                                           dataset_id))


def test_refuses_grant_of_another_providers_dataset() -> None:
    uow = MemoryUnitOfWork()
    args = grant_kwargs(*world(uow))
    refused(uow, Forbidden, grant_authorization, ctx("provider", "p-other"), **args)


def test_refuses_grant_of_withdrawn_dataset() -> None:
    uow = MemoryUnitOfWork()
    scenario_id, dataset_id = world(uow)
    run(uow, withdraw_dataset, PROVIDER, dataset_id, reason="retired")
    refused(uow, WrongState, grant_authorization, PROVIDER, **grant_kwargs(scenario_id,
                                                                           dataset_id))


def test_refuses_grant_of_dataset_the_scenario_did_not_request() -> None:
    uow = MemoryUnitOfWork()
    scenario_id, _ = world(uow)
    other = published_dataset(uow)
    err = refused(uow, InvalidInput, grant_authorization, PROVIDER,
                  **grant_kwargs(scenario_id, other))
    assert isinstance(err, InvalidInput) and err.field == "datasets[0].dataset_id"


def test_refuses_grant_of_fields_the_scenario_did_not_request() -> None:
    uow = MemoryUnitOfWork()
    scenario_id, dataset_id = world(uow)
    err = refused(uow, InvalidInput, grant_authorization, PROVIDER,
                  **grant_kwargs(scenario_id, dataset_id, ["credit_code", "legal_person_id"]))
    assert isinstance(err, InvalidInput) and err.field == "datasets[0].fields"


def test_refuses_period_that_ends_before_it_starts() -> None:
    uow = MemoryUnitOfWork()
    args = grant_kwargs(*world(uow), not_before=NOT_AFTER, not_after=NOT_BEFORE)
    err = refused(uow, InvalidInput, grant_authorization, PROVIDER, **args)
    assert isinstance(err, InvalidInput) and err.field == "not_after"


def test_refuses_period_without_utc_offset() -> None:
    uow = MemoryUnitOfWork()
    args = grant_kwargs(*world(uow), not_after="2027-01-01T00:00:00")
    refused(uow, InvalidInput, grant_authorization, PROVIDER, **args)


def test_refuses_unknown_policy_constraint() -> None:
    uow = MemoryUnitOfWork()
    args = grant_kwargs(*world(uow), usage_policy={"resell": True})
    err = refused(uow, InvalidInput, grant_authorization, PROVIDER, **args)
    assert isinstance(err, InvalidInput) and err.field == "usage_policy.resell"


def test_refuses_revocation_by_another_provider() -> None:
    uow = MemoryUnitOfWork()
    auth_id = granted_authorization(uow, *world(uow))
    refused(uow, Forbidden, revoke_authorization, ctx("provider", "p-other"), auth_id, reason="x")
    refused(uow, Forbidden, revoke_authorization, ctx("regulator"), auth_id, reason="x")


def test_refuses_revocation_without_reason() -> None:
    uow = MemoryUnitOfWork()
    auth_id = granted_authorization(uow, *world(uow))
    refused(uow, InvalidInput, revoke_authorization, PROVIDER, auth_id, reason="")


def test_refuses_expiry_before_not_after() -> None:
    uow = MemoryUnitOfWork()
    auth_id = granted_authorization(uow, *world(uow))
    refused(uow, WrongState, expire_authorization, ctx("platform", at="2026-12-31T23:59:59Z"),
            auth_id)


def test_refuses_expiry_by_non_platform() -> None:
    uow = MemoryUnitOfWork()
    auth_id = granted_authorization(uow, *world(uow))
    refused(uow, Forbidden, expire_authorization, ctx("provider", at=NOT_AFTER), auth_id)


def test_revoked_is_terminal() -> None:
    uow = MemoryUnitOfWork()
    auth_id = granted_authorization(uow, *world(uow))
    run(uow, revoke_authorization, PROVIDER, auth_id, reason="misuse")
    refused(uow, WrongState, revoke_authorization, PROVIDER, auth_id, reason="again")
    refused(uow, WrongState, expire_authorization, ctx("platform", at=NOT_AFTER), auth_id)


def test_expired_is_terminal() -> None:
    uow = MemoryUnitOfWork()
    auth_id = granted_authorization(uow, *world(uow))
    run(uow, expire_authorization, ctx("platform", at=NOT_AFTER), auth_id)
    refused(uow, WrongState, revoke_authorization, PROVIDER, auth_id, reason="x")
    refused(uow, WrongState, expire_authorization, ctx("platform", at=NOT_AFTER), auth_id)
