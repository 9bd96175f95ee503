"""``dataledger demo finance``: the inclusive-finance scenario (white paper 6.1) end to end.

On the embedded default (SQLite, in-process witnesses, the compute node started by
``serve``), in a data directory of its own, the parties set the scenario up:

- the platform onboards a regulator, three providers (market regulation 市场监管局, tax
  税务局, the power utility 供电公司), an operator (the data group 数据集团), a model
  developer and a bank; each provider enrolls its compute node and registers the node's
  key on the ledger (the key its masks are agreed with);
- each provider loads synthetic enterprise data, keyed by unified social credit code, into
  its own datasite (the ledger records only row counts, schemas and SHA-256s); the scenario
  is reviewed and approved, each provider authorizes its dataset;
- the operator lists the bank's credit model as a product with a **joint output** (points,
  keyed by credit code); the bank orders it with no query in clear, tries it on mock data
  (the plain per-provider mode), and the contract is approved;

then the white paper's five steps (图 19):

1. joint computation: each provider's node runs the model on its own data in its sandbox,
   turns its points into a vector over the agreed layout and masks it (secure aggregation);
   only the masked parts leave the datasites;
2. publication: the platform's aggregation node sums the parts into the joint table, seals
   it for hidden queries with a fresh OPRF key and publishes it to the consortium;
3. the bank's hidden query by credit code (members of the table and non-members), through
   the API (``client/hidden_query.py``, and once through ``dataledger client hidden-query``);
4. the query travels blinded to the aggregation node, which evaluates it; the ledger records
   its commitment, size and the answer's hash;
5. the answer: the bank opens its rows in its copy of the table.

It checks each answer against the plain sum it computes from its own generated tables, prints
what each party saw (``demo/saw.py``) and exits 0 if every check held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from client.hidden_query import Answer, HiddenQueryFailed, ask
from client.market import Market
from client.platform import Party, Platform, PlatformError
from core.canonical import canonical_bytes
from core.files import write_private
from demo.enterprises import (
    CODE,
    MARKET_FIELDS,
    OUTPUT_SCHEMA,
    POWER_FIELDS,
    TAX_FIELDS,
    bank_queries,
    credit_code,
    plain_points,
    write_tables,
)
from demo.harness import ROOT, Checks, DemoError, node_cli, say, served

#: the product's joint output: the points summed over the providers by credit code
JOINT = {"value_columns": ["points"], "min_providers": 3, "deadline_seconds": 600}

PROVIDERS = (
    ("market", "Market regulation bureau 市场监管局", "Enterprise registration 工商登记信息",
     "market-registry", MARKET_FIELDS),
    ("tax", "Tax bureau 税务局", "Enterprise tax payment 纳税信息", "tax-core", TAX_FIELDS),
    ("power", "Power supply company 供电公司", "Enterprise power use 用电信息", "power-billing",
     POWER_FIELDS),
)


def _credit_code(role: str, name: str) -> str:
    """A well-formed Shanghai credit code, the same for a name on every run."""
    return credit_code(random.Random(name), region="310000")


@dataclass(frozen=True)
class Sizes:
    """How many enterprises there are, how many the bank asks about, how long it waits."""

    enterprises: int
    asked: int
    timeout: float


@dataclass
class Provider:
    """A provider of the demo: its party, its view of the enterprises, its compute node's
    datasite and key, and the dataset it registers and loads."""

    party: Party
    view: str
    title: str
    system: str
    fields: list[dict[str, str]]
    datasite: str
    node_key: str = ""
    dataset: str = ""
    sha256: str = ""

    @property
    def name(self) -> str:
        return self.party.name


@dataclass
class Queries:
    """The bank's hidden queries: what it asked (its own secret), what came back."""

    members: list[str] = field(default_factory=list)
    outsiders: list[str] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    cli_codes: list[str] = field(default_factory=list)

    @property
    def codes(self) -> list[str]:
        return self.members + self.outsiders


def run(data_dir: Path, sizes: Sizes) -> int:
    admin_token = "dl_demo_admin_" + secrets.token_urlsafe(24)
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"dataledger demo finance: data in {data_dir}, server log {data_dir / 'serve.log'}",
          flush=True)
    try:
        with served(data_dir, admin_token) as api:
            return Finance(api, admin_token, data_dir, sizes).run()
    except (DemoError, PlatformError, HiddenQueryFailed) as exc:
        print(f"FAILED: {exc}", flush=True)
        return 1


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
        self.queries = Queries()
        self.bank_dir = data_dir / "bank"  # the bank's machine: its cached table only

    def run(self) -> int:
        """Every step in order; the exit code."""
        from demo.saw import report

        self.onboard()
        self.catalog()
        self.review()
        product = self.list_product()
        order = self.contract(product)
        joint = self.joint_computation(order)
        self.hidden_queries(order, joint)
        report(self, order, joint)
        return self.check.summary()

    def node_cli(self, *args: str, token: str | None = None) -> dict[str, Any]:
        return node_cli(self.data_dir, self.api.url, *args, token=token)

    @functools.cached_property
    def points(self) -> dict[str, dict[str, int]]:
        """The demo's own reference: each enterprise's partial points by provider."""
        return plain_points(self.tables["private"])

    def onboard(self) -> None:
        print("\n1. Onboarding (入驻 and 准入); each provider's node key on the ledger",
              flush=True)
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
            p = Provider(party, view, title, system, fields, enrolled["datasite"],
                         node_key=str(enrolled["node_key"]))
            registered = self.api.register_node_key(party, p.node_key).get("node_key") or {}
            self.check(f"{view}: its node's X25519 key is on the ledger, registered by a "
                       "signed decision of its member", registered.get("public_key") == p.node_key)
            self.providers[view] = p
            say(name, f"admitted; compute node enrolled (datasite {p.datasite}), node key "
                f"{registered.get('key_id', '?')} registered")

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
            say(p.name, f"dataset {p.dataset}: {loaded['rows']} rows loaded into its "
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
        say("regulator", f"scenario {self.scenario} approved after the expert's opinion")
        self.now = datetime.now(UTC)
        window = (self.now - timedelta(days=1), self.now + timedelta(days=365))
        self.authorizations = []
        for p, req in zip(self.providers.values(), self.requested, strict=True):
            self.authorizations.append(self.api.authorize(
                p.party, self.scenario, [req], window, {"processing_count": 100}))
            say(p.name, f"authorized its dataset for the scenario ({self.authorizations[-1]})")

    def list_product(self) -> str:
        print("\n4. The product (上架): the bank's credit model, a joint output", flush=True)
        product = self.api.list_product(self.operator, self.market.platform, {
            "scenario_id": self.scenario, "authorization_ids": self.authorizations,
            "name": "SME credit points 企业信用分", "kind": "api",
            "description": "credit points per enterprise, summed over the three providers' "
            "views by secure aggregation; looked up by hidden query",
            "code": CODE, "inputs": self.requested, "output_schema": OUTPUT_SCHEMA,
            "key_column": "uscc", "joint": JOINT,
            "quality_report": "KS 0.41 on the synthetic back-test", "price_fen": 2_000_000,
            "developer_id": self.developer.id}, comment="listed")
        listed = self.api.product(self.bank, product)
        code_hash = hashlib.sha256(CODE.encode()).hexdigest()
        self.check("the listed product carries the code's SHA-256 and its joint output",
                   listed.get("code_sha256") == code_hash
                   and (listed.get("joint") or {}).get("value_columns") == ["points"])
        say("operator", f"product {product} listed: joint output (points by uscc, summed "
            f"over {len(self.providers)} providers); code SHA-256 {code_hash[:16]}…")
        return product

    def contract(self, product: str) -> str:
        """The bank's order (no query: a joint product takes hidden queries only), the trial
        on mock rows in the plain per-provider mode, the contract up to its approval."""
        print("\n5. The bank's order (no query in clear), a trial, the contract", flush=True)
        order = self.api.place_order(self.bank, product,
                                     "credit decisions on loan applicants 贷前审查")
        self.api.grant_trial(self.operator, order)
        trial = self.trial(order)
        self.check("the trial scored only invented enterprises (mock rows, region 999999)",
                   bool(trial) and all(c[2:8] == "999999" for c in trial)
                   and not set(trial) & set(self.tables["codes"]))
        say("bank", f"trial (试用) on mock data: each provider's points for {len(trial)} "
            "invented enterprises (the plain per-provider mode), to judge the output")
        self.plan_queries()
        allowed = len(self.queries.codes) + len(self.queries.cli_codes)
        self.api.propose_contract(self.operator, order, usage_policy={
            "processing_count": 3, "query_count": allowed,
            "not_before": self.now.isoformat(),
            "not_after": (self.now + timedelta(days=90)).isoformat(),
            "circulation_modes": ["plaintext"]}, price_fen=2_000_000, revenue_split={
            "developer": 1500, "operator": 2500, "platform": 1000, "provider": 5000})
        self.api.accept_contract(self.bank, order)
        for p in self.providers.values():
            self.api.approve_contract(p.party, order)
        self.api.approve_contract(self.operator, order)
        self.check("the contract is approved by the three providers and the operator",
                   self.api.order(self.bank, order)["state"] == "approved")
        say("bank", f"order {order}: contract approved; up to {allowed} codes by hidden "
            "query (usage control query_count)")
        return order

    def plan_queries(self) -> None:
        """The codes the bank will look up: enterprises of the table, and well-formed codes of
        enterprises none of the providers knows (its applicants outside the table)."""
        self.queries.members, self.queries.outsiders = bank_queries(self.tables["codes"],
                                                                    self.sizes.asked)
        self.queries.cli_codes = self.queries.members[:2] + self.queries.outsiders[:1]

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

    def trial(self, order: str) -> Counter[str]:
        """Execution 0 on each provider's mock rows, delivered per provider (plain mode)."""
        by_provider = self.finished(order, 0)
        totals: Counter[str] = Counter()
        for p in self.providers.values():
            comp = by_provider.get(p.party.id) or {}
            if not self.check(f"{p.view} #0: its trial computation succeeded on the mock "
                              "table, not the private file",
                              comp.get("state") == "succeeded" and comp.get("trial") is True
                              and set(comp["input_hashes"]) == {p.dataset}
                              and comp["input_hashes"][p.dataset] != p.sha256):
                say(p.name, f"trial computation: {comp}")
                continue
            raw = self.api.delivery(self.bank, comp["computation_id"])
            rows: list[dict[str, Any]] = json.loads(raw)
            made = [e["payload"] for e in self.api.events(self.bank)
                    if e["type"] == "delivery.made"
                    and e["originator_id"] == comp["computation_id"]]
            self.check(f"{p.view} #0: the delivered bytes (the result watermarked for the "
                       "bank) hash to the SHA-256 the ledger recorded with the delivery",
                       [m["delivered_sha256"] for m in made] == [hashlib.sha256(raw).hexdigest()]
                       and made[0]["result_sha256"] == comp["result_sha256"])
            for r in rows:
                totals[r["uscc"]] += int(r["points"])
        return totals

    def wait_joint(self, order: str) -> dict[str, Any]:
        """The order's joint computation of execution 1, once published or failed."""
        deadline = time.monotonic() + self.sizes.timeout
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            seen = [j for j in self.api.joints(self.bank, order) if j["execution"] == 1]
            if seen and seen[0]["state"] in ("published", "failed"):
                return self.api.joint(self.bank, str(seen[0]["id"]))
            time.sleep(1)
        raise DemoError(f"after {self.sizes.timeout:.0f} s the joint computation is "
                        f"{[j['state'] for j in seen] or 'not started'}")

    def joint_computation(self, order: str) -> dict[str, Any]:
        """Steps 一 and 二: the three providers' masked parts, summed and published."""
        print("\n6. Step 一: joint computation over the three providers' data with the "
              "bank's model (secure aggregation)", flush=True)
        joint = self.wait_joint(order)
        by_provider = self.finished(order, 1)
        self.check("the joint computation was published (not failed)",
                   joint["state"] == "published" and not joint.get("reason"))
        self.check("the joint's providers are the three, in input order; the layout is "
                   "market regulation's",
                   joint["providers"] == [p.party.id for p in self.providers.values()]
                   and joint["layout_provider"] == self.providers["market"].party.id)
        for p in self.providers.values():
            comp = by_provider.get(p.party.id) or {}
            self.check(f"{p.view} #1: computed on its private file in its datasite; the "
                       "ledger holds its masked part's digest, nothing else of it",
                       comp.get("state") == "succeeded"
                       and comp.get("input_hashes") == {p.dataset: p.sha256}
                       and comp.get("result_sha256") == joint["parts"].get(p.party.id))
            say(p.name, f"ran the model on its {self.sizes.enterprises} private rows in its "
                f"sandbox, masked its points over the {joint['length']}-key layout; posted "
                f"part {str(joint['parts'].get(p.party.id))[:16]}…")
        print("\n7. Step 二: the aggregation node publishes the joint table to the consortium",
              flush=True)
        reference = {code: sum(views.values()) for code, views in self.points.items()}
        self.check(f"the joint table has one row per enterprise of the layout "
                   f"({len(reference)})", joint["rows"] == joint["length"] == len(reference))
        table = {code: {"points": points} for code, points in reference.items()}
        self.check("the joint result's SHA-256 on the ledger is that of the plain sum the "
                   "demo computed from its own tables",
                   joint["result_sha256"] == hashlib.sha256(canonical_bytes(table)).hexdigest())
        say("aggregation node", f"summed {len(joint['parts'])} masked parts into the joint "
            f"table ({joint['rows']} rows), sealed it with a fresh OPRF key and published "
            f"it: table digest {str(joint['table_digest'])[:16]}…")
        return joint

    def hidden_queries(self, order: str, joint: dict[str, Any]) -> None:
        """Steps 三 to 五: the bank's hidden queries, through the API and the CLI."""
        print("\n8. Steps 三–五: the bank's hidden query by credit code (隐匿查询)", flush=True)
        q = self.queries
        asked = random.Random(615).sample(q.codes, len(q.codes))
        answer = ask(self.api, self.bank, order, asked, table_cache=self.bank_dir / "tables")
        q.answers.append(answer)
        kept = self.bank_dir / "queries" / answer.recorded["request_commitment"]
        write_private(kept.with_suffix(".request"), answer.request)  # the bank's own record
        write_private(kept.with_suffix(".response"), answer.response)
        say("bank", f"三: downloaded the sealed joint table ({joint['rows']} rows, digest "
            f"{str(joint['table_digest'])[:16]}…, as on the ledger) and blinded {len(asked)} "
            "credit codes on its own machine")
        say("bank", f"四: posted the blinded request: {len(answer.request)} bytes, "
            f"{len(asked)} random-looking group elements; commitment "
            f"{answer.recorded['request_commitment'][:16]}…")
        say("aggregation node", f"五: evaluated the {answer.recorded['request_size']} "
            "elements with the table's OPRF key; the ledger recorded the commitment, the "
            f"size and the answer hash {answer.recorded['answer_hash'][:16]}…")
        self.check_rows("API", answer.rows)
        self.check("the blinded request holds none of the codes' bytes",
                   not any(c.encode() in answer.request for c in asked))
        rows = self.cli_query(order)
        self.check_rows("dataledger client hidden-query", rows)
        self.over_the_limit(order)

    def check_rows(self, how: str, rows: dict[str, dict[str, Any] | None]) -> None:
        """Members come back with the plain sum of their points, non-members with None."""
        points = self.points
        members = [c for c in rows if c in points]
        outsiders = [c for c in rows if c not in points]
        self.check(f"{how}: the bank got its {len(members)} members' rows, each the plain "
                   "sum of the three providers' points",
                   bool(members) and all(rows[c] == {"uscc": c, "points": sum(points[c].values())}
                                         for c in members))
        self.check(f"{how}: the {len(outsiders)} code(s) outside the table came back empty",
                   bool(outsiders) and all(rows[c] is None for c in outsiders))
        say("bank", f"五 ({how}): {len(members)} row(s) opened, {len(outsiders)} code(s) not "
            "in the table")

    def cli_query(self, order: str) -> dict[str, dict[str, Any] | None]:
        """The same lookup by the command a bank runs: codes on stdin, the token in the
        environment, the table from its cache (not downloaded again)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATALEDGER_")}
        env["DATALEDGER_TOKEN"] = self.bank.token
        done = subprocess.run(
            [sys.executable, "-m", "cli", "client", "hidden-query", "--url", self.api.url,
             "--order", order, "--codes-file", "-", "--cache-dir",
             str(self.bank_dir / "tables")], input="\n".join(self.queries.cli_codes) + "\n",
            env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise DemoError(f"dataledger client hidden-query: exit {done.returncode}: "
                            f"{done.stderr.strip()[-800:]}")
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        return {line["code"]: line["row"] for line in lines}

    def over_the_limit(self, order: str) -> None:
        """The contract's ``query_count`` is spent: one more code is refused and recorded."""
        try:
            ask(self.api, self.bank, order, self.queries.members[:1],
                table_cache=self.bank_dir / "tables")
            refused: PlatformError | None = None
        except PlatformError as exc:
            refused = exc
        self.check("a query past the contract's query_count is refused (409 count_exhausted)",
                   refused is not None and refused.status == 409
                   and "count_exhausted" in refused.body)
        say("bank", "a further query was refused: the contract's query_count is spent")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dataledger demo finance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where to keep the demo's server data (default: a new temp dir)")
    parser.add_argument("--enterprises", type=int, default=3000)
    parser.add_argument("--asked", type=int, default=40,
                        help="how many enterprises of the table the bank looks up (and a "
                        "third as many outside it)")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds to wait for each computation")
    args = parser.parse_args(argv)
    if not 2 <= args.asked <= args.enterprises:
        parser.error("--asked must be between 2 and --enterprises")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="dataledger-demo-"))
    if data_dir.exists() and any(data_dir.glob("*.db")):
        parser.error(f"{data_dir} already holds a ledger: give a new --data-dir")
    return run(data_dir.absolute(), Sizes(args.enterprises, args.asked, args.timeout))


if __name__ == "__main__":
    raise SystemExit(main())
