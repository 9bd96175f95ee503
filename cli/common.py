"""What the commands share: the settings, the services built from them, ports and URLs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.build import Container, Role
    from runtime.settings import Settings

    #: the subcommands of ``dataledger``, where each command group adds its own
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


def load_settings() -> Settings:
    """The settings from the environment, or exit with one line per bad one, naming it."""
    from pydantic import ValidationError

    from runtime.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper()
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"DATALEDGER_{name}: {message}" if name else message)
        raise SystemExit("dataledger: invalid settings:\n  " + "\n  ".join(lines)) from None


def build_or_exit(settings: Settings, *, role: Role = "serve",
                  start_background: bool = True) -> Container:
    """``runtime.build.build``, a bad setting or an unreachable database said in one line,
    and the first admin token printed as soon as it is made (whichever command made it)."""
    import psycopg
    from eventsourcing.persistence import PersistenceError

    from anchoring.witness_clients import WitnessUnreachable
    from core.files import private_dir
    from events.store import LogGapError
    from events.url import DatabaseURL
    from runtime.build import build

    try:
        url = DatabaseURL.parse(settings.resolved_database_url())
    except ValueError as exc:
        raise SystemExit(f"dataledger: {exc}") from None
    try:
        private_dir(settings.data_dir)
    except OSError as exc:
        raise SystemExit(f"dataledger: DATALEDGER_DATA_DIR: cannot create {settings.data_dir}: "
                         f"{exc.strerror or exc}") from None
    try:
        container = build(settings, role=role, start_background=start_background)
    except LogGapError as gap:  # the read models cannot catch up past it
        raise SystemExit(f"dataledger: refused: {gap}") from None
    except WitnessUnreachable as exc:
        raise SystemExit(f"dataledger: {exc}") from None
    except (PersistenceError, psycopg.Error) as exc:
        where = (f"{url.kind} at {url.host}:{url.port}/{url.dbname}" if url.kind == "postgresql"
                 else f"SQLite file {url.path}")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SystemExit(f"dataledger: cannot open the store ({where}, from "
                         f"DATALEDGER_DATABASE_URL / DATALEDGER_DATA_DIR): {first}") from None
    if container.first_admin_token:
        print("First start: the platform admin's bearer token (shown once, keep it):",
              flush=True)
        print(f"  {container.first_admin_token}", flush=True)
    return container


def tcp_port(text: str) -> int:
    """A TCP port (argparse type): 1 to 65535."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is not a port (1 to 65535)")
    return number


def loopback_url(host: str, port: int) -> str:
    """How a process on this machine reaches a server listening on ``host``."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
