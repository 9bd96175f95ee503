"""The chain's processes for real: the integrator killed with -9 mid-work, witnesses over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from anchoring.service import open_tree
from chain.bls import WitnessPublicKey, cosignatures, trust_witness
from chain.proof import InMemoryTree
from domain.base import Actor
from domain.participant import ParticipantRegistered, register_participant
from events.store import open_store
from events.url import DatabaseURL
from runtime.build import PLATFORM_ADMIN_ID, PLATFORM_ID, build
from runtime.settings import Settings

REPO = Path(__file__).parents[2]
ORIGIN = "dataledger.local/log"


def fill(database_url: str, n: int) -> None:
    """``n`` stored events, written in big transactions (fast)."""
    store = open_store(DatabaseURL.parse(database_url))
    try:
        for start in range(0, n, 10_000):
            store.append([ParticipantRegistered(
                originator_id=f"p{i}", originator_version=1, at="2026-11-26T00:00:00Z",
                actor={"participant": "x", "member": "y", "role": "platform"},
                name=f"org {i}", role="provider", credit_code="9111")
                for i in range(start, min(n, start + 10_000))])
    finally:
        store.close()


def chain_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "DATALEDGER_DATA_DIR": str(data_dir),
            "DATALEDGER_DATABASE_URL": database_url, **extra}


def test_a_killed_integrator_loses_nothing_and_resumes(database_url: str, tmp_path: Path) -> None:
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'var' / 'ledger.db'}"
    data, n = tmp_path / "var", 60_000
    fill(database_url, n)
    env = chain_env(database_url, data, DATALEDGER_CHECKPOINT_EVERY_LEAVES="1000000",
                    DATALEDGER_CHECKPOINT_EVERY_SECONDS="3600")
    tree = open_tree(DatabaseURL.parse(database_url), data)
    proc = subprocess.Popen([sys.executable, "-m", "cli", "chain", "run"], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not 0 < tree.size() < n:
            assert time.monotonic() < deadline and proc.poll() is None, "no progress seen"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    size = tree.size()
    assert 0 < size < n, "killed mid-work"
    # what the killed process committed is whole: every leaf of the size, nothing beyond
    assert len(tree.nodes_between([(0, 0, b""), (0, size - 1, b"")])) == size
    assert tree.nodes_between([(0, size, b"")]) == {}

    again = subprocess.run([sys.executable, "-m", "cli", "chain", "run", "--once"], env=env,
                           cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert tree.size() == n
    store = open_store(DatabaseURL.parse(database_url))
    try:
        expected = InMemoryTree(e.leaf_hash() for e in store.read(0, n))
    finally:
        store.close()
    assert tree.root() == expected.root()
    tree.close()
    trust = tmp_path / "trust.json"  # the keys the killed and the resumed run signed with
    exported = subprocess.run([sys.executable, "-m", "cli", "chain", "trust", "--out",
                               str(trust)], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=120, check=False)
    assert exported.returncode == 0, exported.stderr
    verified = subprocess.run([sys.executable, "-m", "cli", "chain", "verify", "--trust",
                               str(trust)], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=300, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_checkpoints_are_anchored_by_witnesses_in_other_processes(
        database_url: str, tmp_path: Path, witness_urls: list[str]) -> None:
    settings = Settings(data_dir=tmp_path / "var", database_url=database_url,
                        admin_token="dl_http_witness_token_0123456789",
                        witness_urls=",".join(witness_urls), checkpoint_every_seconds=0.2)
    c = build(settings)
    try:
        admin = Actor(PLATFORM_ID, PLATFORM_ADMIN_ID, "platform", ("admin",))
        for i in range(3):
            c.ledger.execute(register_participant, admin, name=f"org {i}", role="provider",
                             credit_code="9111", admin_name="a", admin_token_hash=f"{i:064d}")
        assert c.chain is not None
        anchored = c.chain.wait_anchored(c.store.max_seq(), timeout=30)
        assert anchored is not None and anchored.signers == sorted(
            ["dataledger.local/consortium", "dataledger.local/regulator"])
        described = [httpx.get(u + "/").json() for u in witness_urls]
        trusted = [trust_witness(WitnessPublicKey.parse(d["vkey"])) for d in described]
        assert len(cosignatures(anchored.cosigned, trusted)) == 2
        # on loopback ports they are this host's, as much the operator's as in-process ones
        said = c.chain.independence()
        assert not said["independent"] and "on this host" in said["why"], said
    finally:
        c.close()
