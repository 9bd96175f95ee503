"""The ledger's policy refusals, met by a real node and a real datasite: each is recorded as
``computation.failed`` whose reason starts with the refusal's code, nothing runs on the
datasite and nothing is delivered.

Runs inside the compute venv only: ``compute_nodes/setup-env test``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from client.platform import PlatformError
from compute_nodes import datasite
from compute_nodes.node import ComputeNode
from compute_nodes.outcome import Outcome
from tests.compute.ledger import (
    SCORE,
    USED,
    provider_view,
    until_settled,
)

pytestmark = pytest.mark.timeout(120)
SITE = "tax-refusals"  # the datasite of this module's world


def refused(w: SimpleNamespace, node: ComputeNode, contract: str, code: str,
            event_type: str = "contract.approved", function: str = "score") -> Outcome:
    """Handle the event; check the refusal is recorded, nothing ran, nothing delivered."""
    [outcome] = until_settled(node, provider_view(w, contract, event_type))
    assert outcome.status == "failed", outcome
    assert outcome.detail.startswith(f"{code}: "), outcome.detail
    assert w.api.of(outcome.computation_id) == ["computation.requested", "computation.failed"]
    failed = w.api.event(outcome.computation_id, "computation.failed")
    assert failed["payload"]["reason"].startswith(f"{code}: ")
    assert not datasite.request_exists(
        w.runner, function, node.request_key(contract, outcome.execution))
    assert not [e for e in w.api.events() if e["type"] == "delivery.made"
                and e["originator_id"] == outcome.computation_id]
    view = w.api.call("GET", f"/computations/{outcome.computation_id}", w.p.provider.token)
    assert view["state"] == "failed"
    # handled again (a redelivery): nothing more is written or run
    head = len(w.api.events())
    [again] = node.handle(provider_view(w, contract, event_type))
    assert again.status == "skipped", again
    assert len(w.api.events()) == head
    return outcome


class Tampering(httpx.BaseTransport):
    """The platform (or the wire) serves other code than the listed product's."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "GET" and request.url.path.startswith("/products/"):
            response.read()
            body = json.loads(response.content)
            body["code"] = body["code"].replace("// 10000", "// 1")
            return httpx.Response(200, json=body)
        return response


def test_code_that_differs_from_the_listed_hash(w: SimpleNamespace) -> None:
    contract = w.api.order(w.p, w.p.product_id)
    http = httpx.Client(base_url=w.url, timeout=30, transport=Tampering())
    refused(w, w.node(http=http), contract, "code_hash_mismatch")


def test_an_expired_authorization(w: SimpleNamespace) -> None:
    auth = w.api.grant(w.p, seconds=4, datasets=[{"dataset_id": w.p.dataset_id,
                                                  "fields": USED}])
    view = w.api.call("GET", f"/authorizations/{auth}", w.p.provider.token)
    product = w.api.product(w.p, SCORE, [{"dataset_id": w.p.dataset_id, "fields": USED}],
                            authorization=auth, name="short-lived score")
    contract = w.api.order(w.p, product)
    ends = datetime.fromisoformat(view["not_after"])
    time.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()) + 0.5)
    refused(w, w.node(), contract, "authorization_expired")


def test_a_revoked_authorization(w: SimpleNamespace) -> None:
    auth = w.api.grant(w.p, datasets=[{"dataset_id": w.p.dataset_id, "fields": USED}])
    product = w.api.product(w.p, SCORE, [{"dataset_id": w.p.dataset_id, "fields": USED}],
                            authorization=auth, name="revocable score")
    contract = w.api.order(w.p, product)
    w.api.call("POST", f"/authorizations/{auth}/revocation", w.p.provider,
               json={"reason": "the source system is being audited"})
    refused(w, w.node(), contract, "authorization_revoked")


def test_a_contract_terminated_before_the_node_acts(w: SimpleNamespace) -> None:
    contract = w.api.order(w.p, w.p.product_id)
    w.api.call("POST", f"/orders/{contract}/contract/termination", w.p.operator,
               json={"reason": "the bank withdrew"})
    refused(w, w.node(), contract, "contract_terminated")


SLOW = """def slow(data):
    import time
    time.sleep(4)
    return [{"uscc": str(u), "score": 1} for u in data["uscc"]]
"""


def test_a_result_after_the_contract_was_terminated_is_not_delivered(
        w: SimpleNamespace) -> None:
    """The policy is checked again when the result comes: a contract terminated while its
    execution ran gets no delivery; the ledger records the failure."""
    product = w.api.product(w.p, SLOW, [{"dataset_id": w.p.dataset_id, "fields": USED}],
                            name="slow product")
    contract = w.api.order(w.p, product)
    node, event = w.node(), provider_view(w, contract, "contract.approved")
    deadline = time.monotonic() + 30
    # until the ledger recorded the request and the code runs (it sleeps 4 s)
    while (status := node.handle(event, wait=False)[0].status) != "running" \
            or not w.api.computations(contract):
        assert status in ("not_anchored", "running") and time.monotonic() < deadline, status
        time.sleep(0.1)
    w.api.call("POST", f"/orders/{contract}/contract/termination", w.p.operator,
               json={"reason": "the bank withdrew"})
    while not (outcome := node.handle(event, wait=False)[0]).settled:  # its one handling
        assert time.monotonic() < deadline + 30, outcome
        time.sleep(0.2)
    assert outcome.status == "failed" and "policy_lapsed" in outcome.detail, outcome
    assert w.api.of(outcome.computation_id) == ["computation.requested", "computation.failed"]
    assert "was terminated" in w.api.event(outcome.computation_id,
                                           "computation.failed")["payload"]["reason"]
    assert not [e for e in w.api.events() if e["type"] == "delivery.made"
                and e["originator_id"] == outcome.computation_id]


def test_an_exhausted_processing_count(w: SimpleNamespace) -> None:
    contract = w.api.order(w.p, w.p.product_id, processing_count=1)
    node = w.node()
    [first] = until_settled(node, provider_view(w, contract, "contract.approved"))
    assert first.status == "delivered", first
    usccs = sorted(w.private["uscc"])[:2]
    head = len(w.api.events())
    with pytest.raises(PlatformError) as caught:  # refused when asked: nothing written
        w.api.submit_query(w.p, contract, {"field": "uscc", "values": usccs})
    assert caught.value.status == 409 and "count_exhausted" in str(caught.value)
    assert len(w.api.events()) == head


# -- what runs comes from proven events, not from the platform's views ---------------------


class Rewriting(httpx.BaseTransport):
    """A platform that rewrites the JSON of some answers (``rewrite(request, body)``)."""

    def __init__(self, rewrite: Callable[[httpx.Request, Any], Any]) -> None:
        self.inner = httpx.HTTPTransport()
        self.rewrite = rewrite

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not response.headers.get("content-type", "").startswith("application/json"):
            return response
        response.read()
        body = self.rewrite(request, json.loads(response.content))
        return httpx.Response(response.status_code, json=body)


def nothing_released(w: SimpleNamespace, node: ComputeNode, contract: str) -> None:
    """Nothing left the node: no result nor failure reported, nothing delivered. (The
    execution may have started early, from the views, before the proof refused them: a
    lying platform can make the node work in its sandbox, never release.)"""
    node.runs.pool.shutdown(wait=True)
    computations = w.api.computations(contract)
    assert all(c["state"] not in ("succeeded", "failed") for c in computations), computations
    assert not [e for e in w.api.events() if e["type"] == "delivery.made"
                and e["originator_id"] in {c["id"] for c in computations}]


def order_view(change: Callable[[dict[str, Any]], None]) -> Callable[[httpx.Request, Any], Any]:
    def rewrite(request: httpx.Request, body: Any) -> Any:
        if request.method == "GET" and request.url.path.startswith("/orders/"):
            change(body)
        return body
    return rewrite


@pytest.mark.parametrize("tamper", ["no placed_seq", "another placed_seq", "the query",
                                    "the product", "no registered_seq"])
def test_a_view_that_differs_from_the_proven_events_is_refused(
        w: SimpleNamespace, tamper: str) -> None:
    usccs = sorted(w.private["uscc"])
    contract = w.api.order(w.p, w.p.product_id, query={"field": "uscc", "values": usccs[:1]})
    approved = w.api.event(contract, "contract.approved")["seq"]
    rewrite = {
        "no placed_seq": order_view(lambda o: o.pop("placed_seq")),
        "another placed_seq": order_view(lambda o: o.update(placed_seq=approved)),
        "the query": order_view(lambda o: o.update(query={"field": "uscc",
                                                          "values": usccs[1:]})),
        "the product": order_view(lambda o: o.update(product_id=w.p.joined_id)),
    }.get(tamper)
    if rewrite is None:  # no registered_seq in the product view

        def rewrite(request: httpx.Request, body: Any) -> Any:
            if request.url.path.startswith("/products/"):
                body.pop("registered_seq")
            return body

    node = w.node(http=httpx.Client(base_url=w.url, timeout=30, transport=Rewriting(rewrite)))
    [outcome] = until_settled(node, provider_view(w, contract, "contract.approved"))
    assert outcome.status == "refused" and not outcome.settled, outcome
    expected = {"no placed_seq": "placed_seq None", "another placed_seq": "is not order.placed",
                "the query": "query differs", "the product": "product_id",
                "no registered_seq": "registered_seq None"}[tamper]
    assert expected in outcome.detail, outcome.detail
    nothing_released(w, node, contract)


def test_code_that_differs_from_product_registered_never_runs_whatever_the_ledger_says(
        w: SimpleNamespace) -> None:
    """The platform serves other code and tells the ledger (POST /computations) the listed
    hash, so the ledger accepts: the node checks the code against product.registered
    itself, records the failure and runs nothing."""
    listed = hashlib.sha256(SCORE.encode()).hexdigest()

    def rewrite(request: httpx.Request, body: Any) -> Any:
        if request.method == "GET" and request.url.path.startswith("/products/"):
            body["code"] = body["code"].replace("// 10000", "// 1")
        return body

    class Lying(Rewriting):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST" and request.url.path == "/computations":
                sent = json.loads(request.content)
                request = httpx.Request("POST", request.url, headers={
                    "Authorization": request.headers["Authorization"]},
                    json={**sent, "code_sha256": listed})
            return super().handle_request(request)

    contract = w.api.order(w.p, w.p.product_id)
    http = httpx.Client(base_url=w.url, timeout=30, transport=Lying(rewrite))
    outcome = refused(w, w.node(http=http), contract, "code_hash_mismatch")
    assert "product.registered" in outcome.detail  # the node's own check, not the ledger's
