"""The compute node against the REAL ledger server (a ``dataledger serve`` subprocess from the
server's venv) and a real in-process PySyft 0.9.5 datasite.

Runs inside the compute venv only: ``compute_nodes/setup-env test``.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pandas as pd
import pytest

from chain.bls import WitnessKey
from compute_nodes import datasite
from compute_nodes.worker import ComputeNode, Trust
from tests.compute.test_datasite import enterprises

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / ".venv" / "bin" / "dataledger"
ADMIN_TOKEN = "dl_worker_test_admin_token_0123456789"

FIELDS = [{"name": "uscc", "type": "string", "sensitivity": "public"},
          {"name": "industry", "type": "string", "sensitivity": "public"},
          {"name": "tax_paid_yuan", "type": "integer", "sensitivity": "sensitive"},
          {"name": "power_kwh", "type": "integer", "sensitivity": "sensitive"}]
USED = ["uscc", "tax_paid_yuan", "power_kwh"]
PRIVATE_COLUMNS = {"industry", "tax_paid_yuan", "power_kwh"}

# The product's registered code: a small per-enterprise score table.
SCORE = '''def score(data):
    table = data.sort_values("uscc")
    points = table["tax_paid_yuan"] // 10000 + table["power_kwh"] // 20000
    return [{"uscc": str(u), "score": int(p)} for u, p in zip(table["uscc"], points)]
'''


def expected_scores(private: pd.DataFrame) -> list[dict[str, Any]]:
    """The same function, computed directly with pandas on the private table."""
    table = private.sort_values("uscc")
    points = table["tax_paid_yuan"] // 10000 + table["power_kwh"] // 20000
    return [{"uscc": u, "score": int(p)} for u, p in zip(table["uscc"], points, strict=True)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Api:
    """The parties, over HTTP, as in tests/e2e/setup_chain.py."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        me = self.call("GET", "/participants/me", ADMIN_TOKEN)
        self.platform = SimpleNamespace(id=me["participant"]["id"], token=ADMIN_TOKEN)
        self.regulator = self.onboard("regulator", "Municipal data bureau 大数据局")

    def call(self, method: str, path: str, token: str, expect: int = 200, **kw: Any) -> Any:
        r = self.http.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.headers.get("content-type", "").startswith("application/json") \
            else r.content

    def onboard(self, role: str, name: str) -> SimpleNamespace:
        made = self.call("POST", "/participants", ADMIN_TOKEN, 201, json={
            "name": name, "role": role, "credit_code": "91110000MA01ABCDE" + role[0].upper(),
            "admin_name": f"{role} admin"})
        party = SimpleNamespace(id=made["participant_id"], token=made["token"])
        judge = self.regulator.token if role == "operator" else ADMIN_TOKEN
        self.call("POST", f"/participants/{party.id}/admission", judge,
                  json={"approve": True, "comment": "meets the admission criteria"})
        return party

    def events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.call("GET", f"/ledger/events?after={after}&limit=1000", ADMIN_TOKEN)
            out += page["events"]
            if not page["events"]:
                return out
            after = page["next_after"]

    def approved_order(self, parties: SimpleNamespace, product_id: str) -> str:
        p = parties
        oid = self.call("POST", "/orders", p.demander.token, 201, json={
            "product_id": product_id, "purpose": "credit decisions on SMEs"})["order_id"]
        now = datetime.now(UTC)
        self.call("POST", f"/orders/{oid}/contract", p.operator.token, json={
            "usage_policy": {"processing_count": 1, "not_before": now.isoformat(),
                             "not_after": (now + timedelta(days=90)).isoformat(),
                             "circulation_modes": ["ciphertext"]},
            "price_fen": 1_000_000,
            "revenue_split": {"developer": 1000, "operator": 3000, "platform": 1000,
                              "provider": 5000}})
        self.call("POST", f"/orders/{oid}/contract/acceptance", p.demander.token)
        self.call("POST", f"/orders/{oid}/contract/approvals", p.provider.token)
        self.call("POST", f"/orders/{oid}/contract/approvals", p.operator.token)
        return str(oid)


def build_market(api: Api) -> SimpleNamespace:
    """provider → dataset → scenario → authorization → listed product; two approved orders."""
    p = SimpleNamespace(provider=api.onboard("provider", "Tax bureau 税务局"),
                        operator=api.onboard("operator", "Data operator 数据运营公司"),
                        developer=api.onboard("developer", "Model studio 模型工作室"),
                        demander=api.onboard("demander", "City bank 城市商业银行"))
    expert = api.call("POST", f"/participants/{api.regulator.id}/members", api.regulator.token,
                      201, json={"name": "expert 专家", "roles": ["expert"]})["token"]
    ds = api.call("POST", "/datasets", p.provider.token, 201, json={
        "name": "Enterprise tax and power", "description": "per enterprise",
        "source_system": "tax-core", "classification": "L3", "fields": FIELDS})["dataset_id"]
    api.call("POST", f"/datasets/{ds}/publication", p.provider.token)
    sc = api.call("POST", "/scenarios", p.operator.token, 201, json={
        "title": "SME credit scoring", "purpose": "score small firms for loans",
        "sector": "finance", "requested": [{"dataset_id": ds, "fields": USED}],
        "circulation_mode": "ciphertext"})["scenario_id"]
    api.call("POST", f"/scenarios/{sc}/opinions", expert, 201,
             json={"verdict": "approve", "comment": "proportionate"})
    api.call("POST", f"/scenarios/{sc}/decision", api.regulator.token,
             json={"approve": True, "comment": "approved"})
    now = datetime.now(UTC)
    auth = api.call("POST", "/authorizations", p.provider.token, 201, json={
        "scenario_id": sc, "datasets": [{"dataset_id": ds, "fields": USED}],
        "not_before": (now - timedelta(days=1)).isoformat(),
        "not_after": (now + timedelta(days=365)).isoformat(),
        "usage_policy": {"processing_count": 100}})["authorization_id"]
    product = api.call("POST", "/products", p.operator.token, 201, json={
        "scenario_id": sc, "authorization_ids": [auth], "name": "SME credit score",
        "kind": "api", "description": "a score per firm", "code": SCORE,
        "inputs": [{"dataset_id": ds, "fields": USED}],
        "output_schema": {"type": "array"}, "quality_report": "AUC 0.81",
        "price_fen": 1_250_000, "developer_id": p.developer.id})["product_id"]
    api.call("POST", f"/products/{product}/listing-request", p.operator.token)
    api.call("POST", f"/products/{product}/listing-decision", ADMIN_TOKEN,
             json={"approve": True, "comment": "complete and documented"})
    p.dataset_id, p.product_id = str(ds), str(product)
    p.orders = [api.approved_order(p, product), api.approved_order(p, product)]
    return p


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    tmp = tmp_path_factory.mktemp("worker")
    port = free_port()
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(tmp / "ledger"),
           "DATALEDGER_ADMIN_TOKEN": ADMIN_TOKEN, "DATALEDGER_CHECKPOINT_EVERY_SECONDS": "0.5"}
    env.pop("VIRTUAL_ENV", None)
    log_file = (tmp / "server.log").open("wb")
    server = subprocess.Popen([str(SERVER), "serve", "--port", str(port)], env=env,
                              stdout=log_file, stderr=subprocess.STDOUT, cwd=tmp)
    site = None
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp / "server.log").read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        api = Api(url)
        parties = build_market(api)
        trust = api.call("GET", "/ledger/witnesses", ADMIN_TOKEN)
        (tmp / "trust.json").write_text(json.dumps(trust))

        private, mock = enterprises(20, seed=3), enterprises(8, seed=4)
        private.to_csv(tmp / "private.csv", index=False)
        mock.to_csv(tmp / "mock.csv", index=False)
        site = datasite.launch("tax-bureau-node", data_dir=tmp / "datasite", reset=True,
                               admin_password="admin-pass-1")
        admin = site.admin()
        runner = datasite.data_scientist(site, admin, "node@tax.example", "node-pass-1")

        def node(trusted: Any) -> ComputeNode:
            return ComputeNode(url, parties.provider.token, admin, runner, "tax-bureau-node",
                               trusted, backoff_s=0.05)

        loaded = node(Trust.from_file(tmp / "trust.json")).load(
            parties.dataset_id, tmp / "private.csv", tmp / "mock.csv")
        yield SimpleNamespace(api=api, parties=parties, trust=trust, node=node, url=url,
                              private=private, loaded=loaded, tmp=tmp, admin=admin,
                              runner=runner)
    finally:
        if site is not None:
            site.land()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)
        log_file.close()


def run_until_settled(node: ComputeNode, contracts: list[str], seconds: float = 20) -> list[Any]:
    """Rounds until no contract waits for an anchored checkpoint (bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        outcomes = [o for o in node.run_once() if o.contract_id in contracts]
        if outcomes and all(o.status != "not_anchored" for o in outcomes):
            return outcomes
        assert time.monotonic() < deadline, f"never anchored: {outcomes}"
        time.sleep(0.3)


def test_data_loaded_is_recorded(world: SimpleNamespace) -> None:
    digest = world.loaded["sha256_of_private_file"]
    assert world.loaded["ledger"]["sha256"] == digest and world.loaded["rows"] == 20
    assert world.loaded["mock_rows"] == 8


def test_node_with_a_wrong_trust_file_refuses(world: SimpleNamespace) -> None:
    forged = json.loads(json.dumps(world.trust))
    other = WitnessKey.generate(forged["witnesses"][0]["name"]).published()
    forged["witnesses"][0].update(public_key=base64.b64encode(other.public_key).decode(),
                                  pop=base64.b64encode(other.pop).decode(), vkey=other.encode())
    node = world.node(forged)
    time.sleep(1.2)  # let a checkpoint cover the contracts: refused for the keys, not timing
    outcomes = node.run_once()
    assert {o.contract_id for o in outcomes} == set(world.parties.orders)
    assert {o.status for o in outcomes} == {"refused"}, outcomes
    assert "co-signature" in outcomes[0].detail
    assert world.api.call("GET", "/computations", ADMIN_TOKEN) == []


def test_node_delivers_each_contract_exactly_once(world: SimpleNamespace) -> None:
    api, parties = world.api, world.parties
    node = world.node(Trust.from_file(world.tmp / "trust.json"))
    order = api.call("GET", f"/orders/{parties.orders[0]}", parties.provider.token)
    outcomes = run_until_settled(node, parties.orders)
    assert [o.status for o in outcomes] == ["delivered", "delivered"], outcomes
    assert all(o.execution == 1 for o in outcomes)
    if order.get("approved_seq") is not None:
        assert outcomes[0].extra["approved_seq"] == order["approved_seq"]

    events = api.events()
    for outcome in outcomes:
        mine = [e for e in events if e["originator_id"] == outcome.computation_id]
        assert [e["type"] for e in mine] == [
            "computation.requested", "computation.succeeded", "delivery.made"]
        assert mine[1]["payload"]["input_hashes"] == {
            parties.dataset_id: world.loaded["sha256_of_private_file"]}
        assert mine[2]["payload"]["result_sha256"] == outcome.result_sha256

        result = api.call("GET", f"/deliveries/{outcome.computation_id}/result",
                          parties.demander.token)
        assert result == expected_scores(world.private)
        assert all(set(row) == {"uscc", "score"} for row in result)
        assert not PRIVATE_COLUMNS & {k for row in result for k in row}

    # Again, and with a fresh node (a restart): nothing runs or is written twice.
    head = len(events)
    for again in (node, world.node(Trust.from_file(world.tmp / "trust.json"))):
        second = again.run_once()
        assert {o.status for o in second} == {"skipped"}, second
    assert len(api.events()) == head


class TamperingPlatform(ComputeNode):
    """A platform that serves other code than the listed product's (the hash is its check)."""

    def _call(self, method: str, path: str, expect: Any = (200,), **kw: Any) -> httpx.Response:
        response = super()._call(method, path, expect, **kw)
        if method == "GET" and path.startswith("/products/"):
            body = response.json()
            body["code"] = body["code"].replace("// 10000", "// 1")
            return httpx.Response(200, json=body)
        return response


def failures(api: Api, computation_id: str) -> list[dict[str, Any]]:
    return [e for e in api.events()
            if e["originator_id"] == computation_id and e["type"] == "computation.failed"]


def test_code_that_differs_from_the_listed_hash_is_not_run(world: SimpleNamespace) -> None:
    api, parties = world.api, world.parties
    contract = api.approved_order(parties, parties.product_id)
    node = TamperingPlatform(world.url, parties.provider.token, world.admin, world.runner,
                             "tax-bureau-node", Trust.from_file(world.tmp / "trust.json"))
    [outcome] = run_until_settled(node, [contract])
    assert outcome.status == "failed" and outcome.detail == "code differs from the listed hash"
    [failed] = failures(api, outcome.computation_id)
    assert failed["payload"]["reason"] == "code differs from the listed hash"
    again = [o for o in node.run_once() if o.contract_id == contract]
    assert [o.status for o in again] == ["skipped"]


def test_a_datasite_outage_is_retried_then_reported_as_failed(
        world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    api, parties = world.api, world.parties
    contract = api.approved_order(parties, parties.product_id)
    attempts: list[str] = []

    def down(*args: Any, **kwargs: Any) -> str:
        attempts.append(args[4])
        raise datasite.DatasiteUnavailableError("ConnectionError: datasite is down")

    monkeypatch.setattr(datasite, "submit", down)
    node = world.node(Trust.from_file(world.tmp / "trust.json"))
    pauses: list[float] = []
    node.sleep = pauses.append
    [outcome] = run_until_settled(node, [contract])
    assert outcome.status == "failed" and "datasite is down" in outcome.detail
    assert attempts == [f"{contract}#1"] * 3 and pauses == [0.05, 0.1]
    [failed] = failures(api, outcome.computation_id)
    assert "datasite unavailable" in failed["payload"]["reason"]
    assert not [e for e in api.events() if e["type"] == "delivery.made"
                and e["originator_id"] == outcome.computation_id]


def test_the_command_line_loads_and_runs_once(world: SimpleNamespace) -> None:
    api, parties = world.api, world.parties
    contract = api.approved_order(parties, parties.product_id)
    env = {**os.environ, "DATALEDGER_NODE_PLATFORM_URL": world.url,
           "DATALEDGER_NODE_TOKEN": parties.provider.token,
           "DATALEDGER_NODE_TRUST_FILE": str(world.tmp / "trust.json"),
           "DATALEDGER_NODE_DATA_DIR": str(world.tmp / "cli-node"),
           "DATALEDGER_NODE_DATASITE_PORT": "", "DATALEDGER_NODE_POLL_SECONDS": "0.3"}
    python = str(ROOT / ".venv-compute" / "bin" / "python")

    def cli(*args: str) -> list[dict[str, Any]]:
        done = subprocess.run([python, "-m", "compute_nodes.cli", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=40, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

    [loaded] = cli("load", "--dataset", parties.dataset_id, "--private",
                   str(world.tmp / "private.csv"), "--mock", str(world.tmp / "mock.csv"))
    assert loaded["sha256_of_private_file"] == world.loaded["sha256_of_private_file"]
    time.sleep(1.2)  # a checkpoint covering the new contract gets anchored meanwhile
    mine = [o for o in cli("run", "--once") if o["contract_id"] == contract]
    assert [o["status"] for o in mine] == ["delivered"], mine
    result = api.call("GET", f"/deliveries/{mine[0]['computation_id']}/result",
                      parties.demander.token)
    assert result == expected_scores(world.private)
