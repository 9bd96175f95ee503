"""Product: registration over authorized inputs, listing review (上架), delisting (下架).

Also home of ``product_world`` and ``listed_product``, shared by the order tests.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from domain import product as uc
from domain.authorization import revoke_authorization
from domain.errors import (
    AuthorizationExpiredError,
    AuthorizationRevokedError,
    Forbidden,
    InvalidInput,
    NoAuthorization,
    NotFound,
    ScenarioSuspendedError,
    WrongState,
)
from domain.participant import Participant
from domain.product import Product, ProductDraft, decide_listing, delist_product, request_listing
from tests.unit.domain.test_authorization import NOT_AFTER, granted_authorization, world
from tests.unit.domain.test_dataset import PROVIDER, published_dataset
from tests.unit.domain.test_participant import PLATFORM, REGULATOR, admitted, refused
from tests.unit.domain.test_scenario import OPERATOR, approved_scenario, submitted_scenario
from tests.unit.fakes import MemoryUnitOfWork, ctx, run

CODE = "def run(df):\n    return df.groupby('credit_code')['tax_paid_fen'].sum()\n"
CODE_SHA256 = hashlib.sha256(CODE.encode()).hexdigest()


def product_world(uow: MemoryUnitOfWork) -> dict[str, str]:
    """A published dataset, a scenario approved for it and a live authorization."""
    scenario_id, dataset_id = world(uow)
    return {"scenario_id": scenario_id, "dataset_id": dataset_id,
            "authorization_id": granted_authorization(uow, scenario_id, dataset_id)}


def register_product(uow: MemoryUnitOfWork, ctx: Any, **fields: Any) -> dict[str, str]:
    """The use case, its draft made of keyword arguments."""
    return uc.register_product(uow, ctx, ProductDraft(**fields))


#: one row per firm: its credit code (the key column a query names) and its score
OUTPUT_SCHEMA = {"type": "array", "items": {"type": "object", "properties": {
    "credit_code": {"type": "string"}, "score": {"type": "integer"}}}}


def register_kwargs(w: dict[str, str], fields: list[str] | None = None,
                    **overrides: Any) -> dict[str, Any]:
    return {"scenario_id": w["scenario_id"], "authorization_ids": [w["authorization_id"]],
            "name": "企业信用评分", "kind": "api", "description": "credit score API",
            "code": CODE, "inputs": [{"dataset_id": w["dataset_id"],
                                      "fields": fields or ["credit_code", "tax_paid_fen"]}],
            "output_schema": OUTPUT_SCHEMA, "key_column": "credit_code",
            "quality_report": "AUC 0.81 on holdout", "price_fen": 500_000, **overrides}


def registered_product(uow: MemoryUnitOfWork, w: dict[str, str], **overrides: Any) -> str:
    ids: dict[str, str] = run(uow, register_product, OPERATOR, **register_kwargs(w, **overrides))
    return ids["product_id"]


def listed_product(uow: MemoryUnitOfWork, **overrides: Any) -> dict[str, str]:
    """``product_world`` plus a listed product over it (``product_id``)."""
    w = product_world(uow)
    product_id = registered_product(uow, w, **overrides)
    run(uow, request_listing, OPERATOR, product_id)
    run(uow, decide_listing, PLATFORM, product_id, approve=True, comment="reviewed")
    return {**w, "product_id": product_id}


def test_happy_path_register_request_reject_request_list_delist() -> None:
    uow = MemoryUnitOfWork()
    w = product_world(uow)
    ids = run(uow, register_product, OPERATOR, **register_kwargs(w))
    product_id = ids["product_id"]
    assert ids == {"product_id": product_id, "state": "registered", "code_sha256": CODE_SHA256}
    run(uow, request_listing, OPERATOR, product_id)
    run(uow, decide_listing, PLATFORM, product_id, approve=False, comment="no quality report")
    assert uow.get(Product, product_id).state == "registered"
    run(uow, request_listing, OPERATOR, product_id)
    run(uow, decide_listing, PLATFORM, product_id, approve=True, comment="ok")
    run(uow, delist_product, OPERATOR, product_id, reason="retired")
    assert [e.type_name for e in uow.streams[product_id]] == [
        "product.registered", "product.listing_requested", "product.listing_rejected",
        "product.listing_requested", "product.listed", "product.delisted"]


def test_accepts_matching_code_sha256_in_any_case() -> None:
    uow = MemoryUnitOfWork()
    registered_product(uow, product_world(uow), code_sha256=CODE_SHA256.upper())


@pytest.mark.parametrize("who", [PLATFORM, REGULATOR])
def test_platform_or_regulator_may_delist(who: Any) -> None:
    uow = MemoryUnitOfWork()
    product_id = listed_product(uow)["product_id"]
    assert run(uow, delist_product, who, product_id, reason="complaint")["state"] == "delisted"


def test_records_an_admitted_developer() -> None:
    uow = MemoryUnitOfWork()
    developer = admitted(uow, "developer")
    product_id = registered_product(uow, product_world(uow), developer_id=developer)
    assert uow.get(Product, product_id).developer_id == developer


def test_refuses_developer_that_is_not_a_developer() -> None:
    uow = MemoryUnitOfWork()
    args = register_kwargs(product_world(uow), developer_id=admitted(uow, "demander"))
    err = refused(uow, InvalidInput, register_product, OPERATOR, **args)
    assert isinstance(err, InvalidInput) and err.field == "developer_id"


def test_refuses_developer_not_admitted() -> None:
    uow = MemoryUnitOfWork()
    pending = Participant.register("p-dev", PLATFORM, name="d", role="developer", credit_code="c")
    uow.add(pending)
    uow.commit()
    args = register_kwargs(product_world(uow), developer_id="p-dev")
    refused(uow, WrongState, register_product, OPERATOR, **args)


def test_refuses_unknown_developer() -> None:
    uow = MemoryUnitOfWork()
    args = register_kwargs(product_world(uow), developer_id="p-ghost")
    refused(uow, NotFound, register_product, OPERATOR, **args)


def test_refuses_registration_by_non_operator() -> None:
    uow = MemoryUnitOfWork()
    refused(uow, Forbidden, register_product, PROVIDER, **register_kwargs(product_world(uow)))


def test_refuses_another_operators_scenario() -> None:
    uow = MemoryUnitOfWork()
    refused(uow, Forbidden, register_product, ctx("operator", "p-op-2"),
            **register_kwargs(product_world(uow)))


def test_refuses_unapproved_scenario() -> None:
    uow = MemoryUnitOfWork()
    w = product_world(uow)
    pending = submitted_scenario(uow, [w["dataset_id"]])
    refused(uow, WrongState, register_product, OPERATOR,
            **register_kwargs(w, scenario_id=pending))


def test_refuses_authorization_of_another_scenario() -> None:
    uow = MemoryUnitOfWork()
    w = product_world(uow)
    other_scenario = approved_scenario(uow, [w["dataset_id"]])
    other_auth = granted_authorization(uow, other_scenario, w["dataset_id"])
    err = refused(uow, InvalidInput, register_product, OPERATOR,
                  **register_kwargs(w, authorization_ids=[other_auth]))
    assert isinstance(err, InvalidInput) and err.field == "authorization_ids[0]"


def test_refuses_revoked_authorization() -> None:
    uow = MemoryUnitOfWork()
    w = product_world(uow)
    run(uow, revoke_authorization, PROVIDER, w["authorization_id"], reason="misuse")
    refused(uow, WrongState, register_product, OPERATOR, **register_kwargs(w))


def test_refuses_inputs_not_covered_by_the_authorizations() -> None:
    uow = MemoryUnitOfWork()
    w = product_world(uow)
    refused(uow, NoAuthorization, register_product, OPERATOR,
            **register_kwargs(w, fields=["legal_person_id"]))
    other = published_dataset(uow)
    refused(uow, NoAuthorization, register_product, OPERATOR,
            **register_kwargs(w, inputs=[{"dataset_id": other, "fields": ["credit_code"]}]))


def test_refuses_inputs_after_the_authorization_period() -> None:
    uow = MemoryUnitOfWork()
    late = ctx("operator", at=NOT_AFTER)
    refused(uow, AuthorizationExpiredError, register_product, late,
            **register_kwargs(product_world(uow)))


def test_refuses_code_sha256_that_does_not_match_the_code() -> None:
    uow = MemoryUnitOfWork()
    err = refused(uow, InvalidInput, register_product, OPERATOR,
                  **register_kwargs(product_world(uow), code_sha256="00" * 32))
    assert isinstance(err, InvalidInput) and err.field == "code_sha256"


@pytest.mark.parametrize(("override", "field"), [
    ({"kind": "report"}, "kind"),
    ({"price_fen": -1}, "price_fen"),
    ({"price_fen": 9.99}, "price_fen"),
    ({"output_schema": ["score"]}, "output_schema"),
    ({"output_schema": {**OUTPUT_SCHEMA, "items": {"$ref": "#/$defs/row"}}}, "output_schema"),
    ({"output_schema": {"type": "array", "items": {"type": "object", "properties": {
        "credit_code": {"type": "string", "pattern": "(a+)+$"}}}}}, "output_schema"),
    ({"code": ""}, "code"),
    ({"name": ""}, "name"),
    ({"inputs": []}, "inputs"),
    ({"authorization_ids": []}, "authorization_ids"),
])
def test_refuses_bad_input_naming_the_field(override: dict[str, Any], field: str) -> None:
    uow = MemoryUnitOfWork()
    err = refused(uow, InvalidInput, register_product, OPERATOR,
                  **register_kwargs(product_world(uow), **override))
    assert isinstance(err, InvalidInput) and err.field == field


def test_refuses_listing_request_by_another_operator() -> None:
    uow = MemoryUnitOfWork()
    product_id = registered_product(uow, product_world(uow))
    refused(uow, Forbidden, request_listing, ctx("operator", "p-op-2"), product_id)


def test_refuses_listing_request_twice() -> None:
    uow = MemoryUnitOfWork()
    product_id = registered_product(uow, product_world(uow))
    run(uow, request_listing, OPERATOR, product_id)
    refused(uow, WrongState, request_listing, OPERATOR, product_id)


def test_refuses_listing_decision_by_non_platform() -> None:
    uow = MemoryUnitOfWork()
    product_id = registered_product(uow, product_world(uow))
    run(uow, request_listing, OPERATOR, product_id)
    refused(uow, Forbidden, decide_listing, OPERATOR, product_id, approve=True, comment="")


def test_refuses_listing_decision_without_request() -> None:
    uow = MemoryUnitOfWork()
    product_id = registered_product(uow, product_world(uow))
    refused(uow, WrongState, decide_listing, PLATFORM, product_id, approve=True, comment="")


def test_refuses_listing_rejection_without_reason() -> None:
    uow = MemoryUnitOfWork()
    product_id = registered_product(uow, product_world(uow))
    run(uow, request_listing, OPERATOR, product_id)
    refused(uow, InvalidInput, decide_listing, PLATFORM, product_id, approve=False, comment="")


def test_refuses_delisting_by_another_operator_or_a_demander() -> None:
    uow = MemoryUnitOfWork()
    product_id = listed_product(uow)["product_id"]
    refused(uow, Forbidden, delist_product, ctx("operator", "p-op-2"), product_id, reason="x")
    refused(uow, Forbidden, delist_product, ctx("demander"), product_id, reason="x")


def test_refuses_delisting_an_unlisted_product() -> None:
    uow = MemoryUnitOfWork()
    product_id = registered_product(uow, product_world(uow))
    refused(uow, WrongState, delist_product, PLATFORM, product_id, reason="x")


def test_refuses_delisting_without_reason() -> None:
    uow = MemoryUnitOfWork()
    product_id = listed_product(uow)["product_id"]
    refused(uow, InvalidInput, delist_product, PLATFORM, product_id, reason="")


def test_delisted_is_terminal() -> None:
    uow = MemoryUnitOfWork()
    product_id = listed_product(uow)["product_id"]
    run(uow, delist_product, PLATFORM, product_id, reason="complaint")
    refused(uow, WrongState, delist_product, PLATFORM, product_id, reason="again")
    refused(uow, WrongState, request_listing, OPERATOR, product_id)
    refused(uow, WrongState, decide_listing, PLATFORM, product_id, approve=True, comment="")


@pytest.mark.parametrize("stop", ["revoke", "suspend"])
def test_refuses_listing_once_the_grant_was_revoked_or_the_scenario_suspended(
        stop: str) -> None:
    from domain.scenario import suspend_scenario

    def halt(uow: MemoryUnitOfWork, w: dict[str, str]) -> type[Exception]:
        if stop == "revoke":
            run(uow, revoke_authorization, PROVIDER, w["authorization_id"], reason="misuse")
            return AuthorizationRevokedError  # 409: another aggregate's state, named
        run(uow, suspend_scenario, REGULATOR, w["scenario_id"], reason="under review")
        return ScenarioSuspendedError

    uow = MemoryUnitOfWork()  # before the request
    w = product_world(uow)
    product_id = registered_product(uow, w)
    refused(uow, halt(uow, w), request_listing, OPERATOR, product_id)
    uow = MemoryUnitOfWork()  # between the request and the platform's decision
    w = product_world(uow)
    product_id = registered_product(uow, w)
    run(uow, request_listing, OPERATOR, product_id)
    error = halt(uow, w)
    refused(uow, error, decide_listing, PLATFORM, product_id, approve=True, comment="ok")
    run(uow, decide_listing, PLATFORM, product_id, approve=False, comment="its grant is gone")


# -- the key column and the sensitive fields --------------------------------------------
def test_records_the_key_column_and_the_sensitive_fields_of_every_input() -> None:
    """``sensitive_fields`` comes from the datasets' fields (sensitive or personal), for
    every input dataset and whatever fields the product reads: the client never sets it."""
    uow = MemoryUnitOfWork()
    w = product_world(uow)
    product_id = registered_product(uow, w)
    registered = uow.streams[product_id][0]
    assert registered.payload()["class_version"] == 4
    assert registered.payload()["key_column"] == "credit_code"
    assert registered.payload()["sensitive_fields"] == {
        w["dataset_id"]: ["legal_person_id", "tax_paid_fen"]}
    product = uow.get(Product, product_id)
    assert product.key_column == "credit_code"
    assert product.sensitive_fields == {w["dataset_id"]: ["legal_person_id", "tax_paid_fen"]}
    with pytest.raises(TypeError):  # not a field of the draft: only the domain fills it
        ProductDraft(**register_kwargs(w), sensitive_fields={})  # type: ignore[call-arg]


def test_the_key_column_may_be_a_property_of_the_schema_itself() -> None:
    uow = MemoryUnitOfWork()
    schema = {"type": "object", "properties": {"credit_code": {"type": "string"}}}
    product_id = registered_product(uow, product_world(uow), output_schema=schema)
    assert uow.get(Product, product_id).key_column == "credit_code"
    product_id = registered_product(uow, product_world(uow), key_column=None)
    assert uow.get(Product, product_id).key_column is None


@pytest.mark.parametrize(("override", "reason"), [
    ({"key_column": "score_band"},
     "'score_band' is not a property of output_schema (it declares: credit_code, score)"),
    ({"key_column": "score"}, "'score' is not one of the product's input fields"),
    ({"output_schema": {"score": "int"}},
     "'credit_code' is not a property of output_schema (it declares: none)"),
    ({"fields": ["tax_paid_fen"]}, "'credit_code' is not one of the product's input fields"),
    ({"key_column": ""}, "must be a column name or null"),
    ({"key_column": 7}, "must be a column name or null"),
])
def test_refuses_a_key_column_the_output_or_the_inputs_lack(override: dict[str, Any],
                                                            reason: str) -> None:
    uow = MemoryUnitOfWork()
    w = product_world(uow)
    before = {k: len(v) for k, v in uow.streams.items()}
    err = refused(uow, InvalidInput, register_product, OPERATOR, **register_kwargs(w, **override))
    assert isinstance(err, InvalidInput) and err.field == "key_column"
    assert err.detail == f"key_column: {reason}"
    assert {k: len(v) for k, v in uow.streams.items()} == before


def test_a_v1_product_registered_reads_with_no_key_column_and_no_sensitive_fields() -> None:
    from core.canonical import canonical_bytes, decode
    from core.event import event_class

    stored_v1 = {"at": "2026-01-01T00:00:00Z", "actor": {"participant": "p", "member": "m",
                                                          "role": "operator"},
                 "operator_id": "o", "scenario_id": "s", "authorization_ids": ["a"],
                 "name": "n", "kind": "api", "description": "", "code": CODE,
                 "code_sha256": CODE_SHA256, "inputs": [], "output_schema": {},
                 "quality_report": "", "price_fen": 1, "developer_id": None}
    event = event_class("product.registered").from_payload(
        "product-1", 1, decode(canonical_bytes(stored_v1)))
    assert isinstance(event, uc.ProductRegistered)
    assert (event.key_column, event.sensitive_fields, event.joint) == (None, {}, None)
    assert event.payload()["class_version"] == 4
