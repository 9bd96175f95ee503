"""Measurement 2, end to end: ``dataledger forensics trace-leak FILE`` as the platform runs
it, over real deliveries. A server in process (``runtime.build`` and the API app, SQLite by
default) makes a market whose demanders' contracts run ``deliveries`` executions of one
product; each result is posted through ``POST /computations/{id}/result``, where the
platform watermarks it for its delivery; one demander downloads one delivery
(``GET /deliveries/{id}/result``: the marked bytes), leaks it shuffled and cut to half its
rows as CSV; then the command runs as its own process on the platform's data directory
(its imports, the runtime's build, the deliveries read from the read model, the trace,
``forensics.leak_traced`` recorded), timed from its start to its exit."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.privacy.workload import Sizes
from bench.table import Row

NOTES = [
    ("trace-leak end to end: a server in process (the API app over runtime.build, no compute "
     "node) makes the deliveries through POST /computations and its result route (where the "
     "platform marks them), 10 demanders' contracts of one product; the leaked copy is one "
     "delivery as served (GET /deliveries/{id}/result), shuffled, half its rows, CSV; timed: "
     "`python -m cli forensics trace-leak FILE --json` from its start to its exit (imports, "
     "build, the read model's deliveries, trace, forensics.leak_traced recorded); median of "
     "the repetitions"),
]
ADMIN_TOKEN = "dl_bench_privacy_admin_token_0123456789"
REPO = Path(__file__).resolve().parents[2]
KEY = "uscc"
FIELDS = [{"name": KEY, "type": "string", "sensitivity": "public"},
          {"name": "tax_paid", "type": "integer", "sensitivity": "internal"},
          {"name": "staff", "type": "integer", "sensitivity": "internal"}]
CODE = ("def run(rows):\n    return [{'uscc': r['uscc'], 'tax_paid': r['tax_paid'], "
        "'staff': r['staff']} for r in rows]\n")
OUTPUT = {"type": "array", "items": {"type": "object", "properties": {
    KEY: {"type": "string"}, "tax_paid": {"type": "integer"}, "staff": {"type": "integer"}}}}
SPLIT = {"developer": 0, "operator": 4000, "platform": 1000, "provider": 5000}
#: rows of every delivery but the leaked one (the trace reads only the leaked copy)
OTHER_ROWS = 20
DEMANDERS = 10


@contextmanager
def _server(database_url: str, data_dir: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from runtime.build import build
    from runtime.settings import Settings

    container = build(Settings(data_dir=data_dir, database_url=database_url,
                               admin_token=ADMIN_TOKEN, compute_node="false",
                               background_process=False))
    try:
        with TestClient(create_app(container=container)) as client:
            yield client
    finally:
        container.close()


def _rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{KEY: f"91310115{seed % 1000:03d}{i:07d}", "tax_paid": rng.randrange(1_000, 10**7),
             "staff": rng.randrange(16, 5_000)} for i in range(n)]


def _contracts(api: Any, market: Any, per_contract: int,
               demanders: int) -> list[tuple[str, Any, Any, str]]:
    """A product over one dataset, and ``demanders`` approved contracts of ``per_contract``
    executions each: (order id, demander, provider, dataset id)."""
    provider = market.onboard("provider", "Tax bureau")
    operator = market.onboard("operator", "Data operator")
    expert = api.add_member(market.regulator, "expert", ["expert"])
    ds = api.register_dataset(provider, name="tax", description="per firm",
                              source_system="tax-core", fields=FIELDS)
    api.publish_dataset(provider, ds)
    requested = [{"dataset_id": ds, "fields": [f["name"] for f in FIELDS]}]
    sc = api.propose_scenario(operator, title="credit", purpose="score firms",
                              sector="finance", requested=requested)
    api.give_opinion(expert, sc, "approve", "proportionate")
    api.decide_scenario(market.regulator, sc, "approved")
    now = datetime.now(UTC)
    auth = api.authorize(provider, sc, requested, (now - timedelta(days=1),
                                                   now + timedelta(days=365)),
                         {"processing_count": per_contract * demanders + 10})
    product = api.list_product(operator, market.platform, {
        "scenario_id": sc, "authorization_ids": [auth], "name": "tax", "kind": "api",
        "description": "tax per firm", "code": CODE, "inputs": requested,
        "output_schema": OUTPUT, "key_column": KEY, "quality_report": "n/a", "price_fen": 1})
    out = []
    for d in range(demanders):
        demander = market.onboard("demander", f"Bank {d}")
        oid = api.place_order(demander, product, "credit decisions")
        api.propose_contract(operator, oid, usage_policy={
            "processing_count": per_contract, "download_count": 100, "view_count": 10,
            "not_before": (now - timedelta(minutes=1)).isoformat(),
            "not_after": (now + timedelta(days=90)).isoformat(),
            "circulation_modes": ["plaintext"]}, price_fen=1, revenue_split=SPLIT)
        api.accept_contract(demander, oid)
        api.approve_contract(provider, oid)
        api.approve_contract(operator, oid)
        out.append((oid, demander, provider, ds))
    return out


def _deliver(api: Any, contract: tuple[str, Any, Any, str], execution: int,
             rows: list[dict[str, Any]]) -> str:
    """Execution ``execution`` of a contract asked for (after the first, by the demander's
    query), requested and its result posted."""
    oid, demander, provider, ds = contract
    if execution > 1:
        api.submit_query(demander, oid, {"field": KEY, "values": [r[KEY] for r in rows]})
    made = api.call("POST", "/computations", provider, 201, json={
        "contract_id": oid, "execution": execution, "datasite": "site",
        "code_sha256": hashlib.sha256(CODE.encode()).hexdigest()})
    cid = str(made["computation_id"])
    api.call("POST", f"/computations/{cid}/result", provider, json={
        "result": rows, "result_rows": len(rows), "datasite": "site",
        "input_hashes": {ds: hashlib.sha256(b"tax").hexdigest()}})
    return cid


def _market(sizes: Sizes, database_url: str, data_dir: Path, leak: Path) -> dict[str, Any]:
    """The deliveries made through the routes, one of them downloaded and leaked."""
    from bench.privacy.tracing import leak_copy
    from client.market import Market
    from client.platform import Platform

    demanders = min(DEMANDERS, sizes.deliveries)
    per_contract = -(-sizes.deliveries // demanders)
    t0 = time.perf_counter()
    with _server(database_url, data_dir) as client:
        api = Platform(client)
        contracts = _contracts(api, Market(api, ADMIN_TOKEN, "Data bureau"), per_contract,
                               demanders)
        leaked_at = sizes.deliveries // 2
        ids, made = [], 0
        for execution in range(1, per_contract + 1):
            for contract in contracts:
                if made == sizes.deliveries:
                    break
                rows = _rows(sizes.trace_rows if made == leaked_at else OTHER_ROWS, made)
                ids.append(_deliver(api, contract, execution, rows))
                made += 1
        leaked_id = ids[leaked_at]
        oid, demander, _, _ = contracts[leaked_at % demanders]
        served = json.loads(api.delivery(demander, leaked_id))
    leak_copy(served, leak, sizes.seed, "")
    return {"deliveries": len(ids), "demanders": demanders, "leaked": leaked_id,
            "leaked_contract": oid, "leaked_demander": demander.participant_id,
            "setup_s": round(time.perf_counter() - t0, 1)}


def _trace_leak(leak: Path, env: dict[str, str]) -> tuple[float, dict[str, Any], int]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cli", "forensics", "trace-leak", str(leak),
                           "--json"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 3):
        raise RuntimeError(f"trace-leak exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1]), done.returncode


def _start_up(env: dict[str, str]) -> float:
    """The baseline: the same command's process answering ``--help`` (the interpreter, the
    CLI's parser), nothing traced."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli", "forensics", "trace-leak", "--help"],
                   cwd=REPO, env=env, capture_output=True, timeout=120, check=True)
    return time.perf_counter() - t0


def measure(sizes: Sizes, backend: str = "sqlite") -> tuple[dict[str, Any], list[Row]]:
    """The deliveries, the leak, the command ``repetitions`` times; the median and the row."""
    import statistics

    from bench.databases import Scratch

    notes: list[str] = []
    scratch = Scratch(backend, "dataledger-bench-trace-")
    try:
        data_dir, leak = scratch.tmp / "var", scratch.tmp / "leak.csv"
        database_url = scratch.database_url("trace")
        made = _market(sizes, database_url, data_dir, leak)
        env = {**os.environ, "DATALEDGER_DATA_DIR": str(data_dir),
               "DATALEDGER_DATABASE_URL": database_url}
        runs, start_up = [], []
        for _ in range(sizes.repetitions):
            start_up.append(_start_up(env))
            runs.append(_trace_leak(leak, env))
    finally:
        scratch.cleanup(notes)
    seconds = statistics.median(r[0] for r in runs)
    help_s = statistics.median(start_up)
    answer, code = runs[-1][1], runs[-1][2]
    match = answer.get("match") or {}
    right = code == 0 and not answer.get("merged") \
        and match.get("delivery_id") == made["leaked"] \
        and match.get("contract_id") == made["leaked_contract"] \
        and match.get("demander_id") == made["leaked_demander"]
    data = {**made, "backend": backend, "rows": sizes.trace_rows,
            "leak_rows": sizes.trace_rows // 2, "command_s": seconds,
            "runs_s": [round(r[0], 3) for r in runs], "start_up_s": help_s,
            "start_up_runs_s": [round(x, 3) for x in start_up], "answer": answer, "right": right,
            "notes": notes}
    return data, [Row(
        backend, "trace_leak_command",
        f"`dataledger forensics trace-leak` end to end (its own process: build, the "
        f"deliveries from the read model, trace, forensics.leak_traced recorded) among "
        f"{made['deliveries']:,} deliveries to {made['demanders']} demanders made through "
        f"the routes; a served copy ({sizes.trace_rows:,} rows) shuffled, half kept, CSV; "
        f"confidence {answer.get('confidence')}" + ("" if right else " [WRONG or no match]"),
        f"{seconds:.2f} s", f"{help_s:.2f} s (the command's --help: start-up)", "-", "< 5 s",
        right and seconds < 5.0, data)]
