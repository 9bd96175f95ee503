"""The compute node against the REAL ledger server (a ``dataledger serve`` subprocess from the
server's venv) and real PySyft 0.9.5 datasites (in-process, and once over HTTP on loopback).

Runs inside the compute venv only: ``compute_nodes/setup-env test``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from chain.bls import WitnessKey
from client.platform import PlatformError
from compute_nodes import datasite
from compute_nodes.feeds import Position, consume
from compute_nodes.logs import private_log
from compute_nodes.node import ComputeNode
from compute_nodes.outcome import Outcome
from tests.compute.ledger import (
    ADMIN_TOKEN,
    LOAN_FIELDS,
    LOAN_USED,
    PRIVATE_COLUMNS,
    PYTHON,
    ROOT,
    USED,
    expected_joined,
    expected_scores,
    free_port,
    provider_view,
    served,
    until_settled,
)

pytestmark = pytest.mark.timeout(120)


def delivered_once(w: SimpleNamespace, outcome: Outcome) -> list[dict[str, Any]]:
    """The computation's events are requested, succeeded, delivery.made; those three."""
    mine = [e for e in w.api.events() if e["originator_id"] == outcome.computation_id]
    assert [e["type"] for e in mine] == [
        "computation.requested", "computation.succeeded", "delivery.made"]
    assert mine[2]["payload"]["result_sha256"] == outcome.result_sha256
    return mine


def result_of(w: SimpleNamespace, outcome: Outcome) -> Any:
    result = w.api.call("GET", f"/deliveries/{outcome.computation_id}/result",
                        w.p.demander.token)
    assert not PRIVATE_COLUMNS & {k for row in result for k in row}
    return result


def test_data_loaded_is_recorded(w: SimpleNamespace) -> None:
    digest = w.loaded["sha256_of_private_file"]
    assert w.loaded["ledger"]["sha256"] == digest and w.loaded["rows"] == 20
    assert w.loaded["mock_rows"] == 8
    assert w.loaded_loans["ledger"]["rows"] == len(w.loans)


def test_node_with_a_wrong_trust_file_refuses_and_retries_later(w: SimpleNamespace) -> None:
    forged = json.loads(json.dumps(w.trust))
    other = WitnessKey.generate(forged["witnesses"][0]["name"]).published()
    forged["witnesses"][0].update(public_key=base64.b64encode(other.public_key).decode(),
                                  pop=base64.b64encode(other.pop).decode(), vkey=other.encode())
    contract = w.api.order(w.p, w.p.product_id)
    event = provider_view(w, contract, "contract.approved")
    time.sleep(1.2)  # a checkpoint covers it: refused for the keys, not the timing
    [outcome] = w.node(forged).handle(event)
    assert outcome.status == "refused" and "co-signature" in outcome.detail, outcome
    assert not outcome.settled and outcome.seq == event["seq"]
    assert w.api.computations(contract) == []
    # the same event with the right keys is acted on: nothing was dropped
    [done] = until_settled(w.node(), event)
    assert done.status == "delivered", done


def test_approved_contract_is_delivered_exactly_once(w: SimpleNamespace) -> None:
    api, p = w.api, w.p
    contract = api.order(p, p.product_id)
    event = provider_view(w, contract, "contract.approved")
    node = w.node()
    [outcome] = until_settled(node, event)
    assert outcome.status == "delivered" and outcome.execution == 1, outcome
    assert outcome.contract_id == contract and outcome.event_type == "contract.approved"
    requested, succeeded, _ = delivered_once(w, outcome)
    assert requested["payload"]["dataset_ids"] == [p.dataset_id]
    assert requested["payload"]["provider_id"] == p.provider.id
    assert succeeded["payload"]["input_hashes"] == {
        p.dataset_id: w.loaded["sha256_of_private_file"]}
    result = result_of(w, outcome)
    assert result == served(w, outcome.computation_id, expected_scores(w.private))
    assert all(set(row) == {"uscc", "score"} for row in result)

    # The same event again, to the same node and to a fresh one (a restart).
    head = len(api.events())
    for again in (node, w.node()):
        [second] = again.handle(event)
        assert second.status == "skipped" and second.computation_id == outcome.computation_id
    assert len(api.events()) == head


def test_two_inputs_of_the_provider_are_bound_by_position(w: SimpleNamespace) -> None:
    contract = w.api.order(w.p, w.p.joined_id)
    [outcome] = until_settled(w.node(), provider_view(w, contract, "contract.approved"))
    assert outcome.status == "delivered", outcome
    requested, succeeded, _ = delivered_once(w, outcome)
    assert requested["payload"]["dataset_ids"] == [w.p.dataset_id, w.p.loans_id]
    assert succeeded["payload"]["input_hashes"] == {
        w.p.dataset_id: w.loaded["sha256_of_private_file"],
        w.p.loans_id: w.loaded_loans["sha256_of_private_file"]}
    assert result_of(w, outcome) == served(w, outcome.computation_id,
                                           expected_joined(w.private, w.loans))


def test_queries_bring_back_only_the_asked_rows(w: SimpleNamespace) -> None:
    """Execution 1 with the order's query, execution 2 with a submitted one: the demander
    receives the enterprises it asked about, nothing of the others, no private column."""
    usccs = sorted(w.private["uscc"])
    first = {"field": "uscc", "values": [usccs[3], usccs[7], "91330100NOSUCHFIRM"]}
    contract = w.api.order(w.p, w.p.product_id, processing_count=2, query=first)
    order = w.api.call("GET", f"/orders/{contract}", w.p.provider.token)
    assert order["query"] == first
    node = w.node()
    [one] = until_settled(node, provider_view(w, contract, "contract.approved"))
    assert one.status == "delivered" and one.execution == 1, one
    everything = {row["uscc"]: row for row in expected_scores(w.private)}
    assert result_of(w, one) == served(w, one.computation_id,
                                       [everything[usccs[3]], everything[usccs[7]]])
    assert w.api.event(one.computation_id, "computation.succeeded")["payload"][
        "result_rows"] == 2

    second = {"field": "uscc", "values": [usccs[0]]}
    w.api.submit_query(w.p, contract, second)
    event = provider_view(w, contract, "contract.query_submitted")
    assert event["payload"]["execution"] == 2
    [two] = until_settled(node, event)
    assert two.status == "delivered" and two.execution == 2, two
    assert two.computation_id != one.computation_id
    assert result_of(w, two) == served(w, two.computation_id, [everything[usccs[0]]])
    delivered_once(w, two)
    assert [c["execution"] for c in w.api.computations(contract)] in ([1, 2], [2, 1])


def test_a_query_on_a_column_that_is_not_the_key_is_refused(w: SimpleNamespace) -> None:
    """A query is access by key, not a row filter: it may name only the product's key
    column (the ledger refuses it before anything is written)."""
    before = len(w.api.events())
    with pytest.raises(PlatformError) as refused:
        w.api.order(w.p, w.p.product_id, query={"field": "industry", "values": ["retail"]})
    assert refused.value.status == 422 and "query.field" in str(refused.value)
    assert "key column 'uscc'" in str(refused.value)
    assert len(w.api.events()) == before


def test_an_event_not_yet_anchored_is_left_for_later(w: SimpleNamespace) -> None:
    contract = w.api.order(w.p, w.p.product_id)
    event = provider_view(w, contract, "contract.approved")

    def no_anchor(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ledger/checkpoints/latest":
            return httpx.Response(404, json={"error": "not_found", "detail": "none yet"})
        return real.handle_request(request)

    real = httpx.HTTPTransport()
    blind = w.node(http=httpx.Client(base_url=w.url, transport=httpx.MockTransport(no_anchor)))
    [outcome] = blind.handle(event)
    assert outcome.status == "not_anchored" and not outcome.settled, outcome
    # the execution may start early; nothing is reported before the event is proven
    blind.runs.pool.shutdown(wait=True)
    assert all(c["state"] not in ("succeeded", "failed")
               for c in w.api.computations(contract))
    [done] = until_settled(w.node(), event)
    assert done.status == "delivered"


def test_follow_http_acts_on_new_events_and_keeps_its_position(
        w: SimpleNamespace, tmp_path: Any) -> None:
    head = w.api.events()[-1]["seq"]
    Position(tmp_path / "position.json").save(head)
    contract = w.api.order(w.p, w.p.product_id)
    seen: list[Outcome] = []
    node = w.node()
    deadline = time.monotonic() + 30
    while not any(o.contract_id == contract for o in seen):
        node.follow_http(tmp_path / "position.json", once=True, retry_s=0.3,
                         on_outcome=seen.append)
        assert time.monotonic() < deadline
    assert [(o.contract_id, o.status) for o in seen] == [(contract, "delivered")]
    approved = w.api.event(contract, "contract.approved")["seq"]
    assert Position(tmp_path / "position.json").seq >= approved
    again: list[Outcome] = []
    node.follow_http(tmp_path / "position.json", once=True, on_outcome=again.append)
    assert again == []  # nothing is handled twice from a saved position


def test_a_datasite_outage_is_retried_then_reported_as_failed(
        w: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    contract = w.api.order(w.p, w.p.product_id)
    attempts: list[str] = []

    def down(*args: Any, **kwargs: Any) -> str:
        attempts.append(args[4])
        raise datasite.DatasiteUnavailableError("ConnectionError: datasite is down")

    monkeypatch.setattr(datasite, "submit", down)
    node = w.node()
    pauses: list[float] = []
    node.sleep = pauses.append
    [outcome] = until_settled(node, provider_view(w, contract, "contract.approved"))
    assert outcome.status == "failed" and "datasite is down" in outcome.detail
    assert attempts == [f"{contract}#1#{w.p.provider.id}"] * 3 and pauses == [0.05, 0.1]
    assert w.api.of(outcome.computation_id) == ["computation.requested", "computation.failed"]
    reason = w.api.event(outcome.computation_id, "computation.failed")["payload"]["reason"]
    assert reason.startswith("datasite unavailable") and "after 3 attempts" in reason


def test_over_an_http_datasite_on_loopback(w: SimpleNamespace) -> None:
    port = free_port()
    site = datasite.launch("tax-bureau-http", port=port, data_dir=w.tmp / "http-datasite",
                           reset=True, admin_password="admin-pass-2")
    try:
        assert site.url == f"http://127.0.0.1:{port}"
        admin = site.admin()
        runner = datasite.data_scientist(site, admin, "node@tax.example", "node-pass-2")
        node = ComputeNode(w.url, w.p.provider.token, (admin, runner, "tax-bureau-http"),
                           w.trust, w.sandbox, backoff_s=0.05)
        node.load(w.p.dataset_id, w.tmp / "private.csv", w.tmp / "mock.csv")
        contract = w.api.order(w.p, w.p.product_id)
        [outcome] = until_settled(node, provider_view(w, contract, "contract.approved"))
        assert outcome.status == "delivered", outcome
        delivered_once(w, outcome)
        assert result_of(w, outcome) == served(w, outcome.computation_id,
                                               expected_scores(w.private))
        comp = w.api.call("GET", f"/computations/{outcome.computation_id}", ADMIN_TOKEN)
        assert comp["datasite"] == "tax-bureau-http"
    finally:
        site.land()


def test_the_command_line_loads_and_runs_once(w: SimpleNamespace) -> None:
    node_dir = w.tmp / "cli-node"
    env = {**os.environ, "DATALEDGER_NODE_PLATFORM_URL": w.url,
           "DATALEDGER_NODE_TOKEN": w.p.provider.token,
           "DATALEDGER_NODE_TRUST": str(w.tmp / "trust.json"),
           "DATALEDGER_NODE_DATA_DIR": str(node_dir),
           "DATALEDGER_NODE_DATASITE_PORT": "", "DATALEDGER_NODE_POLL_SECONDS": "0.3"}

    def cli(*args: str) -> list[dict[str, Any]]:
        done = subprocess.run([str(PYTHON), "-m", "compute_nodes.cli", *args], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

    [loaded] = cli("load", "--dataset", w.p.dataset_id, "--private",
                   str(w.tmp / "private.csv"), "--mock", str(w.tmp / "mock.csv"))
    assert loaded["sha256_of_private_file"] == w.loaded["sha256_of_private_file"]
    Position(node_dir / "position.json").save(w.api.events()[-1]["seq"])
    contract = w.api.order(w.p, w.p.product_id)
    time.sleep(1.2)  # a checkpoint covering the new contract gets anchored meanwhile
    mine = [o for o in cli("run", "--once") if o["contract_id"] == contract]
    assert [o["status"] for o in mine] == ["delivered"], mine
    result = w.api.call("GET", f"/deliveries/{mine[0]['computation_id']}/result",
                        w.p.demander.token)
    assert result == served(w, mine[0]["computation_id"], expected_scores(w.private))
    assert json.loads((node_dir / "position.json").read_text())["seq"] >= mine[0]["seq"]


def test_inputs_the_provider_does_not_own_are_not_its_computation(w: SimpleNamespace) -> None:
    """A provider that is no party to the contract (and owns no input) does nothing."""
    other = w.api.onboard("provider", "Power grid 电网公司", code="PG")
    contract = w.api.order(w.p, w.p.product_id)
    event = provider_view(w, contract, "contract.approved")
    node = ComputeNode(w.url, other.token, (w.admin, w.runner, w.site_name), w.trust,
                       w.sandbox)
    [outcome] = node.handle(event)
    assert outcome.status == "ignored" and outcome.settled, outcome
    assert w.api.computations(contract) == []


PER_FIRM = '''def per_firm(data):
    return [{"uscc": str(u), "seen": 1} for u in sorted(data["uscc"])]
'''


def test_each_party_provider_runs_its_own_computation_over_its_own_inputs(
        w: SimpleNamespace) -> None:
    api, p = w.api, w.p
    grid = api.onboard("provider", "Power grid 电网公司", code="GR")
    arrears = api.call("POST", "/datasets", grid.token, 201, json={
        "name": "Electricity arrears", "description": "per enterprise",
        "source_system": "grid-billing", "classification": "L3",
        "fields": LOAN_FIELDS})["dataset_id"]
    api.call("POST", f"/datasets/{arrears}/publication", grid.token)
    inputs = [{"dataset_id": p.dataset_id, "fields": USED},
              {"dataset_id": arrears, "fields": LOAN_USED}]
    scenario = api.call("POST", "/scenarios", p.operator.token, 201, json={
        "title": "SME credit with arrears", "purpose": "score small firms for loans",
        "sector": "finance", "requested": inputs,
        "circulation_mode": "ciphertext"})["scenario_id"]
    api.call("POST", f"/scenarios/{scenario}/opinions", p.expert, 201,
             json={"verdict": "approve", "comment": "proportionate"})
    api.call("POST", f"/scenarios/{scenario}/decision", api.regulator,
             json={"approve": True, "comment": "approved"})
    two = SimpleNamespace(**{**vars(p), "scenario_id": scenario})
    auth_tax = api.grant(two, datasets=inputs[:1])
    auth_grid = api.grant(SimpleNamespace(**{**vars(two), "provider": grid}),
                          datasets=inputs[1:])
    product = api.call("POST", "/products", p.operator.token, 201, json={
        "scenario_id": scenario, "authorization_ids": [auth_tax, auth_grid],
        "name": "firms seen by each provider", "kind": "api", "code": PER_FIRM,
        "inputs": inputs, "output_schema": {"type": "array"}, "price_fen": 100,
        "developer_id": p.developer.id})["product_id"]
    api.call("POST", f"/products/{product}/listing-request", p.operator.token)
    api.call("POST", f"/products/{product}/listing-decision", api.platform,
             json={"approve": True, "comment": "ok"})
    contract = api.order(p, product, approve=False)
    api.call("POST", f"/orders/{contract}/contract/approvals", grid)
    api.approve(p, contract)

    site = datasite.launch("grid-node", data_dir=w.tmp / "grid-datasite", reset=True,
                           admin_password="grid-admin-1")
    try:
        admin = site.admin()
        runner = datasite.data_scientist(site, admin, "node@grid.example", "grid-pass-1")
        grid_node = ComputeNode(w.url, grid.token, (admin, runner, "grid-node"), w.trust,
                                w.sandbox)
        grid_loaded = grid_node.load(arrears, w.tmp / "loans.csv", w.tmp / "loans-mock.csv")
        seq = api.event(contract, "contract.approved")["seq"]
        outcomes = {}
        for name, node, token in (("tax", w.node(), p.provider.token),
                                  ("grid", grid_node, grid.token)):
            event = api.call("GET", f"/ledger/events/{seq}", token)
            [outcomes[name]] = until_settled(node, event)
            assert outcomes[name].status == "delivered", outcomes[name]
    finally:
        site.land()
    assert outcomes["tax"].computation_id != outcomes["grid"].computation_id
    for name, dataset, digest, table in (
            ("tax", p.dataset_id, w.loaded["sha256_of_private_file"], w.private),
            ("grid", arrears, grid_loaded["sha256_of_private_file"], w.loans)):
        requested, succeeded, _ = delivered_once(w, outcomes[name])
        assert requested["payload"]["dataset_ids"] == [dataset]
        assert succeeded["payload"]["input_hashes"] == {dataset: digest}
        assert result_of(w, outcomes[name]) == [
            {"uscc": u, "seen": 1} for u in sorted(table["uscc"])]


# The code fails on a private value and quotes it (as Python's own errors do).
LEAKY = '''def leaky(data):
    return int(str(data["tax_paid_yuan"].max()) + "张三")
'''
FLOATY = '''def ratio(data):
    return [{"uscc": str(u), "ratio": int(t) / 7 + 0.01}
            for u, t in zip(data["uscc"], data["tax_paid_yuan"])]
'''


@pytest.mark.parametrize(("code", "reason"), [
    (LEAKY, ("code_failed: the product's code raised ValueError on the private data; "
             "details are in the provider's private log")),
    (FLOATY, ("result_not_reportable: a non-integral number in the result (report integers "
              "or strings)")),
])
def test_a_failure_on_private_data_records_no_private_value(
        w: SimpleNamespace, caplog: pytest.LogCaptureFixture, code: str, reason: str) -> None:
    name = code.split("(", 1)[0].removeprefix("def ")
    product = w.api.product(w.p, code, [{"dataset_id": w.p.dataset_id, "fields": USED}],
                            name=f"{name} product")
    contract = w.api.order(w.p, product)
    private_log.addHandler(caplog.handler)  # it propagates nowhere
    try:
        with caplog.at_level(logging.WARNING, logger="compute_nodes.executor"):
            [outcome] = until_settled(w.node(), provider_view(w, contract, "contract.approved"))
    finally:
        private_log.removeHandler(caplog.handler)
    assert outcome.status == "failed" and outcome.detail == reason, outcome
    recorded = w.api.event(outcome.computation_id, "computation.failed")["payload"]["reason"]
    assert recorded == reason
    top = int(w.private["tax_paid_yuan"].max())
    private = [str(top), f"{top / 7 + 0.01}"[:8]] + [
        f"{int(t) / 7 + 0.01}"[:8] for t in w.private["tax_paid_yuan"]]
    assert not [v for v in private if v in recorded]
    shown = w.api.call("GET", f"/computations/{outcome.computation_id}", w.p.demander.token)
    assert "张三" not in json.dumps(shown, ensure_ascii=False)
    # the details stay in the provider's private log, out of the node's output
    detail = f"{top}张三" if code is LEAKY else "non-integral number"
    kept = "\n".join(r.getMessage() for r in caplog.records if r.name == private_log.name)
    shown_log = "\n".join(r.getMessage() for r in caplog.records if r.name != private_log.name)
    assert detail in kept
    assert not [v for v in private if v in shown_log] and "张三" not in shown_log


# -- JetStream messages are notifications; a 404 is final only once the read models are past --


class Acks:
    """A stand-in for the JetStream follower: records what was acknowledged."""

    def __init__(self) -> None:
        self.acked: list[Any] = []

    def ack(self, msg: Any) -> None:
        self.acked.append(msg)


def message(seq: int, type_name: str, originator: str, payload: dict[str, Any]) -> Any:
    record = {"id": originator, "payload": payload, "seq": seq, "type": type_name,
              "version": 1}
    data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return SimpleNamespace(data=data, subject=f"ledger.{type_name}",
                           headers={"Dataledger-Seq": str(seq)})


class Recording(httpx.BaseTransport):
    """The real platform, every request path noted; ``hide`` answers some 404 instead, and
    then /health says the read models are not there yet (``lag`` times)."""

    def __init__(self, hide: Callable[[httpx.Request], bool] = lambda r: False,
                 lag: int = 0, behind: int = 0) -> None:
        self.inner = httpx.HTTPTransport()
        self.paths: list[str] = []
        self.hide, self.lag, self.behind = hide, lag, behind

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if self.lag > 0 and self.hide(request):
            return httpx.Response(404, json={"error": "not_found", "detail": "not yet"})
        if request.url.path == "/health" and self.lag > 0:
            self.lag -= 1
            return httpx.Response(200, json={"status": "ok", "head": self.behind + 5,
                                             "projected": self.behind})
        return self.inner.handle_request(request)


def test_a_jetstream_message_is_only_a_notification_of_its_seq(w: SimpleNamespace) -> None:
    contract = w.api.order(w.p, w.p.product_id)
    approved = w.api.event(contract, "contract.approved")["seq"]
    time.sleep(1.2)  # anchored meanwhile
    # a message whose bytes say something else than the log: the node acts on the log's event
    forged = message(approved, "contract.query_submitted", contract,
                     {"execution": 7, "query": {"field": "uscc", "values": ["x"]}})
    transport = Recording()
    node = w.node(http=httpx.Client(base_url=w.url, timeout=30, transport=transport))
    acks, seen, stop = Acks(), [], threading.Event()
    assert consume(node, forged, acks, stop, 0.2, seen.append) == approved
    assert [(o.status, o.execution, o.event_type) for o in seen] == [
        ("delivered", 1, "contract.approved")], seen
    assert acks.acked == [forged] and f"/ledger/events/{approved}" in transport.paths
    assert result_of(w, seen[0]) == served(w, seen[0].computation_id,
                                           expected_scores(w.private))

    # an event this provider may not see (another tenant's) is acknowledged and skipped
    hidden = next(e["seq"] for e in w.api.events()
                  if w.api.http.get(f"/ledger/events/{e['seq']}", headers={
                      "Authorization": f"Bearer {w.p.provider.token}"}).status_code == 404)
    other = message(hidden, "contract.approved", "someone-else", {})
    transport.paths.clear()
    assert consume(node, other, acks, stop, 0.2, seen.append) == hidden
    assert acks.acked[-1] is other and len(seen) == 1
    assert not [p for p in transport.paths if p.startswith(("/orders", "/computations"))]
    # a message that names no seq
    junk = SimpleNamespace(data=b"\xff", subject="ledger.contract.approved", headers=None)
    assert consume(node, junk, acks, stop, 0.2, seen.append) == 0 and acks.acked[-1] is junk


def test_a_404_while_the_read_models_lag_is_looked_at_again_not_ignored(
        w: SimpleNamespace) -> None:
    contract = w.api.order(w.p, w.p.product_id)
    approved = w.api.event(contract, "contract.approved")["seq"]
    time.sleep(1.2)

    def order(request: httpx.Request) -> bool:
        return request.url.path == f"/orders/{contract}"

    event = provider_view(w, contract, "contract.approved")
    lagging = Recording(hide=order, lag=1, behind=approved - 1)
    node = w.node(http=httpx.Client(base_url=w.url, timeout=30, transport=lagging))
    [outcome] = node.handle(event)
    assert outcome.status == "lagging" and not outcome.settled, outcome
    assert w.api.computations(contract) == []
    # read models past the event and still 404: not this provider's
    past = Recording(hide=order, lag=10**6, behind=approved)  # projected = the event's seq
    [ignored] = w.node(http=httpx.Client(base_url=w.url, transport=past)).handle(event)
    assert ignored.status == "ignored" and ignored.settled, ignored

    # JetStream: GET /ledger/events/{seq} 404 while lagging is asked again, then acted on
    def listed(request: httpx.Request) -> bool:
        return request.url.path == f"/ledger/events/{approved}"

    waiting = Recording(hide=listed, lag=3, behind=approved - 1)
    node = w.node(http=httpx.Client(base_url=w.url, timeout=30, transport=waiting))
    acks, seen = Acks(), []
    msg = message(approved, "contract.approved", contract, {})
    assert consume(node, msg, acks, threading.Event(), 0.2, seen.append) == approved
    assert waiting.paths.count(f"/ledger/events/{approved}") >= 3
    assert [o.status for o in seen] == ["delivered"] and acks.acked == [msg]


def test_follow_http_reads_on_past_pages_with_nothing_for_this_provider(
        w: SimpleNamespace, tmp_path: Any) -> None:
    start = w.api.events()[-1]["seq"]
    for i in range(3):  # events of other participants: nothing this provider sees
        w.api.onboard("demander", f"Rural bank {i} 农商行", code=f"Z{i}")
    target = w.api.events()[-1]["seq"]
    assert target - start >= 3
    unseen = w.api.call("GET", f"/ledger/events?after={start}&limit=1000", w.p.provider.token)
    assert unseen["events"] == []
    node = w.node()

    # --once returns only once caught up with the head, one event a page
    path = tmp_path / "once.json"
    Position(path).save(start)
    began = time.monotonic()
    assert node.follow_http(path, once=True, page=1, poll_s=60) >= target
    assert time.monotonic() - began < 20

    # following: no poll pause between pages while behind the head
    path = tmp_path / "follow.json"
    Position(path).save(start)
    stop = threading.Event()
    follower = threading.Thread(target=node.follow_http, args=(path,),
                                kwargs={"stop": stop, "page": 1, "poll_s": 60})
    follower.start()
    try:
        deadline = time.monotonic() + 20
        while Position(path).seq < target:
            assert time.monotonic() < deadline, Position(path).seq
            time.sleep(0.1)
    finally:
        stop.set()
        follower.join(timeout=30)
    assert not follower.is_alive()
