"""A member's name sealed before its event is encoded, and the erasure use case."""

from __future__ import annotations

from dataclasses import replace

from core.sealed import MEMBER_NAME, is_envelope, new_key, open_envelope, seal
from domain.base import Actor, Context
from domain.erasure import ErasedSubject, erase_subject
from domain.errors import Forbidden, InvalidInput, NotFound
from domain.participant import MemberAdded, add_member
from tests.unit.domain.test_participant import PLATFORM, admitted, pending, refused
from tests.unit.fakes import MemoryUnitOfWork, ctx, run

SYSTEM = Context(Actor("system", "system", "system"), "2026-11-26T10:00:00Z")


class Keys:
    """A Sealer over keys kept in memory (the key store's role)."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}

    def seal(self, subject: str, path: str, value: str) -> dict[str, str]:
        kid, key = new_key()
        self.keys[kid] = key
        return seal(kid, key, subject, path, value)


def sealed_member(uow: MemoryUnitOfWork, keys: Keys) -> tuple[str, str]:
    pid = admitted(uow, "provider")
    admin = replace(ctx("provider", pid), sealer=keys)
    mid = run(uow, add_member, admin, pid, name="张伟", member_roles=["member"],
              token_hash="cd" * 32)["member_id"]
    return pid, mid


def test_the_name_is_sealed_for_the_member_before_its_event_is_encoded() -> None:
    uow, keys = MemoryUnitOfWork(), Keys()
    pid, mid = sealed_member(uow, keys)
    event = uow.streams[pid][-1]
    assert isinstance(event, MemberAdded) and event.class_version == 2
    assert is_envelope(event.name) and event.name["subject"] == mid
    assert "张伟".encode() not in event.canonical_payload()
    assert open_envelope(keys.keys[event.name["key"]], event.name, MEMBER_NAME) == "张伟"


def test_without_a_sealer_the_name_is_recorded_in_clear_and_v1_reads_as_stored() -> None:
    uow = MemoryUnitOfWork()
    pid = pending(uow)["participant_id"]
    event = uow.streams[pid][1]
    assert isinstance(event, MemberAdded) and event.name == "张三"
    old = {k: v for k, v in event.payload().items() if k != "class_version"}
    assert MemberAdded.from_payload(pid, 2, old).name == "张三"


def test_an_erasure_is_recorded_once_by_the_system_actor() -> None:
    uow, keys = MemoryUnitOfWork(), Keys()
    pid, mid = sealed_member(uow, keys)
    first = run(uow, erase_subject, SYSTEM, mid, participant_id=pid)
    assert first == {"subject_id": mid, "participant_id": pid, "recorded": True}
    [event] = uow.streams[mid]
    assert event.type_name == "privacy.subject_erased" and event.payload()["subject_id"] == mid
    assert uow.get(ErasedSubject, mid).state == "erased"
    assert run(uow, erase_subject, SYSTEM, mid, participant_id=pid)["recorded"] is False
    assert len(uow.streams[mid]) == 1


def test_erasure_refusals() -> None:
    uow, keys = MemoryUnitOfWork(), Keys()
    pid, mid = sealed_member(uow, keys)
    refused(uow, Forbidden, erase_subject, PLATFORM, mid, participant_id=pid)
    refused(uow, NotFound, erase_subject, SYSTEM, "m-nobody", participant_id=pid)
    clear = pending(uow)  # its admin's name was recorded in clear: the log cannot forget it
    err = refused(uow, InvalidInput, erase_subject, SYSTEM, clear["member_id"],
                  participant_id=clear["participant_id"])
    assert isinstance(err, InvalidInput) and err.field == "subject_id"
