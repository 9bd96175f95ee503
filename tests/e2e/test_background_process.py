"""`serve`'s default: the projections and the chain run in a child process."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.platform import bearer
from core.tokens import hash_token, new_token
from runtime.background import BackgroundProcess
from runtime.build import Container
from runtime.settings import Settings
from tests.conftest import free_port
from tests.e2e.conftest import ADMIN_TOKEN, World
from tests.e2e.test_catalog_api import dataset_body
from tests.e2e.test_cli import EXE, stop


@pytest.fixture
def settings_changes() -> dict[str, Any]:
    return {"background_process": True}


def test_reads_see_this_process_writes_though_another_process_projects(
        container: Container, world: World) -> None:
    assert container.background is not None and container.background.process.is_alive()
    provider = world.onboard("provider", "Tax bureau")  # its token works at once
    made = world.call("POST", "/datasets", provider, 201, json=dataset_body())
    seen = world.call("GET", f"/datasets/{made['dataset_id']}", provider)  # read-your-writes
    assert seen["state"] == "registered"
    assert world.client.get("/health").json()["projected"] >= made["seqs"][-1]


def test_a_suspended_participants_token_cache_is_cleared(container: Container,
                                                         world: World) -> None:
    provider = world.onboard("provider", "Tax bureau")
    world.call("GET", "/participants/me", provider)  # cached
    world.call("POST", f"/participants/{provider.participant_id}/suspension", world.platform,
               json={"reason": "audit"})
    generation = container.auth_cache.generation
    deadline = time.monotonic() + 10  # the follower sees the child project the suspension
    while container.auth_cache.generation == generation and time.monotonic() < deadline:
        time.sleep(0.02)
    assert container.auth_cache.generation > generation
    world.call("POST", "/datasets", provider, 409, json=dataset_body())


def test_the_child_integrates_the_chain_and_stops_with_the_server(
        container: Container, world: World) -> None:
    head = world.client.get("/health").json()["head"]
    deadline = time.monotonic() + 20
    latest = None
    while time.monotonic() < deadline:
        r = world.client.get("/ledger/checkpoints/latest")
        if r.status_code == 200 and r.json()["size"] >= head:
            latest = r.json()
            break
        time.sleep(0.1)
    assert latest is not None and latest["size"] >= head
    process = container.background.process  # type: ignore[union-attr]
    container.close()
    assert not process.is_alive()
    container.background = None  # closed already


# -- a real `serve` whose child dies -----------------------------------------------------

def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _background_pid(serve_pid: int) -> int:
    """The child running ``_main`` (not multiprocessing's resource tracker)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for pid in _children(serve_pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"spawn_main" in cmdline:
                return pid
        time.sleep(0.1)
    raise AssertionError("no background process under serve")


def _health(port: int) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def _until(check: Callable[[], httpx.Response | None], what: str,
           timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not {what} within {timeout} s")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the child in /proc")
def test_serve_restarts_a_killed_background_process_and_reports_it_meanwhile(
        tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATALEDGER_")}
    env.update(DATALEDGER_DATA_DIR=str(tmp_path / "var"), DATALEDGER_ADMIN_TOKEN=ADMIN_TOKEN,
               DATALEDGER_BACKGROUND_PROCESS="true", DATALEDGER_READ_WAIT_SECONDS="5")
    proc = subprocess.Popen(EXE + ["serve", "--port", str(port)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=Path(__file__).parents[2])
    try:
        def serving() -> httpx.Response | None:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            return _health(port)
        assert _until(serving, "serving").json()["status"] == "ok"
        first = _background_pid(proc.pid)

        os.kill(first, signal.SIGKILL)
        down = _until(lambda: r if (r := _health(port)).status_code == 503 else None,
                      "degraded", timeout=10)
        body = down.json()
        assert body["status"] == "degraded"
        assert body["background"]["process"] == "dataledger-background"
        assert body["background"]["running"] is False
        assert body["background"]["last_exitcode"] == -signal.SIGKILL

        up = _until(lambda: r if (r := _health(port)).status_code == 200 else None,
                    "ok again after the restart")  # after a 1 s pause and the child's start
        assert up.json()["status"] == "ok" and "background" not in up.json()
        second = _background_pid(proc.pid)
        assert second != first

        # A write after the restart is projected: the new participant's token works at once
        url = f"http://127.0.0.1:{port}"
        token = new_token()  # the provider's own; the platform gets only its hash
        made = httpx.post(f"{url}/participants", headers=bearer(ADMIN_TOKEN), timeout=10,
                          json={"name": "Tax bureau", "role": "provider",
                                "credit_code": "91110000MA01ABCDP", "admin_name": "admin",
                                "admin_token_hash": hash_token(token)})
        assert made.status_code == 201, made.text
        started = time.monotonic()
        me = httpx.get(f"{url}/participants/me", headers=bearer(token),
                       timeout=10)
        assert me.status_code == 200, me.text
        assert me.json()["participant"]["name"] == "Tax bureau"
        assert time.monotonic() - started < 2  # not the 5 s a frozen read model costs
    finally:
        # Ctrl-C: uvicorn re-raises it after its shutdown, and serve then closes its container
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            out = stop(proc)
    assert "exited with code -9" in out, out
    assert "restarting it in 1.0 s" in out, out
    assert not Path(f"/proc/{second}").exists(), out  # told to stop, joined (reaped) by serve


def test_a_child_failing_at_start_is_restarted_with_a_growing_pause(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "var").write_text("a file, not a directory")  # the child cannot open it
    settings = Settings(data_dir=tmp_path / "var", admin_token=ADMIN_TOKEN)
    caplog.set_level(logging.ERROR, logger="runtime.background")
    background = BackgroundProcess(settings, first_pause=0.1, max_pause=0.4)
    try:
        deadline = time.monotonic() + 60
        while background.restarts < 4 and time.monotonic() < deadline:
            assert background.restarts == 0 or not background.running
            time.sleep(0.05)
        assert background.restarts >= 4 and background.last_exitcode == 1
        assert not background.running
        assert background.state()["process"] == "dataledger-background"
    finally:
        background.stop()
    assert not background.process.is_alive()
    pauses = [r.getMessage().rsplit(" in ", 1)[1] for r in caplog.records
              if "restarting it in" in r.getMessage()]
    assert pauses[:4] == ["0.1 s", "0.2 s", "0.4 s", "0.4 s"]
