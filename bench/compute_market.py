"""What both halves of ``dataledger bench compute`` share: how much it does (:class:`Sizes`)
and the market it builds and orders from over HTTP (``client/``): one provider, dataset,
scenario, authorization and listed product, the per-enterprise score of
tests/compute/test_node.py. Imports only the standard library, ``client`` and
``bench.table``, so that the compute venv imports it too."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.table import quantile
from client.market import Market
from client.platform import Party, Platform

#: the line the compute-venv half prints its result on
RESULT_MARK = "BENCH_COMPUTE_RESULT "

FIELDS = [{"name": "uscc", "type": "string", "sensitivity": "public"},
          {"name": "industry", "type": "string", "sensitivity": "public"},
          {"name": "tax_paid_yuan", "type": "integer", "sensitivity": "sensitive"},
          {"name": "power_kwh", "type": "integer", "sensitivity": "sensitive"}]
USED = ["uscc", "tax_paid_yuan", "power_kwh"]

#: the product's registered code (as in tests/compute/test_node.py)
SCORE = '''def score(data):
    table = data.sort_values("uscc")
    points = table["tax_paid_yuan"] // 10000 + table["power_kwh"] // 20000
    return [{"uscc": str(u), "score": int(p)} for u, p in zip(table["uscc"], points)]
'''


@dataclass(frozen=True)
class Sizes:
    """How much the compute part does."""

    rows: int               # rows of the private enterprise table
    sequential: int         # contracts approved one after another
    concurrent: int         # contracts approved at once
    baseline_runs: int      # direct pandas runs of the same function
    checkpoint_s: float = 1.0   # the server's checkpoint_every_seconds
    poll_s: float = 0.05    # follow_http: the pause after a page with no new event
    retry_s: float = 1.0    # the node's first pause before handling a not-yet-anchored
    #                         event again, doubling (compute_nodes.feeds.RETRY_S, its default)
    fetch_timeout_s: float = 1.0  # follow_nats: one pull's wait (its default)
    idle_s: float = 0.1     # pause between preparing a contract and its final approval
    watch_s: float = 0.1    # the bench's own poll of the latest anchored checkpoint
    deliver_timeout_s: float = 60.0  # at most this long per wait for deliveries
    stop_timeout_s: float = 40.0     # at most this long for a follower to stop
    node_timeout_s: float = 600.0    # the whole compute-venv subprocess


FULL = Sizes(rows=3000, sequential=5, concurrent=10, baseline_runs=30)
QUICK = Sizes(rows=1000, sequential=2, concurrent=3, baseline_runs=10,
              deliver_timeout_s=30.0, node_timeout_s=240.0)


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"n": len(values), "p50": quantile(values, 0.5), "p95": quantile(values, 0.95),
            "max": max(values), "mean": statistics.fmean(values)}


def build_market(api: Platform, admin: str) -> dict[str, Any]:
    """provider → dataset → scenario → authorization → listed product, over HTTP."""
    market = Market(api, admin, "Municipal data bureau")
    reg = market.regulator
    p = {r: market.onboard(r, n) for r, n in (
        ("provider", "Tax bureau"), ("operator", "Data operator"),
        ("developer", "Model studio"), ("demander", "City bank"))}
    expert = api.add_member(reg, "expert", ["expert"])
    ds = api.register_dataset(p["provider"], name="Enterprise tax and power",
                              description="per enterprise", source_system="tax-core",
                              classification="L3", fields=FIELDS)
    api.publish_dataset(p["provider"], ds)
    sc = api.propose_scenario(p["operator"], title="SME credit scoring",
                              purpose="score small firms for loans", sector="finance",
                              requested=[{"dataset_id": ds, "fields": USED}],
                              circulation_mode="ciphertext")
    api.give_opinion(expert, sc, "approve", "proportionate")
    api.decide_scenario(reg, sc, "approved")
    now = datetime.now(UTC)
    auth = api.authorize(p["provider"], sc, [{"dataset_id": ds, "fields": USED}],
                         (now - timedelta(days=1), now + timedelta(days=365)),
                         {"processing_count": 1000})
    product = api.list_product(p["operator"], market.platform, {
        "scenario_id": sc, "authorization_ids": [auth], "name": "SME credit score",
        "kind": "api", "description": "a score per firm", "code": SCORE,
        "inputs": [{"dataset_id": ds, "fields": USED}],
        "output_schema": {"type": "array"}, "quality_report": "AUC 0.81",
        "price_fen": 1_250_000, "developer_id": p["developer"].id})
    return {"dataset_id": str(ds), "product_id": str(product),
            "tokens": {r: party.token for r, party in p.items()},
            "parties": {r: party.wire() for r, party in p.items()}}  # with their keys


def parties(cfg: dict[str, Any]) -> dict[str, Party]:
    """The market's parties, with the keys they sign their decisions with."""
    return {role: Party.of_wire(wire) for role, wire in cfg["parties"].items()}


def prepare_order(api: Platform, cfg: dict[str, Any]) -> str:
    """An order up to (not including) its final approval."""
    t = parties(cfg)
    oid = api.place_order(t["demander"], cfg["product_id"], "credit decisions on SMEs")
    now = datetime.now(UTC)
    api.propose_contract(t["operator"], oid, usage_policy={
        "processing_count": 1, "not_before": now.isoformat(),
        "not_after": (now + timedelta(days=90)).isoformat(),
        "circulation_modes": ["plaintext"]}, price_fen=1_000_000, revenue_split={
        "developer": 1000, "operator": 3000, "platform": 1000, "provider": 5000})
    api.accept_contract(t["demander"], oid)
    api.approve_contract(t["provider"], oid)
    return oid


def approve(api: Platform, cfg: dict[str, Any], oid: str) -> float:
    """The final approval (contract.approved); returns when its HTTP call returned."""
    api.approve_contract(parties(cfg)["operator"], oid)
    return time.perf_counter()
