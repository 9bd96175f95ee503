"""`dataledger bench compute`: a provider's compute node end to end, and the publisher.

For each backend it starts the real server (``dataledger serve`` from this venv, on a
free loopback port, a fresh temporary data dir; PostgreSQL in a fresh schema dropped at
the end), checkpoints cut every ``checkpoint_s`` seconds with the server's two in-process
witnesses, and builds over HTTP one provider / dataset / scenario / authorization / listed
product (the per-enterprise score of tests/compute/test_worker.py). Then, in a subprocess
of the compute venv (``.venv-compute/bin/python -m bench.compute --node <config>``;
PySyft is never imported in the server's venv):

* an in-process PySyft datasite is launched and a synthetic enterprise table
  (``rows`` rows) loaded through ``ComputeNode.load`` (recorded on the ledger);
* one warm-up contract is approved and delivered (not counted);
* **sequential**: ``sequential`` times, a contract is approved over HTTP and the node's
  ``run_once`` loop (every ``poll_s``) runs until it is delivered; the time is from the
  final approval's HTTP call returning (``contract.approved`` committed) to the node's
  ``POST /computations/<id>/result`` returning (``delivery.made`` committed);
* **at once**: ``concurrent`` contracts are prepared, their final approvals sent back to
  back, then the same loop runs until all are delivered; the same time per contract;
* **baseline**: the product's function (the same source) run directly with pandas on the
  same private table (read from the same CSV) in the same process, ``baseline_runs`` times.

No goal is given for the latency; the ratio (p50 / p50) is reported for information.
Then ``bench.publisher.measure`` (the outbox publisher's events/s to JetStream beside the
bare nats-py rate, goal >= 0.5x) on the same backend, at ``nats://127.0.0.1:4222``; the
row is skipped with a note when NATS does not answer. Every wait is bounded, every
process started here is stopped.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / ".venv" / "bin" / "dataledger"
COMPUTE_PYTHON = ROOT / ".venv-compute" / "bin" / "python"
NATS_URL = "nats://127.0.0.1:4222"
RESULT_MARK = "BENCH_COMPUTE_RESULT "

FIELDS = [{"name": "uscc", "type": "string", "sensitivity": "public"},
          {"name": "industry", "type": "string", "sensitivity": "public"},
          {"name": "tax_paid_yuan", "type": "integer", "sensitivity": "sensitive"},
          {"name": "power_kwh", "type": "integer", "sensitivity": "sensitive"}]
USED = ["uscc", "tax_paid_yuan", "power_kwh"]

#: the product's registered code (as in tests/compute/test_worker.py)
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
    poll_s: float = 0.1     # the node's pause between run_once rounds
    deliver_timeout_s: float = 60.0  # at most this long per wait for deliveries
    node_timeout_s: float = 600.0    # the whole compute-venv subprocess


FULL = Sizes(rows=3000, sequential=5, concurrent=10, baseline_runs=30)
QUICK = Sizes(rows=1000, sequential=2, concurrent=3, baseline_runs=10,
              deliver_timeout_s=30.0, node_timeout_s=150.0)


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (q in (0, 1]) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"n": len(values), "p50": quantile(values, 0.5), "p95": quantile(values, 0.95),
            "max": max(values), "mean": statistics.fmean(values)}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# =========================================================================================
# The compute-venv side (``python -m bench.compute --node config.json``): PySyft here only.
# =========================================================================================
class _Http:
    def __init__(self, url: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=url, timeout=30)

    def call(self, method: str, path: str, token: str, expect: int = 200, **kw: Any) -> Any:
        r = self.http.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
        if r.status_code != expect:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json() if r.headers.get("content-type", "").startswith("application/json") \
            else r.content


def _prepare_order(api: _Http, cfg: dict[str, Any]) -> str:
    """An order up to (not including) its final approval."""
    t = cfg["tokens"]
    oid = api.call("POST", "/orders", t["demander"], 201, json={
        "product_id": cfg["product_id"], "purpose": "credit decisions on SMEs"})["order_id"]
    now = datetime.now(UTC)
    api.call("POST", f"/orders/{oid}/contract", t["operator"], json={
        "usage_policy": {"processing_count": 1, "not_before": now.isoformat(),
                         "not_after": (now + timedelta(days=90)).isoformat(),
                         "circulation_modes": ["ciphertext"]},
        "price_fen": 1_000_000,
        "revenue_split": {"developer": 1000, "operator": 3000, "platform": 1000,
                          "provider": 5000}})
    api.call("POST", f"/orders/{oid}/contract/acceptance", t["demander"])
    api.call("POST", f"/orders/{oid}/contract/approvals", t["provider"])
    return str(oid)


def _approve(api: _Http, cfg: dict[str, Any], oid: str) -> float:
    """The final approval (contract.approved); returns when its HTTP call returned."""
    api.call("POST", f"/orders/{oid}/contract/approvals", cfg["tokens"]["operator"])
    return time.perf_counter()


def _synthetic_table(rows: int, seed: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    chars = np.array(list("0123456789ABCDEFGHJKLMNPQRTUWXY"))
    codes = ["91330100" + "".join(rng.choice(chars, 10)) for _ in range(rows)]
    return pd.DataFrame({
        "uscc": codes,
        "industry": rng.choice(["manufacturing", "retail", "logistics", "software"], rows),
        "tax_paid_yuan": rng.integers(0, 200_000, rows),
        "power_kwh": rng.integers(0, 80_000, rows),
    })


def node_part(cfg: dict[str, Any]) -> dict[str, Any]:
    """Everything that needs PySyft; returns the timings as a JSON-able dict."""
    import pandas as pd

    from compute_nodes import datasite
    from compute_nodes.worker import ComputeNode, Outcome, Trust

    sizes = Sizes(**cfg["sizes"])
    tmp = Path(cfg["tmp"])
    api = _Http(cfg["url"])
    t_setup = time.perf_counter()
    _synthetic_table(sizes.rows, 3).to_csv(tmp / "private.csv", index=False)
    _synthetic_table(50, 4).to_csv(tmp / "mock.csv", index=False)
    private = pd.read_csv(tmp / "private.csv")
    site = datasite.launch("bench-tax-node", data_dir=tmp / "datasite", reset=True,
                           admin_password="bench-admin-pass-1")
    try:
        admin = site.admin()
        runner = datasite.data_scientist(site, admin, "node@bench.example", "bench-node-pass-1")

        class TimedNode(ComputeNode):
            """Records when each execution started and when its delivery was committed."""

            started: ClassVar[dict[str, float]] = {}  # one node per process
            delivered: ClassVar[dict[str, float]] = {}
            computation: ClassVar[dict[str, str]] = {}

            def _execution(self, *args: Any, **kwargs: Any) -> Outcome:
                a = time.perf_counter()
                out = super()._execution(*args, **kwargs)
                if out.status == "delivered":
                    self.started[out.contract_id] = a
                    self.delivered[out.contract_id] = time.perf_counter()
                    self.computation[out.contract_id] = str(out.computation_id)
                return out

        node = TimedNode(cfg["url"], cfg["tokens"]["provider"], admin, runner,
                         "bench-tax-node", Trust.from_file(cfg["trust_file"]), backoff_s=0.05)
        loaded = node.load(cfg["dataset_id"], tmp / "private.csv", tmp / "mock.csv")
        setup_s = time.perf_counter() - t_setup
        rounds: list[float] = []
        problems: list[str] = []

        def settle(contracts: list[str]) -> None:
            deadline = time.monotonic() + sizes.deliver_timeout_s
            while not all(c in node.delivered for c in contracts):
                if time.monotonic() > deadline:
                    missing = [c for c in contracts if c not in node.delivered]
                    raise RuntimeError(f"{len(missing)} contract(s) not delivered within "
                                       f"{sizes.deliver_timeout_s:g} s")
                a = time.perf_counter()
                for o in node.run_once():
                    if o.contract_id in contracts and o.status in ("failed", "refused"):
                        problems.append(f"{o.contract_id}: {o.status} {o.detail}"[:300])
                        raise RuntimeError(problems[-1])
                rounds.append(time.perf_counter() - a)
                if not all(c in node.delivered for c in contracts):
                    time.sleep(sizes.poll_s)

        def latencies(contracts: list[str], approved: dict[str, float]) -> dict[str, Any]:
            total = [node.delivered[c] - approved[c] for c in contracts]
            wait = [node.started[c] - approved[c] for c in contracts]
            run = [node.delivered[c] - node.started[c] for c in contracts]
            return {"total_s": total, "until_execution_s": wait, "execution_s": run}

        # warm-up (not counted): first code request, first run on the datasite
        warm = _prepare_order(api, cfg)
        approved: dict[str, float] = {warm: _approve(api, cfg, warm)}
        settle([warm])
        warm_s = node.delivered[warm] - approved[warm]

        sequential: list[str] = []
        for _ in range(sizes.sequential):
            oid = _prepare_order(api, cfg)
            time.sleep(sizes.poll_s)  # the node is idle between contracts
            approved[oid] = _approve(api, cfg, oid)
            settle([oid])
            sequential.append(oid)

        batch = [_prepare_order(api, cfg) for _ in range(sizes.concurrent)]
        for oid in batch:
            approved[oid] = _approve(api, cfg, oid)
        approvals_span = approved[batch[-1]] - approved[batch[0]] if batch else 0.0
        settle(batch)

        # the delivered result is the function's result on the private table
        fn_ns: dict[str, Any] = {}
        exec(compile(cfg["code"], "<product code>", "exec"), fn_ns)  # noqa: S102 - our own code
        function = fn_ns["score"]
        expected = function(private)
        same = None
        if sequential:
            cid = node.computation[sequential[0]]
            got = api.call("GET", f"/deliveries/{cid}/result", cfg["tokens"]["demander"])
            same = got == expected

        baseline: list[float] = []
        for _ in range(sizes.baseline_runs):
            a = time.perf_counter()
            function(private)
            baseline.append(time.perf_counter() - a)

        # every delivery is in the log exactly once
        events: list[dict[str, Any]] = []
        after = 0
        while True:
            page = api.call("GET", f"/ledger/events?after={after}&limit=1000",
                            cfg["admin_token"])
            events += page["events"]
            if not page["events"]:
                break
            after = page["next_after"]
        deliveries = sum(1 for e in events if e["type"] == "delivery.made")
        return {"rows": len(private), "setup_s": setup_s, "loaded_rows": loaded["rows"],
                "warm_up_s": warm_s, "sequential": latencies(sequential, approved),
                "concurrent": latencies(batch, approved), "approvals_span_s": approvals_span,
                "baseline_s": baseline, "result_matches_direct_run": same,
                "run_once_s": summary(rounds), "deliveries_in_log": deliveries,
                "contracts": 1 + len(sequential) + len(batch), "problems": problems}
    finally:
        site.land()


def _node_main(config_path: str) -> int:
    import logging

    logging.basicConfig(level=logging.ERROR)
    cfg = json.loads(Path(config_path).read_text())
    try:
        out = node_part(cfg)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        out = {"error": repr(exc)[:2000]}
    sys.stdout.write(RESULT_MARK + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0 if "error" not in out else 1


# =========================================================================================
# The server-venv side (``dataledger bench compute``).
# =========================================================================================
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _nats_up(url: str = NATS_URL) -> bool:
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def _onboard(api: _Http, admin: str, regulator: str | None, role: str,
             name: str) -> dict[str, str]:
    made = api.call("POST", "/participants", admin, 201, json={
        "name": name, "role": role, "credit_code": "91110000MA01ABCDE" + role[0].upper(),
        "admin_name": f"{role} admin"})
    judge = regulator if role == "operator" and regulator else admin
    api.call("POST", f"/participants/{made['participant_id']}/admission", judge,
             json={"approve": True, "comment": "meets the admission criteria"})
    return {"id": str(made["participant_id"]), "token": str(made["token"])}


def build_market(api: _Http, admin: str) -> dict[str, Any]:
    """provider → dataset → scenario → authorization → listed product, over HTTP."""
    reg = _onboard(api, admin, None, "regulator", "Municipal data bureau")
    p = {r: _onboard(api, admin, reg["token"], r, n) for r, n in (
        ("provider", "Tax bureau"), ("operator", "Data operator"),
        ("developer", "Model studio"), ("demander", "City bank"))}
    expert = api.call("POST", f"/participants/{reg['id']}/members", reg["token"], 201,
                      json={"name": "expert", "roles": ["expert"]})["token"]
    ds = api.call("POST", "/datasets", p["provider"]["token"], 201, json={
        "name": "Enterprise tax and power", "description": "per enterprise",
        "source_system": "tax-core", "classification": "L3", "fields": FIELDS})["dataset_id"]
    api.call("POST", f"/datasets/{ds}/publication", p["provider"]["token"])
    sc = api.call("POST", "/scenarios", p["operator"]["token"], 201, json={
        "title": "SME credit scoring", "purpose": "score small firms for loans",
        "sector": "finance", "requested": [{"dataset_id": ds, "fields": USED}],
        "circulation_mode": "ciphertext"})["scenario_id"]
    api.call("POST", f"/scenarios/{sc}/opinions", expert, 201,
             json={"verdict": "approve", "comment": "proportionate"})
    api.call("POST", f"/scenarios/{sc}/decision", reg["token"],
             json={"approve": True, "comment": "approved"})
    now = datetime.now(UTC)
    auth = api.call("POST", "/authorizations", p["provider"]["token"], 201, json={
        "scenario_id": sc, "datasets": [{"dataset_id": ds, "fields": USED}],
        "not_before": (now - timedelta(days=1)).isoformat(),
        "not_after": (now + timedelta(days=365)).isoformat(),
        "usage_policy": {"processing_count": 1000}})["authorization_id"]
    product = api.call("POST", "/products", p["operator"]["token"], 201, json={
        "scenario_id": sc, "authorization_ids": [auth], "name": "SME credit score",
        "kind": "api", "description": "a score per firm", "code": SCORE,
        "inputs": [{"dataset_id": ds, "fields": USED}],
        "output_schema": {"type": "array"}, "quality_report": "AUC 0.81",
        "price_fen": 1_250_000, "developer_id": p["developer"]["id"]})["product_id"]
    api.call("POST", f"/products/{product}/listing-request", p["operator"]["token"])
    api.call("POST", f"/products/{product}/listing-decision", admin,
             json={"approve": True, "comment": "complete and documented"})
    return {"dataset_id": str(ds), "product_id": str(product),
            "tokens": {r: v["token"] for r, v in p.items()}}


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def measure_compute(backend: str, sizes: Sizes) -> dict[str, Any]:
    """Start the server, build the market, run the node part in the compute venv."""
    import httpx

    from bench.append import PG_URL, _check_postgres, _drop_schemas
    from events.store import DatabaseURL

    tmp = Path(tempfile.mkdtemp(prefix=f"dataledger-bench-compute-{backend}-"))
    admin = "dl_bench_compute_admin_" + secrets.token_hex(12)
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(tmp / "ledger"),
           "DATALEDGER_ADMIN_TOKEN": admin,
           "DATALEDGER_CHECKPOINT_EVERY_SECONDS": str(sizes.checkpoint_s)}
    env.pop("VIRTUAL_ENV", None)
    schema = None
    if backend == "postgresql":
        _check_postgres(DatabaseURL.parse(PG_URL))
        schema = f"bench_{secrets.token_hex(4)}"
        env["DATALEDGER_DATABASE_URL"] = f"{PG_URL}?schema={schema}"
    else:
        env.pop("DATALEDGER_DATABASE_URL", None)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp / "server.log"
    server: subprocess.Popen[Any] | None = None
    node: subprocess.Popen[str] | None = None
    try:
        with log_path.open("wb") as log_file:
            server = subprocess.Popen([str(SERVER), "serve", "--port", str(port)], env=env,
                                      stdout=log_file, stderr=subprocess.STDOUT, cwd=tmp)
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start: "
                                       + log_path.read_text(errors="replace")[-1500:])
                time.sleep(0.2)
            api = _Http(url)
            market = build_market(api, admin)
            trust = api.call("GET", "/ledger/witnesses", admin)
            (tmp / "trust.json").write_text(json.dumps(trust))
            cfg = {**market, "url": url, "admin_token": admin, "tmp": str(tmp / "node"),
                   "trust_file": str(tmp / "trust.json"), "code": SCORE,
                   "sizes": asdict(sizes)}
            (tmp / "node").mkdir()
            (tmp / "node.json").write_text(json.dumps(cfg))
            node_env = {**os.environ, "PYTHONPATH": str(ROOT)}
            node_env.pop("VIRTUAL_ENV", None)
            node = subprocess.Popen([str(COMPUTE_PYTHON), "-m", "bench.compute", "--node",
                                     str(tmp / "node.json")], cwd=ROOT, env=node_env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                out, err = node.communicate(timeout=sizes.node_timeout_s)
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"compute node part exceeded {sizes.node_timeout_s:g} s") \
                    from exc
            lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_MARK)]
            if not lines:
                raise RuntimeError(f"compute node part gave no result (rc {node.returncode}): "
                                   f"{err[-1500:]}")
            result: dict[str, Any] = json.loads(lines[-1][len(RESULT_MARK):])
            if "error" in result:
                raise RuntimeError(f"compute node part: {result['error']} {err[-800:]}")
            return result
    finally:
        if node is not None:
            _stop(node)
        if server is not None:
            _stop(server)
        if schema is not None:
            try:
                _drop_schemas(DatabaseURL.parse(PG_URL), [schema])
            except Exception:  # noqa: BLE001, S110 - best effort
                pass
        shutil.rmtree(tmp, ignore_errors=True)


def _ms(stats: dict[str, float]) -> str:
    return f"p50 {1000 * stats['p50']:,.1f} ms, p95 {1000 * stats['p95']:,.1f} ms"


def compute_rows(backend: str, sizes: Sizes, r: dict[str, Any]) -> list[Any]:
    from bench.chain import Row

    base = summary(r["baseline_s"])
    rows = []
    for key, label in (("sequential", f"{sizes.sequential} one after another"),
                       ("concurrent", f"{sizes.concurrent} approved at once")):
        total = summary(r[key]["total_s"])
        wait = summary(r[key]["until_execution_s"])
        run = summary(r[key]["execution_s"])
        rows.append(Row(
            backend, f"approved_to_delivered_{key}",
            f"ContractApproved -> DeliveryMade, in-process datasite, {r['rows']:,} rows, "
            f"{label}",
            _ms(total), f"{_ms(base)} (same function, pandas, direct)",
            f"{total['p50'] / base['p50']:,.0f}x (p50)", "none given", None,
            {"latency_s": {k: round(v, 4) for k, v in total.items()},
             "until_execution_started_s": {k: round(v, 4) for k, v in wait.items()},
             "execution_and_report_s": {k: round(v, 4) for k, v in run.items()},
             "baseline_s": {k: round(v, 6) for k, v in base.items()},
             "raw_latency_s": [round(v, 4) for v in r[key]["total_s"]]}))
    return rows


def publisher_row(backend: str, quick: bool, notes: list[str]) -> tuple[Any, dict[str, Any]]:
    from bench import publisher
    from bench.chain import Row

    if not _nats_up():
        notes.append(f"{backend}: publisher row skipped: NATS does not answer at {NATS_URL}")
        return None, {"skipped": f"NATS down at {NATS_URL}"}
    out = publisher.measure(NATS_URL, backend, publisher.QUICK if quick else publisher.FULL)
    t = out["table"][0]
    return Row(backend, "publisher",
               f"outbox publisher to JetStream, {out['events']:,} events, "
               f"{out['rounds']} round(s)",
               f"{t['rate']:,.0f} events/s", f"{t['baseline_rate']:,.0f} events/s (bare nats-py)",
               f"{t['ratio']:.2f}x", t["goal"], bool(t["met"]),
               {k: out[k] for k in ("events", "rounds", "window", "batch_size",
                                    "payload_bytes", "publisher", "bare", "ratio")}), out


def run(backends: list[str], quick: bool) -> dict[str, Any]:
    """The whole suite; what run.py prints and writes."""
    from bench.chain import Row

    sizes = QUICK if quick else FULL
    results: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    notes: list[str] = []
    for backend in backends:
        t0 = time.monotonic()
        result: dict[str, Any] = {"backend": backend, "started_at": _now(), "notes": []}
        print(f"  {backend}: compute node (server, market, datasite, contracts) ...",
              flush=True)
        try:
            node = measure_compute(backend, sizes)
            result["compute"] = node
            table += [row.as_json() for row in compute_rows(backend, sizes, node)]
            if node.get("result_matches_direct_run") is False:
                result["notes"].append("the delivered result differs from the direct run!")
            expected = node["contracts"]
            if node["deliveries_in_log"] != expected:
                result["notes"].append(f"{node['deliveries_in_log']} delivery.made events for "
                                       f"{expected} contracts")
        except Exception as exc:  # noqa: BLE001 - reported
            result["error"] = repr(exc)[:3000]
            table.append(Row(backend, "compute_error", f"compute FAILED: {exc!r}"[:200], "-",
                             met=False).as_json())
        print(f"  {backend}: publisher vs bare nats-py ...", flush=True)
        try:
            row, out = publisher_row(backend, quick, notes)
            result["publisher"] = out
            if row is not None:
                table.append(row.as_json())
        except Exception as exc:  # noqa: BLE001 - reported
            result.setdefault("error", "")
            result["error"] += f" publisher: {exc!r}"[:1000]
            table.append(Row(backend, "publisher_error", f"publisher FAILED: {exc!r}"[:200],
                             "-", met=False).as_json())
        result["wall_seconds"] = round(time.monotonic() - t0, 1)
        results.append(result)
    goals = [r["met"] for r in table if r["met"] is not None]
    return {"suite": "compute", "quick": quick, "sizes": asdict(sizes), "results": results,
            "table": table, "all_goals_met": bool(goals) and all(goals),
            "notes": notes + [
                (f"latency: from the final approval's HTTP call returning (contract.approved "
                 f"committed) to the node's result POST returning (delivery.made committed); "
                 f"the node polls run_once every {sizes.poll_s:g} s and acts only once "
                 f"contract.approved is under a checkpoint co-signed by the witnesses; the "
                 f"server cuts checkpoints every {sizes.checkpoint_s:g} s (the default is 5 s), "
                 f"so that wait is part of every figure; one warm-up contract is not counted"),
                ("baseline: the product's own function on the same private table (read from "
                 "the same CSV), pandas, in the same compute-venv process; no goal is given "
                 "for this latency, the ratio is p50 / p50 for information"),
                ("at once: the contracts are prepared first, their final approvals sent back to "
                 "back, then the node runs; it executes them one after another, so p95 "
                 "includes queueing behind the others"),
            ]}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--node":
        sys.exit(_node_main(sys.argv[2]))
    print("usage: python -m bench.compute --node CONFIG.json  (compute venv; "
          "the suite itself: dataledger bench compute)", file=sys.stderr)
    sys.exit(2)
