"""A joint product over three providers with REAL datasites: secure aggregation end to end.

A real ledger server (``dataledger serve``, the server's venv, with its aggregation node),
three providers (market regulation, tax, power), each with its own PySyft 0.9.5 datasite
and its own compute node (its key made by ``enroll``, registered by the provider's member,
signed), a joint product over their three datasets, and contracts approved by every party.
Each node runs the product in the sandbox on its own private table and posts a masked part;
the aggregation node sums them and publishes the joint table, which the bank opens with a
hidden query (``dataledger client hidden-query``, the server's venv: it needs ``rbcl``).

- the published joint table equals the per-enterprise sum computed here with pandas;
- every masked part a node stored is indistinguishable from random (chi-square over byte
  frequencies, bit balance), over many parts of many executions, while the same tests
  reject the vectors they mask;
- a replayed part (another execution's) is refused, and stores nothing;
- a provider that never posts fails the execution at its deadline, nothing delivered.

Runs inside the compute venv only: ``compute_nodes/setup-env test``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from compute_nodes.enrollment import enroll, enroll_command, node_key_path, node_public_key
from compute_nodes.joint import PartStore, joint_rows, layout_of, vector
from compute_nodes.outcome import Outcome
from core import secagg
from tests.compute.ledger import ADMIN_TOKEN, ROOT, Api, ledger_server
from tests.compute.test_datasite import uscc

pytestmark = pytest.mark.timeout(900)

SERVER = ROOT / ".venv" / "bin" / "dataledger"
#: each provider's dataset: the credit code and one sensitive integer column of its own
PROVIDERS = {"market": "registered_capital_yuan", "tax": "tax_paid_yuan",
             "power": "power_kwh"}
#: the one function every provider runs on its own table (its one input): a partial score
#: and a fractional weight per enterprise, summed over the providers by the aggregation node
CODE = '''def partial(data):
    value = [c for c in data.columns if c != "uscc"][0]
    table = data.groupby("uscc", as_index=False)[value].sum().sort_values("uscc")
    return [{"uscc": str(u), "score": int(v) // 1000, "weight": float(v) / 7.0}
            for u, v in zip(table["uscc"], table[value])]
'''
SCHEMA = {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                     "properties": {"uscc": {"type": "string"},
                                                    "score": {"type": "integer"},
                                                    "weight": {"type": "number"}}}}
COLUMNS = ["score", "weight"]


def partial(table: pd.DataFrame) -> pd.DataFrame:
    """CODE, computed here with pandas."""
    value = next(c for c in table.columns if c != "uscc")
    grouped = table.groupby("uscc", as_index=False)[value].sum().sort_values("uscc")
    return pd.DataFrame({"uscc": grouped["uscc"], "score": grouped[value] // 1000,
                         "weight": grouped[value] / 7.0})


def tables(seed: int = 11) -> dict[str, pd.DataFrame]:
    """Three private tables over overlapping enterprises: market registers 400 of a 520-firm
    universe (the layout), tax and power cover parts of it and some firms market lacks
    (dropped), with a few enterprises listed twice."""
    rng = np.random.default_rng(seed)
    universe = sorted({uscc(rng) for _ in range(520)})
    picks = {"market": universe[:400], "tax": universe[100:460], "power": universe[::2]}
    out = {}
    for provider, column in PROVIDERS.items():
        codes = list(picks[provider]) + list(picks[provider][:7])  # 7 listed twice
        out[provider] = pd.DataFrame({"uscc": codes, column: rng.integers(
            0, 5_000_000, len(codes))})
    return out


def expected_table(private: dict[str, pd.DataFrame]) -> dict[str, dict[str, Any]]:
    """The joint table by pandas: the providers' partials summed per enterprise of the
    layout (market's enterprises), 0 where a provider has none."""
    layout = sorted(private["market"]["uscc"].unique())
    total = pd.concat([partial(t) for t in private.values()]).groupby("uscc")[COLUMNS].sum()
    total = total.reindex(layout, fill_value=0)
    return {k: {"score": int(r.score), "weight": float(r.weight)}
            for k, r in zip(total.index, total.itertuples(index=False), strict=True)}


# -- the world: a server, three providers with a datasite and a node each -----------------

def market_of(api: Api) -> SimpleNamespace:
    p = SimpleNamespace(operator=api.onboard("operator", "Data operator 数据运营公司"),
                        developer=api.onboard("developer", "Model studio 模型工作室"),
                        demander=api.onboard("demander", "City bank 城市商业银行"))
    p.expert = api.api.add_member(api.regulator, "expert 专家", ["expert"])
    p.providers = {name: api.onboard("provider", f"{name} bureau", f"P{i}")
                   for i, name in enumerate(PROVIDERS)}
    p.datasets = {}
    for name, column in PROVIDERS.items():
        ds = api.api.register_dataset(
            p.providers[name], name=f"{name} per enterprise", description="per enterprise",
            source_system=f"{name}-core", fields=[
                {"name": "uscc", "type": "string", "sensitivity": "public"},
                {"name": column, "type": "integer", "sensitivity": "sensitive"}])
        api.api.publish_dataset(p.providers[name], ds)
        p.datasets[name] = ds
    inputs = [{"dataset_id": p.datasets[n], "fields": ["uscc", c]} for n, c in PROVIDERS.items()]
    p.scenario_id = api.api.propose_scenario(
        p.operator, title="SME credit, jointly", purpose="score small firms for loans",
        sector="finance", requested=inputs)
    api.api.give_opinion(p.expert, p.scenario_id, "approve", "proportionate")
    api.api.decide_scenario(api.regulator, p.scenario_id, "approved")
    now = datetime.now(UTC)
    auths = [api.api.authorize(p.providers[n], p.scenario_id, [i], (
        now - timedelta(days=1), now + timedelta(days=365)), {"processing_count": 1000})
        for n, i in zip(PROVIDERS, inputs, strict=True)]

    def product(deadline_seconds: int) -> str:
        return api.api.list_product(p.operator, api.platform, {
            "scenario_id": p.scenario_id, "authorization_ids": auths,
            "name": f"SME joint score ({deadline_seconds} s)", "kind": "api",
            "description": "a score per firm over three providers", "code": CODE,
            "inputs": inputs, "output_schema": SCHEMA, "key_column": "uscc",
            "joint": {"value_columns": COLUMNS, "min_providers": 3,
                      "deadline_seconds": deadline_seconds},
            "quality_report": "AUC 0.81", "price_fen": 1_250_000,
            "developer_id": p.developer.id})

    p.product_id, p.short_id = product(600), product(30)
    return p


@contextlib.contextmanager
def joint_world(tmp: Path) -> Iterator[SimpleNamespace]:
    from compute_nodes import datasite
    from compute_nodes.node import ComputeNode
    from compute_nodes.sandbox import Sandbox
    from compute_nodes.trust import Trust

    with ledger_server(tmp) as url:
        api = Api(url)
        p = market_of(api)
        (tmp / "trust.json").write_text(json.dumps(api.api.witnesses(ADMIN_TOKEN)))
        private = tables()
        sites: list[Any] = []
        node_dir = tmp / "node"
        sandbox = Sandbox(hide=[tmp])
        try:
            nodes, loaded = {}, {}
            for name, table in private.items():
                provider = p.providers[name]
                enroll(node_dir, url, provider.token)  # makes the node key
                key_file = node_key_path(node_dir, provider.id)
                api.api.register_node_key(provider, node_public_key(key_file))
                table.to_csv(tmp / f"{name}.csv", index=False)
                table.head(12).to_csv(tmp / f"{name}-mock.csv", index=False)
                site = datasite.launch(f"{name}-node", data_dir=tmp / "sites" / name,
                                       reset=True, admin_password="admin-pass-1")
                sites.append(site)
                admin = site.admin()
                runner = datasite.data_scientist(site, admin, f"node@{name}.example",
                                                 "node-pass-1")
                node = ComputeNode(url, provider.token, (admin, runner, f"{name}-node"),
                                   Trust.from_file(tmp / "trust.json"), sandbox, backoff_s=0.05)
                node.use_node_key(key_file, node_dir / "parts" / provider.id)
                loaded[name] = node.load(p.datasets[name], tmp / f"{name}.csv",
                                         tmp / f"{name}-mock.csv")
                nodes[name] = node
            yield SimpleNamespace(api=api, p=p, url=url, tmp=tmp, private=private,
                                  nodes=nodes, loaded=loaded, node_dir=node_dir)
        finally:
            sandbox.close()
            for site in sites:
                site.land()


@pytest.fixture(scope="module")
def j(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    with joint_world(tmp_path_factory.mktemp("joint")) as made:
        yield made


def contract(j: SimpleNamespace, product_id: str) -> str:
    """An order of the joint product, its contract proposed, accepted and approved by
    every party it names."""
    api, p = j.api, j.p
    oid = api.api.place_order(p.demander, product_id, "credit decisions on SMEs")
    now = datetime.now(UTC)
    api.api.propose_contract(p.operator, oid, usage_policy={
        "processing_count": 5, "query_count": 100_000,
        "not_before": (now - timedelta(minutes=1)).isoformat(),
        "not_after": (now + timedelta(days=90)).isoformat(),
        "circulation_modes": ["plaintext"]}, price_fen=1_000_000, revenue_split={
        "developer": 1000, "operator": 3000, "platform": 1000, "provider": 5000})
    api.api.accept_contract(p.demander, oid)
    parties = {party.id: party for party in (p.operator, p.developer, *p.providers.values())}
    for party_id in api.api.order(ADMIN_TOKEN, oid)["required_approvals"]:
        api.api.approve_contract(parties[party_id], oid)
    return oid


def settled_by(node: Any, view: dict[str, Any], seconds: float = 120) -> Outcome:
    """The event handled by ``node`` as its feed does (again after an outcome to retry:
    not anchored yet, a concurrency conflict of two providers starting the joint at once)
    until it settles."""
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        outcomes = node.settle(view, stop, retry_s=0.3)
    finally:
        timer.cancel()
    assert outcomes is not None, f"not settled within {seconds} s"
    [outcome] = outcomes
    return outcome


def run_nodes(j: SimpleNamespace, oid: str, names: list[str]) -> dict[str, Outcome]:
    """The contract.approved event handled by the nodes of ``names`` at once, each as its
    provider sees it, until each settled."""
    seq = j.api.event(oid, "contract.approved")["seq"]
    views = {n: j.api.api.event(j.p.providers[n], seq) for n in names}
    with ThreadPoolExecutor(len(names)) as pool:
        futures = {n: pool.submit(settled_by, j.nodes[n], views[n]) for n in names}
        return {n: f.result() for n, f in futures.items()}


def joint_posted(j: SimpleNamespace, oid: str, provider_id: str) -> bool:
    """Whether the provider's part of the contract's joint is in already."""
    found = j.api.call("GET", "/joint", ADMIN_TOKEN, params={"contract_id": oid})
    return bool(found) and provider_id in found[0]["parts"]


def joint_of(j: SimpleNamespace, oid: str) -> dict[str, Any]:
    [view] = j.api.call("GET", "/joint", ADMIN_TOKEN, params={"contract_id": oid})
    return view


def settled_joint(j: SimpleNamespace, oid: str, seconds: float = 120) -> dict[str, Any]:
    """The contract's joint execution once published or failed."""
    deadline = time.monotonic() + seconds
    while True:
        view = joint_of(j, oid)
        if view["state"] in ("published", "failed"):
            return view
        assert time.monotonic() < deadline, f"the joint is still {view['state']}: {view}"
        time.sleep(0.5)


def hidden_query(j: SimpleNamespace, oid: str, codes: list[str]) -> dict[str, Any]:
    """The bank's hidden query, as a user runs it (the server's venv has ``rbcl``)."""
    codes_file = j.tmp / f"codes-{oid}.txt"
    codes_file.write_text("\n".join(codes) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATALEDGER_", "VIRTUAL"))}
    env["DATALEDGER_TOKEN"] = j.p.demander.token
    done = subprocess.run([str(SERVER), "client", "hidden-query", "--url", j.url, "--order",
                           oid, "--codes-file", str(codes_file)], env=env, cwd=j.tmp,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {line["code"]: line["row"] for line in lines}


def published(j: SimpleNamespace, oid: str) -> dict[str, Any]:
    """Run a contract on all three nodes; the published joint's view."""
    outcomes = run_nodes(j, oid, [n for n in PROVIDERS
                                  if not joint_posted(j, oid, j.p.providers[n].id)])
    assert all(o.status == "posted" for o in outcomes.values()), outcomes
    view = settled_joint(j, oid)
    assert view["state"] == "published", view
    return view


# -- the tests --------------------------------------------------------------------------

def test_the_joint_table_is_the_per_enterprise_sum_of_the_three_tables(
        j: SimpleNamespace) -> None:
    oid = contract(j, j.p.product_id)
    view = published(j, oid)
    ids = [j.p.providers[n].id for n in PROVIDERS]
    assert view["providers"] == ids and view["layout_provider"] == ids[0]
    expected = expected_table(j.private)
    assert view["rows"] == view["length"] == len(expected) == 400
    assert set(view["parts"]) == set(ids)
    # each part's digest on the ledger is the one of the part its node stored
    for name in PROVIDERS:
        [stored] = [part for part in PartStore(j.node_dir / "parts" / j.p.providers[
            name].id).all() if part.header["execution_id"] == view["id"]]
        assert view["parts"][j.p.providers[name].id] == stored.digest()
    # the bank opens its rows: every enterprise of the layout, and five it does not hold
    outside = sorted(set(j.private["tax"]["uscc"]) - set(expected))[:5]
    assert len(outside) == 5
    rows = hidden_query(j, oid, [*expected, *outside])
    assert all(rows[code] is None for code in outside)
    for code, want in expected.items():
        row = rows[code]
        assert row["uscc"] == code and row["score"] == want["score"], (code, row, want)
        # three values rounded to 2**-16 each: within 3 * 2**-17 of the float sum
        assert math.isclose(row["weight"], want["weight"], abs_tol=3 * 2**-17), (code, row)
    # nothing of a provider's part is delivered: no delivery, no result to download
    assert not [e for e in j.api.events() if e["type"] == "delivery.made"
                and e["payload"].get("contract_id") == oid]


def test_enroll_makes_the_node_key_once_and_prints_it(
        j: SimpleNamespace, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    provider = j.p.providers["tax"]
    key_file = node_key_path(j.node_dir, provider.id)
    before = key_file.read_bytes()
    monkeypatch.setenv("DATALEDGER_NODE_TOKEN", provider.token)
    assert enroll_command(j.node_dir, j.url, None) == 0  # a re-enrollment
    printed = json.loads(capsys.readouterr().out)
    assert key_file.read_bytes() == before and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    public = printed["node_key"]
    assert public == node_public_key(key_file)
    # the key the provider registered, as every participant sees it
    view = j.api.api.call("GET", f"/participants/{provider.id}", j.p.providers["power"].token)
    raw = base64.b64decode(public)
    assert view["node_key"]["public_key"] == public
    assert view["node_key"]["key_id"] == "x25519:" + hashlib.sha256(raw).hexdigest()[:32]


def test_a_part_of_another_execution_is_refused_and_stores_nothing(
        j: SimpleNamespace) -> None:
    power = j.p.providers["power"]
    first = PartStore(j.node_dir / "parts" / power.id).all()
    assert first, "run after the first test: it leaves power's stored part"
    oid = contract(j, j.p.product_id)
    # the layout provider's node runs first: the layout is published, the joint awaits parts
    assert run_nodes(j, oid, ["market"])["market"].status == "posted"
    code_sha256 = j.api.api.product(ADMIN_TOKEN, j.p.product_id)["code_sha256"]
    made = j.api.call("POST", "/computations", power.token, (200, 201), json={
        "contract_id": oid, "execution": 1, "datasite": "power-node",
        "code_sha256": code_sha256})
    assert made["joint_id"] == joint_of(j, oid)["id"]
    replayed = first[0]
    body = {"header": dict(replayed.header), "body": base64.b64encode(replayed.body).decode(),
            "input_hashes": {j.p.datasets["power"]: j.loaded["power"]["sha256_of_private_file"]},
            "datasite": "power-node"}
    response = j.api.api.send("POST", f"/computations/{made['computation_id']}/masked-part",
                              power.token, json=body)
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "part_refused", response.text
    assert response.json()["reason"] == "execution", response.text
    view = joint_of(j, oid)
    assert list(view["parts"]) == [j.p.providers["market"].id]
    assert view["state"] == "layout_published"
    # the real part is taken afterwards: the refusal kept nothing
    view = published(j, oid)
    assert len(view["parts"]) == 3


def test_each_masked_part_is_indistinguishable_from_random(j: SimpleNamespace) -> None:
    for _ in range(2):  # more executions: more parts
        published(j, contract(j, j.p.product_id))
    parts = [part for name in PROVIDERS
             for part in PartStore(j.node_dir / "parts" / j.p.providers[name].id).all()]
    executions = {part.header["execution_id"] for part in parts}
    assert len(executions) >= 4 and len(parts) == 3 * len(executions)
    assert len({part.body for part in parts}) == len(parts)
    for part in parts:  # each part alone
        assert chi_square(part.body) < CHI2_LIMIT, part.header
    everything = b"".join(part.body for part in parts)
    assert chi_square(everything) < CHI2_LIMIT
    assert max(abs(z) for z in bit_balance(everything)) < Z_LIMIT
    # the same tests reject what the parts hide: each provider's fixed-point vector
    layout, _ = layout_of(joint_rows(partial(j.private["market"])), "uscc")
    for table in j.private.values():
        laid = vector(joint_rows(partial(table)), layout, "uscc", COLUMNS)
        words = np.array(secagg.to_fixed(laid.values), dtype="<i8").tobytes()
        assert chi_square(words) > CHI2_LIMIT
        assert max(abs(z) for z in bit_balance(words)) > Z_LIMIT


def test_a_provider_that_never_posts_fails_the_execution_at_its_deadline(
        j: SimpleNamespace) -> None:
    oid = contract(j, j.p.short_id)  # a deadline of 30 s
    outcomes = run_nodes(j, oid, ["market", "tax"])  # power's node is down
    assert all(o.status == "posted" for o in outcomes.values()), outcomes
    view = settled_joint(j, oid, seconds=90)
    power = j.p.providers["power"].id
    assert view["state"] == "failed" and view["reason"].startswith("missing: "), view
    assert power in view["reason"] and len(view["parts"]) == 2
    assert view["table_digest"] is None and view["result_sha256"] is None
    types = [e["type"] for e in j.api.events() if e["originator_id"] == view["id"]]
    assert "joint.failed" in types and "joint.published" not in types
    assert not [e for e in j.api.events() if e["type"] == "delivery.made"
                and e["payload"].get("contract_id") == oid]
    table = j.api.api.send("GET", f"/joint/{view['id']}/table", j.p.demander.token)
    assert table.status_code == 409, table.text
    # power's node, back after the deadline, records its failure and posts nothing
    late = settled_by(j.nodes["power"], j.api.api.event(
        j.p.providers["power"], j.api.event(oid, "contract.approved")["seq"]))
    assert late.status in ("failed", "skipped", "rejected"), late
    assert joint_of(j, oid)["parts"] == view["parts"]


# -- randomness tests -----------------------------------------------------------------------

#: chi-square with 255 degrees of freedom beyond this has p < 1e-6 (Wilson–Hilferty)
CHI2_LIMIT = 255 * (1 - 2 / (9 * 255) + 4.75 * math.sqrt(2 / (9 * 255))) ** 3
#: a bit position's ones count beyond this many standard deviations: p < 1e-6 each
Z_LIMIT = 4.9


def chi_square(data: bytes) -> float:
    """Pearson's chi-square of the byte frequencies against the uniform distribution."""
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    expected = len(data) / 256
    return float(((counts - expected) ** 2 / expected).sum())


def bit_balance(data: bytes) -> list[float]:
    """For each of the 64 bit positions of the 64-bit words, the z-score of its ones count
    against a fair coin."""
    words = np.frombuffer(data, dtype="<u8")
    n = len(words)
    return [float((((words >> np.uint64(b)) & np.uint64(1)).sum() - n / 2) / math.sqrt(n / 4))
            for b in range(64)]
