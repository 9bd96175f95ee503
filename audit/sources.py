"""Where ``audit replay`` reads the log from: a bundle, a running platform, or its database.

Every source gives the same three things, in the bundle's shapes: the stored events in the
order held (:class:`core.record.LogEntry`, gaps and all: finding them is the replay's job),
the checkpoints in size order (dicts with the fields of ``checkpoints.jsonl``: size, note,
cosigned, signers, aggregate in base64 or null, anchored, cut_at), and how many events to
expect (for the progress bar). Nothing a source says is trusted: the replay holds it all to
the ``--trust`` keys.

- :class:`BundleSource` (``--bundle DIR``): audit/bundle.py's reader.
- :class:`PlatformSource` (``--url URL --token T``): ``GET /ledger/events`` and
  ``GET /ledger/checkpoints?after_size=&limit=`` through client/platform.py, as the
  regulator (who sees every event).
- :class:`DatabaseSource` (``--database URL``): audit/live_db.py, imported lazily (the one
  module of ``audit`` that reads the server's storage); also the read models (step 7).

A source that cannot be read at all raises :class:`SourceUnavailable` (the command exits 2);
content that is wrong (a file that does not match its manifest, a line that is not a
canonical record) is a failure of the log, which the replay reports (exit 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.record import LogEntry

if TYPE_CHECKING:
    from audit.bundle import Bundle
    from audit.live_db import LiveDatabase
    from client.platform import Platform

#: events and checkpoints asked for per request of the platform source
PAGE = 1000


class SourceUnavailable(Exception):
    """The source cannot be read at all (missing, unreachable, refused): a usage error."""


class ReadModels(Protocol):
    """Step 7's result: whether the live read models equal those rebuilt from the log."""

    @property
    def ok(self) -> bool: ...


class Source(Protocol):
    """What the replay reads; ``description`` names it in the report."""

    description: str

    def total(self) -> int | None:
        """How many events the source expects to give, if it knows."""
        ...

    def events(self) -> Iterator[LogEntry]:
        """The stored events in the order held."""
        ...

    def checkpoints(self) -> list[dict[str, Any]]:
        """The checkpoints in size order, as ``checkpoints.jsonl`` lines."""
        ...

    def stored_leaves(self, first: int, last: int) -> bytes:
        """The leaf hashes the log stored for seqs ``first`` to ``last`` (32 bytes each;
        fewer, or none, where it holds fewer): the replay names the event whose bytes do
        not hash to its stored leaf. Not trusted: the checkpoints' roots are."""
        ...

    def read_models(self, upto: int) -> Any | None:
        """Step 7 (live read models against those rebuilt from the log up to ``upto``), or
        None where the source has none."""
        ...

    def close(self) -> None: ...


class BundleSource:
    """``--bundle DIR``: an exported bundle, read with audit/bundle.py."""

    def __init__(self, directory: str | Path) -> None:
        from audit.bundle import BundleError, read_bundle

        self.description = f"bundle {directory}"
        try:
            self.bundle: Bundle = read_bundle(directory)
        except BundleError as exc:
            raise SourceUnavailable(f"--bundle {directory}: {exc}") from exc

    def total(self) -> int | None:
        return int(self.bundle.manifest["events"])

    def events(self) -> Iterator[LogEntry]:
        return self.bundle.events()

    def checkpoints(self) -> list[dict[str, Any]]:
        return self.bundle.checkpoints()

    def stored_leaves(self, first: int, last: int) -> bytes:
        return self.bundle.stored_leaves(first, last)

    def read_models(self, upto: int) -> Any | None:
        return None

    def close(self) -> None:
        """A bundle holds nothing open between reads."""


class PlatformSource:
    """``--url URL --token T``: a running platform's API, read as the regulator."""

    def __init__(self, url: str, token: str, platform: Platform | None = None) -> None:
        from client.platform import Platform

        self.description = f"platform {url}"
        self.token = token
        self.api = platform or Platform.at(url)
        self._head: int | None = None

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        import httpx

        from client.platform import PlatformError

        try:
            return fn(self.token, *args)
        except PlatformError as exc:
            raise SourceUnavailable(f"{self.description}: {what}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise SourceUnavailable(f"{self.description}: {what}: {exc}") from exc

    def total(self) -> int | None:
        if self._head is None:
            page = self._call("GET /ledger/events", self.api.events_page, 0, 1)
            self._head = int(page["head"])
        return self._head

    def events(self) -> Iterator[LogEntry]:
        after = 0
        while True:
            page = self._call("GET /ledger/events", self.api.events_page, after, PAGE)
            for view in page["events"]:
                yield LogEntry.from_view(view)
            if int(page["next_after"]) <= after:
                return
            after = int(page["next_after"])

    def checkpoints(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            after = out[-1]["size"] if out else 0
            page = self._call("GET /ledger/checkpoints", self.api.checkpoints_page, after, PAGE)
            if not page["checkpoints"]:
                return out
            out += page["checkpoints"]

    def stored_leaves(self, first: int, last: int) -> bytes:
        return b""  # the API serves no leaf hashes: a changed event is named by its span

    def read_models(self, upto: int) -> Any | None:
        return None

    def close(self) -> None:
        self.api.close()


class DatabaseSource:
    """``--database URL``: a ledger's own database (audit/live_db.py), read only."""

    def __init__(self, url: str, data_dir: str | Path | None = None) -> None:
        from audit.live_db import LiveDatabase, LiveDatabaseError

        self.description = f"database {url}"
        self.url, self.data_dir = url, data_dir
        try:
            self.db: LiveDatabase = LiveDatabase(url, data_dir)
            self._total = self.db.max_seq()
        except LiveDatabaseError as exc:
            raise SourceUnavailable(str(exc)) from exc

    def total(self) -> int | None:
        return self._total

    def events(self) -> Iterator[LogEntry]:
        return self.db.events()

    def checkpoints(self) -> list[dict[str, Any]]:
        from audit.live_db import LiveDatabaseError

        try:
            return self.db.checkpoints()
        except LiveDatabaseError as exc:
            raise SourceUnavailable(str(exc)) from exc

    def stored_leaves(self, first: int, last: int) -> bytes:
        from audit.live_db import LiveDatabaseError

        try:
            return self.db.stored_leaves(first, last)
        except LiveDatabaseError as exc:
            raise SourceUnavailable(str(exc)) from exc

    def read_models(self, upto: int) -> Any | None:
        from audit.live_db import LiveDatabaseError, compare_read_models

        try:
            return compare_read_models(self.url, self.data_dir, db=self.db)
        except LiveDatabaseError as exc:
            raise SourceUnavailable(str(exc)) from exc

    def close(self) -> None:
        self.db.close()
