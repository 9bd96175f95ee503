"""Dataset: catalog entries (数据目录), classification and the fields-only-grow rule.

Also home of ``registered_dataset`` and ``published_dataset``, shared by later tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from domain.base import Context
from domain.dataset import (
    Dataset,
    publish_dataset,
    register_dataset,
    update_dataset,
    withdraw_dataset,
)
from domain.errors import Forbidden, InvalidInput, NotFound, WrongState
from tests.unit.domain.test_participant import refused
from tests.unit.fakes import MemoryUnitOfWork, ctx, run

PROVIDER = ctx("provider")
FIELDS: list[dict[str, str]] = [
    {"name": "credit_code", "type": "str", "sensitivity": "public"},
    {"name": "tax_paid_fen", "type": "int", "sensitivity": "sensitive"},
    {"name": "legal_person_id", "type": "str", "sensitivity": "personal"},
]


def registered_dataset(uow: MemoryUnitOfWork, provider: Context = PROVIDER,
                       classification: str = "L3") -> str:
    ids: dict[str, str] = run(uow, register_dataset, provider, name="企业纳税信息",
                              description="monthly tax records", source_system="税务系统",
                              classification=classification, fields=FIELDS)
    return ids["dataset_id"]


def published_dataset(uow: MemoryUnitOfWork, provider: Context = PROVIDER,
                      classification: str = "L3") -> str:
    dataset_id = registered_dataset(uow, provider, classification)
    run(uow, publish_dataset, provider, dataset_id)
    return dataset_id


def test_happy_path_register_publish_update_withdraw() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = published_dataset(uow)
    more = [*FIELDS, {"name": "region", "type": "str", "sensitivity": "public"}]
    run(uow, update_dataset, PROVIDER, dataset_id, description="v2", fields=more)
    assert run(uow, withdraw_dataset, PROVIDER, dataset_id, reason="source retired") == {
        "dataset_id": dataset_id, "state": "withdrawn"}
    assert [e.type_name for e in uow.streams[dataset_id]] == [
        "dataset.registered", "dataset.published", "dataset.updated", "dataset.withdrawn"]
    agg = uow.get(Dataset, dataset_id)
    assert (agg.owner_id, agg.description, agg.field_names()[-1]) == ("p-provider", "v2", "region")


def test_registered_dataset_may_change_fields_freely() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = registered_dataset(uow)
    run(uow, update_dataset, PROVIDER, dataset_id, fields=FIELDS[:1])
    assert uow.get(Dataset, dataset_id).field_names() == ["credit_code"]


def test_withdraws_a_registered_dataset() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = registered_dataset(uow)
    assert run(uow, withdraw_dataset, PROVIDER, dataset_id, reason="r")["state"] == "withdrawn"


def test_refuses_registration_by_non_provider() -> None:
    refused(MemoryUnitOfWork(), Forbidden, register_dataset, ctx("operator"), name="x",
            description="", source_system="s", classification="L1", fields=FIELDS)


def test_refuses_unknown_classification() -> None:
    err = refused(MemoryUnitOfWork(), InvalidInput, register_dataset, PROVIDER, name="x",
                  description="", source_system="s", classification="L5", fields=FIELDS)
    assert isinstance(err, InvalidInput) and err.field == "classification"


@pytest.mark.parametrize(("fields", "field"), [
    ([], "fields"),
    ([{"name": "a", "type": "str"}], "fields[0]"),
    ([{"name": "", "type": "str", "sensitivity": "public"}], "fields[0].name"),
    ([{"name": "a", "type": "", "sensitivity": "public"}], "fields[0].type"),
    ([{"name": "a", "type": "str", "sensitivity": "secret"}], "fields[0].sensitivity"),
    ([FIELDS[0], FIELDS[0]], "fields"),
])
def test_refuses_bad_fields_naming_the_field(fields: list[dict[str, Any]], field: str) -> None:
    err = refused(MemoryUnitOfWork(), InvalidInput, register_dataset, PROVIDER, name="x",
                  description="", source_system="s", classification="L1", fields=fields)
    assert isinstance(err, InvalidInput) and err.field == field


def test_refuses_empty_name() -> None:
    refused(MemoryUnitOfWork(), InvalidInput, register_dataset, PROVIDER, name=" ",
            description="", source_system="s", classification="L1", fields=FIELDS)


def test_refuses_changes_by_another_provider() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = registered_dataset(uow)
    other = ctx("provider", "p-other")
    refused(uow, Forbidden, publish_dataset, other, dataset_id)
    refused(uow, Forbidden, update_dataset, other, dataset_id, description="mine")
    refused(uow, Forbidden, withdraw_dataset, other, dataset_id, reason="mine")


def test_refuses_publishing_twice() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = published_dataset(uow)
    refused(uow, WrongState, publish_dataset, PROVIDER, dataset_id)


def test_refuses_empty_update() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = registered_dataset(uow)
    refused(uow, InvalidInput, update_dataset, PROVIDER, dataset_id)


def test_refuses_removing_a_field_while_published() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = published_dataset(uow)
    refused(uow, WrongState, update_dataset, PROVIDER, dataset_id, fields=FIELDS[:2])


def test_refuses_retyping_a_field_while_published() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = published_dataset(uow)
    retyped = [{**FIELDS[0], "type": "int"}, *FIELDS[1:]]
    refused(uow, WrongState, update_dataset, PROVIDER, dataset_id, fields=retyped)


def test_refuses_lowering_sensitivity_while_published() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = published_dataset(uow)
    lowered = [*FIELDS[:2], {**FIELDS[2], "sensitivity": "internal"}]
    refused(uow, WrongState, update_dataset, PROVIDER, dataset_id, fields=lowered)


def test_refuses_withdrawal_without_reason() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = registered_dataset(uow)
    refused(uow, InvalidInput, withdraw_dataset, PROVIDER, dataset_id, reason="")


def test_withdrawn_is_terminal() -> None:
    uow = MemoryUnitOfWork()
    dataset_id = published_dataset(uow)
    run(uow, withdraw_dataset, PROVIDER, dataset_id, reason="retired")
    refused(uow, WrongState, publish_dataset, PROVIDER, dataset_id)
    refused(uow, WrongState, update_dataset, PROVIDER, dataset_id, description="x")
    refused(uow, WrongState, withdraw_dataset, PROVIDER, dataset_id, reason="again")


def test_refuses_unknown_dataset() -> None:
    refused(MemoryUnitOfWork(), NotFound, publish_dataset, PROVIDER, "no-such-id")
