"""The embedded host (``compute_nodes/host.py``): one per node directory, what its node
processes inherit, and load requests it cannot place. The whole flow (serve → host →
a process per provider → deliveries) is ``test_demo.py``.

Runs inside the compute venv only: ``compute_nodes/setup-env test``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from compute_nodes.host import node_environment, running_host, submit_load

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


def _host(node_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "DATALEDGER_NODE_DATA_DIR": str(node_dir),
           "DATALEDGER_NODE_PLATFORM_URL": "http://127.0.0.1:9", "PYTHONPATH": str(ROOT),
           "DATALEDGER_NODE_POLL_SECONDS": "0.2"}
    return subprocess.Popen([sys.executable, "-m", "compute_nodes.host", "run"], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    node_dir = tmp_path / "node"
    (node_dir / "providers").mkdir(parents=True)
    (node_dir / "trust.json").write_text("{}")
    process = _host(node_dir)
    deadline = time.monotonic() + 20
    while running_host(node_dir) is None:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "the host did not start"
        time.sleep(0.1)
    yield node_dir, process
    process.terminate()
    process.wait(20)


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
