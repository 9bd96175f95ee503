"""Hostile products (issue 11, "What must hold"), through a real ledger server, a real PySyft
datasite and the real node with its sandbox.

Each test lists a product whose code attacks, has a contract approved, lets the node act,
and checks: the computation failed with the expected reason (or, for a probe that merely
fails inside its code, it delivered rows showing it reached nothing); nothing it should
not is delivered or stored; no secret the test knows (tokens, passwords, keys) and no
private value appears on the ledger, in the delivered bytes or in the node's output; and
the same node delivers a normal product right after.

The world is rooted where a deployment would be (``/srv/dataledger-hostile-*``, mode
0755), not in pytest's temporary directory: that one is mode 0700 and under ``/tmp``,
which would stop a probe before the sandbox had to. The server's data directory is
``<root>/ledger`` (``DATALEDGER_DATA_DIR``, as a deployment outside the checkout sets it)
and the node's directory is ``<data dir>/node``, as ``serve`` lays it out; its credential
files are made by the real ``enroll``; the node's sandbox hides that directory (and the
datasite's), as the host's does; the node's environment carries its token as
``dataledger compute-node run``'s does. The module's sandbox has a wall time of
``WALL_S`` (the default is 60 s) so the endless loop costs seconds, not a minute.

Runs inside the compute venv only: ``compute_nodes/setup-env test``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import psutil
import pytest

from compute_nodes import datasite
from compute_nodes.executor import Job
from compute_nodes.host import enroll, hidden_paths
from compute_nodes.logs import private_log
from compute_nodes.node import ComputeNode
from compute_nodes.outcome import Outcome
from compute_nodes.output_contract import OutputContract
from compute_nodes.sandbox import Limits, Sandbox
from compute_nodes.sandbox.limits import GIB
from compute_nodes.trust import Trust
from core.canonical import canonical_bytes
from core.masking import generalise
from tests.compute import hostile_products as hp
from tests.compute import logscan
from tests.compute.ledger import (
    ADMIN_TOKEN,
    ROOT,
    USED,
    provider_view,
    running_world,
    served,
    until_settled,
)

pytestmark = pytest.mark.timeout(180)
SITE = "tax-hostile"
DEPLOYMENTS = Path("/srv")
WALL_S = 15.0
NODE_ENV = ("DATALEDGER_NODE_TOKEN", "DATALEDGER_NODE_DATASITE_PASSWORD",
            "DATALEDGER_NODE_PLATFORM_URL")
CODE_FAILED = ("code_failed: the product's code raised {} on the private data; details are "
               "in the provider's private log")
LIMIT = "sandbox_limit: the product's code went past the sandbox's {} limit"

POINTS_SCHEMA = {"type": "array", "items": {"type": "object", "properties": {
    "uscc": {"type": "string"}, "points": {"type": "integer"}}, "additionalProperties": False}}
TAX_SCHEMA = {"type": "array", "items": {"type": "object", "properties": {
    "uscc": {"type": "string"}, "tax_paid_yuan": {"type": "integer"}},
    "additionalProperties": False}}
# a probe's schema lets anything through: what it finds would be delivered
PROBE_SCHEMA = {"type": "array", "items": {"type": "object", "properties": {
    "uscc": {"type": "string"}}, "required": ["uscc"]}}


# -- the world: a deployment root, the node's credential files, its sandbox -----------------


@pytest.fixture(scope="module")
def w() -> Iterator[SimpleNamespace]:
    """This module's ledger server and datasite, rooted under ``DEPLOYMENTS``."""
    root = Path(tempfile.mkdtemp(prefix="dataledger-hostile-", dir=DEPLOYMENTS))
    root.chmod(0o755)
    try:
        with running_world(root, SITE) as made:
            yield made
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def h(w: SimpleNamespace) -> Iterator[SimpleNamespace]:
    """The node under attack: its directory with two providers' enrollment files (as the
    host keeps them), its token in its environment, its sandbox hiding that directory
    and the datasite's."""
    node_dir = w.tmp / "ledger" / "node"  # serve's layout: <data dir>/node
    other = w.api.onboard("provider", "Power grid 电网公司", code="PG")
    enrolled = [enroll(node_dir, w.url, w.p.provider.token, w.site_name),
                enroll(node_dir, w.url, other.token)]
    saved = {name: os.environ.get(name) for name in NODE_ENV}
    saved["DATALEDGER_NODE_HIDE"] = os.environ.get("DATALEDGER_NODE_HIDE")
    # what the host hides, as serve starts it (serve names its data directory)
    os.environ["DATALEDGER_NODE_HIDE"] = os.pathsep.join(
        [str(node_dir.parent), str(w.tmp / "datasite")])
    made = SimpleNamespace(node_dir=node_dir, other=other, enrolled=enrolled,
                           limits=Limits(wall_time_s=WALL_S), hide=hidden_paths(node_dir))
    try:
        os.environ.update({"DATALEDGER_NODE_TOKEN": w.p.provider.token,
                           "DATALEDGER_NODE_DATASITE_PASSWORD": "admin-pass-1",
                           "DATALEDGER_NODE_PLATFORM_URL": w.url})
        with node_on_sandbox(w, made) as (made.node, made.sandbox):
            made.normal = listed(w, hp.NORMAL, POINTS_SCHEMA, "points per firm")
            made.secrets = known_secrets(w, made)
            yield made
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def node_on_sandbox(w: SimpleNamespace, h: SimpleNamespace,
                    warm: int = 2) -> Iterator[tuple[ComputeNode, Sandbox]]:
    """A sandbox with the module's limits and hidden paths, and a node running on it."""
    sandbox = Sandbox(limits=h.limits, warm=warm, hide=h.hide)
    try:
        node = ComputeNode(w.url, w.p.provider.token, (w.admin, w.runner, w.site_name),
                           Trust.from_file(w.tmp / "trust.json"), sandbox, backoff_s=0.05,
                           parallel=2)
        try:
            yield node, sandbox
        finally:
            node.close()
    finally:
        sandbox.close()


def known_secrets(w: SimpleNamespace, h: SimpleNamespace) -> dict[str, str]:
    """Every secret of this deployment the test knows, by name."""
    found = {"admin token": ADMIN_TOKEN, "datasite admin password": "admin-pass-1",
             "datasite runner password": "node-pass-1", "expert token": w.p.expert.token,
             "other provider's token": h.other.token}
    for role in ("provider", "operator", "developer", "demander"):
        found[f"{role}'s token"] = getattr(w.p, role).token
    for entry in h.enrolled:
        found[f"datasite password of {entry.participant_id}"] = entry.datasite_password
    for key in sorted((w.tmp / "ledger").rglob("*.key")):
        raw, name = key.read_bytes(), f"key {key.relative_to(w.tmp)}"
        try:
            found[name] = raw.decode().strip()
        except UnicodeDecodeError:  # a binary key, as it would be spelled
            found[f"{name} (hex)"] = raw.hex()
            found[f"{name} (base64)"] = base64.b64encode(raw).decode()
    return found


# -- the steps of a test ------------------------------------------------------------------


def listed(w: SimpleNamespace, code: str, schema: dict[str, Any], name: str) -> str:
    """A listed product over the tax table, its key column ``uscc``."""
    return w.api.api.list_product(w.p.operator, w.api.platform, {
        "scenario_id": w.p.scenario_id, "authorization_ids": [w.p.auth_id], "name": name,
        "kind": "api", "description": "a product under test", "code": code,
        "inputs": [{"dataset_id": w.p.dataset_id, "fields": USED}], "output_schema": schema,
        "key_column": "uscc", "quality_report": "n/a", "price_fen": 100_000,
        "developer_id": w.p.developer.id})


def order(w: SimpleNamespace, product: str, *, allowed: list[str] | None = None,
          query: dict[str, Any] | None = None, processing_count: int = 1) -> str:
    """An approved contract on ``product``; ``allowed``: its policy's allowed_fields."""
    api, p = w.api.api, w.p
    oid = api.place_order(p.demander, product, "credit decisions on SMEs", query)
    now = datetime.now(UTC)
    policy: dict[str, Any] = {
        "processing_count": processing_count, "circulation_modes": ["plaintext"],
        "not_before": (now - timedelta(minutes=1)).isoformat(),
        "not_after": (now + timedelta(days=90)).isoformat()}
    if allowed is not None:  # the fields it reads too: the ledger refuses less
        policy["allowed_fields"] = sorted({*USED, *allowed})
    api.propose_contract(p.operator, oid, usage_policy=policy, price_fen=100_000,
                         revenue_split={"developer": 1000, "operator": 3000,
                                        "platform": 1000, "provider": 5000})
    api.accept_contract(p.demander, oid)
    w.api.approve(p, oid)
    return oid


def act(w: SimpleNamespace, node: ComputeNode, contract: str) -> Outcome:
    [outcome] = until_settled(node, provider_view(w, contract, "contract.approved"), 60)
    return outcome


def attack(w: SimpleNamespace, h: SimpleNamespace, code: str,
           schema: dict[str, Any] = PROBE_SCHEMA, name: str = "a hostile product",
           **terms: Any) -> Outcome:
    """List ``code``, approve a contract on it, let the module's node act."""
    return act(w, h.node, order(w, listed(w, code, schema, name), **terms))


def failed(w: SimpleNamespace, outcome: Outcome, *reasons: str) -> str:
    """The computation failed with one of ``reasons`` (a reason ending in ``*`` is a
    prefix); nothing was delivered nor stored. Its reason."""
    assert outcome.status == "failed", outcome
    cid = outcome.computation_id
    reason = w.api.event(cid, "computation.failed")["payload"]["reason"]
    assert reason == outcome.detail
    assert any(reason == r or (r.endswith("*") and reason.startswith(r[:-1]))
               for r in reasons), reason
    assert w.api.of(cid) == ["computation.requested", "computation.failed"]
    w.api.call("GET", f"/deliveries/{cid}/result", w.p.demander.token, 409)
    assert stored_results(w, cid) == 0
    return reason


def delivered(w: SimpleNamespace, outcome: Outcome) -> Any:
    """The computation delivered once; the result the demander receives."""
    assert outcome.status == "delivered", outcome
    assert w.api.of(outcome.computation_id) == [
        "computation.requested", "computation.succeeded", "delivery.made"]
    return w.api.call("GET", f"/deliveries/{outcome.computation_id}/result",
                      w.p.demander.token)


def stored_results(w: SimpleNamespace, computation_id: str) -> int:
    """Result rows the server keeps for the computation (its read-model database)."""
    path = w.tmp / "ledger" / "views.db"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM rm_delivery_results WHERE "
                                  "computation_id = ?", (computation_id,)).fetchone()[0])
        except sqlite3.OperationalError:  # no result was ever stored
            return 0


def expected_points(private: pd.DataFrame) -> list[dict[str, Any]]:
    table = private.sort_values("uscc")
    return [{"uscc": u, "points": int(t // 10000)}
            for u, t in zip(table["uscc"], table["tax_paid_yuan"], strict=True)]


def healthy(w: SimpleNamespace, h: SimpleNamespace) -> None:
    """The node delivers a normal product's contract right after the attack."""
    outcome = act(w, h.node, order(w, h.normal))
    result = delivered(w, outcome)  # as served: watermarked for this delivery
    assert result == served(w, outcome.computation_id, expected_points(w.private))


def no_secret(w: SimpleNamespace, h: SimpleNamespace, *texts: str) -> None:
    """No known secret on the ledger (every event) nor in ``texts``."""
    joined = "\n".join([json.dumps(w.api.events(), ensure_ascii=False), *texts])
    assert not [name for name, value in h.secrets.items() if value in joined]


def output_of(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    """What the node's process wrote (its descriptors 1 and 2) and logged."""
    out, err = capfd.readouterr()
    return "\n".join([out, err, *(r.getMessage() for r in caplog.records)])


def descendants() -> int:
    return len(psutil.Process().children(recursive=True))


def back_to(baseline: int, seconds: float = 15) -> int:
    """Wait until this process has at most ``baseline`` descendants; how many it has."""
    deadline = time.monotonic() + seconds
    while (count := descendants()) > baseline and time.monotonic() < deadline:
        time.sleep(0.3)
    return count


def under(path: str, folders: list[Path]) -> bool:
    return any(path == str(f) or path.startswith(f"{f}/") for f in folders)


# -- files and memory -----------------------------------------------------------------------


def test_credential_files_are_out_of_reach(w: SimpleNamespace, h: SimpleNamespace,
                                           capfd: Any, caplog: Any) -> None:
    """Enrollment files found by walking the disk or named exactly, the node's directory
    and its datasite's, the environment of every process it sees."""
    caplog.set_level(logging.INFO)
    files = [str(h.node_dir / "providers" / f"{e.participant_id}.json") for e in h.enrolled]
    code = hp.fill(hp.LOOT, ROOTS=[str(w.tmp), "/srv", "/work", "/home", "/opt"], FILES=files,
                   DIRS=[str(p) for p in h.hide])
    outcome = attack(w, h, code, name="credential reader")
    texts = [outcome.detail]
    if outcome.status == "delivered":
        rows = delivered(w, outcome)
        texts.append(json.dumps(rows, ensure_ascii=False))
        seen = {row["what"]: row["got"] for row in rows}
        assert "environ" in seen  # the probe ran to its end
        reached = [f"{what}: {got[:60]}" for what, got in seen.items()
                   if (got.startswith("READ ") and (under(what, h.hide) or "/providers/" in what))
                   or (got.startswith("LISTED ") and got != "LISTED ")]
        assert not reached, reached
    else:
        failed(w, outcome, "code_failed: *", "sandbox_limit: *")
    no_secret(w, h, *texts, output_of(capfd, caplog))
    healthy(w, h)


def test_the_platforms_files_are_out_of_reach(w: SimpleNamespace, h: SimpleNamespace) -> None:
    """The server's data directory (event store, read models with every delivered result,
    keys): "no file of the platform's" (issue 11, item 1)."""
    server = w.tmp / "ledger"
    code = hp.fill(hp.LOOT, ROOTS=[], FILES=[], DIRS=[str(server)])
    outcome = attack(w, h, code, name="platform file reader")
    if outcome.status == "delivered":
        rows = delivered(w, outcome)
        read = [row["what"] for row in rows
                if row["got"].startswith("READ ") and under(row["what"], [server])]
        assert not read, f"the product read the platform's files {read}"
        no_secret(w, h, json.dumps(rows, ensure_ascii=False))
    else:
        failed(w, outcome, "code_failed: *", "sandbox_limit: *")
        no_secret(w, h, outcome.detail)
    healthy(w, h)


def test_the_nodes_token_is_not_in_the_sandboxs_memory(w: SimpleNamespace, h: SimpleNamespace,
                                                       capfd: Any, caplog: Any) -> None:
    """gc.get_objects() (an HTTP client would hold the bearer token), every readable page
    of its address space, its environment: no token of the node's."""
    outcome = attack(w, h, hp.SNIFF, name="token sniffer")
    texts = [outcome.detail]
    if outcome.status == "delivered":
        rows = delivered(w, outcome)
        texts.append(json.dumps(rows, ensure_ascii=False))
        scanned = rows[0]
        assert scanned["uscc"] == "scanned" and scanned["objects"] > 0, scanned
        assert not [c for c in scanned["clients"] if c.startswith("httpx")], scanned
        assert "DATALEDGER_NODE_TOKEN" not in scanned["environ"], scanned
    else:
        failed(w, outcome, "code_failed: *", "sandbox_limit: *")
    no_secret(w, h, *texts, output_of(capfd, caplog))
    healthy(w, h)


# -- the network and the host's sockets ----------------------------------------------------


@contextlib.contextmanager
def listening() -> Iterator[SimpleNamespace]:
    """A TCP and a UDP listener on loopback ports of the host, and what reached them."""
    ears = SimpleNamespace(tcp=socket.create_server(("127.0.0.1", 0)),
                           udp=socket.socket(socket.AF_INET, socket.SOCK_DGRAM), heard=[])
    ears.udp.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def listen() -> None:
        for sock in (ears.tcp, ears.udp):
            sock.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, peer = ears.tcp.accept()
                ears.heard.append(f"tcp from {peer}")
                conn.close()
            with contextlib.suppress(TimeoutError):
                ears.heard.append(f"udp {ears.udp.recvfrom(100)}")

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        yield ears
    finally:
        time.sleep(0.5)  # a datagram in flight
        stop.set()
        thread.join(5)
        ears.tcp.close()
        ears.udp.close()


def test_sockets_to_the_loopback_fail(w: SimpleNamespace, h: SimpleNamespace) -> None:
    """TCP to the ledger API, to a port the test listens on, to NATS and PostgreSQL; a UDP
    datagram to a listening port. Nothing outside the host is tried."""
    api_port = int(w.url.rsplit(":", 1)[1])
    with listening() as ears:
        tcp_port, udp_port = ears.tcp.getsockname()[1], ears.udp.getsockname()[1]
        code = hp.fill(hp.SOCKETS, TARGETS=[
            ("AF_INET", "SOCK_STREAM", "127.0.0.1", api_port),
            ("AF_INET6", "SOCK_STREAM", "::1", api_port),
            ("AF_INET", "SOCK_STREAM", "127.0.0.1", tcp_port),
            ("AF_INET", "SOCK_STREAM", "127.0.0.1", 4222),
            ("AF_INET", "SOCK_STREAM", "127.0.0.1", 5432),
            ("AF_INET", "SOCK_DGRAM", "127.0.0.1", udp_port)])
        outcome = attack(w, h, code, name="dialer")
    assert ears.heard == []
    if outcome.status == "delivered":
        rows = delivered(w, outcome)
        assert len(rows) == 6, rows
        assert not [r for r in rows if r["outcome"].startswith("CONNECTED")], rows
    else:
        failed(w, outcome, "code_failed: *", "sandbox_limit: *")
    healthy(w, h)


def test_unix_sockets_of_the_host_are_out_of_reach(w: SimpleNamespace,
                                                   h: SimpleNamespace) -> None:
    """A world-connectable unix socket of a host service (the test's, in the deployment
    root; and PostgreSQL's, connected then closed, nothing sent): no network is needed to
    reach them, only the host's filesystem."""
    path = w.tmp / "service.sock"
    service = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    service.bind(str(path))
    path.chmod(0o777)
    service.listen()
    service.settimeout(0.1)
    paths = [str(path)] + [str(p) for p in Path("/var/run/postgresql").glob(".s.PGSQL.*")
                           if p.is_socket()]
    try:
        outcome = attack(w, h, hp.fill(hp.UNIX, PATHS=paths), name="local dialer")
        heard = []
        with contextlib.suppress(TimeoutError):
            heard.append(service.accept())
    finally:
        service.close()
        path.unlink(missing_ok=True)
    assert heard == []
    if outcome.status == "delivered":
        rows = delivered(w, outcome)
        assert len(rows) == len(paths), rows
        assert not [r for r in rows if r["outcome"] == "CONNECTED"], rows
    else:
        failed(w, outcome, "code_failed: *", "sandbox_limit: *")
    healthy(w, h)


# -- the host's filesystem and resources ---------------------------------------------------


def test_writes_outside_its_directory_leave_nothing_on_the_host(
        w: SimpleNamespace, h: SimpleNamespace) -> None:
    """New files in the repository, /root, the deployment, the node's and the datasite's
    directories, /tmp, /var/tmp and /dev/shm; appends to a file of the host and to one
    any user may write: each fails, or lands somewhere the host never sees."""
    name = f"hostile-{secrets.token_hex(6)}"
    drop = w.tmp / "drop"  # a sloppy, world-writable directory of the host
    drop.mkdir(mode=0o777, exist_ok=True)
    drop.chmod(0o777)
    sloppy = w.tmp / "sloppy.txt"
    sloppy.write_text("any user may write here\n")
    sloppy.chmod(0o666)
    create = [ROOT / name, Path("/root") / name, DEPLOYMENTS / name, w.tmp / name, drop / name,
              *(p / name for p in h.hide), Path("/tmp") / name, Path("/var/tmp") / name,
              Path("/dev/shm") / name]
    append = [w.tmp / "trust.json", sloppy]
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in append}
    try:
        outcome = attack(w, h, hp.fill(hp.WRITE, CREATE=[str(p) for p in create],
                                       APPEND=[str(p) for p in append]), name="scribbler")
        assert [str(p) for p in create if p.exists()] == []
        assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in append} == before
    finally:
        for path in create:
            with contextlib.suppress(OSError):
                path.unlink()
    if outcome.status == "delivered":
        assert len(delivered(w, outcome)) == len(create) + len(append)
    else:
        failed(w, outcome, "code_failed: *", "sandbox_limit: *")
    healthy(w, h)


def sleepers(mark: str) -> list[psutil.Process]:
    """The processes the fork bomb left (``sleep <mark>``), anywhere on the host."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] == ["sleep", mark]:
            found.append(proc)
    return found


def test_a_fork_bomb_is_contained(w: SimpleNamespace, h: SimpleNamespace) -> None:
    mark = f"120.{secrets.randbelow(10**6):06d}"  # the bomb's children: sleep <mark>
    baseline = descendants()
    try:
        outcome = attack(w, h, hp.fill(hp.BOMB, MARK=mark), name="fork bomb")
        failed(w, outcome, LIMIT.format("processes"), CODE_FAILED.format("BlockingIOError"))
        deadline = time.monotonic() + 15
        while sleepers(mark) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert sleepers(mark) == [], "the bomb's processes outlived its job"
        assert back_to(baseline) <= baseline
    finally:
        for proc in sleepers(mark):  # started by this test's product: never left behind
            with contextlib.suppress(psutil.Error):
                proc.kill()
    healthy(w, h)


def test_allocating_10_gib_hits_the_memory_limit(w: SimpleNamespace, h: SimpleNamespace) -> None:
    assert h.limits.memory_bytes < 10 * GIB, "no memory limit below 10 GiB: not run"
    baseline = descendants()
    failed(w, attack(w, h, hp.HOG, name="memory hog"), LIMIT.format("memory"))
    assert back_to(baseline) <= baseline
    healthy(w, h)


def test_an_endless_loop_is_stopped_at_the_wall_time(w: SimpleNamespace,
                                                     h: SimpleNamespace) -> None:
    """A busy loop that ignores SIGTERM, SIGINT, SIGXCPU, SIGHUP and SIGALRM."""
    baseline = descendants()
    started = time.monotonic()
    outcome = attack(w, h, hp.SPIN, name="endless loop")
    took = time.monotonic() - started
    failed(w, outcome, LIMIT.format("wall_time"), LIMIT.format("cpu_time"))
    assert took < WALL_S + 30, took
    assert back_to(baseline) <= baseline
    healthy(w, h)


def test_importing_a_module_not_installed_fails_cleanly(w: SimpleNamespace,
                                                        h: SimpleNamespace) -> None:
    failed(w, attack(w, h, hp.MISSING, name="missing import"),
           CODE_FAILED.format("ModuleNotFoundError"))
    healthy(w, h)


# -- private values printed, raised, logged ------------------------------------------------


class Kept(logging.Handler):
    """The records of the provider's private log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_private_values_printed_and_raised_stay_in_the_providers_log(
        w: SimpleNamespace, h: SimpleNamespace, capfd: Any, caplog: Any) -> None:
    """The code prints every (uscc, tax) pair to stdout and stderr, through Python's streams
    and the raw descriptors, logs them and raises with them. The node runs on a sandbox
    started inside this test, so its workers inherit the captured descriptors: whatever
    they let through is seen here."""
    caplog.set_level(logging.INFO)
    kept = Kept()
    private_log.addHandler(kept)
    try:
        with node_on_sandbox(w, h, warm=1) as (node, _):
            contract = order(w, listed(w, hp.SPILL, POINTS_SCHEMA, "spiller"))
            reason = failed(w, act(w, node, contract), CODE_FAILED.format("ValueError"))
    finally:
        private_log.removeHandler(kept)
    pairs = [f"{u}={t}" for u, t in zip(w.private["uscc"], w.private["tax_paid_yuan"],
                                        strict=True)]
    seen = output_of(capfd, caplog)
    ledger = json.dumps(w.api.events(), ensure_ascii=False)
    for where, text in (("the reason", reason), ("the node's output", seen),
                        ("the ledger", ledger)):
        assert not [p for p in pairs if p in text], f"private values in {where}"
    for where, text in (("the reason", reason), ("the node's output", seen)):
        # (the ledger holds these words: they are in the product's registered code)
        assert not [m for m in ("PRINTED", "FD1 ", "FD2 ", "LOGGED", "RAISED") if m in text], \
            f"what the code printed or raised is in {where}"
    assert not [u for u in w.private["uscc"] if u in seen], "a private key in the output"
    # the provider keeps the details in its own log
    provider = "\n".join(kept.messages)
    assert "RAISED" in provider and pairs[0] in provider, kept.messages
    assert "PRINTED" in provider, kept.messages
    no_secret(w, h, seen)
    healthy(w, h)


# -- the output contract -------------------------------------------------------------------


@pytest.mark.parametrize("code", [hp.EXTRA_COLUMN, hp.SPELLED_COLUMN],
                         ids=["a private column", "a column named by a private value"])
def test_a_column_outside_the_output_schema_is_refused(w: SimpleNamespace, h: SimpleNamespace,
                                                       code: str) -> None:
    # the contract lets the sensitive column through: the output_schema is what refuses it
    reason = failed(w, attack(w, h, code, POINTS_SCHEMA, name="extra column",
                              allowed=["power_kwh"]), "output_violation: column *")
    assert reason.endswith(" is not in the product's output_schema"), reason
    private = {*(str(k) for k in w.private["power_kwh"]),
               *(f"t{t}" for t in w.private["tax_paid_yuan"])}
    assert not [v for v in private if v in reason], reason
    healthy(w, h)


def test_a_sensitive_column_is_delivered_only_if_the_contract_allows_it(
        w: SimpleNamespace, h: SimpleNamespace) -> None:
    product = listed(w, hp.SENSITIVE, TAX_SCHEMA, "taxes per firm")
    refused = act(w, h.node, order(w, product))
    failed(w, refused, f"output_violation: column 'tax_paid_yuan' is sensitive in dataset "
                       f"{w.p.dataset_id} and the contract does not allow it")
    allowed = act(w, h.node, order(w, product, allowed=["tax_paid_yuan"]))
    table = w.private.sort_values("uscc")
    # allowed, yet sensitive (grade L3): generalised on the datasite (docs/PRIVACY.md)
    masked = [{"uscc": u, "tax_paid_yuan": generalise(int(t))}
              for u, t in zip(table["uscc"], table["tax_paid_yuan"], strict=True)]
    rows = delivered(w, allowed)
    succeeded = w.api.event(allowed.computation_id, "computation.succeeded")["payload"]
    assert succeeded["result_sha256"] == hashlib.sha256(canonical_bytes(masked)).hexdigest()
    assert succeeded["masking"] == {"tax_paid_yuan": "L3:none:partial"}
    assert [r["uscc"] for r in rows] == [m["uscc"] for m in masked]
    healthy(w, h)


def invalid_fields(answer: dict[str, Any]) -> list[str]:
    """The fields a 422 names (the domain's one ``field``, or the validation's list)."""
    if "field" in answer:
        return [answer["field"]]
    return [f["field"] for f in answer.get("fields", [])]


def test_a_query_on_a_non_key_column_is_refused_by_the_ledger(w: SimpleNamespace,
                                                              h: SimpleNamespace) -> None:
    """{"field": "points", "values": [...]} would bring back every firm without knowing a
    single credit code: 422 when ordering and when asking again, and nothing written."""
    sweep = {"field": "points", "values": [str(v) for v in range(-100, 200)]}
    head = len(w.api.events())
    for query in (sweep, {"field": "industry", "values": ["retail"]}):
        answer = w.api.call("POST", "/orders", w.p.demander.token, 422, json={
            "product_id": h.normal, "purpose": "every firm", "query": query})
        assert invalid_fields(answer) == ["query.field"], answer
    assert len(w.api.events()) == head
    contract = order(w, h.normal, processing_count=2)
    head = len(w.api.events())
    answer = w.api.call("POST", f"/orders/{contract}/queries", w.p.demander.token, 422,
                        json={"query": sweep})
    assert invalid_fields(answer) == ["query.field"], answer
    assert len(w.api.events()) == head
    healthy(w, h)


def test_a_node_given_a_non_key_query_records_query_refused(w: SimpleNamespace,
                                                            h: SimpleNamespace) -> None:
    """Were a job with a query on another column to reach the node (the ledger refuses
    such queries), the node refuses it before anything runs."""
    first = min(w.private["uscc"])
    contract = order(w, h.normal, query={"field": "uscc", "values": [first]})
    registered = w.api.event(h.normal, "product.registered")
    policy = w.api.event(contract, "contract.proposed")["payload"]["usage_policy"]
    job = Job(contract, 1, hp.NORMAL, hashlib.sha256(hp.NORMAL.encode()).hexdigest(),
              registered["seq"], [w.p.dataset_id],
              {"field": "points", "values": [str(v) for v in range(-100, 200)]},
              OutputContract.of(registered["payload"], policy))
    outcome = h.node.executor.run(job)
    failed(w, outcome, "query_refused: the query names column 'points', not the product's "
                       "key column 'uscc'")
    assert not datasite.request_exists(w.runner, "points", h.node.request_key(contract, 1))
    healthy(w, h)


def test_the_code_is_handed_only_the_fields_its_product_names(w: SimpleNamespace,
                                                               h: SimpleNamespace) -> None:
    """The product's inputs (and its authorization) name uscc, tax_paid_yuan, power_kwh:
    the table has an "industry" column too, which the code must not see ("sees only its
    inputs")."""
    [row] = delivered(w, attack(w, h, hp.COLUMNS, name="column lister"))
    assert set(row["seen"]) <= set(USED), row["seen"]
    healthy(w, h)


# -- the logs, after the suite -------------------------------------------------------------


def test_no_secret_nor_private_value_in_the_servers_output(w: SimpleNamespace,
                                                           h: SimpleNamespace) -> None:
    """Runs last: ``serve``'s output and every log file of the deployment, over the whole
    module (a provider's private.log may hold private values, never a secret)."""
    text = (w.tmp / "server.log").read_text(errors="replace")
    no_secret(w, h, text)
    pairs = [f"{u}={t}" for u, t in zip(w.private["uscc"], w.private["tax_paid_yuan"],
                                        strict=True)]
    assert not [p for p in pairs if p in text]
    w.private.to_csv(w.tmp / "private-values.csv", index=False)
    private = logscan.private_values(w.tmp / "private-values.csv", ["uscc"])
    leaks = logscan.scan([w.tmp], secrets={**known_secrets(w, h),
                                           **logscan.node_secrets(h.node_dir)},
                         private=private)
    assert not leaks, leaks[:20]
