"""The platform's aggregation node (aggregation/service.py) over HTTP, on SQLite and
PostgreSQL: the masked parts of three providers summed into the joint table and published;
a refused aggregation, a missed deadline and a restart, each recorded and delivering
nothing partial."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from aggregation import store
from aggregation.service import table_json
from audit.rules import RuleBook
from core import hidden_query as hq
from runtime.build import Container
from tests.e2e.conftest import Clock, World
from tests.e2e.joint_market import (
    CODES,
    JointMarket,
    events_of,
    joint_market,
    part_of,
    plain_sum,
    post_all_parts,
    post_part,
    publish_layout,
    request_all,
    wait_for,
)


@pytest.fixture
def settings_changes() -> dict[str, Any]:
    """The sweep loop runs at start only: each test sweeps when it means to."""
    return {"aggregation_sweep_seconds": 3600}


def sweep(container: Container) -> dict[str, str]:
    """The aggregation node's sweep, at the ledger's time, once the read models (its list of
    open joints) hold every event written so far."""
    assert container.aggregator is not None
    container.runner.wait_for(container.ledger.last_seq, 10)
    return container.aggregator.sweep()


def past_the_deadline(world: World, jm: JointMarket, clock: Clock) -> None:
    """Move the ledger's clock (the one the sweep reads too) a second past the joint's
    deadline."""
    deadline = world.call("GET", f"/joint/{jm.joint_id}", jm.demander)["deadline"]
    clock.move_to(datetime.fromisoformat(deadline) + timedelta(seconds=1))


def assert_the_rule_book_finds_nothing(container: Container) -> None:
    """The stored log passes the audit's rule book: in particular no failure is dated
    before the deadline it cites."""
    assert [f.as_dict() for f in RuleBook().run(container.store.read(0, 1_000_000))] == []


def test_the_joint_table_is_the_plain_sum_and_is_published(
        world: World, container: Container) -> None:
    jm = joint_market(world)
    post_all_parts(jm)
    view = wait_for(jm, ("published", "failed"))
    assert view["state"] == "published", view
    expected = plain_sum()
    assert view["rows"] == len(CODES)
    assert view["result_sha256"] == hashlib.sha256(table_json(expected)).hexdigest()
    published = [e for e in events_of(world, jm.joint_id) if e["type"] == "joint.published"]
    assert len(published) == 1
    assert published[0]["payload"]["actor"]["role"] == "system"
    assert published[0]["payload"]["table_digest"] == view["table_digest"]
    # the sealed table the bank downloads opens, under the stored key, to the plain sum
    raw = world.api.joint_table(jm.demander, jm.joint_id)
    table = hq.HiddenTable.from_bytes(raw)
    assert table.digest() == view["table_digest"]
    key = store.get_key(container.engine, jm.joint_id, view["table_digest"])
    assert key is not None
    for code in (CODES[0], CODES[7], CODES[-1]):
        row = hq.open_row(table, hq.oprf_output(key, code))
        assert row is not None
        assert json.loads(row) == {"credit_code": code, **expected[code]}
    # nothing is delivered of a joint computation, ever
    types = {e["type"] for e in world.call("GET", "/ledger/events?limit=1000",
                                            world.regulator)["events"]}
    assert "delivery.made" not in types
    # a second run finds it published and writes nothing
    head = world.client.get("/health").json()["head"]
    assert container.aggregator is not None
    assert container.aggregator.aggregate(jm.joint_id) == "published"
    assert sweep(container) == {}
    assert world.client.get("/health").json()["head"] == head


def test_a_part_whose_masks_do_not_cancel_fails_the_joint(
        world: World, container: Container) -> None:
    jm = joint_market(world)
    request_all(jm)
    publish_layout(jm)
    for pid in jm.ids[:2]:
        post_part(jm, pid, part_of(jm, pid))
    # the last provider's body masked for another execution, relabelled for this one: the
    # header checks pass (its digest is recorded), but its masks do not cancel the others'
    old = part_of(jm, jm.ids[2], execution_id="an-earlier-execution")
    relabelled = type(old)({**old.header, "execution_id": jm.joint_id}, old.body)
    post_part(jm, jm.ids[2], relabelled)
    view = wait_for(jm, ("published", "failed"))
    assert view["state"] == "failed"
    assert view["reason"].startswith("refused: bound: "), view["reason"]
    assert view["table_digest"] is None and view["result_sha256"] is None
    failed = [e for e in events_of(world, jm.joint_id) if e["type"] == "joint.failed"]
    assert len(failed) == 1 and failed[0]["payload"]["actor"]["role"] == "system"
    r = world.api.send("GET", f"/joint/{jm.joint_id}/table", jm.demander)
    assert r.status_code == 409 and r.json()["error"] == "wrong_state"
    store.TABLES.ensure(container.engine)
    with container.engine.connect() as conn:
        assert conn.execute(store.sealed.select()).all() == []


def test_a_provider_that_sends_no_part_fails_the_joint_at_its_deadline(
        world: World, container: Container, clock: Clock) -> None:
    jm = joint_market(world, deadline_seconds=10)
    request_all(jm)
    publish_layout(jm)
    for pid in jm.ids[:2]:
        post_part(jm, pid, part_of(jm, pid))
    assert sweep(container) == {jm.joint_id: "layout_published"}  # not yet due
    past_the_deadline(world, jm, clock)
    assert sweep(container) == {jm.joint_id: "failed"}
    view = world.call("GET", f"/joint/{jm.joint_id}", jm.demander)
    assert view["state"] == "failed"
    assert view["reason"] == (f"missing: provider {jm.ids[2]} sent no part by the deadline "
                              f"{view['deadline']}")
    # the late part is refused and stored nowhere; nothing is published
    late = world.api.send("POST", f"/computations/{jm.computations[jm.ids[2]]}/masked-part",
                          jm.provider(jm.ids[2]), json={
                              "header": dict(part_of(jm, jm.ids[2]).header),
                              "body": "AAAAAAAAAAA=", "input_hashes": {}, "datasite": "d"})
    assert late.status_code in (409, 422), late.text
    assert sweep(container) == {}
    assert "joint.published" not in {e["type"] for e in events_of(world, jm.joint_id)}
    assert_the_rule_book_finds_nothing(container)


def test_a_layout_never_published_fails_the_joint_at_its_deadline(
        world: World, container: Container, clock: Clock) -> None:
    jm = joint_market(world, deadline_seconds=10)
    request_all(jm)
    assert sweep(container) == {jm.joint_id: "started"}  # not yet due
    past_the_deadline(world, jm, clock)
    assert sweep(container) == {jm.joint_id: "failed"}
    view = world.call("GET", f"/joint/{jm.joint_id}", jm.demander)
    assert view["reason"].startswith(
        f"missing: layout provider {jm.ids[0]} published no layout by the deadline")
    assert_the_rule_book_finds_nothing(container)


def test_a_restart_finishes_a_joint_whose_parts_are_all_in(
        world: World, container: Container) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from client.platform import Platform
    from runtime.build import build

    jm = joint_market(world)
    request_all(jm)
    publish_layout(jm)
    aggregator, container.aggregator = container.aggregator, None  # the node is down
    for pid in jm.ids:
        post_part(jm, pid, part_of(jm, pid))
    assert world.call("GET", f"/joint/{jm.joint_id}", jm.demander)["state"] == (
        "layout_published")
    container.aggregator = aggregator
    # a new server on the same database (the log, the read models and the bytes kept
    # beside them): its first sweep, at start, aggregates
    restarted = build(container.settings.model_copy(update={"chain": False}))
    try:
        with TestClient(create_app(container=restarted)) as client:
            view = wait_for(jm, ("published", "failed"), api=Platform(client))
            assert view["state"] == "published", view["reason"]
            assert view["result_sha256"] == hashlib.sha256(
                table_json(plain_sum())).hexdigest()
    finally:
        restarted.close()


def test_the_hook_called_off_any_event_loop_aggregates_in_a_thread(
        world: World, container: Container) -> None:
    jm = joint_market(world)
    request_all(jm)
    publish_layout(jm)
    aggregator, container.aggregator = container.aggregator, None  # no hook from the route
    for pid in jm.ids:
        post_part(jm, pid, part_of(jm, pid))
    container.aggregator = aggregator
    assert aggregator is not None
    aggregator.on_parts_complete(jm.joint_id)  # the test's thread: no running loop
    view = wait_for(jm, ("published", "failed"))
    assert view["state"] == "published", view["reason"]


def test_a_table_the_hidden_table_cannot_take_fails_the_joint_refused(
        world: World, container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """A joint table the hidden table refuses (here its preparation raises, as it does for
    a code out of its bounds) fails the joint ``refused: table: …``, publishing nothing;
    the sweep then leaves it alone."""
    jm = joint_market(world)
    assert container.aggregator is not None

    def cannot(key: bytes, rows: dict[str, bytes]) -> hq.HiddenTable:
        raise hq.HiddenQueryError("a code is 1 to 256 bytes of UTF-8")

    monkeypatch.setattr(container.aggregator, "prepare_table", cannot)
    post_all_parts(jm)
    view = wait_for(jm, ("published", "failed"))
    assert (view["state"], view["reason"]) == (
        "failed", "refused: table: a code is 1 to 256 bytes of UTF-8"), view
    assert view["table_digest"] is None
    store.TABLES.ensure(container.engine)
    with container.engine.connect() as conn:
        assert conn.execute(store.sealed.select()).all() == []
    assert sweep(container) == {}


def test_a_complete_joint_whose_aggregation_keeps_raising_fails_past_its_deadline(
        world: World, container: Container, clock: Clock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An aggregation that raises (not a refusal: the database away, say) is tried again
    by the sweep until a run past the deadline raised too; then the joint fails
    (``refused: aggregation: …``) instead of being tried for ever."""
    jm = joint_market(world, deadline_seconds=10)
    aggregator, container.aggregator = container.aggregator, None  # no hook: sweeps only
    post_all_parts(jm)
    container.aggregator = aggregator
    assert aggregator is not None
    runs: list[int] = []

    def away(key: bytes, rows: dict[str, bytes]) -> hq.HiddenTable:
        runs.append(len(rows))
        raise RuntimeError("the database is away")

    monkeypatch.setattr(aggregator, "prepare_table", away)
    monkeypatch.setattr("aggregation.service.RETRY_AFTER_S", 0.0)
    assert sweep(container) == {}  # raised before the deadline: tried again later
    past_the_deadline(world, jm, clock)
    assert sweep(container) == {}  # raised again, past the deadline
    assert sweep(container) == {jm.joint_id: "failed"}
    assert runs == [len(CODES)] * 2
    view = world.call("GET", f"/joint/{jm.joint_id}", jm.demander)
    assert view["reason"] == ("refused: aggregation: it raised RuntimeError past the "
                              f"deadline {view['deadline']}")
    assert sweep(container) == {}
    assert_the_rule_book_finds_nothing(container)
