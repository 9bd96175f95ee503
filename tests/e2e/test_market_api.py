"""The market over HTTP: products (上架/下架), orders and contracts up to ``contract.approved``,
and the errors a client sees (nothing written when a command is refused)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from client.platform import Party
from tests.e2e.conftest import (
    CODE,
    Chain,
    World,
    head,
    list_product,
    product_body,
    register_product,
)

SPLIT = {"developer": 1000, "operator": 3000, "platform": 1000, "provider": 5000}


def policy() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"processing_count": 10, "not_before": now.isoformat(),
            "not_after": (now + timedelta(days=90)).isoformat(),
            "provider_may_terminate": True, "circulation_modes": ["plaintext", "ciphertext"]}


def proposal(**changes: Any) -> dict[str, Any]:
    return {"usage_policy": policy(), "price_fen": 1_000_000, "revenue_split": dict(SPLIT),
            **changes}


def refused(world: World, method: str, path: str, party: Party, status: int,
            json: Any = None) -> dict[str, Any]:
    """The request fails with ``status`` and the log does not move."""
    before = head(world)
    r = world.api.send(method, path, party, json=json)  # a decision: signed
    assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
    assert head(world) == before, f"{method} {path} wrote to the log"
    body: dict[str, Any] = r.json()
    return body


def invalid(world: World, path: str, party: Party, json: Any) -> set[str]:
    """A 422 that writes nothing; the field names it reports (pydantic's or the domain's)."""
    body = refused(world, "POST", path, party, 422, json)
    assert body["error"] == "invalid_input"
    return {f["field"] for f in body["fields"]}


def place(world: World, chain: Chain, product_id: str) -> str:
    made = world.call("POST", "/orders", chain.demander, 201,
                      json={"product_id": product_id, "purpose": "credit decisions on SMEs"})
    order_id: str = made["order_id"]
    return order_id


def accepted_contract(world: World, chain: Chain) -> tuple[str, str]:
    """A listed product and an order whose contract the demander accepted."""
    product_id = list_product(world, chain)
    order_id = place(world, chain, product_id)
    world.call("POST", f"/orders/{order_id}/contract", chain.operator, json=proposal())
    world.call("POST", f"/orders/{order_id}/contract/acceptance", chain.demander)
    return product_id, order_id


def approved_contract(world: World, chain: Chain) -> tuple[str, str]:
    product_id, order_id = accepted_contract(world, chain)
    world.call("POST", f"/orders/{order_id}/contract/approvals", chain.provider)
    world.call("POST", f"/orders/{order_id}/contract/approvals", chain.operator)
    return product_id, order_id


# -- happy paths --------------------------------------------------------------------
def test_from_product_registration_to_an_approved_contract(world: World, chain: Chain) -> None:
    made = world.call("POST", "/products", chain.operator, 201, json=product_body(chain))
    pid = made["product_id"]
    assert made["state"] == "registered" and made["seqs"]
    assert made["code_sha256"] == hashlib.sha256(CODE.encode()).hexdigest()
    for party in (chain.operator, chain.developer, world.regulator, world.platform):
        seen = world.call("GET", f"/products/{pid}", party)
        assert seen["code"] == CODE and seen["state"] == "registered"
        # the seq of product.registered: a compute node proves the code's hash from it
        assert seen["registered_seq"] == made["seqs"][0]
    assert seen["price_fen"] == 1_250_000 and seen["developer_id"] == chain.developer.participant_id
    # the key column a query names, and the dataset's sensitive and personal fields, as the
    # platform recorded them in product.registered (never as the client sent them)
    assert seen["key_column"] == "taxpayer_id"
    assert seen["sensitive_fields"] == {chain.dataset_id: ["annual_revenue", "taxpayer_id"]}
    registered = world.call("GET", f"/ledger/events/{made['seqs'][0]}", world.regulator)
    assert registered["payload"]["sensitive_fields"] == seen["sensitive_fields"]
    assert registered["payload"]["key_column"] == "taxpayer_id"

    asked = world.call("POST", f"/products/{pid}/listing-request", chain.operator)
    assert asked["state"] == "listing_requested"
    listed = world.call("POST", f"/products/{pid}/listing-decision", world.platform,
                        json={"approve": True, "comment": "complete"})
    assert listed == {"product_id": pid, "state": "listed", "seqs": listed["seqs"]}

    storefront = world.call("GET", "/products", chain.demander)
    assert [p["id"] for p in storefront] == [pid]
    shown = world.call("GET", f"/products/{pid}", chain.demander)
    assert shown["code"] is None and shown["code_sha256"] == made["code_sha256"]
    assert shown["state"] == "listed" and shown["review_comment"] == "complete"
    assert shown["listed_at"] is not None
    assert world.call("GET", "/products?state=registered", chain.demander) == []

    order = world.call("POST", "/orders", chain.demander, 201,
                       json={"product_id": pid, "purpose": "credit decisions on SMEs"})
    oid = order["order_id"]
    assert order["contract_id"] == oid and order["state"] == "placed"
    seen = world.call("GET", f"/orders/{oid}", chain.demander)
    assert seen["state"] == "placed" and seen["usage_policy"] is None
    assert seen["trial_granted"] is False and seen["operator_id"] == chain.operator.participant_id
    seen = world.call("GET", f"/orders/{oid}", chain.provider)  # an input's owner: from placement
    assert seen["state"] == "placed" and seen["required_approvals"] == []
    other_provider = world.onboard("provider", "Another bureau 另一个局")
    refused(world, "GET", f"/orders/{oid}", other_provider, 404)

    trial = world.call("POST", f"/orders/{oid}/trial", chain.operator)
    assert trial["trial_granted"] is True

    assert world.call("GET", f"/orders/{oid}", chain.demander)["proposed_seq"] is None
    proposed = world.call("POST", f"/orders/{oid}/contract", chain.operator, json=proposal())
    assert proposed["state"] == "proposed"
    # the seq of contract.proposed: a node proves the usage policy from it
    for party in (chain.demander, chain.provider, chain.operator):
        assert world.call("GET", f"/orders/{oid}", party)["proposed_seq"] == proposed["seqs"][0]
    event = world.call("GET", f"/ledger/events/{proposed['seqs'][0]}", chain.provider)
    assert (event["type"], event["originator_id"]) == ("contract.proposed", oid)
    parties = sorted([chain.provider.participant_id, chain.operator.participant_id])
    assert proposed["required_approvals"] == parties
    seen = world.call("GET", f"/orders/{oid}", chain.provider)
    assert seen["price_fen"] == 1_000_000 and seen["revenue_split"] == SPLIT
    assert seen["usage_policy"]["not_after"].endswith("Z")
    assert seen["usage_policy"]["processing_count"] == 10
    assert seen["pending_approvals"] == parties and seen["trial_granted"] is True

    accepted = world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    assert accepted["state"] == "accepted"
    first = world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
    assert first["state"] == "accepted"
    assert first["pending_approvals"] == [chain.operator.participant_id]
    last = world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)
    assert last["state"] == "approved" and last["pending_approvals"] == []
    assert len(last["seqs"]) == 2  # contract.party_approved, contract.approved

    seen = world.call("GET", f"/orders/{oid}", chain.demander)
    assert seen["state"] == "approved" and seen["approved_at"] is not None
    assert seen["approvals"] == [chain.provider.participant_id, chain.operator.participant_id]
    assert seen["pending_approvals"] == []
    events = world.call("GET", "/ledger/events?limit=1000", world.regulator)["events"]
    approved = [e for e in events if e["type"] == "contract.approved"]
    assert [e["originator_id"] for e in approved] == [oid]
    assert approved[0]["seq"] == last["seqs"][-1]

    for party in (chain.demander, chain.operator, chain.provider, world.regulator,
                  world.platform):
        assert oid in [o["id"] for o in world.call("GET", "/orders", party)]
    assert world.call("GET", "/orders?state=approved", chain.demander)[0]["id"] == oid
    assert world.call("GET", "/orders", chain.developer) == []


def test_terminating_a_contract_and_delisting_the_product(world: World, chain: Chain) -> None:
    pid, oid = approved_contract(world, chain)
    ended = world.call("POST", f"/orders/{oid}/contract/termination", chain.provider,
                       json={"reason": "the provider ends the contract (policy allows it)"})
    assert ended["state"] == "terminated"
    seen = world.call("GET", f"/orders/{oid}", chain.demander)
    assert seen["state"] == "terminated" and seen["closed_at"] is not None
    assert seen["termination_reason"].startswith("the provider ends")

    gone = world.call("POST", f"/products/{pid}/delisting", chain.operator,
                      json={"reason": "superseded"})
    assert gone["state"] == "delisted"
    shown = world.call("GET", f"/products/{pid}", chain.demander)  # history stays public
    assert shown["state"] == "delisted" and shown["delist_reason"] == "superseded"
    assert shown["code"] is None
    assert [p["id"] for p in world.call("GET", "/products?state=delisted", chain.demander)] == [pid]


def test_a_rejected_listing_goes_back_to_registered(world: World, chain: Chain) -> None:
    pid = register_product(world, chain)
    world.call("POST", f"/products/{pid}/listing-request", chain.operator)
    assert invalid(world, f"/products/{pid}/listing-decision", world.platform,
                   {"approve": False}) == {"comment"}
    back = world.call("POST", f"/products/{pid}/listing-decision", world.platform,
                      json={"approve": False, "comment": "quality report is missing data"})
    assert back["state"] == "registered"
    seen = world.call("GET", f"/products/{pid}", chain.operator)
    assert seen["state"] == "registered" and seen["review_comment"].startswith("quality")
    refused(world, "GET", f"/products/{pid}", chain.demander, 404)


def test_the_demander_cancels_an_open_order(world: World, chain: Chain) -> None:
    oid = place(world, chain, list_product(world, chain))
    done = world.call("POST", f"/orders/{oid}/cancellation", chain.demander,
                      json={"reason": "budget withdrawn"})
    assert done["state"] == "cancelled"
    seen = world.call("GET", f"/orders/{oid}", chain.operator)
    assert seen["state"] == "cancelled" and seen["cancellation_reason"] == "budget withdrawn"
    refused(world, "POST", f"/orders/{oid}/cancellation", chain.demander, 409, {})


# -- products: errors ---------------------------------------------------------------
def test_product_commands_by_the_wrong_role_are_403(world: World, chain: Chain) -> None:
    body = product_body(chain)
    assert refused(world, "POST", "/products", chain.demander, 403, body)["error"] == "forbidden"
    refused(world, "POST", "/products", chain.developer, 403, body)
    pid = register_product(world, chain)
    other = world.onboard("operator", "Another operator")
    refused(world, "POST", f"/products/{pid}/listing-request", other, 403)
    refused(world, "POST", f"/products/{pid}/listing-request", chain.developer, 403)
    world.call("POST", f"/products/{pid}/listing-request", chain.operator)
    refused(world, "POST", f"/products/{pid}/listing-decision", chain.operator, 403,
            {"approve": True})
    refused(world, "POST", f"/products/{pid}/listing-decision", world.regulator, 403,
            {"approve": True})
    world.call("POST", f"/products/{pid}/listing-decision", world.platform, json={"approve": True})
    refused(world, "POST", f"/products/{pid}/delisting", chain.demander, 403, {"reason": "x"})
    refused(world, "POST", f"/products/{pid}/delisting", other, 403, {"reason": "x"})
    # a product over another operator's scenario
    refused(world, "POST", "/products", other, 403, body)


def test_an_unlisted_product_is_seen_only_by_its_operator_developer_and_input_providers(
        world: World, chain: Chain) -> None:
    pid = register_product(world, chain)
    other = world.onboard("operator", "Another operator")
    # the provider of an input dataset reads the code: its datasite runs it after review
    assert world.call("GET", f"/products/{pid}", chain.provider)["code"] == CODE
    for party in (chain.demander, other):
        body = refused(world, "GET", f"/products/{pid}", party, 404)
        assert body["error"] == "not_found" and CODE not in str(body)
        assert world.call("GET", "/products", party) == []
    for party in (chain.operator, chain.developer, chain.provider, world.regulator,
                  world.platform):
        assert [p["id"] for p in world.call("GET", "/products", party)] == [pid]
    assert world.call("GET", f"/products?operator_id={other.participant_id}",
                      world.regulator) == []


def test_unknown_product_is_404(world: World, chain: Chain) -> None:
    assert refused(world, "GET", "/products/nope", chain.operator, 404)["error"] == "not_found"
    refused(world, "POST", "/products/nope/listing-request", chain.operator, 404)
    refused(world, "POST", "/products/nope/listing-decision", world.platform, 404,
            {"approve": True})
    refused(world, "POST", "/products/nope/delisting", world.platform, 404, {"reason": "x"})
    refused(world, "POST", "/orders", chain.demander, 404, {"product_id": "nope",
                                                           "purpose": "p"})
    refused(world, "POST", "/products", chain.operator, 404,
            product_body(chain, scenario_id="nope"))


def test_the_client_cannot_set_the_sensitive_fields(world: World, chain: Chain) -> None:
    made = world.call("POST", "/products", chain.operator, 201,
                      json={**product_body(chain, key_column=None), "sensitive_fields": {}})
    seen = world.call("GET", f"/products/{made['product_id']}", chain.operator)
    assert seen["sensitive_fields"] == {chain.dataset_id: ["annual_revenue", "taxpayer_id"]}
    assert seen["key_column"] is None
    body = refused(world, "POST", "/products", chain.operator, 422,
                   json=product_body(chain, key_column="score"))
    assert body["fields"][0]["field"] == "key_column"
    assert body["detail"] == "key_column: 'score' is not one of the product's input fields"


def test_invalid_product_fields_are_422_naming_the_field(world: World, chain: Chain) -> None:
    def bad(**changes: Any) -> set[str]:
        return invalid(world, "/products", chain.operator, product_body(chain, **changes))

    assert bad(price_fen=-1) == {"price_fen"}
    assert bad(price_fen=12.5) == {"price_fen"}
    assert bad(price_fen="100") == {"price_fen"}
    assert bad(price_fen=2**63) == {"price_fen"}  # would not fit the read model: refused
    # NUL cannot be stored in PostgreSQL text: an event holding one would stall the projections
    assert bad(name="SME\u0000score", output_schema={"note": "\u0000"}) == {
        "name", "output_schema"}
    assert bad(kind="spreadsheet") == {"kind"}
    assert bad(name="", inputs=[]) == {"name", "inputs"}
    assert bad(code="") == {"code"}
    assert bad(code_sha256="xyz") == {"code_sha256"}
    assert bad(code_sha256="0" * 64) == {"code_sha256"}  # well formed, not the code's digest
    assert bad(inputs=[{"dataset_id": chain.dataset_id, "fields": []}]) == {"inputs.0.fields"}
    assert bad(inputs=[{"dataset_id": chain.dataset_id, "fields": ["x"], "rows": 5}]) == {
        "inputs.0.rows"}
    assert bad(developer_id=chain.demander.participant_id) == {"developer_id"}
    # the key column: a property of the output and a field the product reads
    assert bad(key_column="industry") == {"key_column"}  # not in the output schema
    assert bad(key_column="score") == {"key_column"}  # not an input field
    assert bad(key_column="") == {"key_column"}
    assert bad(output_schema={"type": "array"}) == {"key_column"}  # the schema declares none
    assert bad(authorization_ids=[chain.authorization_id, chain.authorization_id]) == {
        "authorization_ids"}
    # fields the authorization does not cover: refused by the authorizations, not invalid
    assert refused(world, "POST", "/products", chain.operator, 409, product_body(
        chain, inputs=[{"dataset_id": chain.dataset_id, "fields": ["industry"]}]))[
        "error"] == "no_authorization"


def test_product_commands_in_the_wrong_state_are_409(world: World, chain: Chain) -> None:
    pid = register_product(world, chain)
    refused(world, "POST", f"/products/{pid}/listing-decision", world.platform, 409,
            {"approve": True})
    body = refused(world, "POST", f"/products/{pid}/delisting", world.platform, 409,
                   {"reason": "x"})
    assert body["error"] == "wrong_state"
    world.call("POST", f"/products/{pid}/listing-request", chain.operator)
    refused(world, "POST", f"/products/{pid}/listing-request", chain.operator, 409)
    world.call("POST", f"/products/{pid}/listing-decision", world.platform, json={"approve": True})
    refused(world, "POST", f"/products/{pid}/listing-decision", world.platform, 409,
            {"approve": True})
    world.call("POST", f"/products/{pid}/delisting", world.regulator, json={"reason": "x"})
    refused(world, "POST", f"/products/{pid}/delisting", world.platform, 409, {"reason": "y"})
    refused(world, "POST", "/orders", chain.demander, 409, {"product_id": pid, "purpose": "p"})


# -- orders and contracts: errors ---------------------------------------------------
def test_ordering_an_unlisted_product_is_409(world: World, chain: Chain) -> None:
    pid = register_product(world, chain)
    body = refused(world, "POST", "/orders", chain.demander, 409,
                   {"product_id": pid, "purpose": "credit decisions"})
    assert body["error"] == "product_not_listed"
    world.call("POST", f"/products/{pid}/listing-request", chain.operator)
    refused(world, "POST", "/orders", chain.demander, 409, {"product_id": pid, "purpose": "p"})


def test_order_commands_by_the_wrong_role_are_403(world: World, chain: Chain) -> None:
    pid = list_product(world, chain)
    order = {"product_id": pid, "purpose": "p"}
    for party in (chain.operator, chain.provider, chain.developer, world.regulator):
        refused(world, "POST", "/orders", party, 403, order)
    oid = place(world, chain, pid)
    other_operator = world.onboard("operator", "Another operator")
    other_demander = world.onboard("demander", "Another bank")
    refused(world, "POST", f"/orders/{oid}/trial", chain.demander, 403)
    refused(world, "POST", f"/orders/{oid}/trial", other_operator, 403)
    for party in (chain.demander, chain.developer, other_operator):
        refused(world, "POST", f"/orders/{oid}/contract", party, 403, proposal())
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json=proposal())
    refused(world, "POST", f"/orders/{oid}/contract/acceptance", chain.operator, 403)
    refused(world, "POST", f"/orders/{oid}/contract/acceptance", other_demander, 403)
    refused(world, "POST", f"/orders/{oid}/cancellation", other_demander, 403, {})
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    for party in (chain.demander, chain.developer, other_operator, world.platform):
        refused(world, "POST", f"/orders/{oid}/contract/approvals", party, 403)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)
    for party in (chain.demander, other_operator, chain.developer):
        refused(world, "POST", f"/orders/{oid}/contract/termination", party, 403,
                {"reason": "x"})


def test_a_provider_terminates_only_if_the_policy_allows(world: World, chain: Chain) -> None:
    pid = list_product(world, chain)
    oid = place(world, chain, pid)
    strict = {k: v for k, v in policy().items() if k != "provider_may_terminate"}
    world.call("POST", f"/orders/{oid}/contract", chain.operator,
               json=proposal(usage_policy=strict))
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)
    refused(world, "POST", f"/orders/{oid}/contract/termination", chain.provider, 403,
            {"reason": "x"})
    ended = world.call("POST", f"/orders/{oid}/contract/termination", world.regulator,
                       json={"reason": "misuse found in an inspection"})
    assert ended["state"] == "terminated"


def test_another_demanders_order_is_404_never_the_data(world: World, chain: Chain) -> None:
    oid = place(world, chain, list_product(world, chain))
    other = world.onboard("demander", "Another bank")
    body = refused(world, "GET", f"/orders/{oid}", other, 404)
    assert body["error"] == "not_found" and "credit decisions" not in str(body)
    assert world.call("GET", "/orders", other) == []
    other_operator = world.onboard("operator", "Another operator")
    refused(world, "GET", f"/orders/{oid}", other_operator, 404)
    refused(world, "GET", f"/orders/{oid}", chain.developer, 404)
    assert world.call("GET", f"/orders/{oid}", world.regulator)["id"] == oid


def test_unknown_order_is_404(world: World, chain: Chain) -> None:
    assert refused(world, "GET", "/orders/nope", chain.demander, 404)["error"] == "not_found"
    refused(world, "POST", "/orders/nope/trial", chain.operator, 404)
    refused(world, "POST", "/orders/nope/contract", chain.operator, 404, proposal())
    refused(world, "POST", "/orders/nope/contract/acceptance", chain.demander, 404)
    refused(world, "POST", "/orders/nope/contract/approvals", chain.provider, 404)
    refused(world, "POST", "/orders/nope/contract/termination", world.regulator, 404,
            {"reason": "x"})
    refused(world, "POST", "/orders/nope/cancellation", chain.demander, 404, {})


def test_invalid_order_and_contract_fields_are_422_naming_the_field(
        world: World, chain: Chain) -> None:
    pid = list_product(world, chain)
    assert invalid(world, "/orders", chain.demander, {"product_id": pid, "purpose": ""}) == {
        "purpose"}
    assert invalid(world, "/orders", chain.demander, {"purpose": "p"}) == {"product_id"}
    assert invalid(world, "/orders", chain.demander, {"product_id": pid, "purpose": "\u0000"}) == {
        "purpose"}
    oid = place(world, chain, pid)
    path = f"/orders/{oid}/contract"

    def bad(**changes: Any) -> set[str]:
        return invalid(world, path, chain.operator, proposal(**changes))

    assert bad(revenue_split={**SPLIT, "platform": 1001}) == {"revenue_split"}
    assert bad(revenue_split={**SPLIT, "platform": -1, "provider": 5002}) == {
        "revenue_split.platform"}
    assert bad(revenue_split={"operator": 5000, "provider": 5000}) == {
        "revenue_split.developer", "revenue_split.platform"}
    assert bad(revenue_split={**SPLIT, "investor": 0}) == {"revenue_split.investor"}
    assert bad(revenue_split={**SPLIT, "operator": 2999.5, "provider": 5000.5}) == {
        "revenue_split.operator", "revenue_split.provider"}
    assert bad(price_fen=-100) == {"price_fen"}
    assert bad(price_fen=99.9) == {"price_fen"}
    assert bad(price_fen=2**53) == {"price_fen"}
    assert bad(usage_policy={"allowed_fields": ["taxpayer_id\u0000"]}) == {
        "usage_policy.allowed_fields.0"}
    assert bad(usage_policy={"resale_allowed": True}) == {"usage_policy.resale_allowed"}
    assert bad(usage_policy={"view_count": -1}) == {"usage_policy.view_count"}
    assert bad(usage_policy={"circulation_modes": ["carrier_pigeon"]}) == {
        "usage_policy.circulation_modes.0"}
    assert bad(usage_policy={"not_before": "yesterday"}) == {"usage_policy.not_before"}
    assert bad(usage_policy={"not_before": "2030-01-02T00:00:00Z",
                             "not_after": "2030-01-01T00:00:00Z"}) == {"usage_policy.not_after"}
    assert bad(usage_policy=[]) == {"usage_policy"}
    seen = world.call("GET", f"/orders/{oid}", chain.demander)
    assert seen["state"] == "placed" and seen["usage_policy"] is None


def test_a_developer_share_needs_a_developer(world: World, chain: Chain) -> None:
    pid = list_product(world, chain, developer_id=None)
    oid = place(world, chain, pid)
    assert invalid(world, f"/orders/{oid}/contract", chain.operator, proposal()) == {
        "revenue_split.developer"}
    fine = world.call("POST", f"/orders/{oid}/contract", chain.operator, json=proposal(
        revenue_split={"developer": 0, "operator": 4000, "platform": 1000, "provider": 5000}))
    assert fine["state"] == "proposed"


def test_contract_commands_in_the_wrong_state_are_409(world: World, chain: Chain) -> None:
    oid = place(world, chain, list_product(world, chain))
    refused(world, "POST", f"/orders/{oid}/contract/acceptance", chain.demander, 409)
    refused(world, "POST", f"/orders/{oid}/contract/approvals", chain.operator, 409)
    refused(world, "POST", f"/orders/{oid}/contract/termination", world.regulator, 409,
            {"reason": "x"})
    world.call("POST", f"/orders/{oid}/trial", world.platform)
    assert refused(world, "POST", f"/orders/{oid}/trial", chain.operator, 409)[
        "error"] == "wrong_state"
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json=proposal())
    refused(world, "POST", f"/orders/{oid}/contract", chain.operator, 409, proposal())
    refused(world, "POST", f"/orders/{oid}/contract/approvals", chain.provider, 409)
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    refused(world, "POST", f"/orders/{oid}/contract/acceptance", chain.demander, 409)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
    body = refused(world, "POST", f"/orders/{oid}/contract/approvals", chain.provider, 409)
    assert "already approved" in body["detail"]
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)
    refused(world, "POST", f"/orders/{oid}/contract/approvals", chain.operator, 409)
    refused(world, "POST", f"/orders/{oid}/cancellation", chain.demander, 409, {})


def test_a_proposal_on_a_delisted_product_is_409(world: World, chain: Chain) -> None:
    pid = list_product(world, chain)
    oid = place(world, chain, pid)
    world.call("POST", f"/products/{pid}/delisting", world.platform, json={"reason": "recall"})
    refused(world, "POST", f"/orders/{oid}/contract", chain.operator, 409, proposal())


def test_a_replayed_idempotency_key_places_one_order(world: World, chain: Chain) -> None:
    pid = list_product(world, chain)
    body = {"product_id": pid, "purpose": "credit decisions"}
    headers = {**chain.demander.headers, "Idempotency-Key": "order-sme-score-1"}
    first = world.client.post("/orders", headers=headers, json=body)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    after_first = head(world)
    again = world.client.post("/orders", headers=headers, json=body)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert head(world) == after_first
    changed = world.client.post("/orders", headers=headers, json={**body, "purpose": "other"})
    assert changed.status_code == 422 and changed.json()["error"] == "idempotency_key_reused"
    assert head(world) == after_first
    assert [o["id"] for o in world.call("GET", "/orders", chain.demander)] == [
        first.json()["order_id"]]
    # the key is the member's own: another demander's same key places its own order
    other = world.onboard("demander", "Another bank")
    theirs = world.client.post("/orders", json=body,
                               headers={**other.headers, "Idempotency-Key": "order-sme-score-1"})
    assert theirs.status_code == 201 and theirs.json()["order_id"] != first.json()["order_id"]


def test_a_party_reads_its_contract_events_one_by_one_and_others_do_not(
        world: World, chain: Chain) -> None:
    approved_contract(world, chain)
    events = world.call("GET", "/ledger/events?limit=1000", world.regulator)["events"]
    approved = [e for e in events if e["type"] == "contract.approved"]
    seq = approved[-1]["seq"]
    seen = world.call("GET", f"/ledger/events/{seq}", chain.provider)
    assert seen == approved[-1]
    stranger = world.onboard("demander", "Another bank")
    assert refused(world, "GET", f"/ledger/events/{seq}", stranger, 404)["error"] == "not_found"
    assert refused(world, "GET", "/ledger/events/999999", chain.provider, 404)
