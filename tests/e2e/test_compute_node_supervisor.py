"""``serve`` and the embedded compute node: what it starts, trusts and restarts.

The node itself (PySyft) is tested in the compute environment (tests/compute, with
``dataledger demo finance`` end to end); here a stand-in interpreter records how the
supervisor starts it, so the wiring is checked without PySyft.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from runtime.compute_host import NodeSupervisor
from tests.conftest import free_port
from tests.e2e.test_cli import EXE, stop, wait_healthy

ROOT = Path(__file__).parents[2]


def _serve(data: Path, port: int, **env: str) -> subprocess.Popen[str]:
    full = {**os.environ, "DATALEDGER_DATA_DIR": str(data),
            "DATALEDGER_ADMIN_TOKEN": "dl_supervisor_test_admin_0123456789", **env}
    return subprocess.Popen(EXE + ["serve", "--port", str(port)], env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)


def test_serve_refuses_to_start_without_the_compute_environment_when_told_to(
        tmp_path: Path) -> None:
    proc = _serve(tmp_path / "var", free_port(), DATALEDGER_COMPUTE_NODE="true",
                  DATALEDGER_COMPUTE_VENV=str(tmp_path / "no-such-venv"))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "DATALEDGER_COMPUTE_NODE=true" in out and "no-such-venv" in out


def test_serve_runs_without_a_node_when_auto_and_the_environment_is_missing(
        tmp_path: Path) -> None:
    port = free_port()
    proc = _serve(tmp_path / "var", port, DATALEDGER_COMPUTE_NODE="auto",
                  DATALEDGER_COMPUTE_VENV=str(tmp_path / "no-such-venv"))
    try:
        assert wait_healthy(port, proc)["status"] == "ok"
    finally:
        out = stop(proc)
    assert "No compute node" in out and "compute_nodes/setup-env" in out


def _fake_python(tmp_path: Path) -> Path:
    """An interpreter stand-in: records its argv, environment and trust file, then exits."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    record = tmp_path / "starts.jsonl"
    script = bin_dir / "python"
    script.write_text(f"""#!{sys.executable}
import json, os, sys
env = dict(os.environ)
trust = open(env["DATALEDGER_NODE_TRUST"]).read()
with open({str(record)!r}, "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "env": env, "trust": json.loads(trust),
                        "cwd": os.getcwd()}}) + "\\n")
sys.exit(3)
""")
    script.chmod(0o755)
    return script


def test_serve_starts_the_node_with_the_keys_it_publishes_and_restarts_it(
        tmp_path: Path) -> None:
    python = _fake_python(tmp_path)
    port = free_port()
    data = tmp_path / "var"
    proc = _serve(data, port, DATALEDGER_COMPUTE_NODE="true",
                  DATALEDGER_COMPUTE_VENV=str(python.parent.parent))
    record = tmp_path / "starts.jsonl"
    try:
        wait_healthy(port, proc)
        published = httpx.get(f"http://127.0.0.1:{port}/ledger/witnesses", timeout=5).json()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if record.exists() and len(record.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
    finally:
        out = stop(proc)
    assert "It trusts this server's own keys" in out  # said, not hidden
    starts = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(starts) >= 2, "a node that exits is started again"
    first = starts[0]
    assert first["argv"] == ["-m", "compute_nodes.host", "run"]
    assert first["cwd"] == str(ROOT)
    assert str(ROOT) in first["env"]["PYTHONPATH"].split(os.pathsep)
    # the node (which runs product code) never sees the server's secrets
    assert "DATALEDGER_ADMIN_TOKEN" not in first["env"]
    assert not [k for k in first["env"]
                if k.startswith("DATALEDGER_") and not k.startswith("DATALEDGER_NODE_")]
    assert first["env"]["DATALEDGER_NODE_PLATFORM_URL"] == f"http://127.0.0.1:{port}"
    assert first["env"]["DATALEDGER_NODE_DATA_DIR"] == str((data / "node").absolute())
    # serve hands over its own keys, and the node is told so (it says so in its log)
    assert first["env"]["DATALEDGER_NODE_TRUST_FROM_SERVE"] == "1"
    trust = first["trust"]
    assert trust["origin"] == published["origin"]
    assert trust["log_vkey"] == published["log_vkey"]
    assert trust["quorum"] == published["quorum"]
    assert [w["vkey"] for w in trust["witnesses"]] == [w["vkey"] for w in published["witnesses"]]
    mode = stat.S_IMODE((data / "node" / "trust.json").stat().st_mode)
    assert mode == 0o600


def test_supervisor_stops_a_running_node_with_the_server(tmp_path: Path) -> None:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(600)\n")
    python.chmod(0o755)
    node = NodeSupervisor(tmp_path / "node", "http://127.0.0.1:1", {"witnesses": []},
                          python=python)
    node.start()
    deadline = time.monotonic() + 10
    while node.pid is None and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = node.pid
    assert pid is not None
    node.stop()
    assert node.pid is None
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, "the node outlived the server"
    assert node.starts == 1


def test_sigterm_to_serve_stops_the_node_too(tmp_path: Path) -> None:
    """uvicorn raises SIGTERM again after its graceful shutdown: serve must still run its
    cleanup (stop the node) and exit 0."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    pid_file = tmp_path / "node.pid"
    python.write_text(f"#!{sys.executable}\nimport os, time\n"
                      f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)\n")
    python.chmod(0o755)
    port = free_port()
    proc = _serve(tmp_path / "var", port, DATALEDGER_COMPUTE_NODE="true",
                  DATALEDGER_COMPUTE_VENV=str(python.parent.parent))
    wait_healthy(port, proc)
    deadline = time.monotonic() + 20
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    node_pid = int(pid_file.read_text())
    proc.terminate()  # SIGTERM
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(node_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the node outlived serve after SIGTERM")
