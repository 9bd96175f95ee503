"""``dataledger demo finance``: the inclusive-finance scenario (white paper 6.1) end to end.

On the embedded default (SQLite, in-process witnesses, the compute node started by
``serve``), in a data directory of its own:

1. the platform onboards a regulator, three providers (market regulation 市场监管局, tax
   税务局, the power utility 供电公司), an operator, a model developer and a bank;
2. each provider enrolls its compute node and loads synthetic enterprise data, keyed by
   unified social credit code, into its own datasite; the ledger records only row counts,
   schemas and the SHA-256 of each private file;
3. the operator's credit-assessment scenario is reviewed by an expert and approved by the
   regulator; each provider authorizes its dataset for it;
4. the operator lists a credit-assessment product (its code and SHA-256 on the ledger);
5. the bank orders it for the enterprises it is considering (a query by credit code), tries
   it on the providers' mock data (试用), then the contract is approved by the three
   providers and the operator;
6. each provider's node checks the approval against an anchored checkpoint, runs the code
   on its private data and delivers partial points for the asked enterprises only; the
   bank adds them up.

It prints what each party saw and exits 0 if every check held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from chain.bls import WitnessPublicKey, cosignatures, trust_witness
from chain.checkpoint import open_checkpoint
from chain.note import Verifier
from chain.verify import VerificationError, verify_inclusion
from demo.enterprises import (
    MARKET_FIELDS,
    POWER_FIELDS,
    TAX_FIELDS,
    credit_code,
    valid_code,
    write_tables,
)

ROOT = Path(__file__).resolve().parent.parent

#: the product's registered computation: run by each provider's node on its own view
CODE = '''def credit_points(data):
    cols = set(data.columns)
    points = data["uscc"].str.len() * 0
    if "tax_rating" in cols:
        rating = data["tax_rating"].map({"A": 40, "B": 30, "M": 20, "C": 10, "D": 0})
        points = points + rating.fillna(0).astype("int64")
        points = points + (data["tax_paid_yuan_12m"] // 50000).clip(upper=20)
        points = points - (data["tax_arrears_yuan"] > 0).astype("int64") * 15
    if "power_kwh_12m" in cols:
        points = points + (data["power_kwh_12m"] // 20000).clip(upper=20)
        points = points + data["power_growth_pct"].clip(lower=-10, upper=10)
        points = points - data["bill_arrears_months"] * 3
    if "abnormal_operation" in cols:
        points = points + data["years_registered"].clip(upper=10) * 2
        points = points - data["abnormal_operation"] * 20 - data["penalties_3y"] * 5
    return [{"uscc": str(u), "points": int(p)} for u, p in zip(data["uscc"], points)]
'''

PROVIDERS = (
    ("market", "Market regulation bureau 市场监管局", "Enterprise registration 工商登记信息",
     "market-registry", MARKET_FIELDS),
    ("tax", "Tax bureau 税务局", "Enterprise tax payment 纳税信息", "tax-core", TAX_FIELDS),
    ("power", "Power supply company 供电公司", "Enterprise power use 用电信息", "power-billing",
     POWER_FIELDS),
)


class DemoError(Exception):
    """A step of the demo did not do what it should."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Platform:
    """The parties' HTTP calls to the server the demo started."""

    def __init__(self, url: str, admin_token: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=60)
        self.admin = admin_token

    def call(self, method: str, path: str, token: str, expect: int = 200, **kw: Any) -> Any:
        r = self.http.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
        if r.status_code != expect:
            raise DemoError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json() if r.headers.get("content-type", "").startswith("application/json") \
            else r.content

    def raw(self, path: str, token: str) -> bytes:
        r = self.http.get(path, headers={"Authorization": f"Bearer {token}"})
        if r.status_code != 200:
            raise DemoError(f"GET {path}: {r.status_code} {r.text[:500]}")
        return r.content

    def onboard(self, role: str, name: str, judge: str) -> SimpleNamespace:
        code = credit_code(random.Random(name), region="310000")
        made = self.call("POST", "/participants", self.admin, 201, json={
            "name": name, "role": role, "credit_code": code, "admin_name": f"{role} admin"})
        party = SimpleNamespace(id=made["participant_id"], token=made["token"], name=name)
        self.call("POST", f"/participants/{party.id}/admission", judge,
                  json={"approve": True, "comment": "meets the admission criteria 准入"})
        return party


def _serve(data_dir: Path, port: int, admin_token: str, log_file: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(data_dir), "DATALEDGER_PORT": str(port),
           "DATALEDGER_HOST": "127.0.0.1", "DATALEDGER_ADMIN_TOKEN": admin_token,
           "DATALEDGER_DATABASE_URL": "", "DATALEDGER_WITNESS_URLS": "",
           "DATALEDGER_NATS_URL": "", "DATALEDGER_CHAIN": "true",
           "DATALEDGER_COMPUTE_NODE": "true", "DATALEDGER_CHECKPOINT_EVERY_SECONDS": "1",
           "DATALEDGER_NODE_POLL_SECONDS": "0.5"}
    out = log_file.open("ab")
    return subprocess.Popen([sys.executable, "-m", "api.cli", "serve"], env=env, cwd=str(ROOT),
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_health(url: str, process: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"dataledger serve exited with {process.returncode}; see {log_file}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise DemoError(f"dataledger serve did not answer within 60 s; see {log_file}")


def _node_cli(data_dir: Path, url: str, *args: str, token: str | None = None) -> dict[str, Any]:
    """``dataledger compute-node ARGS`` against the demo's server; its JSON answer."""
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(data_dir),
           "DATALEDGER_NODE_DATA_DIR": str(data_dir / "node"),
           "DATALEDGER_NODE_PLATFORM_URL": url}
    env.pop("DATALEDGER_NODE_TOKEN", None)
    if token is not None:  # never on the command line, where `ps` shows it
        env["DATALEDGER_NODE_TOKEN"] = token
    done = subprocess.run([sys.executable, "-m", "api.cli", "compute-node", *args], env=env,
                          cwd=str(ROOT), capture_output=True, text=True, timeout=900,
                          check=False)
    if done.returncode != 0:
        raise DemoError(f"dataledger compute-node {args[0]}: exit {done.returncode}: "
                        f"{done.stderr.strip()[-1500:]}")
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def _say(party: str, line: str) -> None:
    print(f"  [{party}] {line}", flush=True)


def run(data_dir: Path, enterprises: int, asked: int, timeout: float) -> int:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    admin_token = "dl_demo_admin_" + secrets.token_urlsafe(24)
    log_file = data_dir / "serve.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"dataledger demo finance: data in {data_dir}, server log {log_file}", flush=True)
    server = _serve(data_dir, port, admin_token, log_file)
    try:
        _wait_health(url, server, log_file)
        return _scenario(Platform(url, admin_token), data_dir, enterprises, asked, timeout)
    except DemoError as exc:
        print(f"FAILED: {exc}", flush=True)
        return 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _scenario(api: Platform, data_dir: Path, enterprises: int, asked: int,
              timeout: float) -> int:
    checks: list[tuple[str, bool]] = []

    def check(what: str, ok: bool) -> None:
        checks.append((what, ok))
        print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)

    print("\n1. Onboarding (入驻 and 准入)", flush=True)
    regulator = api.onboard("regulator", "Municipal big data bureau 大数据局", api.admin)
    operator = api.onboard("operator", "Municipal data group 数据集团", regulator.token)
    developer = api.onboard("developer", "Risk model studio 风控模型工作室", api.admin)
    bank = api.onboard("demander", "City commercial bank 城市商业银行", api.admin)
    expert = api.call("POST", f"/participants/{regulator.id}/members", regulator.token, 201,
                      json={"name": "credit expert 专家", "roles": ["expert"]})["token"]
    tables = write_tables(data_dir / "source-data", enterprises)
    providers: dict[str, SimpleNamespace] = {}
    for i, (view, name, title, system, fields) in enumerate(PROVIDERS):
        p = api.onboard("provider", name, api.admin)
        node_token = api.call("POST", f"/participants/{p.id}/members", p.token, 201,
                              json={"name": "compute node", "roles": ["member"]})["token"]
        enrolled = _node_cli(data_dir, api.url, "enroll", token=node_token)
        p.view, p.fields, p.datasite = view, fields, enrolled["datasite"]
        providers[view] = p
        _say(name, f"admitted; its compute node enrolled with datasite {p.datasite}")

    print("\n2. Catalog and data loading (data stays in each provider's datasite)", flush=True)
    for p in providers.values():
        title = next(t for v, _, t, _, _ in PROVIDERS if v == p.view)
        system = next(s for v, _, _, s, _ in PROVIDERS if v == p.view)
        p.dataset = api.call("POST", "/datasets", p.token, 201, json={
            "name": title, "description": f"one row per enterprise ({p.view})",
            "source_system": system, "classification": "L3", "fields": p.fields})["dataset_id"]
        api.call("POST", f"/datasets/{p.dataset}/publication", p.token)
        paths = tables["paths"][p.view]
        loaded = _node_cli(data_dir, api.url, "load", "--dataset", p.dataset,
                           "--private", str(paths["private"]), "--mock", str(paths["mock"]))
        digest = hashlib.sha256(paths["private"].read_bytes()).hexdigest()
        p.sha256 = digest
        _say(p.name, f"dataset {p.dataset}: {loaded['rows']} rows loaded into its datasite; "
             f"the ledger holds SHA-256 {digest[:16]}…")
        recorded = api.call("GET", f"/ledger/events/{loaded['ledger']['seqs'][0]}", p.token)
        check(f"{p.view}: the ledger recorded the private file's SHA-256 and row count, no rows",
              recorded["type"] == "dataset.data_loaded"
              and recorded["payload"]["sha256"] == digest
              and recorded["payload"]["rows"] == enterprises)

    print("\n3. Scenario review (一场景一审核) and authorizations", flush=True)
    requested = [{"dataset_id": p.dataset, "fields": [f["name"] for f in p.fields]}
                 for p in providers.values()]
    scenario = api.call("POST", "/scenarios", operator.token, 201, json={
        "title": "SME credit assessment 中小微企业信用评估",
        "purpose": "score small and micro enterprises for loans 普惠金融",
        "sector": "finance", "requested": requested,
        "circulation_mode": "ciphertext"})["scenario_id"]
    api.call("POST", f"/scenarios/{scenario}/opinions", expert, 201,
             json={"verdict": "approve", "comment": "proportionate, results are scores only"})
    api.call("POST", f"/scenarios/{scenario}/decision", regulator.token,
             json={"approve": True, "comment": "approved 同意"})
    _say("regulator", f"scenario {scenario} approved after the expert's opinion")
    now = datetime.now(UTC)
    auths = []
    for p, req in zip(providers.values(), requested, strict=True):
        auths.append(api.call("POST", "/authorizations", p.token, 201, json={
            "scenario_id": scenario, "datasets": [req],
            "not_before": (now - timedelta(days=1)).isoformat(),
            "not_after": (now + timedelta(days=365)).isoformat(),
            "usage_policy": {"processing_count": 100}})["authorization_id"])
        _say(p.name, f"authorized its dataset for the scenario ({auths[-1]})")

    print("\n4. The product (上架)", flush=True)
    product = api.call("POST", "/products", operator.token, 201, json={
        "scenario_id": scenario, "authorization_ids": auths,
        "name": "SME credit points 企业信用分", "kind": "api",
        "description": "partial credit points per enterprise from each provider's view",
        "code": CODE, "inputs": requested, "output_schema": {"type": "array"},
        "quality_report": "KS 0.41 on the synthetic back-test", "price_fen": 2_000_000,
        "developer_id": developer.id})["product_id"]
    api.call("POST", f"/products/{product}/listing-request", operator.token)
    api.call("POST", f"/products/{product}/listing-decision", api.admin,
             json={"approve": True, "comment": "listed"})
    listed = api.call("GET", f"/products/{product}", bank.token)
    code_hash = hashlib.sha256(CODE.encode()).hexdigest()
    check("the listed product carries the code's SHA-256",
          listed.get("code_sha256") == code_hash)
    _say("operator", f"product {product} listed; code SHA-256 {code_hash[:16]}…")

    print("\n5. The bank's order, a query by credit code, a trial, the contract", flush=True)
    wanted = tables["codes"][:asked]
    order = api.call("POST", "/orders", bank.token, 201, json={
        "product_id": product, "purpose": "credit decisions on loan applicants 贷前审查",
        "query": {"field": "uscc", "values": wanted}})["order_id"]
    api.call("POST", f"/orders/{order}/trial", operator.token)
    trial = _deliveries(api, bank, order, 0, providers, None, tables, check, timeout)
    check("the trial scored only invented enterprises (mock rows, region 999999)",
          bool(trial) and all(c[2:8] == "999999" for c in trial)
          and not set(trial) & set(tables["codes"]))
    _say("bank", f"trial (试用) on mock data: points for {len(trial)} invented enterprises, "
         "so it can judge the output before it signs")
    api.call("POST", f"/orders/{order}/contract", operator.token, json={
        "usage_policy": {"processing_count": 3, "not_before": now.isoformat(),
                         "not_after": (now + timedelta(days=90)).isoformat(),
                         "circulation_modes": ["ciphertext"]},
        "price_fen": 2_000_000,
        "revenue_split": {"developer": 1500, "operator": 2500, "platform": 1000,
                          "provider": 5000}})
    api.call("POST", f"/orders/{order}/contract/acceptance", bank.token)
    for p in providers.values():
        api.call("POST", f"/orders/{order}/contract/approvals", p.token)
    api.call("POST", f"/orders/{order}/contract/approvals", operator.token)
    state = api.call("GET", f"/orders/{order}", bank.token)["state"]
    check("the contract is approved by the three providers and the operator",
          state == "approved")
    _say("bank", f"order {order}: asked about {len(wanted)} of {enterprises} enterprises")

    print("\n6. Computation on each datasite and delivery (数据可用不可见)", flush=True)
    totals = _deliveries(api, bank, order, 1, providers, wanted, tables, check, timeout)
    later = tables["codes"][asked:asked + 5]
    if later:
        answer = api.call("POST", f"/orders/{order}/queries", bank.token, 201,
                          json={"query": {"field": "uscc", "values": later}})
        _say("bank", f"a second query (execution {answer['execution']}): {len(later)} more "
             "enterprises")
        totals.update(_deliveries(api, bank, order, answer["execution"], providers, later,
                                  tables, check, timeout))

    print("\n7. What each party saw", flush=True)
    _say("bank", f"credit points for its {len(totals)} applicants (sum of the three views):")
    for code, points in sorted(totals.items(), key=lambda kv: -kv[1])[:5]:
        _say("bank", f"  {code}  {points:>4} points")
    check("every code the bank received is a well-formed credit code",
          all(valid_code(c) for c in totals))
    _verify_delivery(api, bank, order, check)
    log = api.call("GET", "/ledger/events?after=0&limit=1000", regulator.token)
    types = Counter(e["type"] for e in log["events"])
    _say("regulator", f"the whole log: {sum(types.values())} events, "
         f"{types['computation.succeeded']} computations, {types['delivery.made']} deliveries, "
         f"{types['dataset.data_loaded']} data loads (hashes only)")
    op_view = api.call("GET", f"/orders/{order}", operator.token)
    _say("operator", f"contract {order} {op_view['state']}; revenue split (per 10,000) "
         f"{op_view.get('revenue_split')}")
    for p in providers.values():
        theirs = api.call("GET", "/computations", p.token, params={"contract_id": order})
        _say(p.name, f"sees {len(theirs)} computation(s) of the contract: its own "
             f"({', '.join(c['state'] for c in theirs)})")

    failed = [what for what, ok in checks if not ok]
    print(f"\n{len(checks) - len(failed)} of {len(checks)} checks held.", flush=True)
    for what in failed:
        print(f"  FAILED: {what}", flush=True)
    return 1 if failed else 0


def _deliveries(api: Platform, bank: SimpleNamespace, order: str, execution: int,
                providers: dict[str, SimpleNamespace], wanted: list[str] | None,
                tables: dict[str, Any], check: Any, timeout: float) -> Counter[str]:
    """Wait for each provider's computation of ``execution``; check and add up its points.

    Execution 0 is the trial on mock rows (``wanted`` None: every mock row comes back)."""
    deadline = time.monotonic() + timeout
    computations: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        computations = [c for c in api.call("GET", "/computations", bank.token,
                                            params={"contract_id": order})
                        if c["execution"] == execution]
        done = [c for c in computations if c["state"] in ("succeeded", "failed")]
        if len(done) == len(providers):
            break
        time.sleep(1)
    else:
        raise DemoError(f"after {timeout:.0f} s: computations of execution {execution}: "
                        f"{[(c['provider_id'], c['state']) for c in computations]}")
    by_provider = {c["provider_id"]: c for c in computations}
    totals: Counter[str] = Counter()
    private_columns = {f["name"] for p in providers.values() for f in p.fields} - {"uscc"}
    for p in providers.values():
        comp = by_provider.get(p.id)
        check(f"{p.view} #{execution}: its computation succeeded",
              comp is not None and comp["state"] == "succeeded")
        if comp is None or comp["state"] != "succeeded":
            _say(p.name, f"computation: {comp}")
            continue
        if execution == 0:
            check(f"{p.view} #0: the trial's input is the mock table, not the private file",
                  comp.get("trial") is True and set(comp["input_hashes"]) == {p.dataset}
                  and comp["input_hashes"][p.dataset] != p.sha256)
        else:
            check(f"{p.view} #{execution}: the input hash on the ledger is its private file's",
                  comp["input_hashes"] == {p.dataset: p.sha256})
        raw = api.raw(f"/deliveries/{comp['computation_id']}/result", bank.token)
        rows = json.loads(raw)
        check(f"{p.view} #{execution}: the delivered bytes hash to the ledger's result SHA-256",
              hashlib.sha256(raw).hexdigest() == comp["result_sha256"])
        if wanted is not None:
            check(f"{p.view} #{execution}: the bank got exactly the {len(wanted)} enterprises "
                  "it asked about", sorted(r["uscc"] for r in rows) == sorted(wanted))
        check(f"{p.view} #{execution}: no private column reached the bank",
              all(set(r) == {"uscc", "points"} for r in rows)
              and not private_columns & {k for r in rows for k in r})
        for r in rows:
            totals[r["uscc"]] += int(r["points"])
        where = ("mock rows (trial)" if execution == 0
                 else f"{len(tables['private'][p.view])} private rows")
        _say(p.name, f"execution {execution}: computed on {where} in its own datasite; "
             f"delivered {len(rows)} rows of points, result SHA-256 "
             f"{comp['result_sha256'][:16]}…")
    return totals


def _verify_delivery(api: Platform, bank: SimpleNamespace, order: str, check: Any) -> None:
    """The bank proves a delivery.made event is in the log a quorum of witnesses signed."""
    keys = api.call("GET", "/ledger/witnesses", bank.token)
    witnesses = [trust_witness(WitnessPublicKey.parse(w["vkey"])) for w in keys["witnesses"]]
    deadline = time.monotonic() + 30
    events = api.call("GET", "/ledger/events?after=0&limit=1000", bank.token)["events"]
    delivered = [e for e in events if e["type"] == "delivery.made"]
    if not delivered:
        check("the bank can see its deliveries in the log", False)
        return
    target = delivered[-1]
    while True:
        view = api.call("GET", "/ledger/checkpoints/latest?anchored=true", bank.token)
        if view["size"] >= target["seq"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    checkpoint, _ = open_checkpoint(view["cosigned"], [Verifier.from_vkey(keys["log_vkey"])],
                                    keys["origin"])
    signers = len(cosignatures(view["cosigned"], witnesses))
    proof = api.call("GET", f"/ledger/proofs/inclusion?index={target['seq'] - 1}"
                     f"&size={checkpoint.size}", bank.token)
    leaf = hashlib.sha256(b"\x00" + base64.b64decode(target["canonical"])).digest()
    try:
        verify_inclusion(leaf, target["seq"] - 1, checkpoint.size,
                         [base64.b64decode(h) for h in proof["proof"]], checkpoint.root)
        ok = True
    except VerificationError as exc:
        print(f"  inclusion proof refused: {exc}", flush=True)
        ok = False
    check(f"the bank verified delivery.made (seq {target['seq']}) against checkpoint "
          f"{checkpoint.size}, co-signed by {signers} of {len(witnesses)} witnesses "
          f"(quorum {keys['quorum']})", ok and signers >= keys["quorum"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dataledger demo finance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where to keep the demo's server data (default: a new temp dir)")
    parser.add_argument("--enterprises", type=int, default=3000)
    parser.add_argument("--asked", type=int, default=40,
                        help="how many enterprises the bank asks about")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds to wait for the deliveries")
    args = parser.parse_args(argv)
    if not 1 <= args.asked <= args.enterprises:
        parser.error("--asked must be between 1 and --enterprises")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="dataledger-demo-"))
    if data_dir.exists() and any(data_dir.glob("*.db")):
        parser.error(f"{data_dir} already holds a ledger: give a new --data-dir")
    return run(data_dir.absolute(), args.enterprises, args.asked, args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
