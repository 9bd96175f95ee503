"""Accesses to a delivered result, decided on the read model's counters (``Meter``) and
recorded (``delivery.accessed`` / ``usage.refused`` on the contract's usage stream); the
input providers' release of a held result; a contract's terms against its authorizations."""

from __future__ import annotations

from typing import Any

import pytest

from domain.authorization import Authorization, AuthorizationGranted
from domain.computation import (
    Computation,
    computation_id,
    record_success,
    request_computation,
)
from domain.delivery import access_result, approve_release, refusal_error
from domain.errors import Forbidden, InvalidInput, NotFound, WrongState
from domain.order import (
    ContractProposed,
    Order,
    accept_contract,
    approve_contract,
    place_order,
    propose_contract,
    terminate_contract,
)
from domain.participant import Participant
from domain.product import Product
from domain.usage import Meter, UsageDenied, UsageForbidden, usage_id
from tests.unit.domain.test_computation import request_kwargs, requested, success_kwargs
from tests.unit.domain.test_dataset import PROVIDER
from tests.unit.domain.test_order import DEMANDER, POLICY, SPLIT, ordered
from tests.unit.domain.test_participant import PLATFORM, REGULATOR
from tests.unit.domain.test_scenario import OPERATOR
from tests.unit.fakes import MemoryUnitOfWork, ctx, run


def delivered(uow: MemoryUnitOfWork, policy: dict[str, Any] | None = None) -> tuple[str, str]:
    """An approved contract under ``policy`` and execution 1 delivered: (order, delivery)."""
    order_id, cid = requested(uow, {**POLICY, **(policy or {})})
    run(uow, record_success, PROVIDER, cid, **success_kwargs(uow, cid))
    return order_id, cid


def access(uow: MemoryUnitOfWork, who: Any, cid: str, kind: str = "download",
           meter: Meter | None = None) -> dict[str, Any]:
    """One access on ``meter`` (default: the usage stream as committed so far)."""
    order_id = uow.get(Computation, cid).contract_id
    stream = uow.streams.get(usage_id(order_id), [])
    counted = [e for e in stream if e.type_name == "delivery.accessed" and e.counted]
    meter = meter or Meter(len(stream), sum(e.kind == "view" for e in counted),
                           sum(e.kind == "download" for e in counted))
    return dict(run(uow, access_result, who, cid, kind=kind, meter=meter))


def payload_of(event: Any) -> dict[str, Any]:
    """An event's fields, to write it again as a newer writer would."""
    return {k: v for k, v in event.payload().items() if k != "class_version"}


def test_each_access_is_recorded_on_the_usage_stream_and_counted_for_the_demander() -> None:
    uow = MemoryUnitOfWork()
    order_id, cid = delivered(uow)
    first = access(uow, DEMANDER, cid)
    assert (first["allowed"], first["downloads_used"], first["views_used"]) == (True, 1, 0)
    assert access(uow, DEMANDER, cid, "view")["views_used"] == 1
    assert access(uow, OPERATOR, cid)["downloads_used"] == 1  # recorded, not counted
    assert access(uow, REGULATOR, cid)["allowed"]
    stream = uow.streams[usage_id(order_id)]
    assert [(e.type_name, e.kind, e.counted) for e in stream] == [  # type: ignore[attr-defined]
        ("delivery.accessed", "download", True), ("delivery.accessed", "view", True),
        ("delivery.accessed", "download", False), ("delivery.accessed", "download", False)]
    assert stream[0].payload()["member_id"] == "m-1"
    assert stream[0].payload()["computation_id"] == cid


def test_past_the_download_count_the_refusal_is_recorded_with_its_rule() -> None:
    uow = MemoryUnitOfWork()
    order_id, cid = delivered(uow)  # download_count 3
    for _ in range(3):
        assert access(uow, DEMANDER, cid)["allowed"]
    refused = access(uow, DEMANDER, cid)
    assert not refused["allowed"] and refused["refusal"]["code"] == "download_count_exhausted"
    error = refusal_error(refused)
    assert isinstance(error, UsageDenied) and error.code == "download_count_exhausted"
    last = uow.streams[usage_id(order_id)][-1]
    assert last.type_name == "usage.refused"
    assert (last.rule, last.limit, last.used, last.action) == (  # type: ignore[attr-defined]
        "download_count", 3, 3, "download")
    assert access(uow, REGULATOR, cid)["allowed"]  # supervision is never refused


def test_a_stale_meter_is_refused_by_the_append_not_counted_twice() -> None:
    uow = MemoryUnitOfWork()
    _, cid = delivered(uow)
    access(uow, DEMANDER, cid)
    events = access_result(uow, DEMANDER, cid, kind="download", meter=Meter())
    pending = [a for a in uow.pending() if a.pending]
    assert events["allowed"] and pending[0].pending[0].originator_version == 1  # taken: 1


def with_members(uow: MemoryUnitOfWork, *member_ids: str) -> None:
    """The demander gains members ``member_ids``."""
    demander = uow.get(Participant, "p-demander")
    for member_id in member_ids:
        demander.add_member(PLATFORM, member_id=member_id, name=member_id,
                            member_roles=["member"], token_hash=member_id.ljust(64, "0"))
    uow.commit()


def test_designated_users_name_the_members_who_may_read() -> None:
    uow = MemoryUnitOfWork()
    order_id = ordered(uow)["order_id"]
    with_members(uow, "m-1", "m-2")
    run(uow, propose_contract, OPERATOR, order_id, price_fen=1, revenue_split=SPLIT,
        usage_policy={**POLICY, "designated_users": ["m-1"]})
    run(uow, accept_contract, DEMANDER, order_id)
    run(uow, approve_contract, PROVIDER, order_id)
    run(uow, approve_contract, OPERATOR, order_id)
    cid = run(uow, request_computation, PROVIDER, **request_kwargs(order_id))["computation_id"]
    run(uow, record_success, PROVIDER, cid, **success_kwargs(uow, cid))
    assert access(uow, DEMANDER, cid)["allowed"]
    other = access(uow, ctx("demander", member_id="m-2"), cid)
    assert other["refusal"]["code"] == "not_designated_user"
    assert isinstance(refusal_error(other), UsageForbidden)


def test_a_terminated_contracts_results_are_no_longer_read() -> None:
    uow = MemoryUnitOfWork()
    order_id, cid = delivered(uow)
    run(uow, terminate_contract, OPERATOR, order_id, reason="ended")
    assert access(uow, DEMANDER, cid)["refusal"]["code"] == "contract_terminated"


def test_an_unknown_key_from_a_newer_writer_refuses_every_access() -> None:
    uow = MemoryUnitOfWork()
    order_id, cid = delivered(uow)
    stream = uow.streams[order_id]
    i = next(n for n, e in enumerate(stream) if e.type_name == "contract.proposed")
    proposed = stream[i]
    assert isinstance(proposed, ContractProposed)
    stream[i] = ContractProposed(**{**payload_of(proposed), "usage_policy": {
        **proposed.usage_policy, "geo_fence": "cn-east"}, "originator_id": order_id,
        "originator_version": proposed.originator_version})
    refused = access(uow, DEMANDER, cid)
    assert refused["refusal"]["code"] == "unknown_constraint"
    assert refused["refusal"]["limit"] == ["geo_fence"]


def test_an_unknown_key_in_an_authorization_refuses_use_and_proposals() -> None:
    uow = MemoryUnitOfWork()
    order_id, cid = delivered(uow)
    auth_id = uow.get(Product, uow.get(Order, order_id).product_id).authorization_ids[0]
    granted = uow.streams[auth_id][0]
    assert isinstance(granted, AuthorizationGranted)
    uow.streams[auth_id][0] = AuthorizationGranted(**{
        **payload_of(granted), "usage_policy": {**granted.usage_policy, "max_rows": 10},
        "originator_id": auth_id, "originator_version": 1})
    assert access(uow, DEMANDER, cid)["refusal"]["code"] == "unknown_constraint"
    product_id = uow.get(Order, order_id).product_id
    second = run(uow, place_order, DEMANDER, product_id=product_id, purpose="more")["order_id"]
    with pytest.raises(UsageDenied) as info:
        run(uow, propose_contract, OPERATOR, second, usage_policy=POLICY, price_fen=1,
            revenue_split=SPLIT)
    assert info.value.code == "unknown_constraint"
    assert uow.get(Authorization, auth_id).usage_policy["max_rows"] == 10


def test_a_held_result_is_read_once_its_provider_released_it() -> None:
    uow = MemoryUnitOfWork()
    _, cid = delivered(uow, {"derivatives_need_approval": True})
    held = access(uow, DEMANDER, cid)
    assert (held["refusal"]["code"], held["refusal"]["limit"]) == ("release_pending",
                                                                   ["p-provider"])
    with pytest.raises(Forbidden):
        approve_release(uow, ctx("provider", "p-provider-2"), cid)
    with pytest.raises(Forbidden):
        approve_release(uow, DEMANDER, cid)
    done = run(uow, approve_release, PROVIDER, cid)
    assert (done["released"], done["released_by"], done["pending_releases"]) == (
        True, ["p-provider"], [])
    assert uow.streams[cid][-1].type_name == "delivery.release_approved"
    with pytest.raises(WrongState):
        approve_release(uow, PROVIDER, cid)
    assert access(uow, DEMANDER, cid)["allowed"]


def test_nothing_to_release_unless_the_contract_holds_derivatives() -> None:
    uow = MemoryUnitOfWork()
    _, cid = delivered(uow)
    with pytest.raises(WrongState):
        approve_release(uow, PROVIDER, cid)


def test_nothing_is_read_before_delivery_nor_by_others() -> None:
    uow = MemoryUnitOfWork()
    order_id, cid = requested(uow)
    with pytest.raises(WrongState):
        access_result(uow, DEMANDER, cid, kind="download", meter=Meter())
    with pytest.raises(NotFound):
        access_result(uow, ctx("demander", "p-bank-2"), cid, kind="view", meter=Meter())
    assert cid == computation_id(order_id, 1, "p-provider")


def test_a_refused_processing_is_a_usage_refused_on_the_computation() -> None:
    uow = MemoryUnitOfWork()
    order_id, _ = requested(uow, {**POLICY, "circulation_modes": ["ciphertext"]})
    events = uow.streams[computation_id(order_id, 1, "p-provider")]
    assert [e.type_name for e in events] == ["computation.requested", "computation.failed",
                                             "usage.refused"]
    assert (events[2].rule, events[2].limit) == (  # type: ignore[attr-defined]
        "circulation_modes", ["ciphertext"])
    with pytest.raises(NotFound):  # a usage stream read as a computation
        uow.streams[usage_id(order_id)] = [events[2]]
        uow.get(Computation, usage_id(order_id))


# -- the terms at proposal -----------------------------------------------------------------
@pytest.mark.parametrize(("policy", "field"), [
    ({"view_count": 11}, "usage_policy.view_count"),
    ({"view_count": None}, "usage_policy.view_count"),
    ({"circulation_modes": ["plaintext", "trusted_exchange"]}, "usage_policy.circulation_modes"),
    ({"allowed_fields": ["credit_code"]}, "usage_policy.allowed_fields"),
    ({"designated_users": ["m-9"]}, "usage_policy.designated_users"),
])
def test_terms_looser_than_the_authorization_or_beside_the_product_are_refused(
        policy: dict[str, Any], field: str) -> None:
    uow = MemoryUnitOfWork()
    order_id = ordered(uow)["order_id"]
    with_members(uow, "m-1")
    terms = {k: v for k, v in {**POLICY, **policy}.items() if v is not None}
    with pytest.raises(InvalidInput) as info:
        run(uow, propose_contract, OPERATOR, order_id, usage_policy=terms, price_fen=1,
            revenue_split=SPLIT)
    assert info.value.field == field
    uow.seen.clear()  # the refused command's unit of work is dropped: nothing saved
    assert [e.type_name for e in uow.streams[order_id]] == ["order.placed"]
    fine = {**POLICY, "designated_users": ["m-1"],
            "allowed_fields": ["credit_code", "tax_paid_fen"]}
    run(uow, propose_contract, OPERATOR, order_id, usage_policy=fine, price_fen=1,
        revenue_split=SPLIT)
