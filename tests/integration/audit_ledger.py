"""An honest ledger made by driving the real API, and the tampering a dishonest operator (or
a damaged copy) does to it behind the API's back, for the ``audit replay`` tamper tests.

The honest ledger is a whole market walk over HTTP (``tests/e2e``'s parties and helpers):
onboarding with signed decisions, a dataset, an approved scenario, an authorization, a
listed product, an order, a contract approved by its parties, an execution that delivers
its result, then the contract's termination; all of it integrated and anchored, the trust
document kept outside the data dir as a regulator keeps it. Each tamper below is one real
change to the real SQLite file, PostgreSQL table or exported bundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.app import create_app
from audit.bundle import read_bundle, write_bundle
from audit.live_db import LiveDatabase
from core import decision
from core.canonical import canonical_bytes, decode
from runtime.build import build
from runtime.settings import Settings
from tests.e2e.conftest import ADMIN_TOKEN, Chain, World, build_chain, list_product
from tests.e2e.test_market_api import SPLIT, place
from tests.e2e.test_usage_controls import contract, delivered, policy
from tests.integration.test_chain_verify import REPO, chain, drop_tree, execute

#: the per-actor index's tables (anchoring/actor_index.py), beside the tree
INDEX_TABLES = ("index_keys", "index_postings", "index_roots", "index_state")
#: the replay's exit codes
HOLDS, FAILS, USAGE = 0, 1, 2


@dataclass
class Ledger:
    """An honest ledger at rest: where it is, the trust file taken when it was made, and the
    seq of the events the tampers aim at (by type: the first and last of each)."""

    url: str
    data: Path
    trust: Path
    head: int
    first: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    #: the contract that was executed, delivered, then terminated, and its computation
    order_id: str = ""
    computation_id: str = ""
    #: a contract accepted by the demander, waiting for its parties' approvals (the last
    #: events of the log)
    pending_order_id: str = ""
    #: the participant ids of the parties (by role), and a member id of the developer
    #: (a member who is no party to either contract)
    parties: dict[str, str] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)
    #: the signing keys of those members (a forger who holds one signs for real)
    keys: dict[str, Any] = field(default_factory=dict)

    def entry(self, seq: int) -> Any:
        """The stored event at ``seq`` (as the log holds it now)."""
        with LiveDatabase(self.url, self.data) as db:
            return next(db.events(after=seq - 1, upto=seq))

    @property
    def sqlite(self) -> bool:
        return self.url.startswith("sqlite")


def make_market_ledger(database_url: str, data: Path, witnesses: str = "") -> Ledger:
    """Drive a real server through a whole market walk; stop it once every event is
    anchored (on SQLite the events go to ``data``/ledger.db, beside chain.db and views.db)."""
    url = f"sqlite:///{data / 'ledger.db'}" if database_url.startswith("sqlite") else database_url
    settings = Settings(data_dir=data, database_url=url, admin_token=ADMIN_TOKEN,
                        checkpoint_every_seconds=0.2, checkpoint_every_leaves=16,
                        witness_urls=witnesses)
    container = build(settings)
    try:
        with TestClient(create_app(container=container), raise_server_exceptions=False) as tc:
            world = World(tc)
            ch = build_chain(world)
            oid = contract(world, ch, policy(provider_may_terminate=True))
            cid = delivered(world, ch, oid)
            world.call("POST", f"/orders/{oid}/contract/termination", ch.provider,
                       json={"reason": "the provider ends the contract"})
            assert container.chain is not None
            # a checkpoint cut at the termination exactly: what a rewrite after it must keep
            assert container.chain.wait_anchored(head_of(tc), timeout=60) is not None
            pending = pending_contract(world, ch)
            head = head_of(tc)
            assert container.chain.wait_anchored(head, timeout=60) is not None
            assert container.runner.wait_for(head, timeout=30)
            trust = data.parent / "trust.json"
            trust.write_text(json.dumps(container.chain.trust_document()))
            parties = {"provider": ch.provider.participant_id,
                       "operator": ch.operator.participant_id,
                       "demander": ch.demander.participant_id,
                       "developer": ch.developer.participant_id}
            members = {"developer": ch.developer.member_id, "provider": ch.provider.member_id}
            keys = {"developer": ch.developer.key, "provider": ch.provider.key}
    finally:
        container.close()
    ledger = Ledger(url, data, trust, head, order_id=oid, computation_id=cid,
                    pending_order_id=pending, parties=parties, members=members, keys=keys)
    with LiveDatabase(url, data) as db:
        for entry in db.events():
            ledger.first.setdefault(entry.type_name, entry.seq)
            ledger.last[entry.type_name] = entry.seq
    return ledger


def head_of(tc: TestClient) -> int:
    return int(tc.get("/health").json()["head"])


def pending_contract(world: World, ch: Chain) -> str:
    """An order of another listed product whose contract the demander accepted: it waits
    for its parties' approvals."""
    oid = place(world, ch, list_product(world, ch))
    world.call("POST", f"/orders/{oid}/contract", ch.operator, json={
        "usage_policy": policy(), "price_fen": 1_000, "revenue_split": dict(SPLIT)})
    world.call("POST", f"/orders/{oid}/contract/acceptance", ch.demander)
    return oid


# -- running the replay -----------------------------------------------------------------------


def replay(ledger: Ledger, *source: str, report: Path | None = None,
           **env: str) -> subprocess.CompletedProcess[str]:
    """``dataledger audit replay SOURCE --trust`` the trust file taken when the ledger was
    made (``--database`` the ledger's own unless a source is given), as a user runs it."""
    args = list(source) or ["--database", ledger.url]
    if report is not None:
        args += ["--json", str(report)]
    full = {**os.environ, "DATALEDGER_DATA_DIR": str(ledger.data), "NO_COLOR": "1",
            "COLUMNS": "200", **env}
    return subprocess.run([sys.executable, "-m", "cli", "audit", "replay", *args, "--trust",
                           str(ledger.trust)], env=full, capture_output=True, text=True,
                          timeout=600, cwd=REPO, check=False)


def replay_without_rules(ledger: Ledger, bundle: Path | None = None) -> Any:
    """The replay's report with the rule book left out (steps 1 to 5 and 7 only): what the
    keys and the witnesses alone say of the log (``--bundle`` if given, else its database)."""
    from audit.replay import Replay
    from audit.sources import BundleSource, DatabaseSource
    from chain.trust import TrustedKeys

    source = BundleSource(bundle) if bundle else DatabaseSource(ledger.url, ledger.data)
    try:
        return Replay(TrustedKeys.from_file(ledger.trust), rules="left out").run(source)
    finally:
        source.close()


# -- tampering with the events ---------------------------------------------------------------


def _seq_column(ledger: Ledger) -> str:
    return "rowid" if ledger.sqlite else "notification_id"


def rewrite_event(ledger: Ledger, seq: int, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` (same length: one changed byte) in the stored payload at
    ``seq``, behind the API's back."""
    assert len(old.encode()) == len(new.encode())
    [(state,)] = execute(ledger.url, f"SELECT state FROM stored_events WHERE "
                         f"{_seq_column(ledger)} = %s", (seq,))
    state = bytes(state)
    assert state.count(old.encode()) >= 1, (seq, old, state[:200])
    execute(ledger.url, f"UPDATE stored_events SET state = %s WHERE {_seq_column(ledger)} = %s",
            (state.replace(old.encode(), new.encode(), 1), seq))


def delete_event(ledger: Ledger, seq: int) -> None:
    """Delete the stored event at ``seq``."""
    execute(ledger.url, f"DELETE FROM stored_events WHERE {_seq_column(ledger)} = %s", (seq,))


def swap_events(ledger: Ledger, a: int, b: int) -> None:
    """Give the stored events at ``a`` and ``b`` each other's seq."""
    col = _seq_column(ledger)
    for old, new in ((a, -1), (b, a), (-1, b)):
        execute(ledger.url, f"UPDATE stored_events SET {col} = %s WHERE {col} = %s", (new, old))


def insert_event(ledger: Ledger, seq: int, originator_id: str, version: int, type_name: str,
                 payload: dict[str, Any]) -> None:
    """Write one event straight into the store at ``seq``, as the operator's SQL would."""
    columns = f"originator_id, originator_version, topic, state, {_seq_column(ledger)}"
    execute(ledger.url, f"INSERT INTO stored_events ({columns}) VALUES (%s, %s, %s, %s, %s)",
            (originator_id, version, type_name, canonical_bytes(payload), seq))


def payload_of(ledger: Ledger, seq: int) -> dict[str, Any]:
    """The stored payload at ``seq``, decoded."""
    [(state,)] = execute(ledger.url, f"SELECT state FROM stored_events WHERE "
                         f"{_seq_column(ledger)} = %s", (seq,))
    decoded: dict[str, Any] = decode(bytes(state))
    return decoded


def stream_version(ledger: Ledger, originator_id: str) -> int:
    """The last version stored for aggregate ``originator_id``."""
    [(version,)] = execute(ledger.url, "SELECT MAX(originator_version) FROM stored_events "
                           "WHERE originator_id = %s", (originator_id,))
    return int(version)


def later(at: str, micros: int = 1000) -> str:
    """A time ``micros`` microseconds after ``at`` (the ledger's format)."""
    when = datetime.fromisoformat(at) + timedelta(microseconds=micros)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def approval(ledger: Ledger, who: str) -> tuple[str, int, dict[str, Any]]:
    """A ``contract.party_approved`` of the pending contract by ``who`` (a role of
    ``ledger.parties``) for its own participant, signed with that member's registered key,
    made as the server would make it: (aggregate id, version, payload)."""
    oid, member = ledger.pending_order_id, ledger.members[who]
    version = stream_version(ledger, oid)
    stmt = decision.statement("contract.approval", oid, version, member, {})
    key = ledger.keys[who]
    signature = {"key_id": decision.key_id(decision.public_key_text(key.public_key())),
                 "statement": stmt, "value": decision.sign(key, stmt)}
    payload = {"actor": {"member": member, "participant": ledger.parties[who], "role": who},
               "at": later(payload_of(ledger, ledger.head)["at"]), "class_version": 2,
               "party_id": ledger.parties[who], "signature": signature}
    return oid, version + 1, payload


def forge_approval(ledger: Ledger) -> int:
    """The developer, no party to the pending contract, "approves" it: an event written
    straight into the store after the head (signed with the developer's own key); returns
    its seq. The running chain integrates and anchors whatever the store holds."""
    seq = ledger.head + 1
    oid, version, payload = approval(ledger, "developer")
    insert_event(ledger, seq, oid, version, "contract.party_approved", payload)
    return seq


def append_behind_the_tree(ledger: Ledger) -> int:
    """The provider's approval of the pending contract, well formed and signed, written
    into the store after the head and never integrated; returns its seq."""
    seq = ledger.head + 1
    oid, version, payload = approval(ledger, "provider")
    insert_event(ledger, seq, oid, version, "contract.party_approved", payload)
    return seq


def deliver_after_termination(ledger: Ledger) -> int:
    """A second ``delivery.made`` of the executed computation, written right after its
    contract's termination (every later event moved one seq up); returns its seq."""
    ended = ledger.last["contract.terminated"]
    col = _seq_column(ledger)
    for seq in range(ledger.head, ended, -1):
        execute(ledger.url, f"UPDATE stored_events SET {col} = %s WHERE {col} = %s",
                (seq + 1, seq))
    honest = payload_of(ledger, ledger.last["delivery.made"])
    payload = {**honest, "at": later(payload_of(ledger, ended)["at"])}
    cid = ledger.computation_id
    insert_event(ledger, ended + 1, cid, stream_version(ledger, cid) + 1, "delivery.made",
                 payload)
    return ended + 1


def tree_sql(ledger: Ledger, sql: str) -> None:
    """One statement on the tree's database (chain.db on SQLite, which holds the index too)."""
    if ledger.sqlite:
        import sqlite3

        with sqlite3.connect(ledger.data / "chain.db") as conn:
            conn.execute(sql)
        return
    execute(ledger.url, sql)


def rebuild_tree_keeping(ledger: Ledger, keep: int, **env: str) -> subprocess.CompletedProcess[str]:
    """The operator rebuilds the tree and the per-actor index from the rewritten store, keeps
    the checkpoints up to size ``keep`` (the log before it is unchanged: they still hold) and
    cuts a new one over the rest, asking the witnesses to co-sign it (``chain run --once``)."""
    for sql in ("DELETE FROM chain_tiles", "DELETE FROM chain_nodes",
                "UPDATE chain_state SET size = 0",
                f"DELETE FROM chain_checkpoints WHERE size > {int(keep)}",
                *(f"DELETE FROM {table}" for table in INDEX_TABLES if table != "index_state"),
                "UPDATE index_state SET size = 0"):
        tree_sql(ledger, sql)
    return integrate(ledger, **env)


def reanchor(ledger: Ledger, **env: str) -> subprocess.CompletedProcess[str]:
    """What an operator who keeps the platform's key does after rewriting the log: throw the
    tree, its checkpoints and the per-actor index away, forget what the in-process witnesses saw (their keys
    stay), then integrate, cut and co-sign again (``chain run --once``)."""
    drop_tree(ledger.url, ledger.data)
    if not ledger.sqlite:  # on SQLite the index went with chain.db
        for table in INDEX_TABLES:
            execute(ledger.url, f"DROP TABLE IF EXISTS {table}")
    for state in ledger.data.glob("witnesses/*/state.db*"):
        state.unlink()
    return integrate(ledger, **env)


def integrate(ledger: Ledger, **env: str) -> subprocess.CompletedProcess[str]:
    """Integrate, cut and co-sign what the store holds beyond the tree (``chain run
    --once``), as the running server would."""
    done = chain(ledger.url, ledger.data, "run", "--once",
                 **{"DATALEDGER_CHECKPOINT_EVERY_LEAVES": "1", **env})
    assert done.returncode == 0, done.stdout + done.stderr
    return done


# -- tampering with the read models -----------------------------------------------------------


def _read_model_sql(ledger: Ledger, sql: str, params: tuple[Any, ...]) -> None:
    """Run one statement on the live read models (views.db on SQLite); it must touch one
    row."""
    if ledger.sqlite:
        import sqlite3

        with sqlite3.connect(ledger.data / "views.db") as conn:
            assert conn.execute(sql.replace("%s", "?"), params).rowcount == 1
        return
    import psycopg

    from events.url import DatabaseURL

    url = DatabaseURL.parse(ledger.url)
    with psycopg.connect(url.conninfo(), autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{url.schema}"')
        assert conn.execute(sql, params).rowcount == 1


def rewrite_read_model(ledger: Ledger, table: str, column: str, value: str,
                       row_id: str) -> None:
    """Set one column of one live read-model row."""
    _read_model_sql(ledger, f"UPDATE {table} SET {column} = %s WHERE id = %s", (value, row_id))


def delete_read_model_row(ledger: Ledger, table: str, row_id: str) -> None:
    """Delete one live read-model row."""
    _read_model_sql(ledger, f"DELETE FROM {table} WHERE id = %s", (row_id,))


# -- bundles ------------------------------------------------------------------------------------


def export(ledger: Ledger, out: Path, *options: str) -> Path:
    """The ledger's bundle: ``dataledger export --database OPTIONS`` when it exists, else
    written with audit/bundle.py from the same store."""
    done = subprocess.run([sys.executable, "-m", "cli", "export", "--out", str(out),
                           "--database", ledger.url, *options],
                          env={**os.environ, "DATALEDGER_DATA_DIR": str(ledger.data)},
                          capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    if done.returncode == 0:
        return out
    assert "invalid choice: 'export'" in done.stderr, done.stdout + done.stderr
    with LiveDatabase(ledger.url, ledger.data) as db:
        write_bundle(out, db.events(), db.checkpoints(), json.loads(ledger.trust.read_text()),
                     leaves=db.stored_leaves)
    return out


def rewrite_bundle_events(bundle: Path, edit: Any) -> None:
    """Replace the bundle's event lines by ``edit(lines)`` and rewrite the manifest's counts
    and digests to match (a dishonest copy, not a damaged one)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    paths = [f["path"] for f in manifest["files"] if f["path"].startswith("events/")]
    lines = [line for path in paths for line in (bundle / path).read_bytes().splitlines()]
    lines = edit(lines)
    for path in paths[1:]:
        (bundle / path).unlink()
    (bundle / paths[0]).write_bytes(b"".join(line + b"\n" for line in lines))
    _reseal(bundle, manifest, paths, len(lines))


def rewrite_bundle_leaf(bundle: Path, seq: int, leaf: bytes) -> None:
    """Put ``leaf`` in place of the stored leaf of ``seq`` in the bundle's ``leaves/``
    (single file) and reseal the manifest: the leaves changed along with the event."""
    path = bundle / "leaves" / "00000001.bin"
    data = bytearray(path.read_bytes())
    data[32 * (seq - 1):32 * seq] = leaf
    path.write_bytes(bytes(data))
    manifest = json.loads((bundle / "manifest.json").read_text())
    _reseal(bundle, manifest, [], manifest["events"])


def _reseal(bundle: Path, manifest: dict[str, Any], paths: list[str], count: int) -> None:
    import hashlib

    files = [f for f in manifest["files"] if f["path"] not in paths[1:]]
    for f in files:
        data = (bundle / f["path"]).read_bytes()
        f["sha256"], f["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
        if paths and f["path"] == paths[0]:
            f["count"] = count
            seqs = [json.loads(line)["seq"] for line in data.splitlines()]
            f["first_seq"], f["last_seq"] = (seqs[0], seqs[-1]) if seqs else (None, None)
    manifest["files"], manifest["events"] = files, count
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1))
    read_bundle(bundle).check_files()  # the copy is self-consistent: only the replay can tell
