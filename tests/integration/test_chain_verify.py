"""``dataledger chain verify`` on real database files: a flipped byte is named, exit 1."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from events.url import DatabaseURL
from runtime.build import build
from runtime.settings import Settings

REPO = Path(__file__).parents[2]


def make_ledger(database_url: str, data_dir: Path, participants: int = 5,
                step_every: int = 1) -> int:
    """A platform with a few participants, integrated and anchored; returns the log size.

    seq 1-3: the platform; then two events per participant: "provider 3" is seq 10. With
    130 participants the log has 263 leaves: one full leaf tile and the node (8, 0).
    """
    settings = Settings(data_dir=data_dir, database_url=database_url,
                        admin_token="dl_verify_test_token_0123456789", checkpoint_every_leaves=4)
    c = build(settings, start_background=False)
    try:
        from domain.base import Actor
        from domain.participant import register_participant
        from runtime.build import PLATFORM_ADMIN_ID, PLATFORM_ID

        admin = Actor(PLATFORM_ID, PLATFORM_ADMIN_ID, "platform", ("admin",))
        assert c.chain is not None
        for i in range(participants):
            c.ledger.execute(register_participant, admin, name=f"provider {i}", role="provider",
                             credit_code="9111", admin_name="a", admin_token_hash=f"{i:064d}")
            if (i + 1) % step_every == 0:
                c.chain.step()
        head = c.store.max_seq()
        assert c.chain.wait_anchored(head, timeout=10) is not None
        return head
    finally:
        c.close()


def verify(database_url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATALEDGER_DATA_DIR": str(data_dir),
           "DATALEDGER_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "cli", "chain", "verify"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=REPO, check=False)


def execute(database_url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement on the event store's database (the tree's, for chain_ tables)."""
    url = DatabaseURL.parse(database_url)
    if url.kind == "sqlite":
        path = url.path if "chain_" not in sql else str(Path(url.path).parent / "chain.db")
        with sqlite3.connect(path) as conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()
    with psycopg.connect(url.conninfo(), autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{url.schema}"')
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def flip_byte(database_url: str, table: str, column: str, where: str, offset: int) -> None:
    """XOR one byte of a stored blob with 0xff (the value surely changes)."""
    [(blob,)] = execute(database_url, f"SELECT {column} FROM {table} WHERE {where}")
    assert isinstance(blob, bytes | memoryview)
    mutated = bytearray(blob)
    mutated[offset] ^= 0xFF
    execute(database_url, f"UPDATE {table} SET {column} = %s WHERE {where}", (bytes(mutated),))


@pytest.fixture
def ledger(database_url: str, tmp_path: Path) -> tuple[str, Path, int]:
    url = database_url
    if url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'var' / 'ledger.db'}"
    head = make_ledger(url, tmp_path / "var")
    return url, tmp_path / "var", head


def test_an_untouched_ledger_verifies(ledger: tuple[str, Path, int]) -> None:
    url, data, head = ledger
    out = verify(url, data)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"ok: {head} leaves recomputed" in out.stdout


def test_a_flipped_byte_of_a_stored_event_is_named_by_its_seq(
        ledger: tuple[str, Path, int]) -> None:
    url, data, _ = ledger
    rowid = "rowid" if url.startswith("sqlite") else "notification_id"
    # "provider 3" -> "provider 4" inside the stored payload of seq 10
    if url.startswith("sqlite"):
        swap = "CAST(replace(state, 'provider 3', 'provider 4') AS BLOB)"
    else:
        swap = ("convert_to(replace(convert_from(state, 'UTF8'), 'provider 3', 'provider 4'), "
                "'UTF8')")
    execute(url, f"UPDATE stored_events SET state = {swap} WHERE {rowid} = 10")
    out = verify(url, data)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL seq 10: stored event does not hash to its stored leaf" in out.stdout


def test_a_flipped_byte_of_a_stored_leaf_in_its_tile_is_named_by_its_seq(
        ledger: tuple[str, Path, int]) -> None:
    url, data, _ = ledger
    # seq 10 is leaf 9: the 10th hash of leaf tile 0, bytes 288..319
    flip_byte(url, "chain_tiles", "hashes", "idx = 0", 9 * 32 + 5)
    out = verify(url, data)
    assert out.returncode == 1, out.stdout + out.stderr
    assert ("FAIL seq 10: stored event does not hash to its stored leaf (leaf tile 0, hash 9)"
            in out.stdout)
    assert "FAIL seq 9:" not in out.stdout and "FAIL seq 11:" not in out.stdout


@pytest.fixture
def big_ledger(database_url: str, tmp_path: Path) -> tuple[str, Path, int]:
    url = database_url
    if url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'var' / 'ledger.db'}"
    head = make_ledger(url, tmp_path / "var", participants=130, step_every=13)
    assert head == 263
    return url, tmp_path / "var", head


def test_a_flipped_byte_of_a_stored_upper_node_is_named_by_its_node(
        big_ledger: tuple[str, Path, int]) -> None:
    url, data, head = big_ledger
    untouched = verify(url, data)
    assert untouched.returncode == 0, untouched.stdout + untouched.stderr
    assert f"ok: {head} leaves recomputed" in untouched.stdout
    flip_byte(url, "chain_nodes", "hash", "level = 8 AND idx = 0", 0)
    out = verify(url, data)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL node (8, 0): stored tree hash differs" in out.stdout
    assert "FAIL seq" not in out.stdout
