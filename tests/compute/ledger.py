"""Shared by the compute-node tests: a REAL ledger server (``dataledger serve`` from the
server's venv, as a subprocess), the parties over HTTP, a listed market, a node factory.

Each test module starts its own server and datasite once (module-scoped fixtures).
"""

from __future__ import annotations

import contextlib
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

import pandas as pd

from client.market import Market
from client.platform import Party, Platform

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / ".venv" / "bin" / "dataledger"
PYTHON = ROOT / ".venv-compute" / "bin" / "python"
ADMIN_TOKEN = "dl_worker_test_admin_token_0123456789"
NATS_URL = "nats://127.0.0.1:4222"

FIELDS = [{"name": "uscc", "type": "string", "sensitivity": "public"},
          {"name": "industry", "type": "string", "sensitivity": "public"},
          {"name": "tax_paid_yuan", "type": "integer", "sensitivity": "sensitive"},
          {"name": "power_kwh", "type": "integer", "sensitivity": "sensitive"}]
USED = ["uscc", "tax_paid_yuan", "power_kwh"]
LOAN_FIELDS = [{"name": "uscc", "type": "string", "sensitivity": "public"},
               {"name": "overdue_days", "type": "integer", "sensitivity": "sensitive"}]
LOAN_USED = ["uscc", "overdue_days"]
PRIVATE_COLUMNS = {"industry", "tax_paid_yuan", "power_kwh", "overdue_days"}
#: what SCORE and JOINED return: a row per enterprise, keyed by its credit code (the key
#: column a query names)
OUTPUT_SCHEMA = {"type": "array", "items": {"properties": {
    "uscc": {"type": "string"}, "score": {"type": "integer"}}}}

# The single-input product's registered code: a small per-enterprise score table.
SCORE = '''def score(data):
    table = data.sort_values("uscc")
    points = table["tax_paid_yuan"] // 10000 + table["power_kwh"] // 20000
    return [{"uscc": str(u), "score": int(p)} for u, p in zip(table["uscc"], points)]
'''

# The two-input product: the tax table and the loan table, bound by position.
JOINED = '''def joined(tax, loans):
    table = tax.merge(loans, on="uscc").sort_values("uscc")
    points = table["tax_paid_yuan"] // 10000 - table["overdue_days"]
    return [{"uscc": str(u), "score": int(p)} for u, p in zip(table["uscc"], points)]
'''


def expected_scores(private: pd.DataFrame) -> list[dict[str, Any]]:
    """SCORE computed directly with pandas on the private table."""
    table = private.sort_values("uscc")
    points = table["tax_paid_yuan"] // 10000 + table["power_kwh"] // 20000
    return [{"uscc": u, "score": int(p)} for u, p in zip(table["uscc"], points, strict=True)]


def served(w: SimpleNamespace, computation_id: str, rows: Any) -> Any:
    """``rows`` as the demander is served them (``GET /deliveries/{id}/result``): marked for
    that delivery under the test server's watermark key (privacy/watermark.py)."""
    from privacy.watermark import load_or_create_key, mark_rows

    return mark_rows(rows, load_or_create_key(w.tmp / "ledger"), computation_id)[0]


def expected_joined(tax: pd.DataFrame, loans: pd.DataFrame) -> list[dict[str, Any]]:
    table = tax.merge(loans, on="uscc").sort_values("uscc")
    points = table["tax_paid_yuan"] // 10000 - table["overdue_days"]
    return [{"uscc": u, "score": int(p)} for u, p in zip(table["uscc"], points, strict=True)]


def loans_for(tax: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A loan table over most of the enterprises of ``tax``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    keep = tax["uscc"].iloc[: max(1, len(tax) * 3 // 4)]
    return pd.DataFrame({"uscc": keep.to_list(),
                         "overdue_days": rng.integers(0, 90, len(keep)).tolist()})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nats_up(host: str = "127.0.0.1", port: int = 4222) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def ledger_server(tmp: Path, **env_extra: str) -> Iterator[str]:
    """``dataledger serve`` on a free loopback port (no embedded compute node); its URL."""
    port = free_port()
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(tmp / "ledger"),
           "DATALEDGER_ADMIN_TOKEN": ADMIN_TOKEN, "DATALEDGER_CHECKPOINT_EVERY_SECONDS": "0.5",
           "DATALEDGER_COMPUTE_NODE": "false", **env_extra}
    env.pop("VIRTUAL_ENV", None)
    log_path = tmp / "server.log"
    with log_path.open("wb") as log_file:
        server = subprocess.Popen([str(SERVER), "serve", "--port", str(port)], env=env,
                                  stdout=log_file, stderr=subprocess.STDOUT, cwd=tmp)
        try:
            url = f"http://127.0.0.1:{port}"
            with Platform.at(url) as probe:
                up = probe.wait_until_up(30, alive=lambda: server.poll() is None)
            assert server.poll() is None, log_path.read_text()
            assert up, "server did not start"
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)


class Api(Market):
    """The platform operator and the regulator of a test's server, and the parties' steps
    through a market, over HTTP (``client``)."""

    def __init__(self, url: str) -> None:
        super().__init__(Platform.at(url), ADMIN_TOKEN, "Municipal data bureau 大数据局")
        self.url = url
        self.http = self.api.http

    def call(self, method: str, path: str, who: Party | str,
             expect: int | tuple[int, ...] = 200, **kw: Any) -> Any:
        """Any request as a party (its decisions signed) or a bare token (unsigned)."""
        return self.api.call(method, path, who, expect, **kw)

    def onboard(self, role: str, name: str, code: str = "", *,  # type: ignore[override]
                admit: bool = True) -> Party:
        """A party; ``code`` ends its credit code (one per role by default)."""
        credit_code = "91110000MA01ABCD" + (code or "E" + role[0].upper())
        return self.api.onboard(self.platform, role, name, credit_code=credit_code,
                                judge=self.judge(role) if admit else None)

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        return self.api.events(ADMIN_TOKEN, after)

    def of(self, originator: str) -> list[str]:
        """The types of the events of one aggregate, in order."""
        return [e["type"] for e in self.events() if e["originator_id"] == originator]

    def event(self, contract: str, type_name: str) -> dict[str, Any]:
        found = [e for e in self.events()
                 if e["originator_id"] == contract and e["type"] == type_name]
        assert found, f"no {type_name} of {contract}"
        return found[-1]

    def computations(self, contract: str) -> list[dict[str, Any]]:
        return self.api.computations(ADMIN_TOKEN, contract)

    def grant(self, p: SimpleNamespace, *, seconds: float = 365 * 86400,
              datasets: list[dict[str, Any]] | None = None) -> str:
        now = datetime.now(UTC)
        return self.api.authorize(
            p.provider, p.scenario_id,
            datasets or [{"dataset_id": p.dataset_id, "fields": USED},
                         {"dataset_id": p.loans_id, "fields": LOAN_USED}],
            (now - timedelta(days=1), now + timedelta(seconds=seconds)),
            {"processing_count": 100})

    def product(self, p: SimpleNamespace, code: str, inputs: list[dict[str, Any]],
                authorization: str | None = None, name: str = "SME credit score") -> str:
        return self.api.list_product(p.operator, self.platform, {
            "scenario_id": p.scenario_id, "authorization_ids": [authorization or p.auth_id],
            "name": name, "kind": "api", "description": "a score per firm", "code": code,
            "inputs": inputs, "output_schema": OUTPUT_SCHEMA, "key_column": "uscc",
            "quality_report": "AUC 0.81", "price_fen": 1_250_000,
            "developer_id": p.developer.id})

    def order(self, p: SimpleNamespace, product_id: str, *, processing_count: int = 1,
              query: dict[str, Any] | None = None, approve: bool = True) -> str:
        oid = self.api.place_order(p.demander, product_id, "credit decisions on SMEs", query)
        now = datetime.now(UTC)
        self.api.propose_contract(p.operator, oid, usage_policy={
            "processing_count": processing_count,
            "not_before": (now - timedelta(minutes=1)).isoformat(),
            "not_after": (now + timedelta(days=90)).isoformat(),
            "circulation_modes": ["plaintext"]}, price_fen=1_000_000, revenue_split={
            "developer": 1000, "operator": 3000, "platform": 1000, "provider": 5000})
        self.api.accept_contract(p.demander, oid)
        if approve:
            self.approve(p, oid)
        return oid

    def approve(self, p: SimpleNamespace, oid: str) -> None:
        self.api.approve_contract(p.provider, oid)
        self.api.approve_contract(p.operator, oid)

    def submit_query(self, p: SimpleNamespace, oid: str, query: dict[str, Any]) -> Any:
        return self.api.submit_query(p.demander, oid, query, (200, 201))


def build_market(api: Api) -> SimpleNamespace:
    """provider (two datasets) → scenario → authorization → two listed products."""
    p = SimpleNamespace(provider=api.onboard("provider", "Tax bureau 税务局"),
                        operator=api.onboard("operator", "Data operator 数据运营公司"),
                        developer=api.onboard("developer", "Model studio 模型工作室"),
                        demander=api.onboard("demander", "City bank 城市商业银行"))
    p.expert = api.api.add_member(api.regulator, "expert 专家", ["expert"])
    ids = []
    for name, fields in (("Enterprise tax and power", FIELDS), ("Enterprise loans", LOAN_FIELDS)):
        ds = api.api.register_dataset(p.provider, name=name, description="per enterprise",
                                      source_system="tax-core", fields=fields)
        api.api.publish_dataset(p.provider, ds)
        ids.append(ds)
    p.dataset_id, p.loans_id = ids
    p.scenario_id = api.api.propose_scenario(
        p.operator, title="SME credit scoring", purpose="score small firms for loans",
        sector="finance", requested=[{"dataset_id": p.dataset_id, "fields": USED},
                                     {"dataset_id": p.loans_id, "fields": LOAN_USED}])
    api.api.give_opinion(p.expert, p.scenario_id, "approve", "proportionate")
    api.api.decide_scenario(api.regulator, p.scenario_id, "approved")
    p.auth_id = api.grant(p)
    p.product_id = api.product(p, SCORE, [{"dataset_id": p.dataset_id, "fields": USED}])
    p.joined_id = api.product(p, JOINED, [{"dataset_id": p.dataset_id, "fields": USED},
                                          {"dataset_id": p.loans_id, "fields": LOAN_USED}],
                              name="SME score with loans")
    return p


def world(tmp: Path, url: str, *, datasite_port: int | None = None,
          site_name: str = "tax-bureau-node") -> SimpleNamespace:
    """The market, the trust file, the private and mock tables, a datasite with both
    datasets loaded through a node, and ``w.node()`` making more nodes on that datasite.
    The caller lands ``w.site``."""
    from compute_nodes import datasite
    from compute_nodes.node import ComputeNode
    from compute_nodes.sandbox import Sandbox
    from compute_nodes.trust import Trust
    from tests.compute.test_datasite import enterprises

    api = Api(url)
    parties = build_market(api)
    trust = api.api.witnesses(ADMIN_TOKEN)
    (tmp / "trust.json").write_text(json.dumps(trust))
    private, mock = enterprises(20, seed=3), enterprises(8, seed=4)
    loans, loans_mock = loans_for(private, 5), loans_for(mock, 6)
    for name, table in (("private", private), ("mock", mock), ("loans", loans),
                        ("loans-mock", loans_mock)):
        table.to_csv(tmp / f"{name}.csv", index=False)
    site = datasite.launch(site_name, port=datasite_port, data_dir=tmp / "datasite", reset=True,
                           admin_password="admin-pass-1")
    try:
        admin = site.admin()
        runner = datasite.data_scientist(site, admin, "node@tax.example", "node-pass-1")

        sandbox = Sandbox(hide=[tmp / "datasite"])

        def node(trusted: Any = None, **kw: Any) -> ComputeNode:
            return ComputeNode(url, parties.provider.token, (admin, runner, site_name),
                               trusted or Trust.from_file(tmp / "trust.json"), sandbox,
                               backoff_s=0.05, **kw)

        first = node()
        loaded = first.load(parties.dataset_id, tmp / "private.csv", tmp / "mock.csv")
        loaded_loans = first.load(parties.loans_id, tmp / "loans.csv", tmp / "loans-mock.csv")
    except BaseException:
        with contextlib.suppress(NameError):
            sandbox.close()
        site.land()
        raise
    return SimpleNamespace(api=api, p=parties, trust=trust, node=node, url=url, tmp=tmp,
                           private=private, loans=loans, loaded=loaded,
                           loaded_loans=loaded_loans, site=site, admin=admin, runner=runner,
                           site_name=site_name, sandbox=sandbox)


@contextlib.contextmanager
def running_world(tmp: Path, site_name: str = "tax-bureau-node",
                  **server_env: str) -> Iterator[SimpleNamespace]:
    """A ledger server and :func:`world` on it, for a module's tests; landed afterwards."""
    with ledger_server(tmp, **server_env) as url:
        made = world(tmp, url, site_name=site_name)
        try:
            yield made
        finally:
            made.sandbox.close()
            made.site.land()


def until_settled(node: Any, event: dict[str, Any], seconds: float = 20) -> list[Any]:
    """Handle one event until it is no longer waiting for an anchored checkpoint."""
    deadline = time.monotonic() + seconds
    while True:
        outcomes = node.handle(event)
        if all(o.status != "not_anchored" for o in outcomes):
            return list(outcomes)
        assert time.monotonic() < deadline, f"never anchored: {outcomes}"
        time.sleep(0.3)


def provider_view(w: SimpleNamespace, contract: str, type_name: str) -> dict[str, Any]:
    """The contract event as the provider's node gets it (GET /ledger/events/{seq})."""
    seq = w.api.event(contract, type_name)["seq"]
    return w.api.api.event(w.p.provider, seq)
