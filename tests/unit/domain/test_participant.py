"""Participant: onboarding, admission (准入审核), members, keys, suspension.

Also home of ``refused`` and ``admitted``, the helpers the other domain tests share.
"""

from __future__ import annotations

from typing import Any

import pytest

from core import decision
from domain.errors import (
    DomainError,
    Forbidden,
    InvalidInput,
    RegulatorExists,
    RegulatorNotSuspendable,
    SeparationOfDuties,
    WrongState,
)
from domain.participant import (
    REGULATOR_SEAT_ID,
    Participant,
    add_member,
    decide_admission,
    found_platform,
    register_key,
    register_participant,
    rotate_token,
    suspend_participant,
)
from tests.unit.fakes import MemoryUnitOfWork, ctx, run

PLATFORM = ctx("platform")
REGULATOR = ctx("regulator")


def refused(uow: MemoryUnitOfWork, error: type[DomainError], handler: Any, *args: Any,
            **kwargs: Any) -> DomainError:
    """Run ``handler``, expect ``error``, and check that nothing would be written."""
    before = {k: len(v) for k, v in uow.streams.items()}
    with pytest.raises(error) as info:
        handler(uow, *args, **kwargs)
    assert uow.commit() == []
    assert {k: len(v) for k, v in uow.streams.items()} == before
    return info.value


def admitted(uow: MemoryUnitOfWork, role: str, participant_id: str | None = None) -> str:
    """Put an admitted participant in ``role`` (id ``p-<role>`` by default) into the store."""
    agg = Participant.register(participant_id or f"p-{role}", PLATFORM, name=f"{role} org",
                               role=role, credit_code="91110000XXXXXXXXXX")
    agg.decide_admission(REGULATOR, approve=True, comment="ok")
    uow.add(agg)
    uow.commit()
    return agg.id


def pending(uow: MemoryUnitOfWork, role: str = "provider") -> dict[str, str]:
    ids: dict[str, str] = run(uow, register_participant, PLATFORM, name="市数据局下属中心",
                              role=role, credit_code="12110000ABC", admin_name="张三",
                              admin_token_hash="ab" * 32)
    return ids


def test_happy_path_register_admit_member_key_suspend() -> None:
    uow = MemoryUnitOfWork()
    ids = pending(uow)
    pid = ids["participant_id"]
    assert run(uow, decide_admission, PLATFORM, pid, approve=True, comment="ok")["state"] == "admitted"
    member = run(uow, add_member, ctx("provider", pid, ids["member_id"]), pid, name="李四",
                 member_roles=["member"], token_hash="cd" * 32)["member_id"]
    key = decision.public_key_text(decision.new_private_key().public_key())
    run(uow, register_key, ctx("provider", pid, member, ("member",)), pid, public_key=key)
    run(uow, suspend_participant, REGULATOR, pid, reason="breach")
    names = [e.type_name for e in uow.streams[pid]]
    assert names == ["participant.registered", "participant.member_added",
                     "participant.admission_approved", "participant.member_added",
                     "participant.key_registered", "participant.suspended"]
    agg = uow.get(Participant, pid)
    assert agg.state == "suspended"
    assert agg.members[member].keys[decision.key_id(key)].public_key == key


def test_found_platform_is_admitted_at_once() -> None:
    agg = found_platform("p-platform", PLATFORM, name="平台")
    assert (agg.state, agg.role) == ("admitted", "platform")


def test_refuses_registration_by_non_platform() -> None:
    uow = MemoryUnitOfWork()
    refused(uow, Forbidden, register_participant, ctx("operator"), name="x", role="provider",
            credit_code="c", admin_name="a", admin_token_hash="h")


def test_refuses_unknown_role() -> None:
    err = refused(MemoryUnitOfWork(), InvalidInput, register_participant, PLATFORM, name="x",
                  role="bank", credit_code="c", admin_name="a", admin_token_hash="h")
    assert isinstance(err, InvalidInput) and err.field == "role"


def test_refuses_a_second_platform() -> None:
    refused(MemoryUnitOfWork(), InvalidInput, register_participant, PLATFORM, name="x",
            role="platform", credit_code="c", admin_name="a", admin_token_hash="h")


def test_refuses_operator_admission_by_platform() -> None:
    uow = MemoryUnitOfWork()
    pid = pending(uow, "operator")["participant_id"]
    refused(uow, Forbidden, decide_admission, PLATFORM, pid, approve=True, comment="")


def test_refuses_rejection_without_reason() -> None:
    uow = MemoryUnitOfWork()
    pid = pending(uow)["participant_id"]
    refused(uow, InvalidInput, decide_admission, PLATFORM, pid, approve=False, comment="")


def test_refuses_deciding_admission_twice() -> None:
    uow = MemoryUnitOfWork()
    pid = admitted(uow, "provider")
    refused(uow, WrongState, decide_admission, PLATFORM, pid, approve=True, comment="again")


def test_refuses_expert_members_outside_the_regulator() -> None:
    uow = MemoryUnitOfWork()
    pid = admitted(uow, "provider")
    refused(uow, InvalidInput, add_member, ctx("provider", pid), pid, name="x",
            member_roles=["expert"], token_hash="h")


def test_refuses_unknown_member_roles() -> None:
    uow = MemoryUnitOfWork()
    pid = admitted(uow, "provider")
    refused(uow, InvalidInput, add_member, ctx("provider", pid), pid, name="x",
            member_roles=["boss"], token_hash="h")


def test_refuses_member_added_by_a_non_admin_of_another_participant() -> None:
    uow = MemoryUnitOfWork()
    pid = admitted(uow, "provider")
    refused(uow, Forbidden, add_member, ctx("operator"), pid, name="x", member_roles=["member"],
            token_hash="h")


@pytest.mark.parametrize("who", [PLATFORM, REGULATOR, ctx("provider", "p-other")])
def test_no_participant_makes_another_s_members(who: Any) -> None:
    # separation of duties: the platform made the first admin when it onboarded the
    # participant; every other member is made by the participant's own admins
    uow = MemoryUnitOfWork()
    pid = admitted(uow, "regulator", "p-the-regulator")
    err = refused(uow, SeparationOfDuties, add_member, who, pid, name="x",
                  member_roles=["admin", "expert"], token_hash="h")
    assert err.code == "separation_of_duties"


@pytest.mark.parametrize("roles", [("expert",), ("member",)])
def test_only_admins_add_members(roles: tuple[str, ...]) -> None:
    uow = MemoryUnitOfWork()
    pid = admitted(uow, "regulator")
    refused(uow, Forbidden, add_member, ctx("regulator", pid, member_roles=roles), pid,
            name="x", member_roles=["expert"], token_hash="h")
    run(uow, add_member, ctx("regulator", pid), pid, name="x", member_roles=["expert"],
        token_hash="h")


def test_registration_makes_exactly_one_admin() -> None:
    uow = MemoryUnitOfWork()
    pid = pending(uow)["participant_id"]
    members = uow.get(Participant, pid).members
    assert [m.roles for m in members.values()] == [["admin"]]


@pytest.mark.parametrize("roles", [("expert",), ("member",)])
def test_regulator_members_without_admin_neither_admit_nor_suspend(
        roles: tuple[str, ...]) -> None:
    uow = MemoryUnitOfWork()
    who = ctx("regulator", member_roles=roles)
    pid = pending(uow, "operator")["participant_id"]
    refused(uow, Forbidden, decide_admission, who, pid, approve=True, comment="ok")
    run(uow, decide_admission, REGULATOR, pid, approve=True, comment="ok")
    refused(uow, Forbidden, suspend_participant, who, pid, reason="breach")


@pytest.mark.parametrize("who", [PLATFORM, REGULATOR])
def test_nobody_suspends_the_regulator(who: Any) -> None:
    uow = MemoryUnitOfWork()
    pid = admitted(uow, "regulator", "p-regulator")
    err = refused(uow, RegulatorNotSuspendable, suspend_participant, who, pid, reason="x")
    assert "supervises" in str(err)


def test_one_regulator_per_platform_its_seat_freed_by_a_rejection() -> None:
    uow = MemoryUnitOfWork()
    first = pending(uow, "regulator")["participant_id"]
    assert [e.type_name for e in uow.streams[REGULATOR_SEAT_ID]] == [
        "participant.regulator_seated"]
    err = refused(uow, RegulatorExists, register_participant, PLATFORM, name="影子局",
                  role="regulator", credit_code="1", admin_name="a", admin_token_hash="ef" * 32)
    assert first in str(err)
    run(uow, decide_admission, PLATFORM, first, approve=True, comment="ok")
    refused(uow, RegulatorExists, register_participant, PLATFORM, name="影子局",
            role="regulator", credit_code="1", admin_name="a", admin_token_hash="ef" * 32)
    pending(uow, "provider")  # the other roles take no seat
    assert len(uow.streams[REGULATOR_SEAT_ID]) == 1


def test_a_rejected_regulator_frees_the_seat() -> None:
    uow = MemoryUnitOfWork()
    first = pending(uow, "regulator")["participant_id"]
    run(uow, decide_admission, PLATFORM, first, approve=False, comment="not the bureau")
    second = run(uow, register_participant, PLATFORM, name="市数据局", role="regulator",
                 credit_code="1", admin_name="a", admin_token_hash="ef" * 32)
    assert uow.get(Participant, second["participant_id"]).state == "pending"
    assert len(uow.streams[REGULATOR_SEAT_ID]) == 2


def test_a_member_or_its_admin_rotates_its_token_no_other_participant() -> None:
    uow = MemoryUnitOfWork()
    ids = pending(uow)
    pid, admin = ids["participant_id"], ids["member_id"]
    run(uow, rotate_token, ctx("provider", pid, admin), pid, admin, token_hash="01" * 32)
    assert uow.get(Participant, pid).members[admin].token_hash == "01" * 32
    for other in (PLATFORM, REGULATOR, ctx("provider", "p-other")):
        refused(uow, SeparationOfDuties, rotate_token, other, pid, admin, token_hash="02" * 32)
    refused(uow, InvalidInput, rotate_token, ctx("provider", pid, admin), pid, admin,
            token_hash="01" * 32)  # in use
    refused(uow, InvalidInput, rotate_token, ctx("provider", pid, admin), pid, admin,
            token_hash="AB" * 32)


def test_refuses_key_of_unknown_member() -> None:
    uow = MemoryUnitOfWork()
    pid = admitted(uow, "provider")
    refused(uow, InvalidInput, register_key, ctx("provider", pid, "m-ghost"), pid,
            public_key="k")


def test_refuses_key_before_admission() -> None:
    uow = MemoryUnitOfWork()
    ids = pending(uow)
    who = ctx("provider", ids["participant_id"], ids["member_id"])
    refused(uow, WrongState, register_key, who, ids["participant_id"], public_key="k")


def test_refuses_suspension_without_reason() -> None:
    uow = MemoryUnitOfWork()
    pid = admitted(uow, "provider")
    refused(uow, InvalidInput, suspend_participant, REGULATOR, pid, reason="")


def test_suspended_is_terminal() -> None:
    uow = MemoryUnitOfWork()
    pid = admitted(uow, "provider")
    run(uow, suspend_participant, REGULATOR, pid, reason="breach")
    refused(uow, WrongState, suspend_participant, REGULATOR, pid, reason="again")
    refused(uow, WrongState, add_member, ctx("provider", pid), pid, name="x",
            member_roles=["member"], token_hash="h")


@pytest.mark.parametrize("who", [PLATFORM, REGULATOR])
def test_the_platform_operator_cannot_be_suspended(who: Any) -> None:
    # suspension is terminal: nobody could onboard or list again
    uow = MemoryUnitOfWork()
    uow.add(found_platform("p-platform", PLATFORM, name="平台"))
    uow.commit()
    err = refused(uow, Forbidden, suspend_participant, who, "p-platform", reason="x")
    assert "platform operator cannot be suspended" in str(err)
