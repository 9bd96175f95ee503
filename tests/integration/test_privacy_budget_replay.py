"""``dataledger audit replay --database`` over a log holding differential privacy's budget
(SQLite file and PostgreSQL schema): a dp product's executions spent (``privacy.budget_spent``)
and one refused past the budget; every step passes, the business rules, the per-actor index
and the read models (``rm_privacy_spent`` rebuilt in a scratch database and compared)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from runtime.build import build
from runtime.settings import Settings
from tests.e2e.conftest import ADMIN_TOKEN, World, build_chain
from tests.e2e.test_computations_api import QUERY, ask
from tests.e2e.test_privacy_budget import dp_product
from tests.e2e.test_usage_controls import contract, delivered, policy
from tests.integration.test_audit_replay import audit


def test_a_log_with_budget_spent_and_refused_replays_with_its_read_models(
        database_url: str, tmp_path: Path) -> None:
    data = tmp_path / "var"
    url = (f"sqlite:///{data / 'ledger.db'}" if database_url.startswith("sqlite")
           else database_url)
    container = build(Settings(data_dir=data, database_url=url, admin_token=ADMIN_TOKEN,
                               checkpoint_every_seconds=0.2, checkpoint_every_leaves=8))
    try:
        with TestClient(create_app(container=container), raise_server_exceptions=False) as tc:
            world = World(tc)
            chain = build_chain(world)
            oid = contract(world, chain, policy(privacy_budget="1"), dp_product(world, chain))
            delivered(world, chain, oid)
            for _ in (2, 3):
                world.call("POST", f"/orders/{oid}/queries", chain.demander, 201,
                           json={"query": QUERY})
            delivered(world, chain, oid, execution=2)
            refused = world.call("POST", "/computations", chain.provider, 201,
                                 json=ask(oid, 3))
            assert refused["state"] == "failed"
            head = int(tc.get("/health").json()["head"])
            assert container.chain is not None
            assert container.chain.wait_anchored(head, timeout=60) is not None
            assert container.runner.wait_for(head, timeout=30)
            trust = tmp_path / "trust.json"
            trust.write_text(json.dumps(container.chain.trust_document()))
    finally:
        container.close()
    report = tmp_path / "report.json"
    out = audit("--database", url, "--data-dir", str(data), "--trust", str(trust),
                "--json", str(report), "--quiet")
    assert out.returncode == 0, out.stdout + out.stderr
    found = json.loads(report.read_text())
    status = {s["name"]: s["status"] for s in found["steps"]}
    assert status["business rules"] == "passed" and status["read models"] == "passed"
    assert status["index"] == "passed", status
    assert found["events"] == head
    assert found["events_per_type"]["privacy.budget_spent"] == 2
