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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from chain.bls import WitnessPublicKey, cosignatures, trust_witness
from chain.checkpoint import open_checkpoint
from chain.note import Verifier
from chain.verify import VerificationError, verify_inclusion
from client.market import Market
from client.platform import Party, Platform, PlatformError
from core.decision import event_signature_verifies, key_id
from core.record import leaf_hash
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

#: what CODE returns: one row of partial points per enterprise asked about, by its credit
#: code (the key column the bank's queries name)
OUTPUT_SCHEMA = {"type": "array", "items": {
    "type": "object", "required": ["uscc", "points"], "additionalProperties": False,
    "properties": {"uscc": {"type": "string"}, "points": {"type": "integer"}}}}

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


def _serve(data_dir: Path, port: int, admin_token: str, log_file: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(data_dir), "DATALEDGER_PORT": str(port),
           "DATALEDGER_HOST": "127.0.0.1", "DATALEDGER_ADMIN_TOKEN": admin_token,
           "DATALEDGER_DATABASE_URL": "", "DATALEDGER_WITNESS_URLS": "",
           "DATALEDGER_NATS_URL": "", "DATALEDGER_CHAIN": "true",
           "DATALEDGER_COMPUTE_NODE": "true", "DATALEDGER_CHECKPOINT_EVERY_SECONDS": "1",
           "DATALEDGER_NODE_POLL_SECONDS": "0.5"}
    out = log_file.open("ab")
    return subprocess.Popen([sys.executable, "-m", "cli", "serve"], env=env, cwd=str(ROOT),
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_health(api: Platform, process: subprocess.Popen[bytes], log_file: Path) -> None:
    if api.wait_until_up(60, alive=lambda: process.poll() is None):
        return
    if process.poll() is not None:
        raise DemoError(f"dataledger serve exited with {process.returncode}; see {log_file}")
    raise DemoError(f"dataledger serve did not answer within 60 s; see {log_file}")


def _node_cli(data_dir: Path, url: str, *args: str, token: str | None = None) -> dict[str, Any]:
    """``dataledger compute-node ARGS`` against the demo's server; its JSON answer."""
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(data_dir),
           "DATALEDGER_NODE_DATA_DIR": str(data_dir / "node"),
           "DATALEDGER_NODE_PLATFORM_URL": url}
    env.pop("DATALEDGER_NODE_TOKEN", None)
    if token is not None:  # never on the command line, where `ps` shows it
        env["DATALEDGER_NODE_TOKEN"] = token
    done = subprocess.run([sys.executable, "-m", "cli", "compute-node", *args], env=env,
                          cwd=str(ROOT), capture_output=True, text=True, timeout=900,
                          check=False)
    if done.returncode != 0:
        raise DemoError(f"dataledger compute-node {args[0]}: exit {done.returncode}: "
                        f"{done.stderr.strip()[-1500:]}")
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def _say(party: str, line: str) -> None:
    print(f"  [{party}] {line}", flush=True)


def _credit_code(role: str, name: str) -> str:
    """A well-formed Shanghai credit code, the same for a name on every run."""
    return credit_code(random.Random(name), region="310000")


@dataclass(frozen=True)
class Sizes:
    """How many enterprises there are, how many the bank asks about, how long it waits."""

    enterprises: int
    asked: int
    timeout: float


def run(data_dir: Path, enterprises: int, asked: int, timeout: float) -> int:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    admin_token = "dl_demo_admin_" + secrets.token_urlsafe(24)
    log_file = data_dir / "serve.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"dataledger demo finance: data in {data_dir}, server log {log_file}", flush=True)
    server = _serve(data_dir, port, admin_token, log_file)
    api = Platform.at(url, timeout=60)
    try:
        _wait_health(api, server, log_file)
        demo = Finance(api, admin_token, data_dir, Sizes(enterprises, asked, timeout))
        return demo.run()
    except (DemoError, PlatformError) as exc:
        print(f"FAILED: {exc}", flush=True)
        return 1
    finally:
        api.close()
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@dataclass
class Provider:
    """A provider of the demo: its party, its view of the enterprises, its compute node's
    datasite, and the dataset it registers and loads."""

    party: Party
    view: str
    title: str
    system: str
    fields: list[dict[str, str]]
    datasite: str
    dataset: str = ""
    sha256: str = ""

    @property
    def name(self) -> str:
        return self.party.name


class Checks:
    """What the demo verified: each check printed as it is made, a summary at the end."""

    def __init__(self) -> None:
        self.made: list[tuple[str, bool]] = []

    def __call__(self, what: str, ok: bool) -> None:
        self.made.append((what, ok))
        print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)

    def summary(self) -> int:
        """Print how many checks held and which failed; the exit code (1 if any failed)."""
        failed = [what for what, ok in self.made if not ok]
        print(f"\n{len(self.made) - len(failed)} of {len(self.made)} checks held.", flush=True)
        for what in failed:
            print(f"  FAILED: {what}", flush=True)
        return 1 if failed else 0


class Finance:
    """The scenario, step by step, as each party takes it over the platform's HTTP API."""

    market: Market  # the platform operator's party and the regulator, signing their decisions
    regulator: Party
    operator: Party
    developer: Party
    bank: Party
    expert: Party
    tables: dict[str, Any]
    scenario: str
    requested: list[dict[str, Any]]
    authorizations: list[str]
    now: datetime

    def __init__(self, api: Platform, admin_token: str, data_dir: Path, sizes: Sizes) -> None:
        self.api = api
        self.admin = admin_token
        self.data_dir = data_dir
        self.sizes = sizes
        self.check = Checks()
        self.providers: dict[str, Provider] = {}

    def run(self) -> int:
        """Every step in order; the exit code."""
        self.onboard()
        self.catalog()
        self.review()
        product = self.list_product()
        order = self.contract(product)
        totals = self.deliver(order)
        self.report(order, totals)
        return self.check.summary()

    def node_cli(self, *args: str, token: str | None = None) -> dict[str, Any]:
        return _node_cli(self.data_dir, self.api.url, *args, token=token)

    def onboard(self) -> None:
        print("\n1. Onboarding (入驻 and 准入)", flush=True)
        market = Market(self.api, self.admin, "Municipal big data bureau 大数据局",
                        credit_code=_credit_code, comment="meets the admission criteria 准入")
        self.market, self.regulator = market, market.regulator
        self.operator = market.onboard("operator", "Municipal data group 数据集团")
        self.developer = market.onboard("developer", "Risk model studio 风控模型工作室")
        self.bank = market.onboard("demander", "City commercial bank 城市商业银行")
        self.expert = self.api.add_member(self.regulator, "credit expert 专家", ["expert"])
        self.tables = write_tables(self.data_dir / "source-data", self.sizes.enterprises)
        for view, name, title, system, fields in PROVIDERS:
            party = market.onboard("provider", name)
            node = self.api.add_member(party, "compute node", ["member"])
            enrolled = self.node_cli("enroll", token=node.token)
            p = Provider(party, view, title, system, fields, enrolled["datasite"])
            self.providers[view] = p
            _say(name, f"admitted; its compute node enrolled with datasite {p.datasite}")

    def catalog(self) -> None:
        print("\n2. Catalog and data loading (data stays in each provider's datasite)",
              flush=True)
        for p in self.providers.values():
            p.dataset = self.api.register_dataset(
                p.party, name=p.title, description=f"one row per enterprise ({p.view})",
                source_system=p.system, fields=p.fields)
            self.api.publish_dataset(p.party, p.dataset)
            paths = self.tables["paths"][p.view]
            loaded = self.node_cli("load", "--dataset", p.dataset, "--private",
                                   str(paths["private"]), "--mock", str(paths["mock"]))
            p.sha256 = hashlib.sha256(paths["private"].read_bytes()).hexdigest()
            _say(p.name, f"dataset {p.dataset}: {loaded['rows']} rows loaded into its "
                 f"datasite; the ledger holds SHA-256 {p.sha256[:16]}…")
            recorded = self.api.event(p.party, loaded["ledger"]["seqs"][0])
            self.check(f"{p.view}: the ledger recorded the private file's SHA-256 and row "
                       "count, no rows",
                       recorded["type"] == "dataset.data_loaded"
                       and recorded["payload"]["sha256"] == p.sha256
                       and recorded["payload"]["rows"] == self.sizes.enterprises)

    def review(self) -> None:
        print("\n3. Scenario review (一场景一审核) and authorizations", flush=True)
        self.requested = [{"dataset_id": p.dataset, "fields": [f["name"] for f in p.fields]}
                          for p in self.providers.values()]
        self.scenario = self.api.propose_scenario(
            self.operator, title="SME credit assessment 中小微企业信用评估",
            purpose="score small and micro enterprises for loans 普惠金融", sector="finance",
            requested=self.requested)
        self.api.give_opinion(self.expert, self.scenario, "approve",
                              "proportionate, results are scores only")
        self.api.decide_scenario(self.regulator, self.scenario, "approved 同意")
        _say("regulator", f"scenario {self.scenario} approved after the expert's opinion")
        self.now = datetime.now(UTC)
        window = (self.now - timedelta(days=1), self.now + timedelta(days=365))
        self.authorizations = []
        for p, req in zip(self.providers.values(), self.requested, strict=True):
            self.authorizations.append(self.api.authorize(
                p.party, self.scenario, [req], window, {"processing_count": 100}))
            _say(p.name, f"authorized its dataset for the scenario ({self.authorizations[-1]})")

    def list_product(self) -> str:
        print("\n4. The product (上架)", flush=True)
        product = self.api.list_product(self.operator, self.market.platform, {
            "scenario_id": self.scenario, "authorization_ids": self.authorizations,
            "name": "SME credit points 企业信用分", "kind": "api",
            "description": "partial credit points per enterprise from each provider's view",
            "code": CODE, "inputs": self.requested, "output_schema": OUTPUT_SCHEMA,
            "key_column": "uscc",
            "quality_report": "KS 0.41 on the synthetic back-test", "price_fen": 2_000_000,
            "developer_id": self.developer.id}, comment="listed")
        listed = self.api.product(self.bank, product)
        code_hash = hashlib.sha256(CODE.encode()).hexdigest()
        self.check("the listed product carries the code's SHA-256",
                   listed.get("code_sha256") == code_hash)
        _say("operator", f"product {product} listed; code SHA-256 {code_hash[:16]}…")
        return product

    def contract(self, product: str) -> str:
        """The bank's order, the trial on mock rows, the contract up to its approval."""
        print("\n5. The bank's order, a query by credit code, a trial, the contract",
              flush=True)
        wanted = self.tables["codes"][:self.sizes.asked]
        order = self.api.place_order(self.bank, product,
                                     "credit decisions on loan applicants 贷前审查",
                                     {"field": "uscc", "values": wanted})
        self.api.grant_trial(self.operator, order)
        trial = self.deliveries(order, 0, None)
        self.check("the trial scored only invented enterprises (mock rows, region 999999)",
                   bool(trial) and all(c[2:8] == "999999" for c in trial)
                   and not set(trial) & set(self.tables["codes"]))
        _say("bank", f"trial (试用) on mock data: points for {len(trial)} invented "
             "enterprises, so it can judge the output before it signs")
        self.api.propose_contract(self.operator, order, usage_policy={
            "processing_count": 3, "not_before": self.now.isoformat(),
            "not_after": (self.now + timedelta(days=90)).isoformat(),
            "circulation_modes": ["plaintext"]}, price_fen=2_000_000, revenue_split={
            "developer": 1500, "operator": 2500, "platform": 1000, "provider": 5000})
        self.api.accept_contract(self.bank, order)
        for p in self.providers.values():
            self.api.approve_contract(p.party, order)
        self.api.approve_contract(self.operator, order)
        self.check("the contract is approved by the three providers and the operator",
                   self.api.order(self.bank, order)["state"] == "approved")
        _say("bank", f"order {order}: asked about {len(wanted)} of {self.sizes.enterprises} "
             "enterprises")
        return order

    def deliver(self, order: str) -> Counter[str]:
        """Execution 1 on the asked enterprises, then a second query's execution."""
        print("\n6. Computation on each datasite and delivery (数据可用不可见)", flush=True)
        asked = self.sizes.asked
        totals = self.deliveries(order, 1, self.tables["codes"][:asked])
        later = self.tables["codes"][asked:asked + 5]
        if later:
            answer = self.api.submit_query(self.bank, order, {"field": "uscc", "values": later})
            _say("bank", f"a second query (execution {answer['execution']}): {len(later)} "
                 "more enterprises")
            totals.update(self.deliveries(order, answer["execution"], later))
        return totals

    def report(self, order: str, totals: Counter[str]) -> None:
        print("\n7. What each party saw", flush=True)
        _say("bank", f"credit points for its {len(totals)} applicants (sum of the three "
             "views):")
        for code, points in sorted(totals.items(), key=lambda kv: -kv[1])[:5]:
            _say("bank", f"  {code}  {points:>4} points")
        self.check("every code the bank received is a well-formed credit code",
                   all(valid_code(c) for c in totals))
        self.verify_delivery()
        self.verify_signatures()
        log = self.api.events_page(self.regulator)
        types = Counter(e["type"] for e in log["events"])
        _say("regulator", f"the whole log: {sum(types.values())} events, "
             f"{types['computation.succeeded']} computations, {types['delivery.made']} "
             f"deliveries, {types['dataset.data_loaded']} data loads (hashes only)")
        op_view = self.api.order(self.operator, order)
        _say("operator", f"contract {order} {op_view['state']}; revenue split (per 10,000) "
             f"{op_view.get('revenue_split')}")
        for p in self.providers.values():
            theirs = self.api.computations(p.party, order)
            _say(p.name, f"sees {len(theirs)} computation(s) of the contract: its own "
                 f"({', '.join(c['state'] for c in theirs)})")

    def finished(self, order: str, execution: int) -> dict[str, dict[str, Any]]:
        """Each provider's computation of ``execution``, once every one has ended."""
        deadline = time.monotonic() + self.sizes.timeout
        computations: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            computations = [c for c in self.api.computations(self.bank, order)
                            if c["execution"] == execution]
            done = [c for c in computations if c["state"] in ("succeeded", "failed")]
            if len(done) == len(self.providers):
                return {c["provider_id"]: c for c in computations}
            time.sleep(1)
        raise DemoError(f"after {self.sizes.timeout:.0f} s: computations of execution "
                        f"{execution}: {[(c['provider_id'], c['state']) for c in computations]}")

    def deliveries(self, order: str, execution: int, wanted: list[str] | None) -> Counter[str]:
        """Wait for each provider's computation of ``execution``; check and add up its points.

        Execution 0 is the trial on mock rows (``wanted`` None: every mock row comes back)."""
        by_provider = self.finished(order, execution)
        totals: Counter[str] = Counter()
        for p in self.providers.values():
            comp = by_provider.get(p.party.id)
            self.check(f"{p.view} #{execution}: its computation succeeded",
                       comp is not None and comp["state"] == "succeeded")
            if comp is None or comp["state"] != "succeeded":
                _say(p.name, f"computation: {comp}")
                continue
            rows = self.delivered(p, comp, execution, wanted)
            for r in rows:
                totals[r["uscc"]] += int(r["points"])
            where = ("mock rows (trial)" if execution == 0
                     else f"{len(self.tables['private'][p.view])} private rows")
            _say(p.name, f"execution {execution}: computed on {where} in its own datasite; "
                 f"delivered {len(rows)} rows of points, result SHA-256 "
                 f"{comp['result_sha256'][:16]}…")
        return totals

    def delivered(self, p: Provider, comp: dict[str, Any], execution: int,
                  wanted: list[str] | None) -> list[dict[str, Any]]:
        """Check one succeeded computation's inputs and the bytes the bank fetches; its rows."""
        if execution == 0:
            self.check(f"{p.view} #0: the trial's input is the mock table, not the private "
                       "file", comp.get("trial") is True
                       and set(comp["input_hashes"]) == {p.dataset}
                       and comp["input_hashes"][p.dataset] != p.sha256)
        else:
            self.check(f"{p.view} #{execution}: the input hash on the ledger is its private "
                       "file's", comp["input_hashes"] == {p.dataset: p.sha256})
        raw = self.api.delivery(self.bank, comp["computation_id"])
        rows: list[dict[str, Any]] = json.loads(raw)
        self.check(f"{p.view} #{execution}: the delivered bytes hash to the ledger's result "
                   "SHA-256", hashlib.sha256(raw).hexdigest() == comp["result_sha256"])
        if wanted is not None:
            self.check(f"{p.view} #{execution}: the bank got exactly the {len(wanted)} "
                       "enterprises it asked about",
                       sorted(r["uscc"] for r in rows) == sorted(wanted))
        private_columns = {f["name"] for q in self.providers.values() for f in q.fields}
        self.check(f"{p.view} #{execution}: no private column reached the bank",
                   all(set(r) == {"uscc", "points"} for r in rows)
                   and not (private_columns - {"uscc"}) & {k for r in rows for k in r})
        return rows

    def verify_signatures(self) -> None:
        """Every decision of the run was signed by the member who made it (签名验签): each
        verifies from its event and the key that member registered on the ledger alone."""
        events = self.api.events(self.regulator)
        keys = {key_id(e["payload"]["public_key"]): e["payload"]["public_key"]
                for e in events if e["type"] == "participant.key_registered"}
        founded = self.market.platform.id  # admitted by the system at first start, unsigned
        decisions = [e["payload"]["signature"] for e in events
                     if "signature" in e["payload"] and e["originator_id"] != founded]
        verified = [s for s in decisions
                    if s is not None and event_signature_verifies(keys.get(s["key_id"], ""), s)]
        self.check(f"all {len(decisions)} decisions are signed and verify from their events",
                   bool(decisions) and len(verified) == len(decisions))
        _say("regulator", f"{len(verified)} of {len(decisions)} decisions (admissions, "
             "opinions, grants, listing, contract steps) verify with their member's registered "
             "key, from the events alone")

    def verify_delivery(self) -> None:
        """The bank proves a delivery.made event is in the log a quorum of witnesses signed."""
        keys = self.api.witnesses(self.bank)
        witnesses = [trust_witness(WitnessPublicKey.parse(w["vkey"]))
                     for w in keys["witnesses"]]
        deadline = time.monotonic() + 30
        events = self.api.events_page(self.bank)["events"]
        delivered = [e for e in events if e["type"] == "delivery.made"]
        if not delivered:
            self.check("the bank can see its deliveries in the log", False)
            return
        target = delivered[-1]
        while True:
            view = self.api.latest_checkpoint(self.bank)
            if view["size"] >= target["seq"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        checkpoint, _ = open_checkpoint(view["cosigned"],
                                        [Verifier.from_vkey(keys["log_vkey"])], keys["origin"])
        signers = len(cosignatures(view["cosigned"], witnesses))
        proof = self.api.inclusion_proof(self.bank, target["seq"] - 1, checkpoint.size)
        try:
            verify_inclusion(leaf_hash(base64.b64decode(target["canonical"])),
                             target["seq"] - 1, checkpoint.size,
                             [base64.b64decode(h) for h in proof["proof"]], checkpoint.root)
            ok = True
        except VerificationError as exc:
            print(f"  inclusion proof refused: {exc}", flush=True)
            ok = False
        self.check(f"the bank verified delivery.made (seq {target['seq']}) against checkpoint "
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
