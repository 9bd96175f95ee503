"""Crypto-shredding (密钥销毁) end to end, on a SQLite data directory and on PostgreSQL: a
member's name is sealed in the log; ``dataledger privacy erase`` (a process of its own, as
the operator runs it) destroys its key and records ``privacy.subject_erased``. Afterwards
no file under the data directory, no table, no export holds the clear name (nor the key),
the API and a rebuild show ``[erased]``, and ``chain verify`` and ``audit replay`` (bundle
and database, read models included) pass."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from client.platform import Party, bearer
from core.sealed import ERASED
from events.url import DatabaseURL
from runtime.build import PLATFORM_ADMIN_ID, Container, build
from runtime.settings import Settings
from tests.e2e.conftest import ADMIN_TOKEN, World
from tests.integration.test_chain_verify import REPO


@dataclass
class Erased:
    url: str
    data: Path
    trust: Path
    name: bytes
    key: bytes
    kept: str
    subject: str
    erase: subprocess.CompletedProcess[str]
    again: subprocess.CompletedProcess[str]
    unknown: subprocess.CompletedProcess[str]
    api_before: list[dict[str, Any]]
    api_after: list[dict[str, Any]]
    api_rebuilt: list[dict[str, Any]]
    export_tar: bytes
    #: the Idempotency-Key fingerprint of the request that carried the erased name, as the
    #: server keyed it, and the plain SHA-256 a dictionary attack would compute
    fingerprints: list[bytes]
    answers_after: list[Any]


def cli(url: str, data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(data), "DATALEDGER_DATABASE_URL": url,
           "DATALEDGER_ADMIN_TOKEN": ADMIN_TOKEN, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO, check=False)


def members(world: World, pid: str, party: Any) -> list[dict[str, Any]]:
    return list(world.call("GET", f"/participants/{pid}", party)["members"])


def files_holding(root: Path, needle: bytes) -> list[str]:
    """Every file under ``root`` (SQLite files, their WAL, key store, logs, exports...)
    whose bytes hold ``needle``."""
    return [str(p) for p in sorted(root.rglob("*")) if p.is_file() and needle in p.read_bytes()]


def fingerprints(key: bytes, path: str, body: bytes) -> list[bytes]:
    """The request's fingerprint as the server keys it (HMAC-SHA256 of method, path and
    body, each length-prefixed) and the unkeyed SHA-256 of the same parts."""
    keyed, plain = hmac.new(key, digestmod=hashlib.sha256), hashlib.sha256()
    for part in (b"POST", path.encode(), body):
        keyed.update(len(part).to_bytes(8, "big") + part)
        plain.update(len(part).to_bytes(8, "big") + part)
    return [f"hmac-sha256:{keyed.hexdigest()}".encode(), plain.hexdigest().encode()]


def post_once_and_again(tc: TestClient, path: str, body: dict[str, Any], token: str,
                        key: str) -> dict[str, Any]:
    """POST ``body`` with an Idempotency-Key twice: the second answers the first again."""
    raw = json.dumps(body, ensure_ascii=False).encode()
    headers = {**bearer(token), "Idempotency-Key": key, "Content-Type": "application/json"}
    first = tc.post(path, content=raw, headers=headers)
    again = tc.post(path, content=raw, headers=headers)
    assert first.status_code == again.status_code == 201, first.text + again.text
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["member_id"] == first.json()["member_id"]
    answer: dict[str, Any] = first.json()
    return answer


def tables_holding(url: str, *needles: bytes) -> list[str]:
    """Every table of the PostgreSQL schema with a row holding one of ``needles`` (as text,
    JSON, or bytea)."""
    db = DatabaseURL.parse(url)
    found = []
    with psycopg.connect(db.conninfo(), autocommit=True) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (db.schema,))]
        assert tables
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{db.schema}"."{table}"'):
                blob = b"".join(bytes(v) if isinstance(v, bytes | memoryview)
                                else json.dumps(v, ensure_ascii=False, default=str).encode()
                                for v in row)
                if any(n in blob for n in needles):
                    found.append(table)
                    break
    return found


@pytest.fixture
def erased(database_url: str, tmp_path: Path) -> Erased:
    data = tmp_path / "var"
    url = (f"sqlite:///{data / 'ledger.db'}" if database_url.startswith("sqlite")
           else database_url)
    settings = Settings(data_dir=data, database_url=url, admin_token=ADMIN_TOKEN,
                        checkpoint_every_seconds=0.2, checkpoint_every_leaves=8)
    name = f"张伟 Zhang Wei {uuid.uuid4().hex}"
    container = build(settings)
    try:
        with TestClient(create_app(container=container), raise_server_exceptions=False) as tc:
            world = World(tc)
            provider = world.onboard("provider", "Tax bureau 税务局")
            pid = provider.participant_id
            path, body = f"/participants/{pid}/members", {"name": name, "roles": ["member"]}
            made = post_once_and_again(tc, path, body, provider.token, "add-person")
            person = world.api.give_key(Party(pid, made["token"], provider.role,
                                              made["member_id"], provider.name))
            prints = fingerprints(container.keystore.fingerprint_key(), path,
                                  json.dumps(body, ensure_ascii=False).encode())
            answers = [container.store.idempotency(provider.member_id, "add-person")]
            kept = world.member(provider, "kept 留下", ["member"])
            before = members(world, pid, provider)
            subject = next(m["member_id"] for m in before if m["name"] == name)
            added = [e for e in container.store.load(pid)
                     if e.type_name == "participant.member_added"
                     and e.payload()["member_id"] == subject]
            key = container.keystore.get(added[0].payload()["name"]["key"])
            assert key is not None and person.token
            assert files_holding(data, name.encode()) == []  # never written in clear
            done = cli(url, data, "privacy", "erase", "--subject", subject)
            again = cli(url, data, "privacy", "erase", "--subject", subject)
            unknown = cli(url, data, "privacy", "erase", "--subject", str(uuid.uuid4()))
            answers_after = [container.store.idempotency(provider.member_id, "add-person")]
            after = members(world, pid, kept)
            export = tc.get("/ledger/export", params={"all": "true"},
                            headers=bearer(world.regulator.token))
            assert export.status_code == 200, export.text
            trust = _anchored(container, tmp_path)
            container.runner.rebuild()
            rebuilt = members(world, pid, provider)
    finally:
        container.close()
    assert answers[0] is not None and answers[0][0].encode() == prints[0], answers
    return Erased(url, data, trust, name.encode(), key, kept.member_id, subject, done, again,
                  unknown, before, after, rebuilt, export.content, prints, answers_after)


def _anchored(container: Container, tmp_path: Path) -> Path:
    head = container.store.max_seq()
    assert container.chain is not None and container.chain.wait_anchored(head, timeout=60)
    assert container.runner.wait_for(head, timeout=30)
    trust = tmp_path / "trust.json"  # outside the data dir, as a regulator keeps it
    trust.write_text(json.dumps(container.chain.trust_document()))
    return trust


def test_erase_destroys_the_key_records_the_event_and_is_idempotent(erased: Erased) -> None:
    assert erased.erase.returncode == 0, erased.erase.stderr
    assert "key destroyed" in erased.erase.stdout and "recorded at seq" in erased.erase.stdout
    assert erased.again.returncode == 0, erased.again.stderr
    assert "recorded before" in erased.again.stdout
    assert erased.unknown.returncode == 2 and "--subject: no member" in erased.unknown.stderr


def test_no_idempotency_fingerprint_can_confirm_an_erased_name(erased: Erased) -> None:
    """The request that carried the name was sent with an Idempotency-Key: its record is
    deleted at the erasure, and while it lived its fingerprint was keyed by the platform's
    secret (a dictionary of names hashed the plain way matches nothing)."""
    assert "1 idempotency record(s) naming it deleted" in erased.erase.stdout
    assert erased.answers_after == [None]
    for needle in erased.fingerprints:
        assert files_holding(erased.data, needle) == []
    if erased.url.startswith("postgresql"):
        assert tables_holding(erased.url, *erased.fingerprints) == []


def test_the_api_and_a_rebuild_show_erased_and_other_members_unchanged(erased: Erased) -> None:
    def names(rows: list[dict[str, Any]]) -> dict[str, str]:
        return {m["member_id"]: m["name"] for m in rows}

    assert names(erased.api_before)[erased.subject].encode() == erased.name
    for rows in (erased.api_after, erased.api_rebuilt):
        assert names(rows)[erased.subject] == ERASED
        assert names(rows)[erased.kept] == "kept 留下"


def test_no_file_table_or_export_holds_the_name_or_its_key(erased: Erased,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    done = cli(erased.url, erased.data, "export", "--out", str(out), "--database", erased.url,
               "--all")
    assert done.returncode == 0, done.stdout + done.stderr
    with tarfile.open(fileobj=io.BytesIO(erased.export_tar)) as tar:
        for member in tar.getmembers():
            blob = tar.extractfile(member)
            assert blob is None or erased.name not in blob.read(), member.name
    for root in (erased.data, out):
        assert files_holding(root, erased.name) == []
        assert files_holding(root, erased.key) == []
    if erased.url.startswith("postgresql"):
        assert tables_holding(erased.url, erased.name, erased.key) == []


def test_chain_verify_and_audit_replay_pass_after_erasure(erased: Erased,
                                                          tmp_path: Path) -> None:
    verified = cli(erased.url, erased.data, "chain", "verify", "--trust", str(erased.trust))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    out = tmp_path / "bundle"
    assert cli(erased.url, erased.data, "export", "--out", str(out), "--database",
               erased.url).returncode == 0
    for source in (("--bundle", str(out)),
                   ("--database", erased.url, "--data-dir", str(erased.data))):
        report = tmp_path / "report.json"
        done = cli(erased.url, erased.data, "audit", "replay", *source, "--trust",
                   str(erased.trust), "--json", str(report), "--quiet")
        assert done.returncode == 0, done.stdout + done.stderr
        steps = {s["name"]: s["status"] for s in json.loads(report.read_text())["steps"]}
        assert steps["business rules"] == "passed"
        if source[0] == "--database":
            assert steps["read models"] == "passed"


def test_a_stopped_erasure_is_completed_and_a_clear_name_is_refused(tmp_path: Path) -> None:
    """A run stopped after destroying the key (the key gone, nothing recorded) is completed
    by the next; a name recorded in clear (a ledger without a key store, as before names
    were sealed) is refused, exit 1, nothing recorded."""
    data = tmp_path / "var"
    url = f"sqlite:///{data / 'ledger.db'}"
    container = build(Settings(data_dir=data, database_url=url, admin_token=ADMIN_TOKEN,
                               chain=False))
    try:
        with TestClient(create_app(container=container), raise_server_exceptions=False) as tc:
            world = World(tc)
            provider = world.onboard("provider", "Tax bureau 税务局")
            stopped = world.member(provider, "王芳", ["member"])
            container.ledger.sealer = None
            clear = world.member(provider, "recorded in clear", ["member"])
            [added] = [e for e in container.store.load(provider.participant_id)
                       if e.type_name == "participant.member_added"
                       and e.payload()["member_id"] == stopped.member_id]
            assert container.keystore.destroy([added.payload()["name"]["key"]]) == 1
            head = container.store.max_seq()
    finally:
        container.close()
    done = cli(url, data, "privacy", "erase", "--subject", stopped.member_id)
    assert done.returncode == 0, done.stderr
    assert "no key left" in done.stdout and f"recorded at seq {head + 1}" in done.stdout
    refused = cli(url, data, "privacy", "erase", "--subject", clear.member_id)
    assert refused.returncode == 1 and "recorded in clear" in refused.stderr
    assert cli(url, data, "privacy", "erase", "--subject", stopped.member_id).returncode == 0


def test_a_registration_naming_its_admin_is_forgotten_with_the_admin(tmp_path: Path) -> None:
    """``POST /participants`` carries the first admin's name: with an Idempotency-Key, its
    record is keyed by the platform's secret and deleted when that admin is erased (the
    other records stay)."""
    data = tmp_path / "var"
    url = f"sqlite:///{data / 'ledger.db'}"
    container = build(Settings(data_dir=data, database_url=url, admin_token=ADMIN_TOKEN,
                               chain=False))
    body = {"name": "Demander 需方", "role": "demander", "credit_code": "DEM-1",
            "admin_name": f"李娜 {uuid.uuid4().hex}"}
    try:
        with TestClient(create_app(container=container), raise_server_exceptions=False) as tc:
            registered = post_once_and_again(tc, "/participants", body, ADMIN_TOKEN, "reg-1")
            other = post_once_and_again(tc, "/participants", dict(body, credit_code="DEM-2"),
                                        ADMIN_TOKEN, "reg-2")
            keyed, plain = fingerprints(container.keystore.fingerprint_key(), "/participants",
                                        json.dumps(body, ensure_ascii=False).encode())
            stored = container.store.idempotency(PLATFORM_ADMIN_ID, "reg-1")
            assert stored is not None and stored[0].encode() == keyed != plain
    finally:
        container.close()
    done = cli(url, data, "privacy", "erase", "--subject", registered["member_id"])
    assert done.returncode == 0, done.stderr
    assert "1 idempotency record(s) naming it deleted" in done.stdout
    container = build(Settings(data_dir=data, database_url=url, admin_token=ADMIN_TOKEN,
                               chain=False))
    try:
        assert container.store.idempotency(PLATFORM_ADMIN_ID, "reg-1") is None
        kept = container.store.idempotency(PLATFORM_ADMIN_ID, "reg-2")
        assert kept is not None and kept[1]["member_id"] == other["member_id"]
    finally:
        container.close()
    assert files_holding(data, keyed) == files_holding(data, plain) == []
