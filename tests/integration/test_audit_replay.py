"""``dataledger audit replay`` on an honest log: a real server (SQLite file, PostgreSQL
schema) driven over its API through onboarding, a dataset, an approved scenario, an
authorization and a listed product; anchored; exported with audit/bundle.py's writer. The
bundle, the database and the API each replay with exit 0, and the reports say what the log
holds. The replay of a bundle also runs with the server's rooms refused at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from audit.bundle import write_bundle
from audit.replay import Replay
from audit.sources import PlatformSource
from chain.trust import TrustedKeys
from runtime.build import build
from runtime.settings import Settings
from tests.e2e.conftest import ADMIN_TOKEN, World, build_chain, list_product
from tests.integration.test_chain_verify import REPO

#: the rooms a bundle's replay must never import
SERVER_ROOMS = ("runtime", "events", "anchoring", "projections", "domain", "api", "delivery")


@dataclass
class Honest:
    url: str
    data: Path
    trust: Path
    bundle: Path
    head: int
    per_type: Counter[str]
    replayed_over_api: Any


@pytest.fixture
def honest(database_url: str, tmp_path: Path) -> Honest:
    data = tmp_path / "var"
    url = (f"sqlite:///{data / 'ledger.db'}" if database_url.startswith("sqlite")
           else database_url)
    settings = Settings(data_dir=data, database_url=url, admin_token=ADMIN_TOKEN,
                        checkpoint_every_seconds=0.2, checkpoint_every_leaves=8)
    container = build(settings)
    try:
        with TestClient(create_app(container=container), raise_server_exceptions=False) as tc:
            world = World(tc)
            list_product(world, build_chain(world))
            head = int(tc.get("/health").json()["head"])
            assert container.chain is not None
            assert container.chain.wait_anchored(head, timeout=60) is not None
            assert container.runner.wait_for(head, timeout=30)
            trust = tmp_path / "trust.json"  # outside the data dir, as a regulator keeps it
            trust.write_text(json.dumps(container.chain.trust_document()))
            entries = container.store.read(0, head + 1)
            bundle = tmp_path / "bundle"
            write_bundle(bundle, entries, container.chain.tree.checkpoints.all(),
                         container.chain.trust_document())
            over_api = Replay(TrustedKeys.from_file(trust)).run(
                PlatformSource("http://testserver", world.regulator.token, platform=world.api))
    finally:
        container.close()
    return Honest(url, data, trust, bundle, head, Counter(e.type_name for e in entries),
                  over_api)


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "cli", "audit", "replay", *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=REPO, check=False)


def test_an_honest_bundle_replays_with_exit_0_and_says_what_the_log_holds(
        honest: Honest, tmp_path: Path) -> None:
    report, page = tmp_path / "report.json", tmp_path / "report.html"
    out = audit("--bundle", str(honest.bundle), "--trust", str(honest.trust),
                "--json", str(report), "--html", str(page))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"ok: {honest.head} events replayed" in out.stdout
    assert "records" in out.stdout and "business rules" in out.stdout  # the summary table
    data = json.loads(report.read_text())
    assert data["ok"] is True and data["failure"] is None and data["events"] == honest.head
    status = {s["name"]: s["status"] for s in data["steps"]}
    assert [status[n] for n in ("records", "tree", "signatures", "consistency",
                                "business rules")] == ["passed"] * 5
    assert status["index"] in ("passed", "skipped") and status["read models"] == "skipped"
    assert data["events_per_type"] == dict(sorted(honest.per_type.items()))
    assert sum(data["events_per_day"].values()) == honest.head
    cps = data["checkpoints"]
    assert cps["latest_anchored_size"] == honest.head and cps["anchored"] >= 1
    assert [c["size"] for c in cps["list"]] == sorted(c["size"] for c in cps["list"])
    html = page.read_text()
    assert "All checks hold" in html and html.count("<svg") == 3
    assert "participant.registered" in html and "✔ passed" in html
    assert "src=" not in html and "<link" not in html and "<script" not in html


def test_the_honest_database_replays_with_its_read_models(honest: Honest,
                                                          tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    out = audit("--database", honest.url, "--data-dir", str(honest.data), "--trust",
                str(honest.trust), "--json", str(report), "--quiet")
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(report.read_text())
    steps = {s["name"]: s for s in data["steps"]}
    assert steps["read models"]["status"] == "passed" and steps["read models"]["checked"] > 0
    assert data["events"] == honest.head


def test_the_honest_log_replays_over_the_api_as_the_regulator(honest: Honest) -> None:
    report = honest.replayed_over_api
    assert report.ok, report.failure and report.failure.line()
    assert report.events == honest.head and report.per_type == honest.per_type


def test_a_bundle_with_an_event_missing_exits_1_naming_it(honest: Honest,
                                                          tmp_path: Path) -> None:
    first = honest.bundle / "events" / "00000001.jsonl"
    lines = first.read_bytes().splitlines(keepends=True)
    from audit.bundle import read_bundle
    from core.record import LogEntry
    entries = [LogEntry.from_canonical(line.rstrip(b"\n")) for line in lines]
    cut = read_bundle(honest.bundle).checkpoints()
    write_bundle(tmp_path / "cut", entries[:6] + entries[7:], cut, {})
    out = audit("--bundle", str(tmp_path / "cut"), "--trust", str(honest.trust), "--quiet")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED: step 1 (records) at seq 7: missing from the log" in out.stdout


def test_a_bundle_replays_with_the_server_rooms_refused_at_import(honest: Honest,
                                                                  tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import argparse, importlib.abc, sys
        BLOCKED = {SERVER_ROOMS!r}

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"refused: the audit imported {{name}}")
                return None

        sys.meta_path.insert(0, Refuse())
        from audit import cli
        import audit.replay
        parser = argparse.ArgumentParser()
        cli.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(sys.argv[1:])
        code = args.func(args)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        sys.exit(code)
    """)
    report = tmp_path / "report.json"
    out = subprocess.run([sys.executable, "-c", script, "audit", "replay", "--bundle",
                          str(honest.bundle), "--trust", str(honest.trust), "--json",
                          str(report), "--quiet"], capture_output=True, text=True,
                         timeout=300, cwd=REPO, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(report.read_text())
    assert data["ok"] and data["events"] == honest.head
    assert {s["name"]: s["status"] for s in data["steps"]}["business rules"] == "passed"
