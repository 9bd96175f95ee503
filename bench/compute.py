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
* the node follows the log in a thread, as a deployed node does: first
  ``ComputeNode.follow_http`` (``GET /ledger/events`` from the start, ``poll_s`` after an
  empty page), then, when NATS answers at ``nats://127.0.0.1:4222``, ``follow_nats`` (the
  server was started with ``DATALEDGER_NATS_URL`` and a stream / subject prefix of this
  run's own, ``BENCH_<random>`` / ``bench<random>``, deleted at the end; the durable
  consumer catches up from the stream's start, re-handling the earlier contracts, which
  the ledger answers as already succeeded). For each follower:
* one warm-up contract is approved and delivered (not counted);
* **sequential**: ``sequential`` times, a contract is approved over HTTP and the bench
  waits until the node's ``on_outcome`` callback reports it delivered; the time is from
  the final approval's HTTP call returning (``contract.approved`` committed) to that
  callback (the node's ``POST /computations/<id>/result`` returned: ``delivery.made``
  committed);
* **at once**: ``concurrent`` contracts are prepared, their final approvals sent back to
  back, and the bench waits until all are delivered; the same time per contract.
* The split of each time: when the node first handled the event, when the bench's own
  watcher (``GET /ledger/checkpoints/latest?anchored=true`` every ``watch_s``) first saw
  an anchored checkpoint covering it, when the execution started (the node handles a
  not-yet-anchored event again after ``retry_s``, doubling), and the execution itself.

Then **baseline**: the product's function (the same source) run directly with pandas on
the same private table (read from the same CSV) in the same process, ``baseline_runs``
times. The server runs without its embedded node host (``DATALEDGER_COMPUTE_NODE=false``):
the node measured is the bench's own.

No goal is given for the latency; the ratio (p50 / p50) is reported for information.
Then ``bench.publisher.measure`` (the outbox publisher's events/s to JetStream beside the
bare nats-py rate, goal >= 0.5x) on the same backend, at ``nats://127.0.0.1:4222``; the
row is skipped with a note when NATS does not answer. Every wait is bounded, every
process started here is stopped.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.table import quantile

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
    poll_s: float = 0.05    # follow_http: the pause after a page with no new event
    retry_s: float = 1.0    # the node's first pause before handling a not-yet-anchored
    #                         event again, doubling (compute_nodes.worker.RETRY_S, its default)
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
    import threading

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
    problems: list[str] = []
    seen: dict[str, float] = {}       # contract -> the node first handled its event
    attempts: dict[str, int] = {}     # contract -> times its event was handled
    started: dict[str, float] = {}    # contract -> its execution started
    delivered: dict[str, float] = {}  # contract -> on_outcome saw it delivered
    event_seq: dict[str, int] = {}    # contract -> seq of its contract.approved
    computation: dict[str, str] = {}
    other: dict[str, list[str]] = {}  # contract -> statuses other than delivered

    class TimedNode(ComputeNode):
        """Records when each event was first handled and when its execution started."""

        def handle(self, event: Any) -> list[Outcome]:
            a = time.perf_counter()
            outcomes = super().handle(event)
            for o in outcomes:
                if o.contract_id:
                    seen.setdefault(o.contract_id, a)
                    attempts[o.contract_id] = attempts.get(o.contract_id, 0) + 1
                if o.status in ("refused", "error"):  # retried by the node; kept for a report
                    problems.append(f"{o.contract_id}: {o.status} {o.detail}"[:300])
            return outcomes

        def _execution(self, contract_id: str, *args: Any, **kwargs: Any) -> Outcome:
            started.setdefault(contract_id, time.perf_counter())
            return super()._execution(contract_id, *args, **kwargs)

    def on_outcome(o: Outcome) -> None:
        if o.status == "delivered":
            delivered[o.contract_id] = time.perf_counter()
            computation[o.contract_id] = str(o.computation_id)
            if o.seq is not None:
                event_seq[o.contract_id] = o.seq
        else:
            other.setdefault(o.contract_id, []).append(f"{o.status} {o.detail}"[:200])

    # When each anchored checkpoint size was first seen (its own client; not the node's).
    anchored: list[tuple[float, int]] = []
    watch_stop = threading.Event()

    def watch() -> None:
        import httpx

        with httpx.Client(base_url=cfg["url"], timeout=10, headers={
                "Authorization": f"Bearer {cfg['admin_token']}"}) as client:
            while not watch_stop.is_set():
                try:
                    r = client.get("/ledger/checkpoints/latest", params={"anchored": "true"})
                    if r.status_code == 200:
                        size = int(r.json()["size"])
                        if not anchored or size > anchored[-1][1]:
                            anchored.append((time.perf_counter(), size))
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                watch_stop.wait(sizes.watch_s)

    site = datasite.launch("bench-tax-node", data_dir=tmp / "datasite", reset=True,
                           admin_password="bench-admin-pass-1")
    watcher = threading.Thread(target=watch, name="anchored-watch", daemon=True)
    try:
        admin = site.admin()
        runner = datasite.data_scientist(site, admin, "node@bench.example", "bench-node-pass-1")
        node = TimedNode(cfg["url"], cfg["tokens"]["provider"], admin, runner,
                         "bench-tax-node", Trust.from_file(cfg["trust_file"]), backoff_s=0.05)
        loaded = node.load(cfg["dataset_id"], tmp / "private.csv", tmp / "mock.csv")
        setup_s = time.perf_counter() - t_setup
        watcher.start()
        approved: dict[str, float] = {}

        def wait_delivered(contracts: list[str], follower: threading.Thread) -> None:
            deadline = time.monotonic() + sizes.deliver_timeout_s
            while not all(c in delivered for c in contracts):
                bad = [f"{c}: {other[c]}" for c in contracts if c in other]
                if bad:
                    raise RuntimeError(f"not delivered: {bad[:3]}")
                if not follower.is_alive():
                    raise RuntimeError("the node's follower thread stopped")
                if time.monotonic() > deadline:
                    missing = [c for c in contracts if c not in delivered]
                    raise RuntimeError(f"{len(missing)} contract(s) not delivered within "
                                       f"{sizes.deliver_timeout_s:g} s; the node reported "
                                       f"{problems[-3:]}")
                time.sleep(0.005)

        def anchored_after(seq: int) -> float | None:
            return next((t for t, size in list(anchored) if size >= seq), None)

        def latencies(contracts: list[str]) -> dict[str, Any]:
            out: dict[str, list[float]] = {"total_s": [], "until_seen_s": [],
                                           "until_anchored_s": [], "until_execution_s": [],
                                           "execution_s": [], "handled_times": []}
            for c in contracts:
                a = approved[c]
                out["total_s"].append(delivered[c] - a)
                out["until_seen_s"].append(seen[c] - a)
                out["until_execution_s"].append(started[c] - a)
                out["execution_s"].append(delivered[c] - started[c])
                out["handled_times"].append(attempts.get(c, 0))
                at = anchored_after(event_seq.get(c, 0)) if c in event_seq else None
                if at is not None:
                    out["until_anchored_s"].append(at - a)
            return out

        def session(mode: str, follow: Callable[[threading.Event], Any]) -> dict[str, Any]:
            """The node follows the log (``follow``) in a thread while contracts are approved."""
            stop = threading.Event()
            failure: list[str] = []

            def target() -> None:
                try:
                    follow(stop)
                except Exception as exc:  # noqa: BLE001 - reported by the waiter
                    failure.append(repr(exc)[:500])
                    problems.append(f"{mode} follower: {exc!r}"[:300])

            follower = threading.Thread(target=target, name=f"follow-{mode}", daemon=True)
            t0 = time.perf_counter()
            follower.start()
            try:
                # warm-up (not counted): the first code request, the first run on the
                # datasite; with JetStream also the catch-up of the stream from its start
                warm = _prepare_order(api, cfg)
                approved[warm] = _approve(api, cfg, warm)
                wait_delivered([warm], follower)
                warm_s = delivered[warm] - approved[warm]
                sequential: list[str] = []
                for _ in range(sizes.sequential):
                    oid = _prepare_order(api, cfg)
                    time.sleep(sizes.idle_s)  # the node is idle between contracts
                    approved[oid] = _approve(api, cfg, oid)
                    wait_delivered([oid], follower)
                    sequential.append(oid)
                batch = [_prepare_order(api, cfg) for _ in range(sizes.concurrent)]
                time.sleep(sizes.idle_s)
                for oid in batch:
                    approved[oid] = _approve(api, cfg, oid)
                span = approved[batch[-1]] - approved[batch[0]] if batch else 0.0
                wait_delivered(batch, follower)
            finally:
                stop.set()
                follower.join(timeout=sizes.stop_timeout_s)
            if follower.is_alive():
                problems.append(f"{mode} follower still running {sizes.stop_timeout_s:g} s "
                                "after stop")
            return {"mode": mode, "warm_up_s": warm_s, "warm_up_id": warm,
                    "sequential": latencies(sequential), "concurrent": latencies(batch),
                    "approvals_span_s": span, "sequential_ids": sequential,
                    "wall_s": time.perf_counter() - t0, "follower_error": failure,
                    "contracts": 1 + len(sequential) + len(batch)}

        sessions = [session("http", lambda stop: node.follow_http(
            None, stop=stop, poll_s=sizes.poll_s, retry_s=sizes.retry_s,
            on_outcome=on_outcome))]
        nats_error = None
        if cfg.get("nats"):
            n = cfg["nats"]
            try:  # a JetStream failure keeps the HTTP figures; it is reported
                sessions.append(session("nats", lambda stop: node.follow_nats(
                    n["url"], n["stream"], n["durable"], subject_prefix=n["prefix"],
                    stop=stop, fetch_timeout=sizes.fetch_timeout_s, retry_s=sizes.retry_s,
                    on_outcome=on_outcome)))
            except RuntimeError as exc:
                nats_error = repr(exc)[:1000]

        # the delivered result is the function's result on the private table
        fn_ns: dict[str, Any] = {}
        exec(compile(cfg["code"], "<product code>", "exec"), fn_ns)  # noqa: S102 - our own code
        function = fn_ns["score"]
        expected = function(private)
        same = None
        first = sessions[0]["sequential_ids"]
        if first:
            got = api.call("GET", f"/deliveries/{computation[first[0]]}/result",
                           cfg["tokens"]["demander"])
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
        checkpoints = [b - a for (a, _), (b, _) in itertools.pairwise(anchored)]
        return {"rows": len(private), "setup_s": setup_s, "loaded_rows": loaded["rows"],
                "sessions": sessions, "nats_error": nats_error, "baseline_s": baseline,
                "result_matches_direct_run": same, "deliveries_in_log": deliveries,
                "contracts": sum(s["contracts"] for s in sessions),
                "anchored_checkpoint_interval_s": summary(checkpoints),
                "non_delivered_outcomes": {c: v for c, v in other.items()
                                           if not all(s.startswith("skipped") for s in v)},
                "skipped_outcomes": sum(1 for v in other.values() for s in v
                                        if s.startswith("skipped")),
                "problems": problems}
    finally:
        watch_stop.set()
        if watcher.is_alive():
            watcher.join(timeout=15)
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


def _delete_stream(name: str) -> str | None:
    """Delete a JetStream stream (best effort, bounded); what went wrong, if anything."""
    import asyncio

    import nats

    async def delete() -> None:
        nc = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=1)
        try:
            await asyncio.wait_for(nc.jetstream().delete_stream(name), timeout=10)
        finally:
            await nc.close()

    try:
        asyncio.run(asyncio.wait_for(delete(), timeout=20))
    except Exception as exc:  # noqa: BLE001 - reported as a note
        return f"stream {name} not deleted: {exc!r}"[:300]
    return None


def measure_compute(backend: str, sizes: Sizes, nats_follow: bool,
                    notes: list[str]) -> dict[str, Any]:
    """Start the server, build the market, run the node part in the compute venv; with
    ``nats_follow`` the server publishes to a JetStream stream of its own (deleted at the
    end) and the node follows it too, after following HTTP."""
    import httpx

    from bench.append import PG_URL, _check_postgres, _drop_schemas
    from events.url import DatabaseURL

    tmp = Path(tempfile.mkdtemp(prefix=f"dataledger-bench-compute-{backend}-"))
    admin = "dl_bench_compute_admin_" + secrets.token_hex(12)
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(tmp / "ledger"),
           "DATALEDGER_ADMIN_TOKEN": admin,
           "DATALEDGER_CHECKPOINT_EVERY_SECONDS": str(sizes.checkpoint_s),
           # the bench runs its own node; no embedded node host competing for the cores
           "DATALEDGER_COMPUTE_NODE": "false", "DATALEDGER_NATS_URL": ""}
    env.pop("VIRTUAL_ENV", None)
    tag = secrets.token_hex(5)
    nats_cfg = None
    if nats_follow:
        nats_cfg = {"url": NATS_URL, "stream": f"BENCH_{tag.upper()}", "prefix": f"bench{tag}",
                    "durable": f"bench-node-{tag}"}
        env.update({"DATALEDGER_NATS_URL": NATS_URL,
                    "DATALEDGER_NATS_STREAM": nats_cfg["stream"],
                    "DATALEDGER_NATS_SUBJECT_PREFIX": nats_cfg["prefix"]})
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
                   "sizes": asdict(sizes), "nats": nats_cfg}
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
        if nats_cfg is not None:
            trouble = _delete_stream(nats_cfg["stream"])
            if trouble:
                notes.append(f"{backend}: {trouble}")
        if schema is not None:
            try:
                _drop_schemas(DatabaseURL.parse(PG_URL), [schema])
            except Exception:  # noqa: BLE001, S110 - best effort
                pass
        shutil.rmtree(tmp, ignore_errors=True)


def _ms(stats: dict[str, float]) -> str:
    return f"p50 {1000 * stats['p50']:,.1f} ms, p95 {1000 * stats['p95']:,.1f} ms"


def _round(stats: dict[str, float], digits: int = 4) -> dict[str, float]:
    return {k: round(v, digits) for k, v in stats.items()}


FOLLOWING = {"http": "node follows GET /ledger/events", "nats": "node follows JetStream"}


def compute_rows(backend: str, sizes: Sizes, r: dict[str, Any]) -> list[Any]:
    from bench.chain import Row

    base = summary(r["baseline_s"])
    rows = []
    for s in r["sessions"]:
        for key, label in (("sequential", f"{sizes.sequential} one after another"),
                           ("concurrent", f"{sizes.concurrent} approved at once")):
            lat = s[key]
            total = summary(lat["total_s"])
            rows.append(Row(
                backend, f"approved_to_delivered_{s['mode']}_{key}",
                f"ContractApproved -> DeliveryMade, {FOLLOWING[s['mode']]}, "
                f"{r['rows']:,} rows, {label}",
                _ms(total), f"{_ms(base)} (same function, pandas, direct)",
                f"{total['p50'] / base['p50']:,.0f}x (p50)", "none given", None,
                {"latency_s": _round(total),
                 "until_seen_s": _round(summary(lat["until_seen_s"])),
                 "until_anchored_s": _round(summary(lat["until_anchored_s"])),
                 "until_execution_started_s": _round(summary(lat["until_execution_s"])),
                 "execution_and_report_s": _round(summary(lat["execution_s"])),
                 "times_handled": lat["handled_times"],
                 "baseline_s": _round(base, 6),
                 "raw_latency_s": [round(v, 4) for v in lat["total_s"]]}))
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
            node = measure_compute(backend, sizes, nats_follow=_nats_up(), notes=notes)
            result["compute"] = node
            table += [row.as_json() for row in compute_rows(backend, sizes, node)]
            if node.get("result_matches_direct_run") is False:
                result["notes"].append("the delivered result differs from the direct run!")
            expected = node["contracts"]
            if node["deliveries_in_log"] != expected:
                result["notes"].append(f"{node['deliveries_in_log']} delivery.made events for "
                                       f"{expected} contracts")
            if node["non_delivered_outcomes"] or node["problems"]:
                result["notes"].append(f"outcomes other than delivered: "
                                       f"{node['non_delivered_outcomes']}; node problems: "
                                       f"{node['problems'][:5]}"[:1500])
            if node.get("nats_error"):
                result["notes"].append(f"the JetStream follower failed: {node['nats_error']}")
                table.append(Row(backend, "compute_nats_error",
                                 f"JetStream follower FAILED: {node['nats_error']}"[:200], "-",
                                 met=False).as_json())
            elif not any(s["mode"] == "nats" for s in node["sessions"]):
                notes.append(f"{backend}: no JetStream rows: NATS does not answer at {NATS_URL}")
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
                 f"committed) to the node's on_outcome callback seeing it delivered (its "
                 f"result POST returned: delivery.made committed). The node is event-driven: "
                 f"ComputeNode.follow_http (GET /ledger/events, {sizes.poll_s:g} s pause after "
                 f"an empty page) or follow_nats (a durable JetStream pull consumer on a "
                 f"stream of this run's own), in a thread of the compute-venv process. It "
                 f"acts only once contract.approved is under a checkpoint co-signed by the "
                 f"witnesses; an event not yet anchored is handled again after "
                 f"{sizes.retry_s:g} s, then doubling (the worker's default). The server cuts "
                 f"checkpoints every {sizes.checkpoint_s:g} s (its default is 5 s); one "
                 f"warm-up contract per follower is not counted"),
                ("split (compute.json): until_seen = the node first handled the event; "
                 "until_anchored = the bench's own watcher (GET /ledger/checkpoints/latest"
                 f"?anchored=true every {sizes.watch_s:g} s) first saw an anchored checkpoint "
                 "covering it; until_execution_started = the node started the execution "
                 "(after its retry pause); execution_and_report = POST /computations, the "
                 "PySyft request / approve / run and POST /computations/<id>/result"),
                ("baseline: the product's own function on the same private table (read from "
                 "the same CSV), pandas, in the same compute-venv process; no goal is given "
                 "for this latency, the ratio is p50 / p50 for information"),
                ("at once: the contracts are prepared first, their final approvals sent back to "
                 "back; the node handles events one after another, so p95 includes queueing "
                 "behind the others"),
            ]}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--node":
        sys.exit(_node_main(sys.argv[2]))
    print("usage: python -m bench.compute --node CONFIG.json  (compute venv; "
          "the suite itself: dataledger bench compute)", file=sys.stderr)
    sys.exit(2)
