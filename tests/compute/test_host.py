"""The embedded host (``compute_nodes/host.py``): one per node directory, what its node
processes inherit, load requests it cannot place, and its processes: forked by its fork
server, one per datasite, gone with a killed host. The whole flow (serve → host → a process
per provider → deliveries) is ``test_demo.py``; a host killed mid-computation delivers once
(``test_exactly_once.py``).

Runs inside the compute venv only: ``compute_nodes/setup-env test``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from chain.note import generate_ed25519
from compute_nodes import hygiene
from compute_nodes.enrollment import Enrollment, running_host, submit_load, write_json
from compute_nodes.host import node_environment
from tests.compute import logscan

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


def _trust(path: Path) -> Path:
    """A trust document of a log of its own, no witness (``quorum`` 0), in ``path``."""
    _, vkey = generate_ed25519("test-log")
    write_json(path, {"origin": "test-log", "log_vkey": vkey, "quorum": 0, "witnesses": []})
    return path


def _host(node_dir: Path, **env: str) -> subprocess.Popen[str]:
    full = {**os.environ, "DATALEDGER_NODE_DATA_DIR": str(node_dir),
            "DATALEDGER_NODE_PLATFORM_URL": "http://127.0.0.1:9", "PYTHONPATH": str(ROOT),
            "DATALEDGER_NODE_POLL_SECONDS": "0.2",
            "DATALEDGER_NODE_TRUST": str(node_dir / "trust.json"), **env}
    return subprocess.Popen([sys.executable, "-m", "compute_nodes.host", "run"], env=full,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    node_dir = tmp_path / "node"
    (node_dir / "providers").mkdir(parents=True)
    _trust(node_dir / "trust.json")
    process = _host(node_dir)
    deadline = time.monotonic() + 20
    while running_host(node_dir) is None:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "the host did not start"
        time.sleep(0.1)
    yield node_dir, process
    process.terminate()
    process.wait(20)


def test_a_host_needs_a_trust_file_and_says_whose_keys_it_trusts(tmp_path: Path) -> None:
    node_dir = tmp_path / "node"
    (node_dir / "providers").mkdir(parents=True)
    refused = _host(node_dir, DATALEDGER_NODE_TRUST="")
    out, _ = refused.communicate(timeout=30)
    assert refused.returncode == 2 and "--trust FILE (or DATALEDGER_NODE_TRUST) is required" in out
    trust = _trust(tmp_path / "handed-over.json")
    for env, said in (({"DATALEDGER_NODE_TRUST": str(trust)}, f"trusting {trust}"),
                      ({"DATALEDGER_NODE_TRUST": str(trust),
                        "DATALEDGER_NODE_TRUST_FROM_SERVE": "1"}, "the same operator's word")):
        process = _host(node_dir, **env)
        deadline = time.monotonic() + 20
        while running_host(node_dir) is None:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the host did not start"
            time.sleep(0.1)
        process.terminate()
        out, _ = process.communicate(timeout=20)
        assert said in out and "quorum 0" in out, out


def test_one_host_per_node_directory(host: tuple[Path, subprocess.Popen[str]]) -> None:
    node_dir, first = host
    second = _host(node_dir)
    out, _ = second.communicate(timeout=30)
    assert second.returncode != 0
    assert "another compute node host runs" in out and str(first.pid) in out
    assert running_host(node_dir) == first.pid  # the second did not take over host.json


def test_a_load_for_a_dataset_no_enrolled_provider_owns_is_answered(
        host: tuple[Path, subprocess.Popen[str]], tmp_path: Path) -> None:
    node_dir, _ = host
    private, mock = tmp_path / "p.csv", tmp_path / "m.csv"
    private.write_text("uscc,x\n1,2\n")
    mock.write_text("uscc,x\n3,4\n")
    answer = submit_load(node_dir, "no-such-dataset", private, mock, timeout=20)
    assert answer == {"ok": False, "error": "dataset no-such-dataset belongs to no provider "
                                            "enrolled here (enrolled: [])"}
    assert not list((node_dir / "jobs").rglob("*.json"))  # nothing left in the spool


def test_a_host_stops_when_asked_and_releases_the_directory(tmp_path: Path) -> None:
    node_dir = tmp_path / "node"
    (node_dir / "providers").mkdir(parents=True)
    _trust(node_dir / "trust.json")
    process = _host(node_dir)
    deadline = time.monotonic() + 20
    while running_host(node_dir) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    process.terminate()
    assert process.wait(20) == 0
    assert running_host(node_dir) is None
    again = _host(node_dir)  # the lock went with the process
    try:
        deadline = time.monotonic() + 20
        while running_host(node_dir) != again.pid:
            assert again.poll() is None, again.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        again.terminate()
        again.wait(20)


def test_node_processes_inherit_no_server_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATALEDGER_ADMIN_TOKEN", "dl_secret_admin_token_0123456789")
    monkeypatch.setenv("DATALEDGER_DATABASE_URL", "postgresql://u:pw@db/ledger")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("DATALEDGER_NODE_POLL_SECONDS", "1")
    env = node_environment({"DATALEDGER_NODE_DATA_DIR": "/n"})
    assert "DATALEDGER_ADMIN_TOKEN" not in env and "DATALEDGER_DATABASE_URL" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["DATALEDGER_NODE_POLL_SECONDS"] == "1" and env["DATALEDGER_NODE_DATA_DIR"] == "/n"
    assert env.get("PATH") == os.environ.get("PATH")
    json.dumps(env)  # plain strings only


# -- a host with one provider (a real PySyft datasite; no platform) ----------------------------


def descendants(pid: int) -> set[int]:
    """Every live process ``pid`` started, and those they started (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _enrolled(tmp_path: Path) -> tuple[Path, Enrollment]:
    node_dir = tmp_path / "node"
    entry = Enrollment(participant_id="p-under-test", name="Tax bureau 税务局",
                       token="dl_" + secrets.token_urlsafe(32), datasite="site-under-test",
                       datasite_password=secrets.token_urlsafe(24))
    write_json(node_dir / "providers" / f"{entry.participant_id}.json", asdict(entry))
    _trust(node_dir / "trust.json")
    return node_dir, entry


def _ready(node_dir: Path, process: subprocess.Popen[str], after: float = 0.0,
           seconds: float = 60) -> dict[str, float]:
    """The node file of the provider once its node process is ready (after ``after``)."""
    deadline = time.monotonic() + seconds
    while True:
        node = json.loads((node_dir / "nodes" / "p-under-test.json").read_text()) \
            if (node_dir / "nodes" / "p-under-test.json").exists() else {}
        if node and node["ready_at"] > after and hygiene.alive(int(node["pid"])):
            return node
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "the provider's datasite was never ready"
        time.sleep(0.1)


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_killed_host_leaves_no_process_and_one_node_runs_per_datasite(
        tmp_path: Path) -> None:
    """The node process is forked by the fork server, holds its datasite's lock (a second
    one gives up), logs no secret; kill -9 of the host leaves none of its processes."""
    node_dir, entry = _enrolled(tmp_path)
    first = _host(node_dir)
    try:
        node = _ready(node_dir, first)
        pid = int(node["pid"])
        tree = descendants(first.pid)
        assert pid in tree and _ppid(_ppid(pid)) == first.pid  # host -> fork server -> node
        site_dir = next(node_dir.glob("datasites/*/node.lock")).parent
        assert {p.name for p in site_dir.iterdir()} >= {"node.lock", "private.log", "db"}
        env = {**os.environ, "DATALEDGER_NODE_DATA_DIR": str(node_dir), "PYTHONPATH": str(ROOT),
               "DATALEDGER_NODE_PLATFORM_URL": "http://127.0.0.1:9",
               "DATALEDGER_NODE_TRUST": str(node_dir / "trust.json"),
               "DATALEDGER_NODE_SITE_LOCK_SECONDS": "1"}
        second = subprocess.run([sys.executable, "-m", "compute_nodes.host", "provider", "--id",
                                 entry.participant_id], env=env, cwd=ROOT, timeout=60,
                                capture_output=True, text=True, check=False)
        assert second.returncode == 75, second.stderr
        assert f"in use by another node process (pid {pid})" in second.stderr
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    deadline = time.monotonic() + 5
    while [p for p in tree if hygiene.alive(p)]:
        assert time.monotonic() < deadline, \
            f"processes of the killed host survive: {[p for p in tree if hygiene.alive(p)]}"
        time.sleep(0.05)
    output = first.communicate()[0]
    assert "hosting Tax bureau" in output
    # the directory is free at once for the next host, whose node takes the datasite
    again = _host(node_dir)
    try:
        restarted = _ready(node_dir, again, after=node["ready_at"])
        assert restarted["pid"] != pid
    finally:
        again.terminate()
        out, _ = again.communicate(timeout=30)
    assert again.returncode == 0, out
    assert not [p for p in descendants(again.pid) if hygiene.alive(p)]
    leaks = logscan.scan([node_dir], secrets=dict(zip(("token", "password", "runner"),
                                                      entry.secrets, strict=True)),
                         texts={"the first host's output": output, "the second's": out})
    assert leaks == []
    assert stat.S_IMODE(node_dir.stat().st_mode) == 0o700
    for sub in ("providers", "positions", "nodes", "jobs", "datasites"):
        assert stat.S_IMODE((node_dir / sub).stat().st_mode) == 0o700, sub
    for path in (*node_dir.glob("providers/*.json"), *node_dir.glob("datasites/*/private.log"),
                 node_dir / "host.lock"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
