"""The bank's hidden query (隐匿查询) through the real API, on SQLite and PostgreSQL: its
rows (members and non-members) and nothing else, the ledger holding only the request's
commitment and size and the answer's hash, the contract's query_count, the demander only,
and none of the queried codes in the events or anything the platform stored."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import inspect, text

from client.hidden_query import hidden_query
from client.platform import PlatformError
from core import hidden_query as hq
from runtime.build import Container
from tests.e2e.conftest import Clock, World, head
from tests.e2e.joint_market import (
    CODES,
    OUTSIDERS,
    JointMarket,
    events_of,
    joint_market,
    part_of,
    plain_sum,
    post_part,
    publish_layout,
    published,
    request_all,
    wait_for,
)

MEMBERS = [CODES[3], CODES[11], CODES[29]]
QUERIED = [*MEMBERS, *OUTSIDERS]


@pytest.fixture
def settings_changes() -> dict[str, Any]:
    return {"aggregation_sweep_seconds": 3600}


def post_query(world: World, jm: JointMarket, who: Any, request: bytes,
               expect: int = 200) -> dict[str, Any]:
    body: dict[str, Any] = world.call(
        "POST", f"/orders/{jm.order_id}/hidden-queries", who, expect,
        json={"joint_id": jm.joint_id, "request": base64.b64encode(request).decode()})
    return body


def _values(rows: Any) -> bytes:
    out = bytearray()
    for row in rows:
        for value in row:
            out += bytes(value) if isinstance(value, bytes | memoryview) else str(
                value).encode()
            out += b"\x00"
    return bytes(out)


def _stored_text(container: Container) -> bytes:
    """Every value of every table the platform wrote (the log, the read models, the bytes
    kept off the log: on PostgreSQL one schema, on SQLite the log's file and the read
    models' file), as bytes, for a scan."""
    out = bytearray()
    with container.engine.connect() as conn:
        for name in inspect(conn).get_table_names():
            out += _values(conn.execute(text(f'SELECT * FROM "{name}"')))
    url = container.settings.resolved_database_url()
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
                out += _values(db.execute(f'SELECT * FROM "{name}"'))
    return bytes(out)


def test_the_bank_gets_exactly_its_rows_and_the_ledger_only_hashes(
        world: World, container: Container) -> None:
    jm = published(world, query_count=100)
    rows = hidden_query(world.api, jm.demander, jm.order_id, QUERIED)
    expected = plain_sum()
    assert rows == {**{c: {"credit_code": c, **expected[c]} for c in MEMBERS},
                    **{c: None for c in OUTSIDERS}}
    queried = [e for e in events_of(world, jm.joint_id) if e["type"] == "joint.queried"]
    assert len(queried) == 1
    payload = queried[0]["payload"]
    assert {k: payload[k] for k in ("contract_id", "demander_id", "request_size")} == {
        "contract_id": jm.order_id, "demander_id": jm.demander.participant_id,
        "request_size": len(QUERIED)}
    assert set(payload) >= {"request_commitment", "answer_hash"}
    view = world.call("GET", f"/joint/{jm.joint_id}", jm.demander)
    assert (view["queries"], view["queried"]) == (1, len(QUERIED))
    # none of the queried codes (members included) in any event, nor any non-member's
    # anywhere the platform stored anything (a member's code is in the joint's layout,
    # which the providers agreed on: the query adds nothing)
    log = world.call("GET", "/ledger/events?limit=1000", world.regulator)["events"]
    assert all(code not in str(e) for e in log for code in QUERIED if e["type"] in (
        "joint.queried", "usage.refused"))
    stored = _stored_text(container)
    for code in OUTSIDERS:
        assert code.encode() not in stored
        assert hashlib.sha256(code.encode()).hexdigest().encode() not in stored
    assert b"joint.queried" in stored


def test_the_node_sees_the_blinded_request_and_the_ledger_its_three_fields(
        world: World, container: Container) -> None:
    jm = published(world)
    state, request = hq.blind(QUERIED)
    answer = post_query(world, jm, jm.demander, request)
    response = base64.b64decode(answer["response"])
    assert answer["request_commitment"] == hashlib.sha256(request).hexdigest()
    assert answer["request_size"] == len(QUERIED)
    assert answer["answer_hash"] == hashlib.sha256(response).hexdigest()
    table = hq.HiddenTable.from_bytes(world.api.joint_table(jm.demander, jm.joint_id))
    opened = hq.lookup(table, state, response)
    assert [opened[c] is None for c in QUERIED] == [False] * 3 + [True] * 2
    (event,) = [e for e in events_of(world, jm.joint_id) if e["type"] == "joint.queried"]
    assert {k: event["payload"][k] for k in ("request_commitment", "request_size",
                                             "answer_hash")} == {
        k: answer[k] for k in ("request_commitment", "request_size", "answer_hash")}
    # neither the request nor the response is stored anywhere
    stored = _stored_text(container)
    assert request[-64:] not in stored and response[-64:] not in stored
    assert base64.b64encode(request[-48:]) not in stored


def test_the_query_count_is_enforced_and_each_refusal_recorded(
        world: World, container: Container) -> None:
    jm = published(world, query_count=6)
    _, five = hq.blind(QUERIED)
    post_query(world, jm, jm.demander, five)
    _, two = hq.blind(CODES[:2])
    before = head(world)
    refused = post_query(world, jm, jm.demander, two, 409)
    assert refused["error"] == "count_exhausted"
    assert "query_count allows 6" in refused["detail"]
    after = world.call("GET", f"/ledger/events?after={before}&limit=10", world.regulator)
    assert [e["type"] for e in after["events"]] == ["usage.refused"]
    payload = after["events"][0]["payload"]
    assert (payload["rule"], payload["limit"], payload["used"], payload["action"]) == (
        "query_count", 6, 5, "hidden_query")
    _, one = hq.blind(CODES[:1])
    assert post_query(world, jm, jm.demander, one)["request_size"] == 1
    view = world.call("GET", f"/joint/{jm.joint_id}", jm.demander)
    assert (view["queries"], view["queried"]) == (2, 6)


def test_only_the_demander_queries_and_downloads_the_table(
        world: World, container: Container) -> None:
    jm = published(world)
    _, request = hq.blind(CODES[:2])
    for party in (jm.providers[0], jm.operator, world.regulator, world.platform):
        before = head(world)
        refused = post_query(world, jm, party, request, 403)
        assert refused["error"] == "forbidden"
        assert head(world) == before
        r = world.api.send("GET", f"/joint/{jm.joint_id}/table", party)
        assert r.status_code == 403, (party.role, r.text)
    other_bank = world.onboard("demander", "Another bank 另一家银行")
    assert post_query(world, jm, other_bank, request, 403)["error"] == "forbidden"
    r = world.api.send("GET", "/joint/00000000-0000-4000-8000-000000000000/table",
                       jm.demander)
    assert r.status_code == 404


def test_a_malformed_request_is_refused_naming_it(world: World, container: Container) -> None:
    jm = published(world)
    _, request = hq.blind(CODES[:2])
    before = head(world)
    for bad in ("not base64!", base64.b64encode(request[:-1]).decode(),
                base64.b64encode(hq.evaluate(hq.generate_key(), request)).decode()):
        refused = world.call("POST", f"/orders/{jm.order_id}/hidden-queries", jm.demander,
                             422, json={"joint_id": jm.joint_id, "request": bad})
        assert [f["field"] for f in refused["fields"]] == ["request"]
    assert head(world) == before
    with pytest.raises(PlatformError) as caught:
        world.call("POST", f"/orders/{jm.order_id}/hidden-queries", jm.demander, 200,
                   json={"joint_id": "00000000-0000-4000-8000-000000000000",
                         "request": base64.b64encode(request).decode()})
    assert caught.value.status == 404


def test_a_query_before_publication_or_after_termination_is_refused(
        world: World, container: Container) -> None:
    jm = joint_market(world, usage_policy={"provider_may_terminate": True})
    request_all(jm)
    _, request = hq.blind(CODES[:2])
    assert post_query(world, jm, jm.demander, request, 409)["error"] == "wrong_state"
    publish_layout(jm)
    for pid in jm.ids:
        post_part(jm, pid, part_of(jm, pid))
    assert wait_for(jm, ("published", "failed"))["state"] == "published"
    world.api.terminate_contract(jm.operator, jm.order_id, "the bank's purpose ended")
    before = head(world)
    refused = post_query(world, jm, jm.demander, request, 409)
    assert refused["error"] == "contract_terminated"
    after = world.call("GET", f"/ledger/events?after={before}&limit=10", world.regulator)
    assert [e["type"] for e in after["events"]] == ["usage.refused"]


def test_the_query_body_is_capped_for_max_codes(world: World, container: Container) -> None:
    from api.edge import HIDDEN_QUERY_BODY_BYTES

    jm = published(world)
    most = hq.MAX_CODES * hq.ELEMENT_BYTES + len(hq.REQUEST_TAG) + 4
    assert len(base64.b64encode(bytes(most))) < HIDDEN_QUERY_BODY_BYTES < 8 * 1024 * 1024
    before = head(world)
    r = world.api.send("POST", f"/orders/{jm.order_id}/hidden-queries", jm.demander,
                       content=b'{"joint_id": "' + b"x" * HIDDEN_QUERY_BODY_BYTES + b'"}',
                       headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert "hidden query" in r.json()["detail"]
    assert head(world) == before


def test_queries_racing_for_the_last_of_the_count_never_pass_it(
        world: World, container: Container) -> None:
    """Four queries of 3 codes at once on a query_count of 6: each passes the check alone,
    but the ledger records two and refuses two (the joint is in each decision's read set)."""
    import asyncio

    import httpx

    from api.app import create_app

    jm = published(world, query_count=6)
    requests = [hq.blind(CODES[i:i + 3])[1] for i in range(0, 12, 3)]
    transport = httpx.ASGITransport(app=create_app(container=container))

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return list(await asyncio.gather(*(client.post(
                f"/orders/{jm.order_id}/hidden-queries", headers=jm.demander.headers,
                json={"joint_id": jm.joint_id, "request": base64.b64encode(r).decode()})
                for r in requests)))

    answers = asyncio.run(race())
    assert sorted(r.status_code for r in answers) == [200, 200, 409, 409], [
        r.text for r in answers]
    assert {r.json()["error"] for r in answers if r.status_code == 409} == {"count_exhausted"}
    container.runner.wait_for(container.ledger.last_seq, 10)
    view = world.call("GET", f"/joint/{jm.joint_id}", jm.demander)
    assert (view["queries"], view["queried"]) == (2, 6)
    refusals = [e for e in world.call("GET", "/ledger/events?limit=1000", world.regulator)[
        "events"] if e["type"] == "usage.refused"]
    assert len(refusals) == 2


def test_a_query_outside_the_window_or_on_a_revoked_grant_is_refused(
        world: World, container: Container, clock: Clock) -> None:
    jm = published(world)
    _, request = hq.blind(CODES[:2])
    clock.move_to(datetime.now(UTC) + timedelta(days=91))  # past the contract's not_after
    before = head(world)
    refused = post_query(world, jm, jm.demander, request, 409)
    assert refused["error"] == "outside_contract_window"
    after = world.call("GET", f"/ledger/events?after={before}&limit=10", world.regulator)
    assert [(e["type"], e["payload"]["rule"]) for e in after["events"]] == [
        ("usage.refused", "usage_window")]
    clock.move_to(datetime.now(UTC))
    world.api.revoke_authorization(jm.providers[1], jm.authorizations[1], "grant withdrawn")
    before = head(world)
    refused = post_query(world, jm, jm.demander, request, 409)
    assert refused["error"] == "authorization_revoked", refused
    assert head(world) == before  # a grant's breach is no usage control: nothing recorded
    view = world.call("GET", f"/joint/{jm.joint_id}", jm.demander)
    assert (view["queries"], view["queried"]) == (0, 0)
