"""Exactly once: the same contract event handled twice (directly, and redelivered by a
JetStream consumer that did not acknowledge it), a node that dies between the run and the
report, a real node process killed with SIGKILL in the middle of a computation, and the
embedded host killed so (none of its processes may outlive it) — each ends with one
computation, one ``computation.succeeded`` and one ``delivery.made``.

The server publishes to the real NATS on 127.0.0.1:4222, on a stream and subject prefix of
this module's own (removed afterwards). The NATS test fails, not skips, when ``CI`` is set
and NATS is down.

Runs inside the compute venv only: ``compute_nodes/setup-env test``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from compute_nodes import datasite
from compute_nodes.enrollment import running_host
from compute_nodes.feeds import JetStreamSettings, Position
from compute_nodes.hygiene import alive
from compute_nodes.jetstream import Follower
from compute_nodes.outcome import Outcome
from core.record import LogEntry
from tests.compute import logscan
from tests.compute.ledger import (
    NATS_URL,
    PYTHON,
    ROOT,
    USED,
    expected_scores,
    ledger_server,
    nats_up,
    provider_view,
    served,
    until_settled,
    world,
)
from tests.compute.test_host import descendants

pytestmark = pytest.mark.timeout(180)

SLOW = '''def slow_score(data):
    import time
    time.sleep(6)
    table = data.sort_values("uscc")
    points = table["tax_paid_yuan"] // 10000 + table["power_kwh"] // 20000
    return [{"uscc": str(u), "score": int(p)} for u, p in zip(table["uscc"], points)]
'''


def _delete_stream(stream: str) -> None:
    import nats

    async def delete() -> None:
        nc = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=1)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    try:
        asyncio.run(delete())
    except Exception:  # noqa: BLE001, S110 - NATS down or the stream never made: nothing left
        pass


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    tmp = tmp_path_factory.mktemp("once")
    tag = uuid.uuid4().hex[:10]
    stream, prefix = f"DLCOMPUTE_{tag}", f"dlcompute{tag}"
    try:
        with ledger_server(tmp, DATALEDGER_NATS_URL=NATS_URL, DATALEDGER_NATS_STREAM=stream,
                           DATALEDGER_NATS_SUBJECT_PREFIX=prefix) as url:
            made = world(tmp, url, site_name="tax-once")
            made.stream, made.prefix = stream, prefix
            try:
                yield made
            finally:
                made.site.land()
    finally:
        _delete_stream(stream)


def deliveries(w: SimpleNamespace, computation_id: str) -> list[str]:
    return [e["type"] for e in w.api.events() if e["originator_id"] == computation_id]


def test_the_same_event_handled_twice_runs_and_delivers_once(w: SimpleNamespace) -> None:
    contract = w.api.order(w.p, w.p.product_id)
    event = provider_view(w, contract, "contract.approved")
    node = w.node()
    [first] = until_settled(node, event)
    [second] = node.handle(event)
    assert (first.status, second.status) == ("delivered", "skipped")
    assert len(w.api.computations(contract)) == 1
    assert deliveries(w, first.computation_id) == [
        "computation.requested", "computation.succeeded", "delivery.made"]


class Dropped(Exception):
    """The report of the result never reached the ledger."""


def test_a_node_dying_between_the_run_and_the_report_does_not_run_again(
        w: SimpleNamespace) -> None:
    contract = w.api.order(w.p, w.p.product_id)
    event = provider_view(w, contract, "contract.approved")

    def drop_report(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/result"):
            raise httpx.ConnectError("the node died before reporting", request=request)
        return real.handle_request(request)

    real = httpx.HTTPTransport()
    dying = w.node(http=httpx.Client(base_url=w.url, transport=httpx.MockTransport(drop_report)))
    [lost] = until_settled(dying, event)
    assert lost.status == "error" and not lost.settled, lost
    assert [c["state"] for c in w.api.computations(contract)] == ["requested"]
    [done] = w.node().handle(event)  # the restarted node
    assert done.status == "delivered", done
    assert deliveries(w, done.computation_id) == [
        "computation.requested", "computation.succeeded", "delivery.made"]
    key = w.node().request_key(contract, 1)
    codes = w.admin.api.services.code.get_by_service_func_name(
        datasite.request_function_name("score", key))
    [code] = codes
    assert len(w.admin.api.services.output.get_by_user_code_id(code.id)) == 1  # ran once


@pytest.fixture()
def jetstream() -> None:
    if not nats_up():
        if os.environ.get("CI"):
            pytest.fail("NATS is not running on 127.0.0.1:4222 (.ci/run starts it)")
        pytest.skip("NATS is not running on 127.0.0.1:4222")


class Crash(Exception):
    """The node process died after handling, before acknowledging."""


def test_a_jetstream_redelivery_runs_and_delivers_once(
        w: SimpleNamespace, jetstream: None, monkeypatch: pytest.MonkeyPatch) -> None:
    contract = w.api.order(w.p, w.p.product_id)
    acknowledge = Follower.ack

    def ack_then_die(self: Follower, msg: Any) -> None:
        event = LogEntry.from_canonical(bytes(msg.data))
        if (event.originator_id, event.type_name) == (contract, "contract.approved"):
            raise Crash()
        acknowledge(self, msg)

    def follow(seen: list[Outcome], idle: float) -> int:
        return w.node().follow_nats(JetStreamSettings(
            NATS_URL, w.stream, "node-under-test", subject_prefix=w.prefix,
            idle_timeout=idle, retry_s=0.3), on_outcome=seen.append)

    monkeypatch.setattr(Follower, "ack", ack_then_die)
    first: list[Outcome] = []
    with pytest.raises(Crash):
        follow(first, 30)
    mine = [o for o in first if o.contract_id == contract]
    assert [o.status for o in mine] == ["delivered"], first
    assert {o.event_type for o in first} <= {"contract.approved"}

    monkeypatch.setattr(Follower, "ack", acknowledge)
    again: list[Outcome] = []
    follow(again, 3)  # the unacknowledged message comes again first
    assert [(o.contract_id, o.status) for o in again][:1] == [(contract, "skipped")], again
    assert len(w.api.computations(contract)) == 1
    assert deliveries(w, mine[0].computation_id) == [
        "computation.requested", "computation.succeeded", "delivery.made"]
    third: list[Outcome] = []
    follow(third, 2)
    assert third == []  # acknowledged: never again


def wait_for_state(w: SimpleNamespace, contract: str, state: str,
                   proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the contract's one computation is in ``state``; ``proc`` must live meanwhile
    (its ``log`` is shown if not)."""
    deadline = time.monotonic() + 90
    while [c["state"] for c in w.api.computations(contract)] != [state]:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


@pytest.mark.parametrize("feed", ["http", "nats"])
def test_a_node_killed_mid_computation_delivers_once_after_restart(
        w: SimpleNamespace, feed: str, request: pytest.FixtureRequest) -> None:
    """``python -m compute_nodes.cli run`` (HTTP follow, or ``--nats``: the message stays
    unacknowledged) gets SIGKILL while the product's code sleeps; restarted, it delivers."""
    if feed == "nats":
        request.getfixturevalue("jetstream")
    node_dir = w.tmp / f"killed-node-{feed}"
    env = {**os.environ, "DATALEDGER_NODE_PLATFORM_URL": w.url,
           "DATALEDGER_NODE_TOKEN": w.p.provider.token,
           "DATALEDGER_NODE_TRUST": str(w.tmp / "trust.json"),
           "DATALEDGER_NODE_DATA_DIR": str(node_dir), "DATALEDGER_NODE_DATASITE_PORT": "",
           "DATALEDGER_NODE_DATASITE_NAME": "tax-killed", "DATALEDGER_NODE_POLL_SECONDS": "0.3"}
    if feed == "nats":
        env.update(DATALEDGER_NODE_NATS_URL=NATS_URL, DATALEDGER_NODE_NATS_STREAM=w.stream,
                   DATALEDGER_NODE_NATS_SUBJECT_PREFIX=w.prefix,
                   DATALEDGER_NODE_NATS_DURABLE="killed-node")
    command = [str(PYTHON), "-m", "compute_nodes.cli"]
    loaded = subprocess.run([*command, "load", "--dataset", w.p.dataset_id, "--private",
                             str(w.tmp / "private.csv"), "--mock", str(w.tmp / "mock.csv")],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=False)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    product = w.api.product(w.p, SLOW, [{"dataset_id": w.p.dataset_id, "fields": USED}],
                            name="slow score")
    Position(node_dir / "position.json").save(w.api.events()[-1]["seq"])
    contract = w.api.order(w.p, product)

    def start(name: str) -> subprocess.Popen[bytes]:
        with (node_dir / f"{name}.out").open("wb") as out, \
                (node_dir / f"{name}.err").open("wb") as err:
            return subprocess.Popen([*command, "run"], env=env, cwd=ROOT, stdout=out,
                                    stderr=err)

    def states() -> list[str]:
        return [c["state"] for c in w.api.computations(contract)]

    def wait_for(state: str, proc: subprocess.Popen[bytes], name: str) -> None:
        wait_for_state(w, contract, state, proc, node_dir / f"{name}.err")

    first = start("first")
    try:
        wait_for("requested", first, "first")
        time.sleep(2.5)  # submitted and approved: inside the function's sleep
        assert states() == ["requested"]
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    assert states() == ["requested"]

    second = start("second")
    try:
        wait_for("succeeded", second, "second")
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    finally:
        if second.poll() is None:
            second.kill()
    [computation] = w.api.computations(contract)
    assert deliveries(w, computation["computation_id"]) == [
        "computation.requested", "computation.succeeded", "delivery.made"]
    result = w.api.call("GET", f"/deliveries/{computation['computation_id']}/result",
                        w.p.demander.token)
    assert result == served(w, computation["computation_id"], expected_scores(w.private))
    printed = [json.loads(line) for line in (node_dir / "second.out").read_text().splitlines()
               if line.startswith("{")]
    assert [o["status"] for o in printed if o["contract_id"] == contract] == ["delivered"]
    assert {o["status"] for o in printed if o["contract_id"] != contract} <= {"skipped"}


def test_a_host_killed_mid_computation_leaves_no_process_and_delivers_once(
        w: SimpleNamespace) -> None:
    """The embedded host (``python -m compute_nodes.host run``: its fork server, a node
    process per provider) gets SIGKILL while the product's code sleeps: none of its
    processes survives it, and the next host delivers once."""
    node_dir = w.tmp / "killed-host"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATALEDGER_NODE_")}
    env.update(DATALEDGER_NODE_PLATFORM_URL=w.url, DATALEDGER_NODE_DATA_DIR=str(node_dir),
               DATALEDGER_NODE_TRUST=str(w.tmp / "trust.json"),
               DATALEDGER_NODE_POLL_SECONDS="0.3", PYTHONPATH=str(ROOT))
    command = [str(PYTHON), "-m", "compute_nodes.host"]
    enrolled = subprocess.run([*command, "enroll", "--datasite", "tax-host-killed"],
                              env={**env, "DATALEDGER_NODE_TOKEN": w.p.provider.token},
                              cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert enrolled.returncode == 0, enrolled.stderr[-3000:]
    participant = json.loads(enrolled.stdout)["participant_id"]
    product = w.api.product(w.p, SLOW, [{"dataset_id": w.p.dataset_id, "fields": USED}],
                            name="slow score, host killed")
    Position(node_dir / "positions" / f"{participant}.json").save(w.api.events()[-1]["seq"])

    def start(name: str) -> subprocess.Popen[bytes]:
        with (node_dir / f"{name}.out").open("wb") as out:
            return subprocess.Popen([*command, "run"], env=env, cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT)

    def states() -> list[str]:
        return [c["state"] for c in w.api.computations(contract)]

    def wait_for(state: str, host: subprocess.Popen[bytes], name: str) -> None:
        wait_for_state(w, contract, state, host, node_dir / f"{name}.out")

    first = start("first")
    try:
        deadline = time.monotonic() + 30
        while running_host(node_dir) != first.pid:
            assert first.poll() is None and time.monotonic() < deadline, "no host"
            time.sleep(0.1)
        loaded = subprocess.run([*command, "load", "--dataset", w.p.dataset_id, "--private",
                                 str(w.tmp / "private.csv"), "--mock", str(w.tmp / "mock.csv")],
                                env=env, cwd=ROOT, capture_output=True, text=True,
                                timeout=120, check=False)
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        contract = w.api.order(w.p, product)
        wait_for("requested", first, "first")
        time.sleep(2.5)  # submitted and approved: inside the function's sleep
        assert states() == ["requested"]
        node = json.loads((node_dir / "nodes" / f"{participant}.json").read_text())
        tree = descendants(first.pid)  # the fork server, the node, what they started
        assert int(node["pid"]) in tree
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    deadline = time.monotonic() + 5
    while [pid for pid in tree if alive(pid)]:
        assert time.monotonic() < deadline, \
            f"processes of the killed host survive: {[pid for pid in tree if alive(pid)]}"
        time.sleep(0.05)
    assert states() == ["requested"]

    second = start("second")
    try:
        wait_for("succeeded", second, "second")
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    assert second.returncode == 0, (node_dir / "second.out").read_text()[-3000:]
    [computation] = w.api.computations(contract)
    assert deliveries(w, computation["computation_id"]) == [
        "computation.requested", "computation.succeeded", "delivery.made"]
    result = w.api.call("GET", f"/deliveries/{computation['computation_id']}/result",
                        w.p.demander.token)
    assert result == served(w, computation["computation_id"], expected_scores(w.private))
    secrets = logscan.node_secrets(node_dir)
    assert len(secrets) == 3
    assert logscan.scan([node_dir, w.tmp / "server.log"], secrets=secrets) == []
