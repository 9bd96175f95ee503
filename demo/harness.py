"""What ``dataledger demo finance`` runs on: its own ``serve``, the compute node's commands,
and the checks it prints as it makes them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from client.platform import Platform

ROOT = Path(__file__).resolve().parent.parent


class DemoError(Exception):
    """A step of the demo did not do what it should."""


def say(party: str, line: str) -> None:
    """One line of what ``party`` does or sees."""
    print(f"  [{party}] {line}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(data_dir: Path, port: int, admin_token: str, log_file: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(data_dir), "DATALEDGER_PORT": str(port),
           "DATALEDGER_HOST": "127.0.0.1", "DATALEDGER_ADMIN_TOKEN": admin_token,
           "DATALEDGER_DATABASE_URL": "", "DATALEDGER_WITNESS_URLS": "",
           "DATALEDGER_NATS_URL": "", "DATALEDGER_CHAIN": "true",
           "DATALEDGER_COMPUTE_NODE": "true", "DATALEDGER_CHECKPOINT_EVERY_SECONDS": "1",
           "DATALEDGER_NODE_POLL_SECONDS": "0.5"}
    out = log_file.open("ab")
    return subprocess.Popen([sys.executable, "-m", "cli", "serve"], env=env, cwd=str(ROOT),
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@contextmanager
def served(data_dir: Path, admin_token: str) -> Iterator[Platform]:
    """A ``dataledger serve`` of the demo's own on the embedded default (SQLite in
    ``data_dir``, in-process witnesses, the compute node host), up; stopped after."""
    log_file = data_dir / "serve.log"
    port = free_port()
    server = _serve(data_dir, port, admin_token, log_file)
    api = Platform.at(f"http://127.0.0.1:{port}", timeout=60)
    try:
        if not api.wait_until_up(60, alive=lambda: server.poll() is None):
            if server.poll() is not None:
                raise DemoError(f"dataledger serve exited with {server.returncode}; "
                                f"see {log_file}")
            raise DemoError(f"dataledger serve did not answer within 60 s; see {log_file}")
        yield api
    finally:
        api.close()
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def node_cli(data_dir: Path, url: str, *args: str, token: str | None = None) -> dict[str, Any]:
    """``dataledger compute-node ARGS`` against the demo's server; its JSON answer."""
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(data_dir),
           "DATALEDGER_NODE_DATA_DIR": str(data_dir / "node"),
           "DATALEDGER_NODE_PLATFORM_URL": url}
    env.pop("DATALEDGER_NODE_TOKEN", None)
    if token is not None:  # never on the command line, where `ps` shows it
        env["DATALEDGER_NODE_TOKEN"] = token
    done = subprocess.run([sys.executable, "-m", "cli", "compute-node", *args], env=env,
                          cwd=str(ROOT), capture_output=True, text=True, timeout=900,
                          check=False)
    if done.returncode != 0:
        raise DemoError(f"dataledger compute-node {args[0]}: exit {done.returncode}: "
                        f"{done.stderr.strip()[-1500:]}")
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


class Checks:
    """What the demo verified: each check printed as it is made, a summary at the end."""

    def __init__(self) -> None:
        self.made: list[tuple[str, bool]] = []

    def __call__(self, what: str, ok: bool) -> bool:
        self.made.append((what, ok))
        print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
        return ok

    def summary(self) -> int:
        """Print how many checks held and which failed; the exit code (1 if any failed)."""
        failed = [what for what, ok in self.made if not ok]
        print(f"\n{len(self.made) - len(failed)} of {len(self.made)} checks held.", flush=True)
        for what in failed:
            print(f"  FAILED: {what}", flush=True)
        return 1 if failed else 0
