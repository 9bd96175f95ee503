"""A joint product's market over HTTP, for the aggregation and hidden-query tests: three
providers (market regulation, tax, power), each with its dataset, one scenario and a grant
each, a joint product summing two value columns by credit code, the bank's approved
contract; and the providers' nodes played by the test (computations requested, the layout
and the masked parts posted, masked here with ``core.secagg``)."""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from client.platform import Party, Platform
from core import secagg
from core.canonical import canonical_bytes
from tests.e2e.conftest import CODE, World

FIELDS = [{"name": "credit_code", "type": "string", "sensitivity": "public"},
          {"name": "amount", "type": "integer", "sensitivity": "sensitive"}]
OUTPUT = {"type": "object", "properties": {"credit_code": {"type": "string"},
                                           "score": {"type": "integer"},
                                           "weight": {"type": "number"}}}
SITE = "datasite"
CODE_SHA256 = hashlib.sha256(CODE.encode()).hexdigest()
SPLIT = {"developer": 1000, "operator": 3000, "platform": 1000, "provider": 5000}
#: the enterprises: the layout (the market-regulation provider's keys, sorted)
CODES = [f"91110000MA0{i:07d}X" for i in range(40)]
OUTSIDERS = ["92440300MA5EXAMPL1", "91310000MA1FL0000X"]


@dataclass
class JointMarket:
    """The parties, the product and the approved contract of a joint product."""

    world: World
    providers: list[Party]
    operator: Party
    demander: Party
    datasets: list[str]
    product_id: str
    order_id: str
    #: each provider's authorization of its dataset, in provider order
    authorizations: list[str] = field(default_factory=list)
    keys: dict[str, X25519PrivateKey] = field(default_factory=dict)
    #: provider id -> its computation of execution 1
    computations: dict[str, str] = field(default_factory=dict)
    joint_id: str = ""

    @property
    def ids(self) -> list[str]:
        return [p.participant_id for p in self.providers]

    def provider(self, pid: str) -> Party:
        return next(p for p in self.providers if p.participant_id == pid)

    def dataset_of(self, pid: str) -> str:
        return self.datasets[self.ids.index(pid)]


def _scenario(world: World, operator: Party, datasets: list[str]) -> str:
    api = world.api
    expert = world.member(world.regulator, "expert 专家", ["expert"])
    requested = [{"dataset_id": d, "fields": ["credit_code", "amount"]} for d in datasets]
    sc = api.propose_scenario(operator, title="SME credit approval 企业授信",
                              purpose="joint credit score for loans", sector="finance",
                              requested=requested)
    api.give_opinion(expert, sc, "approve", "proportionate")
    api.decide_scenario(world.regulator, sc, "approved")
    return sc


def joint_market(world: World, *, usage_policy: dict[str, Any] | None = None,
                 deadline_seconds: int = 600) -> JointMarket:
    """Onboard the parties and reach an approved contract on a joint product."""
    api = world.api
    names = ["Market regulation 市场监管局", "Tax bureau 税务局", "Power utility 电力公司"]
    providers = [world.onboard("provider", name) for name in names]
    operator = world.onboard("operator", "Data operator 数据运营公司")
    developer = world.onboard("developer", "Model studio 模型工作室")
    demander = world.onboard("demander", "City bank 城市商业银行")
    datasets = []
    for provider, name in zip(providers, names):
        ds = api.register_dataset(provider, name=f"{name} records", description="per firm",
                                  source_system="core", fields=FIELDS)
        api.publish_dataset(provider, ds)
        datasets.append(ds)
    sc = _scenario(world, operator, datasets)
    now = datetime.now(UTC)
    auths = [api.authorize(p, sc, [{"dataset_id": d, "fields": ["credit_code", "amount"]}],
                           (now - timedelta(days=1), now + timedelta(days=365)),
                           {"processing_count": 100})
             for p, d in zip(providers, datasets)]
    product_id = api.list_product(operator, world.platform, {
        "scenario_id": sc, "authorization_ids": auths, "name": "Joint SME credit score",
        "kind": "api", "description": "a score per firm, summed over three providers",
        "code": CODE, "inputs": [{"dataset_id": d, "fields": ["credit_code", "amount"]}
                                 for d in datasets],
        "output_schema": OUTPUT, "key_column": "credit_code",
        "joint": {"value_columns": ["score", "weight"], "min_providers": 3,
                  "deadline_seconds": deadline_seconds},
        "quality_report": "AUC 0.8", "price_fen": 100, "developer_id": developer.participant_id})
    order_id = api.place_order(demander, product_id, "credit decisions on SMEs")
    window = {"processing_count": 10, "not_before": (now - timedelta(hours=1)).isoformat(),
              "not_after": (now + timedelta(days=90)).isoformat()}
    api.propose_contract(operator, order_id, usage_policy={**window, **(usage_policy or {})},
                         price_fen=100, revenue_split=SPLIT)
    api.accept_contract(demander, order_id)
    for party in (*providers, operator):
        api.approve_contract(party, order_id)
    return JointMarket(world, providers, operator, demander, datasets, product_id, order_id,
                       authorizations=auths)


def request_all(jm: JointMarket) -> str:
    """Each provider's node requests execution 1; the joint id (the same for all)."""
    joint_ids = set()
    for provider in jm.providers:
        made = jm.world.call("POST", "/computations", provider, 201, json={
            "contract_id": jm.order_id, "execution": 1, "datasite": SITE,
            "code_sha256": CODE_SHA256})
        jm.computations[provider.participant_id] = made["computation_id"]
        joint_ids.add(made["joint_id"])
    (jm.joint_id,) = joint_ids
    jm.keys = {pid: secagg.new_node_key() for pid in jm.ids}
    return jm.joint_id


def publish_layout(jm: JointMarket, keys: list[str] = CODES) -> None:
    jm.world.call("POST", f"/joint/{jm.joint_id}/layout", jm.providers[0],
                  json={"keys": sorted(keys)})


def rows_of(i: int) -> dict[str, tuple[int, float]]:
    """Provider ``i``'s output: code -> (score, weight); each leaves out some codes."""
    return {code: (10 * (i + 1) + k, round(0.25 * (i + 1) + k / 8, 3))
            for k, code in enumerate(CODES) if (k + i) % 5}


def plain_sum() -> dict[str, dict[str, int | float]]:
    """The joint table computed in the clear: what the aggregation must give."""
    table: dict[str, dict[str, int | float]] = {}
    for code in CODES:
        found = [rows_of(i)[code] for i in range(3) if code in rows_of(i)]
        table[code] = {"score": sum(s for s, _ in found),
                       "weight": sum(secagg.to_fixed([w for _, w in found])) / secagg.SCALE}
    return table


def part_of(jm: JointMarket, pid: str, *, execution_id: str | None = None,
            values: list[int] | None = None,
            layout: list[str] = CODES) -> secagg.MaskedPart:
    """Provider ``pid``'s masked part: its rows laid out by the layout, masked with its key
    and the peers' public keys, bound to ``layout``'s SHA-256."""
    i = jm.ids.index(pid)
    if values is None:
        rows = rows_of(i)
        values = []
        for code in CODES:
            score, weight = rows.get(code, (0, 0.0))
            values += [score * secagg.SCALE, secagg.to_fixed([weight])[0]]
    peers = {p: k.public_key() for p, k in jm.keys.items() if p != pid}
    return secagg.mask(jm.keys[pid], execution_id or jm.joint_id, pid, jm.ids, peers, values,
                       layout_sha256=layout_hash(layout))


def layout_hash(keys: list[str]) -> str:
    """A layout's SHA-256 as the ledger records it (of the key list's canonical JSON)."""
    return hashlib.sha256(canonical_bytes(keys)).hexdigest()


def post_part(jm: JointMarket, pid: str, part: secagg.MaskedPart,
              expect: int = 200) -> dict[str, Any]:
    answer: dict[str, Any] = jm.world.call(
        "POST", f"/computations/{jm.computations[pid]}/masked-part", jm.provider(pid), expect,
        json={"header": dict(part.header), "body": base64.b64encode(part.body).decode(),
              "input_hashes": {jm.dataset_of(pid): "a" * 64}, "datasite": SITE})
    return answer


def wait_for(jm: JointMarket, states: tuple[str, ...], timeout: float = 30,
             api: Platform | None = None) -> dict[str, Any]:
    """The joint's view once it reaches one of ``states`` (the aggregation runs in a
    worker thread of the app), asked of ``api`` (default: the world's)."""
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, Any] = (api or jm.world.api).call("GET", f"/joint/{jm.joint_id}",
                                                          jm.demander)
        if view["state"] in states or time.monotonic() > deadline:
            return view
        time.sleep(0.05)


def post_all_parts(jm: JointMarket) -> None:
    """Every provider's node, played: computations requested, the layout and each part
    posted (masks that cancel)."""
    request_all(jm)
    publish_layout(jm)
    for pid in jm.ids:
        post_part(jm, pid, part_of(jm, pid))


def published(world: World, **policy: Any) -> JointMarket:
    """A joint product's execution, its parts posted and published by the aggregation node
    (``policy``: the contract's usage policy)."""
    jm = joint_market(world, usage_policy=policy)
    post_all_parts(jm)
    assert wait_for(jm, ("published", "failed"))["state"] == "published"
    return jm


def events_of(world: World, originator_id: str) -> list[dict[str, Any]]:
    page = world.call("GET", "/ledger/events?limit=1000", world.regulator)["events"]
    return [e for e in page if e["originator_id"] == originator_id]
