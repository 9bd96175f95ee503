"""``dataledger chain verify`` on real database files: a flipped byte is named, exit 1; the
checkpoints are held to a trust file taken before (``--trust``), so an operator who rewrites
the log and re-signs it with keys of the data dir fails."""

from __future__ import annotations

import json
import os
import shutil
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
                step_every: int = 1, witnesses: str = "") -> int:
    """A platform with a few participants, integrated and anchored; returns the log size.
    The trust document is kept beside the data dir (``trust_file``), as a verifier keeps it.

    seq 1-3: the platform; then two events per participant: "provider 3" is seq 10. With
    130 participants the log has 263 leaves: one full leaf tile and the node (8, 0).
    """
    settings = Settings(data_dir=data_dir, database_url=database_url,
                        admin_token="dl_verify_test_token_0123456789", checkpoint_every_leaves=4,
                        witness_urls=witnesses)
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
        trust_file(data_dir).write_text(json.dumps(c.chain.trust_document()))
        return head
    finally:
        c.close()


def trust_file(data_dir: Path) -> Path:
    """Where the tests keep the trust document taken when the ledger was made: outside the
    data dir."""
    return data_dir.parent / "trust.json"


def chain(database_url: str, data_dir: Path, *args: str,
          **env: str) -> subprocess.CompletedProcess[str]:
    """``dataledger chain ARGS`` on this store and data dir."""
    full = {**os.environ, "DATALEDGER_DATA_DIR": str(data_dir),
            "DATALEDGER_DATABASE_URL": database_url, **env}
    return subprocess.run([sys.executable, "-m", "cli", "chain", *args], env=full,
                          capture_output=True, text=True, timeout=120, cwd=REPO, check=False)


def verify(database_url: str, data_dir: Path,
           trust: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``chain verify --trust`` the copy taken when the ledger was made (or ``trust``)."""
    return chain(database_url, data_dir, "verify", "--trust", str(trust or trust_file(data_dir)))


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
    rewrite_provider_3(url)
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


# -- the trust file -----------------------------------------------------------------------


def test_verify_without_a_trust_file_is_a_usage_error_naming_the_flag(
        ledger: tuple[str, Path, int]) -> None:
    url, data, _ = ledger
    out = chain(url, data, "verify")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--trust" in out.stderr


def test_a_trust_file_inside_the_data_dir_is_refused(ledger: tuple[str, Path, int]) -> None:
    url, data, _ = ledger
    inside = data / "trust.json"
    shutil.copy(trust_file(data), inside)
    out = verify(url, data, inside)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "inside the data dir" in out.stderr


def rewrite_provider_3(url: str) -> None:
    """The operator's edit behind the API: "provider 3" becomes "provider 4" in seq 10."""
    rowid = "rowid" if url.startswith("sqlite") else "notification_id"
    if url.startswith("sqlite"):
        swap = "CAST(replace(state, 'provider 3', 'provider 4') AS BLOB)"
    else:
        swap = ("convert_to(replace(convert_from(state, 'UTF8'), 'provider 3', 'provider 4'), "
                "'UTF8')")
    execute(url, f"UPDATE stored_events SET state = {swap} WHERE {rowid} = 10")


def drop_tree(url: str, data: Path) -> None:
    """Throw the tree, its checkpoints and the witness sizes away, to rebuild them."""
    if url.startswith("sqlite"):
        for path in data.glob("chain.db*"):
            path.unlink()
        return
    for table in ("chain_nodes", "chain_tiles", "chain_state", "chain_checkpoints",
                  "chain_witness_sizes"):
        execute(url, f"DROP TABLE IF EXISTS {table}")


def rewrite_and_rebuild(url: str, data: Path, *, new_log_key: bool,
                        **env: str) -> subprocess.CompletedProcess[str]:
    """The attack of issue 12: rewrite an event, rebuild the tree, delete the in-process
    witnesses' state (their keys stay) and, with ``new_log_key``, re-sign with a new log key;
    then cut and co-sign a checkpoint over the rewritten log (``chain run --once``)."""
    rewrite_provider_3(url)
    drop_tree(url, data)
    if new_log_key:
        (data / "log.key").unlink()
    for state in data.glob("witnesses/*/state.db*"):
        state.unlink()
    rebuilt = chain(url, data, "run", "--once", **env)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    return rebuilt


def test_a_rewritten_log_re_signed_with_a_new_log_key_fails_the_trust_file_taken_before(
        ledger: tuple[str, Path, int], tmp_path: Path) -> None:
    url, data, head = ledger
    rebuilt = rewrite_and_rebuild(url, data, new_log_key=True)
    assert f"latest checkpoint {head} (anchored: True)" in rebuilt.stdout
    # keys read from the data dir after the attack (what `chain verify` trusted before
    # --trust): the forgery passes, so they prove nothing
    exported = chain(url, data, "trust", "--out", str(tmp_path / "after.json"))
    assert exported.returncode == 0, exported.stderr
    assert "not independent" in exported.stderr
    assert verify(url, data, tmp_path / "after.json").returncode == 0
    # the copy taken before the attack: every checkpoint is refused
    out = verify(url, data)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"FAIL checkpoint {head}: platform signature does not verify" in out.stdout
    assert "FAIL checkpoints: no anchored checkpoint covers the log" in out.stdout


def test_in_process_witnesses_co_sign_a_rewrite_by_an_operator_who_keeps_the_keys(
        ledger: tuple[str, Path, int]) -> None:
    """What the trust file cannot catch on its own: the witnesses' keys sit in the data dir
    (docs/TRUST.md). Independent witnesses catch it (the next test)."""
    url, data, _ = ledger
    rewrite_and_rebuild(url, data, new_log_key=False)
    out = verify(url, data)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture
def witnessed_ledger(database_url: str, tmp_path: Path,
                     witness_urls: list[str]) -> tuple[str, Path, int, list[str]]:
    url = database_url
    if url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'var' / 'ledger.db'}"
    head = make_ledger(url, tmp_path / "var", witnesses=",".join(witness_urls))
    return url, tmp_path / "var", head, witness_urls


def test_witnesses_of_their_own_refuse_to_co_sign_a_rewritten_log(
        witnessed_ledger: tuple[str, Path, int, list[str]]) -> None:
    url, data, head, urls = witnessed_ledger
    assert verify(url, data).returncode == 0
    rebuilt = rewrite_and_rebuild(url, data, new_log_key=False,
                                  DATALEDGER_WITNESS_URLS=",".join(urls))
    assert f"latest checkpoint {head} (anchored: False)" in rebuilt.stdout
    out = verify(url, data)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL checkpoints: no anchored checkpoint covers the log" in out.stdout
