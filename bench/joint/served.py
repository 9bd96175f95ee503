"""The hidden query over HTTP, against a real server (``dataledger bench joint``).

``dataledger serve`` runs on a free loopback port (a fresh data directory; SQLite, or a
fresh PostgreSQL schema), without its embedded compute node. Over HTTP (``client/``) the
bench builds a joint product's market (three providers by default, each with a dataset and a
grant, the bank's approved contract with a ``query_count``) and plays the providers' nodes:
each registers its X25519 node key and requests execution 1; the layout provider posts the
layout (``table_rows`` credit codes); each posts its masked part (``core.secagg``). The
server's aggregation node then sums the parts and prepares and publishes the sealed table on
its own (``aggregation/``): the time from the last part's post to ``published`` is the
publication, beside the bank's download of the table (``GET /joint/{id}/table``). Neither is
part of a query.

Then, ``repetitions`` times, the bank's whole hidden query for ``codes`` codes with the
table already downloaded: ``client.hidden_query.ask`` (the joint's view, ``blind``, the POST
to ``/orders/{id}/hidden-queries`` where the node evaluates it and the ledger records
``joint.queried``, the answer's checks, ``lookup``), its POST timed apart.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.append.server import running_server
from bench.databases import Scratch
from bench.joint.workload import (
    KEY_COLUMN,
    VALUE_COLUMNS,
    Sizes,
    credit_code,
    points_of,
    query_codes,
    view_of,
)
from client.hidden_query import TableCache, ask
from client.market import Market
from client.platform import Party, Platform
from core import hidden_query as hq
from core import secagg
from demo.enterprises import CODE, OUTPUT_SCHEMA

ROOT = Path(__file__).resolve().parent.parent.parent
SITE = "bench-datasite"
SPLIT = {"developer": 1000, "operator": 3000, "platform": 1000, "provider": 5000}
#: how long the aggregation node may take to publish: its preparation costs about 100 µs a
#: row on one core (docs/HIDDEN_QUERY.md); six times that (a loaded machine), and a minute
PUBLISH_S_PER_ROW = 600e-6


class TimedPlatform(Platform):
    """The platform client, timing each hidden query's POST."""

    posts: list[float]

    def hidden_query(self, who: Any, order_id: str, joint_id: str,
                     request: bytes) -> dict[str, Any]:
        t0 = time.perf_counter()
        answer = super().hidden_query(who, order_id, joint_id, request)
        self.posts.append(time.perf_counter() - t0)
        return answer


def share(i: int, k: int, providers: int) -> int:
    """Provider ``k``'s points for enterprise ``i``: shares summing to ``expected_points``."""
    others = sum((i * (6 * j + 1)) % 50 for j in range(1, providers))
    return points_of(i) - others if k == 0 else (i * (6 * k + 1)) % 50


def _party_code(name: str) -> str:
    """A party's own credit code (the parties' codes must differ)."""
    return "91310000" + str(int(hashlib.sha256(name.encode()).hexdigest(), 16))[:10]


def build_market(api: Platform, admin: str, providers: int) -> dict[str, Any]:
    """Providers with a dataset each, a scenario, their grants, a joint product listed,
    the bank's contract approved by every party; over HTTP."""
    market = Market(api, admin, "Municipal data bureau",
                    credit_code=lambda role, name: _party_code(name))
    sites = [market.onboard("provider", f"Provider {k} ({view_of(k)})") for k in range(providers)]
    operator = market.onboard("operator", "Data operator")
    developer = market.onboard("developer", "Model studio")
    bank = market.onboard("demander", "City bank")
    expert = api.add_member(market.regulator, "expert", ["expert"])
    fields = [{"name": KEY_COLUMN, "type": "string", "sensitivity": "public"},
              {"name": "points", "type": "integer", "sensitivity": "sensitive"}]
    used = [KEY_COLUMN, "points"]
    datasets = []
    for party in sites:
        ds = api.register_dataset(party, name=f"{party.participant_id} records",
                                  description="per enterprise", source_system="core",
                                  classification="L3", fields=fields)
        api.publish_dataset(party, ds)
        datasets.append(ds)
    requested = [{"dataset_id": d, "fields": used} for d in datasets]
    sc = api.propose_scenario(operator, title="SME credit approval", purpose="joint score",
                              sector="finance", requested=requested,
                              circulation_mode="ciphertext")
    api.give_opinion(expert, sc, "approve", "proportionate")
    api.decide_scenario(market.regulator, sc, "approved")
    now = datetime.now(UTC)
    grants = [api.authorize(p, sc, [{"dataset_id": d, "fields": used}],
                            (now - timedelta(days=1), now + timedelta(days=365)),
                            {"processing_count": 100})
              for p, d in zip(sites, datasets, strict=True)]
    product = api.list_product(operator, market.platform, {
        "scenario_id": sc, "authorization_ids": grants, "name": "Joint SME credit points",
        "kind": "api", "description": "points per enterprise, summed over the providers",
        "code": CODE, "inputs": requested, "output_schema": OUTPUT_SCHEMA, "key_column": KEY_COLUMN,
        "joint": {"value_columns": VALUE_COLUMNS, "min_providers": providers,
                  "deadline_seconds": 3600},
        "quality_report": "AUC 0.8", "price_fen": 100, "developer_id": developer.id})
    order = api.place_order(bank, product, "credit decisions on SMEs")
    api.propose_contract(operator, order, usage_policy={
        "processing_count": 10, "query_count": 10**9,
        "not_before": (now - timedelta(hours=1)).isoformat(),
        "not_after": (now + timedelta(days=90)).isoformat()}, price_fen=100,
        revenue_split=SPLIT)
    api.accept_contract(bank, order)
    for party in (*sites, operator):
        api.approve_contract(party, order)
    return {"providers": sites, "datasets": datasets, "bank": bank, "order": order}


def post_parts(api: Platform, m: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    """The providers' nodes, played here: node keys, computations, the layout, the parts;
    the joint id and when the last part's post returned."""
    sites: list[Party] = m["providers"]
    keys = {p.participant_id: secagg.new_node_key() for p in sites}
    ids = [p.participant_id for p in sites]
    code_sha = hashlib.sha256(CODE.encode()).hexdigest()
    computations, joint_ids = {}, set()
    for party in sites:
        api.register_node_key(party, secagg.public_key_text(keys[party.participant_id]
                                                            .public_key()))
        made = api.call("POST", "/computations", party, (200, 201), json={
            "contract_id": m["order"], "execution": 1, "datasite": SITE,
            "code_sha256": code_sha})
        computations[party.participant_id] = made["computation_id"]
        joint_ids.add(made["joint_id"])
    (joint_id,) = joint_ids
    t0 = time.perf_counter()
    keys_laid = [credit_code(i) for i in range(sizes.table_rows)]
    posted = api.call("POST", f"/joint/{joint_id}/layout", sites[0], json={"keys": keys_laid})
    layout_s = time.perf_counter() - t0
    publics = {p: k.public_key() for p, k in keys.items()}
    posts = []
    for k, party in enumerate(sites):
        pid = party.participant_id
        values = [share(i, k, len(sites)) * secagg.SCALE for i in range(sizes.table_rows)]
        part = secagg.mask(keys[pid], joint_id, pid, ids, publics, values,
                           layout_sha256=posted["layout_sha256"])
        t1 = time.perf_counter()
        api.call("POST", f"/computations/{computations[pid]}/masked-part", party, json={
            "header": dict(part.header), "body": base64.b64encode(part.body).decode(),
            "input_hashes": {m["datasets"][k]: "a" * 64}, "datasite": SITE})
        posts.append(time.perf_counter() - t1)
    return {"joint_id": joint_id, "last_part_at": time.perf_counter(),
            "layout_post_s": layout_s, "part_posts_s": posts}


def wait_published(api: Platform, who: Party, joint_id: str, rows: int) -> dict[str, Any]:
    """The joint's view once published or failed; RuntimeError when it takes too long."""
    timeout = 60 + rows * PUBLISH_S_PER_ROW
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, Any] = api.joint(who, joint_id)
        if view["state"] in ("published", "failed"):
            return view
        if time.monotonic() > deadline:
            raise RuntimeError(f"joint {joint_id} not published after {timeout:.0f} s "
                               f"(state {view['state']}; see the server's log)")
        time.sleep(0.2)


def _queries(api: TimedPlatform, m: dict[str, Any], joint_id: str, cache: TableCache,
             sizes: Sizes) -> dict[str, Any]:
    codes = query_codes(sizes)
    expected = {c: ({KEY_COLUMN: c, "points": points_of(int(c[8:]))}
                    if int(c[8:]) < sizes.table_rows else None) for c in codes}
    totals, right = [], True
    api.posts = []
    for _ in range(sizes.repetitions):
        t0 = time.perf_counter()
        answer = ask(api, m["bank"], m["order"], codes, joint_id=joint_id, table_cache=cache)
        totals.append(time.perf_counter() - t0)
        right = right and answer.rows == expected
    return {"total_s": statistics.median(totals), "totals_s": totals,
            "post_s": statistics.median(api.posts), "posts_s": list(api.posts),
            "answers_right": right, "codes": len(codes),
            "members": sum(1 for v in expected.values() if v is not None),
            "request_bytes": len(answer.request), "response_bytes": len(answer.response)}


def measure(sizes: Sizes, backend: str, notes: list[str]) -> dict[str, Any]:
    """The server, the market, the publication, the queries; the figures."""
    scratch = Scratch(backend, "dataledger-bench-joint-")
    admin = "dl_bench_joint_admin_" + secrets.token_hex(12)
    env = {"PYTHONPATH": str(ROOT),  # this checkout's code, whatever the venv installed
           "DATALEDGER_DATA_DIR": str(scratch.tmp / "ledger"), "DATALEDGER_ADMIN_TOKEN": admin,
           "DATALEDGER_COMPUTE_NODE": "false", "DATALEDGER_NATS_URL": "",
           "DATALEDGER_DATABASE_URL": scratch.database_url("server")}
    (scratch.tmp / "server").mkdir(parents=True, exist_ok=True)
    try:
        with running_server(env, scratch.tmp, timeout=60) as (_proc, url):
            api = TimedPlatform(Platform.at(url, timeout=600).http)
            try:
                m = build_market(api, admin, sizes.providers)
                posted = post_parts(api, m, sizes)
                view = wait_published(api, m["bank"], posted["joint_id"], sizes.table_rows)
                published_s = time.perf_counter() - posted["last_part_at"]
                if view["state"] != "published":
                    raise RuntimeError(f"the joint failed: {view.get('reason')}")
                download = _download(api, m["bank"], view)
                queries = _queries(api, m, posted["joint_id"], download.pop("cache"), sizes)
            finally:
                api.close()
    except Exception as exc:
        log = scratch.tmp / "server.log"
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        raise RuntimeError(f"{exc}; the server's log ends: {tail}") from exc
    finally:
        scratch.cleanup(notes)
    return {"backend": backend, "publish_s": published_s, "rows": view["rows"],
            "layout_post_s": posted["layout_post_s"], "part_posts_s": posted["part_posts_s"],
            "download": download, **queries}


def _download(api: Platform, bank: Party, view: dict[str, Any]) -> dict[str, Any]:
    """The bank's download of the sealed table, read and checked against its digest."""
    get_s, raw = _timed(lambda: api.joint_table(bank, view["id"]))
    read_s, table = _timed(lambda: hq.HiddenTable.from_bytes(raw))
    digest_s, digest = _timed(table.digest)
    if digest != view["table_digest"]:
        raise RuntimeError("the downloaded table does not hash to the recorded digest")
    cache = TableCache()
    cache.put(table, raw)
    return {"get_s": get_s, "from_bytes_s": read_s, "digest_s": digest_s, "bytes": len(raw),
            "cache": cache}


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out
