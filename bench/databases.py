"""Where a suite's databases live: a fresh temporary directory for SQLite files, fresh
PostgreSQL schemas ``bench_<random>[_<label>]``; both removed at the end."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

from events.url import DatabaseURL

#: where PostgreSQL is looked for (fresh schemas are made in this database)
PG_URL = os.environ.get("DATALEDGER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def check_postgres(url: DatabaseURL) -> None:
    """Fail fast (psycopg's error) when the database does not answer."""
    import psycopg

    with psycopg.connect(host=url.host, port=url.port, user=url.user,
                         password=url.password or None, dbname=url.dbname,
                         connect_timeout=5) as conn:
        conn.execute("SELECT 1")


def drop_schemas(url: DatabaseURL, schemas: list[str]) -> None:
    """``DROP SCHEMA ... CASCADE`` each of ``schemas`` (those that exist)."""
    import psycopg
    from psycopg.sql import SQL, Identifier

    with psycopg.connect(host=url.host, port=url.port, user=url.user,
                         password=url.password or None, dbname=url.dbname,
                         autocommit=True, connect_timeout=10) as conn:
        for schema in schemas:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {0} CASCADE").format(Identifier(schema)))


class Scratch:
    """Fresh databases of one backend, all removed by :meth:`cleanup`: SQLite files under
    ``tmp/<label>/``, or PostgreSQL schemas ``bench_<tag>[_<label>]`` in :data:`PG_URL`."""

    def __init__(self, backend: str, prefix: str) -> None:
        if backend == "postgresql":
            check_postgres(DatabaseURL.parse(PG_URL))
        self.backend = backend
        self.tag = secrets.token_hex(4)
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.schemas: list[str] = []

    def schema(self, label: str) -> str:
        """A new schema's name (made by whoever first uses it; dropped at the end)."""
        schema = f"bench_{self.tag}" + (f"_{label}" if label else "")
        self.schemas.append(schema)
        return schema

    def database_url(self, label: str) -> str:
        """The URL of a new, empty event store."""
        if self.backend == "sqlite":
            return f"sqlite:///{self.tmp / label / 'ledger.db'}"
        return f"{PG_URL}?schema={self.schema(label)}"

    def cleanup(self, notes: list[str]) -> None:
        """Drop the schemas and remove the directory; a failure to drop becomes a note."""
        if self.schemas:
            try:
                drop_schemas(DatabaseURL.parse(PG_URL), self.schemas)
            except Exception as exc:  # noqa: BLE001 - reported, not fatal
                notes.append(f"could not drop schemas {self.schemas}: {exc!r}")
        shutil.rmtree(self.tmp, ignore_errors=True)
