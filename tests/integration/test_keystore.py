"""privacy/keystore.py on a SQLite file and on PostgreSQL: get-or-create, get, destroy; a
destroyed key's bytes are left in no file of the SQLite store and no row of the table."""

from __future__ import annotations

import stat
from pathlib import Path

import psycopg

from core.sealed import ERASED, MEMBER_NAME
from events.url import DatabaseURL
from privacy.keystore import KEYS_FILE, KEYS_TABLE, open_keystore


def test_keys_are_made_once_kept_apart_and_destroyed(database_url: str, tmp_path: Path) -> None:
    url = DatabaseURL.parse(database_url)
    store = open_keystore(url, tmp_path / "var")
    try:
        key = store.get_or_create("m-1")
        assert len(key) == 32 and store.get_or_create("m-1") == key == store.get("m-1")
        other = store.get_or_create("m-2")
        assert other != key and store.get_many(["m-1", "m-2", "m-3"]) == {
            "m-1": key, "m-2": other}
        env = store.seal("m-1", MEMBER_NAME, "张伟")
        assert store.reveal(env, MEMBER_NAME) == "张伟"
        assert store.destroy("m-1") is True and store.destroy("m-1") is False
        assert store.get("m-1") is None and store.get("m-2") == other
        assert store.reveal(env, MEMBER_NAME) == ERASED
        assert store.reveal_all([env, "clear"], MEMBER_NAME) == [ERASED, "clear"]
    finally:
        store.close()
    if url.kind == "sqlite":
        files = [p for p in (tmp_path / "var").iterdir() if p.is_file()]
        assert tmp_path / "var" / KEYS_FILE in files
        assert stat.S_IMODE((tmp_path / "var" / KEYS_FILE).stat().st_mode) == 0o600
        assert not any(key in p.read_bytes() for p in files)
        assert any(other in p.read_bytes() for p in files)
    else:
        with psycopg.connect(url.conninfo(), autocommit=True) as conn:
            rows = conn.execute(f'SELECT subject_id, key FROM "{url.schema}".{KEYS_TABLE}')
            assert [(s, bytes(k)) for s, k in rows] == [("m-2", other)]


def test_a_reopened_store_keeps_its_keys(database_url: str, tmp_path: Path) -> None:
    url = DatabaseURL.parse(database_url)
    first = open_keystore(url, tmp_path / "var")
    key = first.get_or_create("m-1")
    first.close()
    again = open_keystore(url, tmp_path / "var")
    try:
        assert again.get("m-1") == key
    finally:
        again.close()
