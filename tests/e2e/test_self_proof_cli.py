"""The self-proof as a participant and a verifier run it: ``dataledger forensics self-proof``
against a real ``dataledger serve``, then ``dataledger audit verify-proof`` in a process
that cannot import the server's rooms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from client.market import Market
from client.platform import Platform
from tests.conftest import free_port
from tests.e2e.conftest import ADMIN_TOKEN, FIELDS

ROOT = Path(__file__).parents[2]
EXE = [sys.executable, "-m", "cli"]
#: what a verifier's process must never load: the server's rooms and its database drivers
SERVER_ONLY = ("runtime", "events", "anchoring", "projections", "domain", "api", "delivery",
               "sqlalchemy", "psycopg", "eventsourcing", "fastapi")
BLOCKED_RUN = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_ONLY!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from audit.cli import register
import argparse
p = argparse.ArgumentParser(prog="dataledger")
register(p.add_subparsers(dest="command", required=True))
args = p.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(EXE + args, check=False, capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, **env})


def verify_blocked(*args: str) -> subprocess.CompletedProcess[str]:
    """``dataledger audit ...`` with every server room unimportable."""
    return subprocess.run([sys.executable, "-c", BLOCKED_RUN, "audit", *args], check=False,
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(tmp_path / "var"),
           "DATALEDGER_ADMIN_TOKEN": ADMIN_TOKEN, "DATALEDGER_CHECKPOINT_EVERY_SECONDS": "0.3"}
    proc = subprocess.Popen(EXE + ["serve", "--port", str(port)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        with Platform.at(url) as api:
            assert api.wait_until_up(30, lambda: proc.poll() is None), (
                proc.stdout.read() if proc.stdout else "")
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def wait_anchored(url: str) -> int:
    head = int(httpx.get(f"{url}/health").json()["head"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/ledger/checkpoints/latest?anchored=true")
        if r.status_code == 200 and r.json()["size"] >= head:
            return int(r.json()["size"])
        time.sleep(0.2)
    raise AssertionError("no anchored checkpoint covering the head in 30 s")


def test_fetch_with_the_cli_then_verify_offline(server: str, tmp_path: Path) -> None:
    with Platform.at(server) as api:
        market = Market(api, ADMIN_TOKEN, "Municipal data bureau")
        provider = market.onboard("provider", "Tax bureau")
        bank = market.onboard("demander", "City bank")
        dataset = api.register_dataset(provider, name="tax", description="filings",
                                       source_system="tax-core", fields=FIELDS)
        api.publish_dataset(provider, dataset)
        (tmp_path / "trust.json").write_text(json.dumps(api.witnesses(provider)))
    wait_anchored(server)
    proof, trust = tmp_path / "proof.json", str(tmp_path / "trust.json")
    common = ["--actor", provider.participant_id, "--resource", f"dataset:{dataset}",
              "--url", server]

    out = run(["forensics", "self-proof", *common, "--out", str(proof)],
              DATALEDGER_TOKEN=provider.token)
    assert out.returncode == 0, out.stderr
    assert f"wrote {proof}: 2 event(s) of participant {provider.participant_id}" in out.stdout

    checked = verify_blocked("verify-proof", str(proof), "--trust", trust)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith(
        f"participant {provider.participant_id} caused exactly these 2 events on dataset "
        f"{dataset} between the start of the log and 2"), checked.stdout  # the cut, not now
    assert "; the log up to size " in checked.stdout, checked.stdout

    # a trust file of quorum 0: refused (no witness vouches), unless accepted, then loudly
    (tmp_path / "trust0.json").write_text(json.dumps(
        {**json.loads((tmp_path / "trust.json").read_text()), "quorum": 0}))
    trust0 = str(tmp_path / "trust0.json")
    checked = verify_blocked("verify-proof", str(proof), "--trust", trust0)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "quorum 0" in checked.stderr and "--accept-unwitnessed" in checked.stderr
    checked = verify_blocked("verify-proof", str(proof), "--trust", trust0,
                             "--accept-unwitnessed")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("UNWITNESSED (quorum 0: no witness vouches for the log"
                                     ), checked.stdout

    doc = json.loads(proof.read_text())
    del doc["events"][0]
    (tmp_path / "dropped.json").write_text(json.dumps(doc))
    checked = verify_blocked("verify-proof", str(tmp_path / "dropped.json"), "--trust", trust)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "step 5 (chain)" in checked.stdout, checked.stdout

    # a bank asking about the provider: refused, nothing written
    out = run(["forensics", "self-proof", *common, "--out", str(tmp_path / "bank.json"),
               "--token", bank.token])
    assert out.returncode == 1 and "403" in out.stderr, out.stderr
    assert not (tmp_path / "bank.json").exists()
    # usage errors: exit 2, naming what
    out = run(["forensics", "self-proof", *common, "--out", str(proof), "--from", "soon",
               "--token", provider.token])
    assert out.returncode == 2 and "query.from" in out.stderr, out.stderr
    checked = verify_blocked("verify-proof", str(proof), "--trust", str(tmp_path / "none"))
    assert checked.returncode == 2 and "--trust" in checked.stderr, checked.stderr
    checked = verify_blocked("verify-proof", str(tmp_path / "none.json"), "--trust", trust)
    assert checked.returncode == 2 and "none.json" in checked.stderr, checked.stderr
