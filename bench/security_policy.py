"""``policy``, a part of ``dataledger bench security``: the usage-control evaluation of one
access to a delivered result when the contract already has 10,000 accesses.

An access is decided on the contract's counters as the read model holds them (one indexed
row, ``projections.usage.meter``) and the aggregates the decision reads (the computation,
the order, the product, its authorizations and datasets, through the stream cache); it
never replays the usage stream. Measured on the real store and read models (SQLite by
default): a market is set up over HTTP in process (signed decisions, as the clients make
them), a delivery made, 10,000 ``delivery.accessed`` events appended to the contract's
usage stream and projected; then

- ``evaluate``: read the counters from the read model and apply every control to one
  download, the aggregates it reads already in the stream cache (nothing is committed),
  per access (goal: under 1 ms);
- ``decide``: the same on a fresh read of those aggregates from the store, as a command
  decides (each stream is asked for newer events: a query per aggregate);
- ``replay``: what a replay of the usage stream would cost instead (the baseline);
- ``access``: one whole download over HTTP (decided, committed, projected, the bytes
  served), for scale.

``measure_policy(backend, quick)`` measures (a dict, as it goes to the JSON) and
``policy_rows(backend, result)`` makes its table rows (:class:`bench.table.Row`);
``policy_table(backend, quick)`` does both (the rows as JSON).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.app import create_app
from bench.databases import Scratch
from bench.table import Row, summary
from client.market import Market
from client.platform import Party, Platform
from domain.application import Batch, StoreUnitOfWork, Streams
from domain.base import Actor, Context
from domain.delivery import access_result
from domain.usage import Meter, Usage, usage_id
from projections import usage as usage_q
from runtime.build import Container, build
from runtime.settings import Settings

ADMIN_TOKEN = "dl_bench_policy_admin_token_0123456789"
GOAL_MS = 1.0
FIELDS = [{"name": "uscc", "type": "string", "sensitivity": "public"},
          {"name": "tax_paid", "type": "integer", "sensitivity": "sensitive"}]
USED = ["uscc", "tax_paid"]
CODE = "def run(rows):\n    return [{'uscc': r['uscc'], 'points': 1} for r in rows]\n"
SPLIT = {"developer": 0, "operator": 4000, "platform": 1000, "provider": 5000}
BATCH = 500


@contextmanager
def _server(database_url: str, data_dir: Path) -> Iterator[tuple[Container, TestClient]]:
    container = build(Settings(data_dir=data_dir, database_url=database_url,
                               admin_token=ADMIN_TOKEN, compute_node="false",
                               background_process=False))
    try:
        with TestClient(create_app(container=container)) as client:
            yield container, client
    finally:
        container.close()


def _delivery(api: Platform, market: Market) -> tuple[str, str, Party]:
    """A market with one delivered result: (contract id, delivery id, the demander)."""
    provider = market.onboard("provider", "Tax bureau")
    operator = market.onboard("operator", "Data operator")
    demander = market.onboard("demander", "City bank")
    expert = api.add_member(market.regulator, "expert", ["expert"])
    ds = api.register_dataset(provider, name="tax", description="per firm",
                              source_system="tax-core", fields=FIELDS)
    api.publish_dataset(provider, ds)
    requested = [{"dataset_id": ds, "fields": USED}]
    sc = api.propose_scenario(operator, title="credit", purpose="score firms",
                              sector="finance", requested=requested)
    api.give_opinion(expert, sc, "approve", "proportionate")
    api.decide_scenario(market.regulator, sc, "approved")
    now = datetime.now(UTC)
    auth = api.authorize(provider, sc, requested, (now - timedelta(days=1),
                                                   now + timedelta(days=365)),
                         {"processing_count": 100})
    product = api.list_product(operator, market.platform, {
        "scenario_id": sc, "authorization_ids": [auth], "name": "points", "kind": "api",
        "description": "points per firm", "code": CODE, "inputs": requested,
        "output_schema": {"type": "array", "items": {"type": "object", "properties": {
            "uscc": {"type": "string"}, "points": {"type": "integer"}}}},
        "key_column": "uscc", "quality_report": "n/a", "price_fen": 1})
    oid = api.place_order(demander, product, "credit decisions")
    api.propose_contract(operator, oid, usage_policy={
        "processing_count": 1, "download_count": 10_000_000, "view_count": 10,
        "not_before": (now - timedelta(minutes=1)).isoformat(),
        "not_after": (now + timedelta(days=90)).isoformat(),
        "circulation_modes": ["plaintext"]}, price_fen=1, revenue_split=SPLIT)
    api.accept_contract(demander, oid)
    api.approve_contract(provider, oid)
    api.approve_contract(operator, oid)
    made = api.call("POST", "/computations", provider, 201, json={
        "contract_id": oid, "execution": 1, "datasite": "site",
        "code_sha256": hashlib.sha256(CODE.encode()).hexdigest()})
    cid = str(made["computation_id"])
    api.call("POST", f"/computations/{cid}/result", provider, json={
        "result": [{"uscc": "A", "points": 1}], "result_rows": 1, "datasite": "site",
        "input_hashes": {ds: hashlib.sha256(b"tax").hexdigest()}})
    return oid, cid, demander


def _earlier_accesses(container: Container, oid: str, cid: str, actor: Actor,
                      count: int) -> None:
    """``count`` downloads appended to the contract's usage stream (in batches, as many
    commands would have), then projected."""
    usage = Usage.at(oid, Meter())
    ctx = Context(actor, datetime.now(UTC).isoformat().replace("+00:00", "Z"))
    for start in range(0, count, BATCH):
        for _ in range(min(BATCH, count - start)):
            usage.access(ctx, computation_id=cid, kind="download", counted=True)
        events = usage.collect()
        container.ledger.committer.commit(events, Batch(len(events), None, {}))
    container.runner.catch_up()


class _CachedUnitOfWork(StoreUnitOfWork):
    """Aggregates from the stream cache as it stands (read from the store once)."""

    def __init__(self, streams: Streams) -> None:
        super().__init__(streams)
        self.cache = streams

    def _load(self, cls: Any, id: str) -> Any:
        events = self.cache.cached(id) or self.cache.load(id)
        if not events or type(events[0]) not in cls._evolvers:
            return None
        return cls.replay(id, events)


def _timed(op: Callable[[], Any], n: int) -> list[float]:
    """Milliseconds per call of ``op``, ``n`` calls (after a few to warm up)."""
    for _ in range(min(20, n)):
        op()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        op()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def measure_policy(backend: str = "sqlite", quick: bool = False,
                   accesses: int = 10_000) -> dict[str, Any]:
    """Set up, add ``accesses`` earlier accesses, and time evaluate / replay / access."""
    scratch = Scratch(backend, "dataledger-bench-policy-")
    notes: list[str] = []
    try:
        with _server(scratch.database_url("policy"), Path(tempfile.mkdtemp(
                dir=scratch.tmp, prefix="var-"))) as (container, client):
            api = Platform(client)
            market = Market(api, ADMIN_TOKEN, "Data bureau")
            oid, cid, demander = _delivery(api, market)
            actor = Actor(demander.participant_id, demander.member_id, "demander",
                          ("admin",))
            _earlier_accesses(container, oid, cid, actor, accesses)
            ledger = container.ledger

            def decide(uow: StoreUnitOfWork) -> None:
                with container.engine.connect() as conn:
                    meter = usage_q.meter(conn, oid)
                body = access_result(uow, Context(actor, ledger.clock()), cid,
                                     kind="download", meter=meter)
                assert body["allowed"], body

            with container.engine.connect() as conn:
                counted = usage_q.meter(conn, oid)
            assert counted.downloads >= accesses, counted
            # a fresh read first: the stream cache then holds every stream as it stands
            decided = _timed(lambda: decide(StoreUnitOfWork(ledger.streams)),
                             100 if quick else 1000)
            evaluated = _timed(lambda: decide(_CachedUnitOfWork(ledger.streams)),
                               300 if quick else 3000)
            replayed = _timed(lambda: Usage.replay(usage_id(oid),
                                                   container.store.load(usage_id(oid))),
                              3 if quick else 10)
            downloads = _timed(lambda: api.delivery(demander, cid), 20 if quick else 200)
            return {"backend": backend, "accesses": accesses, "meter": vars(counted),
                    "evaluate_ms": summary(evaluated), "decide_ms": summary(decided),
                    "replay_ms": summary(replayed),
                    "access_ms": summary(downloads), "notes": notes}
    finally:
        scratch.cleanup(notes)


def policy_rows(backend: str, result: dict[str, Any]) -> list[Row]:
    """The table rows of one :func:`measure_policy` result."""
    n = result["accesses"]
    evaluate, replay = result["evaluate_ms"], result["replay_ms"]
    p50 = evaluate["p50"]
    rows = [
        Row(backend, "policy.evaluate", f"policy evaluation per access, {n:,} earlier "
            "accesses (p50; counters from the read model)", f"{p50:.3f} ms",
            f"{replay['p50']:.1f} ms (replay)", f"{p50 / replay['p50']:.4f}",
            f"< {GOAL_MS:g} ms", p50 < GOAL_MS, {"evaluate_ms": evaluate}),
        Row(backend, "policy.evaluate.p95", "policy evaluation per access (p95)",
            f"{evaluate['p95']:.3f} ms", data={"evaluate_ms": evaluate}),
        Row(backend, "policy.decide", "the access decided on a fresh read of its aggregates "
            "from the store, p50", f"{result['decide_ms']['p50']:.3f} ms",
            data={"decide_ms": result["decide_ms"]}),
        Row(backend, "policy.replay", f"replay of the usage stream ({n:,} events), p50",
            f"{replay['p50']:.1f} ms", data={"replay_ms": replay}),
        Row(backend, "policy.access", "one download over HTTP, in process (decide, commit, "
            "project, serve), p50", f"{result['access_ms']['p50']:.2f} ms",
            data={"access_ms": result["access_ms"]}),
    ]
    return rows


def policy_table(backend: str = "sqlite", quick: bool = False) -> list[dict[str, Any]]:
    """``dataledger bench security``'s ``policy`` part: measured, as table rows (JSON)."""
    return [r.as_json() for r in policy_rows(backend, measure_policy(backend, quick))]


if __name__ == "__main__":  # a quick look: python -m bench.security_policy
    from bench.table import format_rows

    print(format_rows(policy_table(quick=True)))
