"""privacy/keystore.py on a SQLite file and on PostgreSQL: keys issued from batches stored
ahead, read, destroyed; a destroyed key's bytes are left in no file of the SQLite store and
no row of the table."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import psycopg

from core.sealed import ERASED, MEMBER_NAME, key_id_of
from events.url import DatabaseURL
from privacy.keystore import BATCH, FINGERPRINT_KEY_ID, KEYS_FILE, KEYS_TABLE, open_keystore


def stored(url: DatabaseURL, tmp_path: Path) -> dict[str, bytes]:
    """The key table as another process reads it."""
    if url.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(tmp_path / "var" / KEYS_FILE) as conn:
            return {k: bytes(v) for k, v in conn.execute(f"SELECT key_id, key FROM {KEYS_TABLE}")}
    with psycopg.connect(url.conninfo(), autocommit=True) as conn:
        return {k: bytes(v) for k, v in conn.execute(
            f'SELECT key_id, key FROM "{url.schema}".{KEYS_TABLE}')}


def test_keys_are_stored_before_issued_and_destroyed(database_url: str, tmp_path: Path) -> None:
    url = DatabaseURL.parse(database_url)
    store = open_keystore(url, tmp_path / "var")
    try:
        kid, key = store.issue()
        assert len(key) == 32 and stored(url, tmp_path)[kid] == key  # on disk first
        assert len(stored(url, tmp_path)) == BATCH
        issued = [store.issue() for _ in range(BATCH)]  # past the first batch: a second
        assert len({k for k, _ in issued} | {kid}) == BATCH + 1
        assert len(stored(url, tmp_path)) == 2 * BATCH
        env = store.seal("m-1", MEMBER_NAME, "张伟")
        other = store.seal("m-2", MEMBER_NAME, "李四")
        assert store.reveal(env, MEMBER_NAME) == "张伟"
        gone = key_id_of(env)
        assert gone is not None and store.get(gone) is not None
        assert store.destroy([gone]) == 1 and store.destroy([gone]) == 0
        assert store.get(gone) is None and gone not in stored(url, tmp_path)
        assert store.reveal_all([env, other, "clear"], MEMBER_NAME) == [ERASED, "李四", "clear"]
        destroyed = store.get_many([kid])[kid]
        assert store.destroy([kid]) == 1
    finally:
        store.close()
    if url.kind == "sqlite":
        files = [p for p in (tmp_path / "var").iterdir() if p.is_file()]
        assert stat.S_IMODE((tmp_path / "var" / KEYS_FILE).stat().st_mode) == 0o600
        assert not any(destroyed in p.read_bytes() for p in files)
        assert any(issued[0][1] in p.read_bytes() for p in files)


def test_a_reopened_store_reads_its_keys_and_issues_new_ones(database_url: str,
                                                             tmp_path: Path) -> None:
    url = DatabaseURL.parse(database_url)
    first = open_keystore(url, tmp_path / "var")
    kid, key = first.issue()
    first.close()
    again = open_keystore(url, tmp_path / "var")
    try:
        assert again.get(kid) == key and again.issue()[0] != kid
    finally:
        again.close()


def test_the_fingerprint_key_is_made_once_and_shared(database_url: str, tmp_path: Path) -> None:
    """The secret keying Idempotency-Key fingerprints: made by the first store that asks, the
    same for every store on that database (several servers), and kept in the key table."""
    url = DatabaseURL.parse(database_url)
    first, second = open_keystore(url, tmp_path / "var"), open_keystore(url, tmp_path / "var")
    try:
        key = first.fingerprint_key()
        assert len(key) == 32 and second.fingerprint_key() == key == first.fingerprint_key()
        assert stored(url, tmp_path)[FINGERPRINT_KEY_ID] == key
    finally:
        first.close()
        second.close()


def test_a_key_store_in_a_database_of_its_own(database_url: str, tmp_path: Path) -> None:
    """``DATALEDGER_KEYSTORE_URL``: the keys of sealed names (and the fingerprint secret)
    live there, in a SQLite file or a PostgreSQL database/schema of their own, and nowhere
    beside the log (no ``subject_keys.db`` in the data directory, no key table in the log's
    schema), so a backup of the log carries no key."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from runtime.build import build
    from runtime.settings import Settings
    from tests.conftest import PG_DSN
    from tests.e2e.conftest import ADMIN_TOKEN, World

    data = tmp_path / "var"
    log_url = f"sqlite:///{data / 'ledger.db'}" if database_url.startswith("sqlite") else database_url
    own = (f"sqlite:///{tmp_path / 'keys' / 'own.db'}" if database_url.startswith("sqlite")
           else f"{PG_DSN}?schema=k_{uuid.uuid4().hex[:12]}")
    container = build(Settings(data_dir=data, database_url=log_url, keystore_url=own,
                               admin_token=ADMIN_TOKEN, chain=False))
    try:
        with TestClient(create_app(container=container)) as tc:
            world = World(tc)
            provider = world.onboard("provider", "Tax bureau 税务局")
            member = world.member(provider, "王芳", ["member"])
            [added] = [e for e in container.store.load(provider.participant_id)
                       if e.type_name == "participant.member_added"
                       and e.payload()["member_id"] == member.member_id]
            key_id = key_id_of(added.payload()["name"])
            assert key_id is not None and container.keystore.get(key_id) is not None
            secret = container.keystore.fingerprint_key()
    finally:
        container.close()
    own_url, log = DatabaseURL.parse(own), DatabaseURL.parse(log_url)
    if own_url.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(own_url.path) as conn:
            kept = {k: bytes(v) for k, v in conn.execute(f"SELECT key_id, key FROM {KEYS_TABLE}")}
        assert not (data / KEYS_FILE).exists()
    else:
        with psycopg.connect(own_url.conninfo(), autocommit=True) as conn:
            kept = {k: bytes(v) for k, v in conn.execute(
                f'SELECT key_id, key FROM "{own_url.schema}".{KEYS_TABLE}')}
            beside = conn.execute("SELECT count(*) FROM information_schema.tables WHERE "
                                  "table_schema = %s AND table_name = %s",
                                  (log.schema, KEYS_TABLE)).fetchone()
            conn.execute(f'DROP SCHEMA "{own_url.schema}" CASCADE')
        assert beside == (0,)
    assert key_id in kept and kept[FINGERPRINT_KEY_ID] == secret
