"""The per-actor index kept by the chain, on a SQLite file and on PostgreSQL: checkpoints
carry its root in an ``index`` line the witnesses co-sign, the root equals a recompute from
the stored events, and the proofs the self-proof uses verify against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from anchoring.actor_index import NoIndexRoot
from chain.checkpoint import INDEX, Checkpoint
from chain.smt import verify_map_proof
from core.actor_index import IndexFold, index_key_hash
from runtime.build import Container, build
from runtime.settings import Settings


@pytest.fixture
def container(database_url: str, tmp_path: Path) -> Iterator[Container]:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url,
                        admin_token="dl_index_test_token_0123456789",
                        checkpoint_every_leaves=4)
    c = build(settings, start_background=False)
    yield c
    c.close()


def register(c: Container, count: int) -> None:
    from domain.base import Actor
    from domain.participant import register_participant
    from runtime.build import PLATFORM_ADMIN_ID, PLATFORM_ID

    admin = Actor(PLATFORM_ID, PLATFORM_ADMIN_ID, "platform", ("admin",))
    for i in range(count):
        c.ledger.execute(register_participant, admin, name=f"p {i}", role="provider",
                         credit_code="9111", admin_name="a", admin_token_hash=f"{i:064d}")


def recompute(c: Container, size: int) -> bytes:
    """The index root of the first ``size`` events, from the stored events alone."""
    fold = IndexFold()
    for e in c.store.read(0, size):
        fold.apply(e)
    return fold.root()


def note_index(note: str) -> bytes | None:
    body = note.split("\n\n", 1)[0] + "\n"
    return Checkpoint.unmarshal(body).extension_hash(INDEX)


def test_each_checkpoint_carries_the_index_root_recomputed_from_the_events(
        container: Container) -> None:
    c = container
    assert c.chain is not None and c.chain.index is not None
    register(c, 3)
    c.chain.step()
    register(c, 4)
    head = c.store.max_seq()
    anchored = c.chain.wait_anchored(head, timeout=20)
    assert anchored is not None and anchored.size == head
    checkpoints = c.chain.tree.checkpoints.all()
    assert len(checkpoints) >= 2
    for cp in checkpoints:
        line = note_index(cp.note)
        assert line == recompute(c, cp.size) == c.chain.index.root_at(cp.size)
        assert "\nindex " in cp.cosigned  # the co-signed note carries it
    assert c.chain.index.size() == head


def test_postings_values_and_proofs_at_the_latest_and_an_older_checkpoint(
        container: Container) -> None:
    c = container
    assert c.chain is not None
    index = c.chain.index
    assert index is not None
    register(c, 2)
    c.chain.step()
    first = c.chain.tree.checkpoints.latest()
    register(c, 3)
    assert c.chain.wait_anchored(c.store.max_seq(), timeout=20) is not None
    latest = c.chain.tree.checkpoints.latest()
    assert first is not None and latest is not None and first.size < latest.size
    events = c.store.read(0, latest.size)
    # the platform's admin registered everyone: its key on the last participant's aggregate
    target = [e for e in events if e.type_name == "participant.registered"][-1]
    actor = target.payload()["actor"]["participant"]
    resource = f"participant:{target.originator_id}"
    seqs = index.postings(actor, resource, latest.size)
    assert target.seq in seqs
    assert seqs == [e.seq for e in events if e.originator_id == target.originator_id
                    and e.payload()["actor"]["participant"] == actor]
    for cp in (latest, first):
        root = note_index(cp.note)
        assert root is not None
        value = index.value_at(actor, resource, cp.size)
        kh = index_key_hash(actor, resource)
        proof = index.prove(actor, resource, cp.size)
        if value is None:
            verify_map_proof(root, kh, None, proof)
        else:
            assert value.count == len(index.postings(actor, resource, cp.size))
            verify_map_proof(root, kh, value.hash(), proof)
        nobody = index.prove("nobody", "dataset:none", cp.size)
        verify_map_proof(root, index_key_hash("nobody", "dataset:none"), None, nobody)
    with pytest.raises(NoIndexRoot):
        index.prove(actor, resource, latest.size - 1)


def test_the_index_resumes_from_the_database(database_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url,
                        admin_token="dl_index_test_token_0123456789",
                        checkpoint_every_leaves=4)
    c = build(settings, start_background=False)
    try:
        register(c, 3)
        assert c.chain is not None
        assert c.chain.wait_anchored(c.store.max_seq(), timeout=20) is not None
    finally:
        c.close()
    c = build(settings, start_background=False)
    try:
        register(c, 3)
        assert c.chain is not None
        head = c.store.max_seq()
        assert c.chain.wait_anchored(head, timeout=20) is not None
        latest = c.chain.tree.checkpoints.latest()
        assert latest is not None
        assert note_index(latest.note) == recompute(c, latest.size)
    finally:
        c.close()


def test_with_the_index_off_checkpoints_carry_no_index_line_and_still_verify(
        database_url: str, tmp_path: Path) -> None:
    """DATALEDGER_ACTOR_INDEX=false (what ``bench append`` compares with): checkpoints are cut,
    co-signed and anchored without the ``index`` line; ``chain verify`` and ``audit replay``
    accept them (step 5 skipped, saying why); no self-proof can be made."""
    from tests.integration.test_chain_verify import REPO, trust_file, verify

    data = tmp_path / "var"
    url = (f"sqlite:///{data / 'ledger.db'}" if database_url.startswith("sqlite")
           else database_url)
    c = build(Settings(data_dir=data, database_url=url, checkpoint_every_leaves=4,
                       admin_token="dl_index_test_token_0123456789", actor_index=False),
              start_background=False)
    try:
        assert c.chain is not None and c.chain.index is None
        register(c, 2)
        c.chain.step()
        register(c, 2)
        head = c.store.max_seq()
        assert c.chain.wait_anchored(head, timeout=20) is not None
        checkpoints = c.chain.tree.checkpoints.all()
        assert len(checkpoints) >= 2 and all(cp.anchored for cp in checkpoints)
        for cp in checkpoints:
            assert note_index(cp.note) is None
            assert "\nindex " not in cp.cosigned
        trust_file(data).write_text(json.dumps(c.chain.trust_document()))
    finally:
        c.close()
    verified = verify(url, data)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"ok: {head} leaves recomputed" in verified.stdout
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(data), "NO_COLOR": "1"}
    replayed = subprocess.run(
        [sys.executable, "-m", "cli", "audit", "replay", "--database", url, "--trust",
         str(trust_file(data)), "--json", str(tmp_path / "report.json")],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert replayed.returncode == 0, replayed.stdout[-3000:] + replayed.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    step5 = next(s for s in report["steps"] if s["number"] == 5)
    assert report["ok"] is True and step5["status"] == "skipped"
    assert "no checkpoint carries an index line" in step5["reason"]
