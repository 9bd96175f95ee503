"""Leak tracing (溯源) end to end, on a SQLite file and on PostgreSQL: 50 deliveries of the
same product to 10 demanders, each result posted through the real route (which watermarks
it) and downloaded through the real routes (``/result``, ``/view``); a demander's copy,
shuffled, cut to half its rows, with columns dropped, saved as CSV, as Parquet and as JSON,
is named by ``dataledger forensics trace-leak`` (its delivery, contract and demander, with a
confidence) and the trace is recorded (``forensics.leak_traced``, by the system actor); a
never-delivered table gets "no match" (exit 3); the rule book finds nothing to object to."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from api.watermarking import key_mismatch
from audit.rules import RuleBook
from audit.selfproof import verify_self_proof
from chain.trust import TrustedKeys
from cli.forensics import NO_MATCH
from cli.main import main
from core.masking import generalise, mask_text
from privacy.watermark import KEY_FILE, key_id, load_key, mark_rows
from runtime.build import Container
from tests.e2e.conftest import ADMIN_TOKEN, Chain, World, list_product
from tests.e2e.test_computations_api import QUERY, ask, report
from tests.e2e.test_joint_replay import cli
from tests.e2e.test_market_api import place, proposal
from tests.e2e.watermarked import delivery_made, watermarked

OUTPUT = {"type": "object", "properties": {
    "taxpayer_id": {"type": "string"}, "revenue": {"type": "integer"},
    "tax": {"type": "integer"}, "employees": {"type": "integer"},
    "score": {"type": "integer"}}}
DEMANDERS, EXECUTIONS = 10, 5


def result(rows: int = 120) -> list[dict[str, Any]]:
    """The product's result, the same for every delivery (the node's rows: ``taxpayer_id``,
    graded L3 in the dataset, masked as the node masks it)."""
    rng = random.Random(15)
    return [{"taxpayer_id": mask_text(f"91110000MA{i:06d}"), "revenue": rng.randint(10**5, 10**8),
             "tax": rng.randint(1_000, 5 * 10**6), "employees": rng.randint(20, 3_000),
             "score": rng.randint(300, 850)} for i in range(rows)]


def posted(chain: Chain, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The node's post of ``rows``: with the masking it applied (``taxpayer_id``)."""
    return {**report(chain, rows), "masking": {"taxpayer_id": "L3:none:partial"}}


class Delivery(NamedTuple):
    delivery_id: str
    contract_id: str
    demander: Any


def fifty_deliveries(world: World, chain: Chain, demanders: int = DEMANDERS,
                     executions: int = EXECUTIONS) -> list[Delivery]:
    """10 demanders, a contract each, 5 executions each (1, then 4 queries), each result
    posted by the provider's node through ``POST /computations/{id}/result``."""
    product = list_product(world, chain, output_schema=OUTPUT)
    out: list[Delivery] = []
    for d in range(demanders):
        party = world.onboard("demander", f"Bank {d} 第{d}银行")
        mine = dataclasses.replace(chain, demander=party)
        oid = place(world, mine, product)
        world.call("POST", f"/orders/{oid}/contract", chain.operator, json=proposal())
        world.call("POST", f"/orders/{oid}/contract/acceptance", party)
        world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
        world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)
        for n in range(1, executions + 1):
            if n > 1:
                world.call("POST", f"/orders/{oid}/queries", party, 201, json={"query": QUERY})
            cid = world.call("POST", "/computations", chain.provider, 201,
                             json=ask(oid, n))["computation_id"]
            world.call("POST", f"/computations/{cid}/result", chain.provider,
                       json=posted(mine, result()))
            out.append(Delivery(cid, oid, party))
    return out


def leaked(rows: list[dict[str, Any]], keep: tuple[str, ...], seed: int) -> list[dict[str, Any]]:
    """The leaker's copy: shuffled, half the rows, only the columns ``keep``."""
    half = random.Random(seed).sample(rows, len(rows) // 2)
    return [{c: r[c] for c in keep} for r in half]


def trace_leak(container: Container, path: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    """``dataledger forensics trace-leak PATH --json`` on the platform's host (its data
    directory and database, as serve's settings)."""
    settings = container.settings
    monkeypatch.setenv("DATALEDGER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("DATALEDGER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DATALEDGER_ADMIN_TOKEN", ADMIN_TOKEN)
    capsys.readouterr()
    code = main(["forensics", "trace-leak", str(path), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_leaked_copies_are_traced_to_their_delivery_among_fifty(
        world: World, chain: Chain, container: Container, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    made = fifty_deliveries(world, chain)
    assert len(made) == 50 and len({d.demander.participant_id for d in made}) == 10
    kid = key_id(load_key(container.settings.data_dir))
    for d in made[:3]:
        record = delivery_made(world, d.delivery_id)
        assert record["watermark"] == {"scheme": "dataledger-wm-v1", "cells": 480,
                                       "key_id": kid}
        assert record["delivered_sha256"] != record["result_sha256"]

    # three demanders leak their copy, each as its own route served it
    cases: list[tuple[Delivery, Path]] = []
    downloaded = world.client.get(f"/deliveries/{made[7].delivery_id}/result",
                                  headers=made[7].demander.headers)
    assert downloaded.status_code == 200, downloaded.text
    rows = json.loads(downloaded.content)
    assert watermarked(rows, result()) and rows != result()
    csv = tmp_path / "leak.csv"
    pacsv.write_csv(pa.Table.from_pylist(leaked(rows, ("taxpayer_id", "revenue", "score"), 1)),
                    csv)
    cases.append((made[7], csv))

    downloaded = world.client.get(f"/deliveries/{made[23].delivery_id}/result",
                                  headers=made[23].demander.headers)
    parquet = tmp_path / "leak.parquet"
    pq.write_table(pa.Table.from_pylist(
        leaked(json.loads(downloaded.content), ("tax", "employees"), 2)), parquet)
    cases.append((made[23], parquet))

    viewed = world.call("GET", f"/deliveries/{made[41].delivery_id}/view", made[41].demander)
    assert viewed["delivered_sha256"] == delivery_made(world, made[41].delivery_id)[
        "delivered_sha256"]
    as_json = tmp_path / "leak.json"
    as_json.write_text(json.dumps(leaked(viewed["result"], ("taxpayer_id", "employees",
                                                            "revenue", "tax"), 3)))
    cases.append((made[41], as_json))

    for source, path in cases:
        code, answer = trace_leak(container, path, monkeypatch, capsys)
        assert code == 0, answer
        assert answer["match"] == {"delivery_id": source.delivery_id,
                                   "contract_id": source.contract_id,
                                   "demander_id": source.demander.participant_id,
                                   "reader_id": None}
        assert [m["delivery_id"] for m in answer["matches"]] == [source.delivery_id]
        assert answer["merged"] is False
        assert answer["confidence"].startswith("1 - ") and float(answer["p_value"]) <= 1e-9
        assert answer["candidates"] == 50
        votes = answer["votes"]
        assert votes["bits_agreeing"] == votes["bits_decided"] > 30

    # the text form names the same delivery, contract and demander
    source, path = cases[0]
    assert main(["forensics", "trace-leak", str(path)]) == 0
    text = capsys.readouterr().out
    for line in (f"delivery    {source.delivery_id}", f"contract    {source.contract_id}",
                 f"demander    {source.demander.participant_id}", "confidence  1 - "):
        assert line in text, text
    # a table that was never delivered: the same rows, marked for no delivery
    never = tmp_path / "never.csv"
    pacsv.write_csv(pa.Table.from_pylist(
        mark_rows(result(), bytes(32), "no-such-delivery")[0]), never)
    code, answer = trace_leak(container, never, monkeypatch, capsys)
    assert (code, answer["match"], answer["confidence"]) == (NO_MATCH, None, None)
    unmarked = tmp_path / "unmarked.parquet"
    pq.write_table(pa.Table.from_pylist(result()), unmarked)
    assert trace_leak(container, unmarked, monkeypatch, capsys)[0] == NO_MATCH

    # every trace is on the log, by the server's own actor; the regulator reads them
    page = world.call("GET", "/ledger/events?limit=1000", world.regulator)["events"]
    traces = [e["payload"] for e in page if e["type"] == "forensics.leak_traced"]
    assert [[m["delivery_id"] for m in t["matches"]] for t in traces] == [
        [made[7].delivery_id], [made[23].delivery_id], [made[41].delivery_id],
        [made[7].delivery_id], [], []]
    assert all(t["actor"]["role"] == "system" and len(t["file_sha256"]) == 64 for t in traces)
    assert "revenue" not in json.dumps(traces)  # nothing of the data itself
    # a demander reads no trace (not even its own): the regulator and the platform do
    mine = world.call("GET", "/ledger/events?limit=1000", made[7].demander)["events"]
    assert not [e for e in mine if e["type"] == "forensics.leak_traced"]
    book = RuleBook(require_signatures=True)
    assert [(f.seq, f.rule) for f in book.run(container.store.read(0, 1_000_000))] == []

    # the whole log, the traces in it, replays clean offline: every step, the index too
    assert container.chain is not None
    assert container.chain.wait_anchored(container.store.max_seq(), timeout=60) is not None
    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps(container.chain.trust_document()))
    bundle, report = tmp_path / "bundle", tmp_path / "report.json"
    done = cli("export", "--out", str(bundle), "--database", container.settings.database_url,
               data=tmp_path / "var")
    assert done.returncode == 0, done.stdout + done.stderr
    out = cli("audit", "replay", "--bundle", str(bundle), "--trust", str(trust),
              "--json", str(report), "--quiet", data=tmp_path / "var")
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(report.read_text())
    assert doc["ok"] is True and doc["events_per_type"]["forensics.leak_traced"] == 6
    assert {s["status"] for s in doc["steps"] if s["name"] in (
        "records", "tree", "signatures", "consistency", "index", "business rules")} == {
        "passed"}
    # the demander's self-proof on its delivery shows the trace that names it
    accused = made[7].demander
    proof = verify_self_proof(world.api.self_proof(
        accused, accused.participant_id, f"computation:{made[7].delivery_id}", None, None),
        TrustedKeys.from_json(container.chain.trust_document()))
    assert [e.type_name for e in proof.events][-1] == "forensics.leak_traced"


def test_an_unreadable_file_is_exit_2_and_records_nothing(
        container: Container, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2,3\n")
    head = container.store.max_seq()
    monkeypatch.setenv("DATALEDGER_DATA_DIR", str(container.settings.data_dir))
    monkeypatch.setenv("DATALEDGER_DATABASE_URL", container.settings.database_url)
    assert main(["forensics", "trace-leak", str(bad)]) == 2
    assert "not a table" in capsys.readouterr().err
    assert main(["forensics", "trace-leak", str(tmp_path / "missing.csv")]) == 2
    assert container.store.max_seq() == head


def test_a_result_with_nothing_markable_is_delivered_as_posted_with_the_reason(
        world: World, chain: Chain) -> None:
    product = list_product(world, chain, output_schema=OUTPUT)
    oid = place(world, chain, product)
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json=proposal())
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)
    cid = world.call("POST", "/computations", chain.provider, 201,
                     json=ask(oid))["computation_id"]
    small = [{"taxpayer_id": mask_text("91110000MA000001"), "score": 15, "tax": -16}]
    world.call("POST", f"/computations/{cid}/result", chain.provider, json=posted(chain, small))
    made = delivery_made(world, cid)
    assert made["watermark"] is None and "no markable cell" in made["watermark_reason"]
    assert made["delivered_sha256"] == made["result_sha256"]
    got = world.client.get(f"/deliveries/{cid}/result", headers=chain.demander.headers)
    assert got.status_code == 200 and json.loads(got.content) == small
    assert got.headers["X-Result-SHA256"] == made["delivered_sha256"]
    # the demander's and the operator's views say it is unmarked, and why
    for who in (chain.demander, chain.operator):
        viewed = world.call("GET", f"/deliveries/{cid}/view", who)
        assert viewed["watermark"] is None and viewed["result"] == small
        assert "no markable cell" in viewed["watermark_reason"]


def _leak(tmp_path: Path, name: str, rows: list[dict[str, Any]]) -> Path:
    path = tmp_path / name
    pacsv.write_csv(pa.Table.from_pylist(rows), path)
    return path


def test_each_reader_is_served_its_own_copy_and_merged_copies_name_every_source(
        world: World, chain: Chain, container: Container, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    made = fifty_deliveries(world, chain, demanders=3, executions=2)
    a, b = made[0], made[2]

    def download(d: Delivery, who: Any) -> tuple[list[dict[str, Any]], str]:
        got = world.client.get(f"/deliveries/{d.delivery_id}/result", headers=who.headers)
        assert got.status_code == 200, got.text
        return json.loads(got.content), got.headers["X-Result-SHA256"]

    mine, _ = download(a, a.demander)
    operators, op_sha = download(a, chain.operator)
    viewed = world.call("GET", f"/deliveries/{a.delivery_id}/view", world.regulator)
    assert watermarked(operators, result()) and watermarked(viewed["result"], result())
    assert len({json.dumps(mine), json.dumps(operators), json.dumps(viewed["result"])}) == 3
    assert op_sha != delivery_made(world, a.delivery_id)["delivered_sha256"]
    # each access names the copy it served
    page = world.call("GET", "/ledger/events?limit=1000", world.regulator)["events"]
    served = {(e["payload"]["actor"]["participant"], e["payload"]["served_sha256"])
              for e in page if e["type"] == "delivery.accessed"
              and e["originator_id"] and e["payload"]["computation_id"] == a.delivery_id}
    assert (chain.operator.participant_id, op_sha) in served
    assert (world.regulator.participant_id, viewed["delivered_sha256"]) in served

    # the operator's leaked copy names the operator, not the demander
    code, answer = trace_leak(container, _leak(tmp_path, "op.csv", leaked(
        operators, ("revenue", "tax"), 5)), monkeypatch, capsys)
    assert code == 0 and answer["merged"] is False, answer
    assert answer["match"] == {"delivery_id": a.delivery_id, "contract_id": a.contract_id,
                               "demander_id": a.demander.participant_id,
                               "reader_id": chain.operator.participant_id}
    code, answer = trace_leak(container, _leak(tmp_path, "reg.csv", leaked(
        viewed["result"], ("employees", "score", "tax"), 6)), monkeypatch, capsys)
    assert code == 0 and answer["match"]["reader_id"] == world.regulator.participant_id

    # two demanders' copies of the same rows, stacked: both named, flagged merged
    theirs, _ = download(b, b.demander)
    code, answer = trace_leak(container, _leak(tmp_path, "merged.csv", mine + theirs),
                              monkeypatch, capsys)
    assert code == 0 and answer["merged"] is True, answer
    assert sorted(m["delivery_id"] for m in answer["matches"]) == sorted(
        [a.delivery_id, b.delivery_id])
    assert all(m["reader_id"] is None and float(m["p_value"]) <= 1e-9
               for m in answer["matches"])
    page = world.call("GET", "/ledger/events?limit=1000", world.regulator)["events"]
    last = [e["payload"] for e in page if e["type"] == "forensics.leak_traced"][-1]
    assert last["merged"] is True and len(last["matches"]) == 2

    # a copy whose every integer was shifted by one is still traced (the shift undone)
    shifted = [{k: v + 1 if type(v) is int else v for k, v in r.items()} for r in mine]
    code, answer = trace_leak(container, _leak(tmp_path, "shift.csv", shifted),
                              monkeypatch, capsys)
    assert code == 0 and answer["match"]["delivery_id"] == a.delivery_id
    assert answer["votes"]["shift"] == -1
    book = RuleBook(require_signatures=True)
    assert [(f.seq, f.rule) for f in book.run(container.store.read(0, 1_000_000))] == []


def test_trace_leak_never_traces_with_a_key_that_marked_nothing(
        world: World, chain: Chain, container: Container, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    made = fifty_deliveries(world, chain, demanders=1, executions=1)
    rows = json.loads(world.client.get(f"/deliveries/{made[0].delivery_id}/result",
                                       headers=made[0].demander.headers).content)
    leak = _leak(tmp_path, "leak.csv", rows)
    head = container.store.max_seq()
    monkeypatch.setenv("DATALEDGER_DATABASE_URL", container.settings.database_url)
    monkeypatch.setenv("DATALEDGER_ADMIN_TOKEN", ADMIN_TOKEN)
    # a data directory without the key: exit 2, no key made, nothing recorded
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DATALEDGER_DATA_DIR", str(empty))
    capsys.readouterr()
    assert main(["forensics", "trace-leak", str(leak)]) == 2
    assert "no watermark key" in capsys.readouterr().err
    assert not (empty / KEY_FILE).exists() and container.store.max_seq() == head
    # another key (another host's): it marked none of the deliveries
    (empty / KEY_FILE).write_text(bytes(range(32)).hex() + "\n")
    (empty / KEY_FILE).chmod(0o600)
    assert main(["forensics", "trace-leak", str(leak)]) == 2
    assert "marked none of the 1 watermarked deliveries" in capsys.readouterr().err
    # the right key, readable by others: refused too
    own = Path(container.settings.data_dir) / KEY_FILE
    (empty / KEY_FILE).write_text(own.read_text())
    (empty / KEY_FILE).chmod(0o644)
    assert main(["forensics", "trace-leak", str(leak)]) == 2
    assert "must be 0600" in capsys.readouterr().err
    assert container.store.max_seq() == head
    (empty / KEY_FILE).chmod(0o600)
    assert main(["forensics", "trace-leak", str(leak)]) == 0


def test_a_generalised_column_is_never_marked(world: World, chain: Chain) -> None:
    """``annual_revenue`` is graded L3 (sensitive): the node generalises it to two significant
    digits; the mark leaves it alone (it would show against the rounding), and marks the
    rest."""
    output = {"type": "array", "items": {"type": "object", "properties": {
        **OUTPUT["properties"], "annual_revenue": {"type": "integer"}}}}
    product = list_product(world, chain, output_schema=output)
    oid = place(world, chain, product)
    world.call("POST", f"/orders/{oid}/contract", chain.operator, json=proposal())
    world.call("POST", f"/orders/{oid}/contract/acceptance", chain.demander)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.provider)
    world.call("POST", f"/orders/{oid}/contract/approvals", chain.operator)
    cid = world.call("POST", "/computations", chain.provider, 201,
                     json=ask(oid))["computation_id"]
    rows = [{**r, "annual_revenue": generalise(r["revenue"])} for r in result(60)]
    body = posted(chain, rows)
    body["masking"]["annual_revenue"] = "L3:none:partial"
    world.call("POST", f"/computations/{cid}/result", chain.provider, json=body)
    assert delivery_made(world, cid)["watermark"]["cells"] == 60 * 4
    got = json.loads(world.client.get(f"/deliveries/{cid}/result",
                                      headers=chain.demander.headers).content)
    assert watermarked(got, rows) and got != rows
    assert [r["annual_revenue"] for r in got] == [r["annual_revenue"] for r in rows]


def test_serve_refuses_a_key_that_marked_none_of_the_deliveries(
        world: World, chain: Chain, container: Container, tmp_path: Path) -> None:
    assert key_mismatch(container.engine, container.settings.data_dir) is None  # none yet
    fifty_deliveries(world, chain, demanders=1, executions=1)
    container.runner.catch_up()
    assert key_mismatch(container.engine, container.settings.data_dir) is None
    other = tmp_path / "other-host"
    other.mkdir()
    assert "no watermark key" in key_mismatch(container.engine, other)
    assert not (other / KEY_FILE).exists()
    (other / KEY_FILE).write_text(bytes(range(32)).hex() + "\n")
    (other / KEY_FILE).chmod(0o600)
    assert "marked none of the log's deliveries" in key_mismatch(container.engine, other)
