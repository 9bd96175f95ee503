"""The database URL that names where the events (and the read models, the chain) are kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, unquote, urlparse

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["DatabaseURL"]


@dataclass(frozen=True)
class DatabaseURL:
    """``sqlite:///path`` or ``postgresql://user[:pw]@host:port/db[?schema=name]``."""

    kind: str
    path: str = ""
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    dbname: str = ""
    schema: str = "public"

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        parsed = urlparse(url)
        if parsed.scheme == "sqlite":
            return cls("sqlite", path=url.removeprefix("sqlite:///").removeprefix("sqlite://"))
        if parsed.scheme in ("postgresql", "postgres", "postgresql+psycopg"):
            query = parse_qs(parsed.query)
            # user, password and database name are percent-decoded here (a password may
            # hold "@" or "%") and encoded again wherever a URL is made of them
            return cls("postgresql", host=parsed.hostname or "127.0.0.1",
                       port=parsed.port or 5432, user=unquote(parsed.username or "postgres"),
                       password=unquote(parsed.password or ""),
                       dbname=unquote(parsed.path.lstrip("/")) or "postgres",
                       schema=query.get("schema", ["public"])[0])
        raise ValueError(f"DATALEDGER_DATABASE_URL: unsupported scheme {parsed.scheme!r} "
                         "(use sqlite:///path or postgresql://user@host:port/db)")

    def conninfo(self) -> str:
        """A libpq connection string for this PostgreSQL database."""
        return f"postgresql://{self._netloc()}/{quote(self.dbname, safe='')}"

    def sqlalchemy_url(self) -> URL:
        """The same database for SQLAlchemy (read models), built from its parts (SQLAlchemy
        decodes a URL's user and password but not its database name)."""
        from sqlalchemy.engine import URL

        if self.kind == "sqlite":
            return URL.create("sqlite", database=self.path)
        return URL.create("postgresql+psycopg", username=self.user,
                          password=self.password or None, host=self.host, port=self.port,
                          database=self.dbname)

    def _netloc(self) -> str:
        auth = quote(self.user, safe="") + (
            f":{quote(self.password, safe='')}" if self.password else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{auth}@{host}:{self.port}"
