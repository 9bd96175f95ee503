"""The ``dataledger`` command as an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

EXE = [sys.executable, "-m", "cli"]


def run(args: list[str], env: dict[str, str],
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The command with ``env`` over this environment (less any admin token of its own)."""
    full = {k: v for k, v in os.environ.items() if k != "DATALEDGER_ADMIN_TOKEN"}
    return subprocess.run(EXE + args, check=False, env={**full, **env}, capture_output=True,
                          text=True, timeout=timeout, cwd=Path(__file__).parents[2])


def test_events_catalogue_prints_a_schema_per_stable_type_name(tmp_path: Path) -> None:
    out = run(["events", "catalogue"], {"DATALEDGER_DATA_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    schemas = json.loads(out.stdout)
    assert "contract.approved" in schemas and "participant.registered" in schemas
    registered = schemas["dataset.registered"]
    assert registered["x-class-version"] == 2
    assert {"owner_id", "classification", "fields", "at", "actor"} <= set(registered["properties"])
    assert "originator_id" not in registered["properties"]
    assert all("." in name and name == name.lower() for name in schemas)


def start_serve(data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(data_dir)}
    env.pop("DATALEDGER_ADMIN_TOKEN", None)
    return subprocess.Popen(EXE + ["serve", "--port", str(port)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=Path(__file__).parents[2])


def wait_healthy(port: int, proc: subprocess.Popen[str]) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            return dict(httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json())
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("serve did not become healthy in 30 s")


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=20)
    return out


def test_serve_prints_the_admin_token_once_and_keeps_its_files_in_the_data_dir(
        tmp_path: Path) -> None:
    data = tmp_path / "var"
    port = free_port()
    proc = start_serve(data, port)
    try:
        assert wait_healthy(port, proc)["status"] == "ok"
    finally:
        first = stop(proc)
    token = [line.strip() for line in first.splitlines() if line.strip().startswith("dl_")]
    assert len(token) == 1, first
    assert "Witnesses: NOT independent" in first  # the in-process default says so at start
    assert (data / "ledger.db").exists() and (data / "views.db").exists()

    proc = start_serve(data, port)
    try:
        wait_healthy(port, proc)
        me = httpx.get(f"http://127.0.0.1:{port}/participants/me",
                       headers={"Authorization": f"Bearer {token[0]}"}, timeout=5)
        assert me.status_code == 200 and me.json()["participant"]["role"] == "platform"
    finally:
        second = stop(proc)
    assert "dl_" not in second

    rebuilt = run(["projections", "rebuild"], {"DATALEDGER_DATA_DIR": str(data)})
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "participants" in rebuilt.stdout and "CHANGED" not in rebuilt.stdout


def test_a_bad_setting_stops_serve_with_one_line_naming_it_and_writes_nothing(
        tmp_path: Path) -> None:
    data = tmp_path / "var"
    for env, named in (({"DATALEDGER_PORT": "abc"}, "DATALEDGER_PORT: "),
                       ({"DATALEDGER_PORT": "70000"}, "DATALEDGER_PORT: "),
                       ({"DATALEDGER_ADMIN_TOKEN": "short"}, "DATALEDGER_ADMIN_TOKEN: "),
                       ({"DATALEDGER_WITNESS_QUORUM": "5"}, "DATALEDGER_WITNESS_QUORUM: "),
                       ({"DATALEDGER_DATABASE_URL": "mysql://x"}, "DATALEDGER_DATABASE_URL: "),
                       ({"DATALEDGER_DATA_DIR": "/proc/no/such/dir"}, "DATALEDGER_DATA_DIR: ")):
        out = run(["serve"], {"DATALEDGER_DATA_DIR": str(data), "DATALEDGER_COMPUTE_NODE": "false",
                              **env})
        assert out.returncode == 1 and named in out.stderr, (env, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) <= 2, out.stderr
    assert not (data / "ledger.db").exists()
    refused = run(["serve", "--port", "70000"], {"DATALEDGER_DATA_DIR": str(data)})
    assert refused.returncode == 2 and "70000 is not a port" in refused.stderr


def test_an_unreachable_witness_is_named_in_one_line(tmp_path: Path) -> None:
    env = {"DATALEDGER_DATA_DIR": str(tmp_path / "var"), "DATALEDGER_COMPUTE_NODE": "false",
           "DATALEDGER_WITNESS_URLS": "http://127.0.0.1:9"}
    for args in (["chain", "trust", "--out", str(tmp_path / "trust.json")], ["serve"]):
        out = run(args, env)
        assert out.returncode == 1, (args, out.stderr)
        assert "witness http://127.0.0.1:9 (DATALEDGER_WITNESS_URLS)" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) <= 2, out.stderr


def test_the_command_that_founds_the_platform_prints_its_admin_token(tmp_path: Path) -> None:
    # a rebuild on a fresh data dir is a first start too: the token must not be made unseen
    env = {"DATALEDGER_DATA_DIR": str(tmp_path / "var")}
    rebuilt = run(["projections", "rebuild"], env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    token = [line.strip() for line in rebuilt.stdout.splitlines() if line.strip().startswith("dl_")]
    assert len(token) == 1, rebuilt.stdout
    again = run(["projections", "rebuild"], env)
    assert again.returncode == 0 and "dl_" not in again.stdout
