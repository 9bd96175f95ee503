"""The seed of the audit bench's log: a small, real history made once by the real application.

The application (``runtime.build`` on a scratch SQLite file, driven over HTTP in-process by
``client``, every decision signed by its member's registered key) onboards a regulator with
an expert, an operator, a developer, three providers and ``demanders`` banks; each provider
registers, publishes and loads a dataset; the operator's scenario is reviewed and approved;
each provider authorizes its dataset for it; the operator lists a product over the three.
Then one *cycle*, the shape the synthesis repeats: the first bank orders the product with
a query, the contract is proposed, accepted, approved by the three providers and the
operator, and three executions run (each provider requests its computation, posts its
result, and the bank downloads each delivery; before executions 2 and 3 the bank submits a
query). After the platform's founding (at the real time), the ledger's clock is a fixed
one that steps a few seconds per command from the next minute on; the synthesized history
continues from its end (so it is dated in the weeks after the bench made it).
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

#: how far the grants and every contract's usage window reach after the seed starts
HORIZON = timedelta(days=2 * 365)
#: executions per contract (the contract's processing count; the grants allow more)
EXECUTIONS = 3
ADMIN_TOKEN = "dl_bench_audit_admin_0123456789abcdef"
FIELDS = {
    "market": [{"name": "uscc", "type": "string", "sensitivity": "public"},
               {"name": "years_registered", "type": "integer", "sensitivity": "public"},
               {"name": "penalties_3y", "type": "integer", "sensitivity": "internal"}],
    "tax": [{"name": "uscc", "type": "string", "sensitivity": "public"},
            {"name": "tax_rating", "type": "string", "sensitivity": "internal"},
            {"name": "tax_paid_yuan_12m", "type": "integer", "sensitivity": "sensitive"}],
    "power": [{"name": "uscc", "type": "string", "sensitivity": "public"},
              {"name": "power_kwh_12m", "type": "integer", "sensitivity": "internal"}],
}
CODE = ("def points(data):\n"
        "    return [{'uscc': str(u), 'points': 1} for u in data['uscc']]\n")
OUTPUT_SCHEMA = {"type": "array", "items": {
    "type": "object", "required": ["uscc", "points"], "additionalProperties": False,
    "properties": {"uscc": {"type": "string"}, "points": {"type": "integer"}}}}
RESULT = [{"uscc": "91310000MA1FL0001X", "points": 1}]


class SteppingClock:
    """The ledger's clock in the seed: ``start``, then ``step`` later at each call."""

    def __init__(self, start: datetime, step: timedelta) -> None:
        self.start, self.now, self.step = start, start, step

    def __call__(self) -> str:
        self.now += self.step
        return self.now.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class Seed:
    """The seed log and what the synthesis needs to extend it."""

    #: the canonical bytes of every stored event, seq 1..n
    entries: list[bytes]
    #: seqs (1-based, inclusive) of the template cycle: first, last, and the last seq of each
    #: execution (a cycle may stop after any execution)
    cycle_first: int
    cycle_last: int
    execution_ends: list[int]
    #: member id -> its private key (to sign the decisions of synthesized cycles)
    keys: dict[str, Ed25519PrivateKey]
    #: the banks: (participant id, member id, key id), the template's first
    demanders: list[tuple[str, str, str]]
    #: the providers' participant ids, in product input order
    providers: list[str]
    #: the clock's time after the seed
    end: datetime
    notes: list[str] = field(default_factory=list)


def _key_id(key: Ed25519PrivateKey) -> str:
    from core.decision import key_id, public_key_text

    return key_id(public_key_text(key.public_key()))


def make_seed(demanders: int) -> Seed:
    """Run the seed's history through the real application on a scratch SQLite file."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from client.platform import Platform
    from runtime.build import build
    from runtime.settings import Settings

    with tempfile.TemporaryDirectory(prefix="dataledger-bench-audit-seed-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "var", database_url=f"sqlite:///{tmp}/seed.db",
                            admin_token=ADMIN_TOKEN, chain=False, compute_node="false",
                            background_process=False)
        container = build(settings)
        try:
            start = (datetime.now(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0)
            container.ledger.clock = SteppingClock(start, timedelta(seconds=7))
            with TestClient(create_app(container=container)) as http:
                api = Platform(http)  # type: ignore[arg-type]
                return _history(api, demanders, container.ledger.clock)
        finally:
            container.close()


def _history(api: Any, demanders: int, clock: SteppingClock) -> Seed:
    from client.market import Market

    market = Market(api, ADMIN_TOKEN, "Municipal big data bureau 大数据局")
    operator = market.onboard("operator", "Municipal data group 数据集团")
    developer = market.onboard("developer", "Risk model studio 风控模型工作室")
    expert = api.add_member(market.regulator, "credit expert 专家", ["expert"])
    providers = {view: market.onboard("provider", f"{view} data provider") for view in FIELDS}
    banks = [market.onboard("demander", f"City bank {i + 1} 城市商业银行") for i in
             range(demanders)]
    requested, loaded = [], []
    for view, p in providers.items():
        ds = api.register_dataset(p, name=f"Enterprise {view} records",
                                  description=f"one row per enterprise ({view})",
                                  source_system=f"{view}-core", fields=FIELDS[view])
        api.publish_dataset(p, ds)
        sha = hashlib.sha256(f"{view} private table".encode()).hexdigest()
        api.call("POST", f"/datasets/{ds}/data-loaded", p, json={
            "rows": 250_000, "schema": [{"name": f["name"], "type": f["type"]}
                                         for f in FIELDS[view]], "sha256": sha, "mock_rows": 20})
        loaded.append((p, {ds: sha}))
        requested.append({"dataset_id": ds, "fields": [f["name"] for f in FIELDS[view]]})
    scenario = api.propose_scenario(operator, title="SME credit assessment 中小微企业信用评估",
                                    purpose="score small enterprises for loans 普惠金融",
                                    sector="finance", requested=requested)
    api.give_opinion(expert, scenario, "approve", "proportionate, results are scores only")
    api.decide_scenario(market.regulator, scenario, "approved 同意")
    start = clock.start
    window = (start - timedelta(days=1), start + HORIZON)
    auths = [api.authorize(p, scenario, [req], window, {"processing_count": 10})
             for p, req in zip(providers.values(), requested, strict=True)]
    product = api.list_product(operator, market.platform, {
        "scenario_id": scenario, "authorization_ids": auths, "name": "SME credit points",
        "kind": "api", "description": "partial credit points per enterprise",
        "code": CODE, "inputs": requested, "key_column": "uscc",
        "output_schema": OUTPUT_SCHEMA,
        "quality_report": "KS 0.41 on the synthetic back-test", "price_fen": 2_000_000,
        "developer_id": developer.participant_id}, comment="listed")
    first = int(api.call("GET", "/health", operator)["head"]) + 1
    ends = _cycle(api, (banks[0], operator), loaded, product, start)
    parties = [market.platform, market.regulator, operator, developer, expert,
               *providers.values(), *banks]
    events = api.events(market.regulator)
    entries = [base64.b64decode(e["canonical"]) for e in events]
    return Seed(entries=entries, cycle_first=first, cycle_last=ends[-1], execution_ends=ends,
                keys={p.member_id: p.key for p in parties if p.key is not None},
                demanders=[(b.participant_id, b.member_id, _key_id(b.key)) for b in banks],
                providers=[p.participant_id for p in providers.values()], end=clock.now)


def _cycle(api: Any, parties: tuple[Any, Any], providers: list[tuple[Any, dict[str, str]]],
           product: str, start: datetime) -> list[int]:
    """One order from placement to its last delivery; the head after each execution.
    ``parties``: the bank and the operator; ``providers``: each provider's party and the
    hash of its loaded data by dataset id."""
    bank, operator = parties
    head: Callable[[], int] = lambda: int(api.call("GET", "/health", bank)["head"])
    order = api.place_order(bank, product, "credit decisions on loan applicants 贷前审查",
                            {"field": "uscc", "values": ["91310000MA1FL0001X"]})
    api.propose_contract(operator, order, usage_policy={
        "processing_count": EXECUTIONS, "not_before": start.isoformat(),
        "not_after": (start + HORIZON).isoformat(), "circulation_modes": ["plaintext"]},
        price_fen=2_000_000, revenue_split={"developer": 1500, "operator": 2500,
                                            "platform": 1000, "provider": 5000})
    api.accept_contract(bank, order)
    for p, _ in providers:
        api.approve_contract(p, order)
    api.approve_contract(operator, order)
    code_sha = hashlib.sha256(CODE.encode()).hexdigest()
    ends = []
    for execution in range(1, EXECUTIONS + 1):
        if execution > 1:
            api.submit_query(bank, order, {"field": "uscc", "values": ["91310000MA1FL0001X"]})
        for p, hashes in providers:
            made = api.call("POST", "/computations", p, 201, json={
                "contract_id": order, "execution": execution, "datasite": f"{p.name} site",
                "code_sha256": code_sha})
            cid = made["computation_id"]
            api.call("POST", f"/computations/{cid}/result", p, json={
                "result": RESULT, "result_rows": 1, "datasite": f"{p.name} site",
                "input_hashes": hashes})
            api.call("GET", f"/deliveries/{cid}/result", bank)
        ends.append(head())
    return ends
