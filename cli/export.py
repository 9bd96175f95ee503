"""``dataledger export``: the whole log as a bundle a regulator takes home (audit/bundle.py).

From the store as configured (or ``--database URL``), read directly and only read (nothing
is created or written, not even a missing key: audit/live_db.py): the events in seq order in
batches, the checkpoints with their co-signatures, the tree's leaf hashes, the trust document
as ``dataledger chain trust`` gives it (left out, the manifest saying why, where the log key
is not in the data dir). Or from a running server (``--url`` and the admitted regulator's
``--token``), ``GET /ledger/export``. Either way the bundle stops at the newest anchored
checkpoint unless ``--all`` (anchoring/export.py). The bundle is written into a new directory beside
``--out`` and renamed to it once complete and read back, so an interrupted export leaves no
half-written bundle; ``--out`` must not exist or be an empty directory.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.common import load_settings

if TYPE_CHECKING:
    from cli.common import Subcommands

PROG = "dataledger export"


def register(sub: Subcommands) -> None:
    export = sub.add_parser(
        "export", help="write the whole log as a bundle: events, checkpoints, trust "
        "document, members' keys, a manifest with each file's SHA-256")
    export.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="the bundle's directory: new, or empty")
    source = export.add_mutually_exclusive_group()
    source.add_argument("--database", metavar="URL",
                        help="read this store (sqlite:///path or postgresql://...) instead "
                        "of DATALEDGER_DATABASE_URL; the tree and keys as DATALEDGER_DATA_DIR "
                        "holds them")
    source.add_argument("--url", help="ask a running server (GET /ledger/export) instead")
    export.add_argument("--token", default=os.environ.get("DATALEDGER_TOKEN"),
                        help="with --url: a bearer token of the admitted regulator (default "
                        "$DATALEDGER_TOKEN)")
    export.add_argument("--all", action="store_true",
                        help="every stored event, also those after the newest anchored "
                        "checkpoint (no witness vouches for them yet: a replay fails there)")
    export.set_defaults(func=_export)


def _usage(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def _export(args: argparse.Namespace) -> int:
    """Write the bundle into a new directory beside ``--out``, then rename it to ``--out``."""
    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return _usage(f"--out: {out} exists and is not an empty directory; give a new one")
    if args.url and not args.token:
        return _usage("--url needs --token (the admitted regulator's), or DATALEDGER_TOKEN")
    if args.token and not args.url and not os.environ.get("DATALEDGER_TOKEN"):
        return _usage("--token goes with --url")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        manifest = _from_server(args, work) if args.url else _from_store(args, work)
        if manifest is None:
            return 1
        if out.exists():
            out.rmdir()  # empty, checked above
        work.rename(out)
    finally:
        if work.exists():
            shutil.rmtree(work)
    print(f"wrote {out}: {manifest['events']} events, {manifest['checkpoints']} checkpoints "
          f"(newest at size {manifest['tree_size']}), {len(manifest['files'])} files listed "
          f"in {out / 'manifest.json'}")
    for note in manifest.get("notes", []):
        print(f"  {note}")
    return 0


def _from_store(args: argparse.Namespace, work: Path) -> dict[str, Any] | None:
    """Read the store and its tree directly, read only; None (said why) when there is no
    store or no tree."""
    from anchoring.export import export_scope, stored_trust_document
    from audit.bundle import write_bundle
    from audit.live_db import LiveDatabase, LiveDatabaseError
    from events.url import DatabaseURL

    settings = load_settings()
    if args.database:
        try:
            DatabaseURL.parse(args.database)
        except ValueError as exc:
            raise SystemExit(_usage(f"--database: {exc}")) from None
        settings = settings.model_copy(update={"database_url": args.database})
    url = DatabaseURL.parse(settings.resolved_database_url())
    if url.kind == "sqlite" and not Path(url.path).exists():
        print(f"{PROG}: FAILED: no event store at {url.path}", file=sys.stderr)
        return None
    try:
        with LiveDatabase(settings.resolved_database_url(), settings.data_dir) as db:
            checkpoints = db.stored_checkpoints()
            anchored = max((cp.size for cp in checkpoints if cp.anchored), default=0)
            upto, about = export_scope(db.max_seq(), anchored, args.all)
            trust, why = stored_trust_document(
                settings.data_dir, settings.log_origin, settings.log_key_file,
                settings.witness_url_list, settings.witness_quorum)
            about["notes"] += [why] if why else []
            return write_bundle(work, db.events(upto=upto),
                                [cp for cp in checkpoints if cp.size <= upto], trust,
                                leaves=db.stored_leaves, about=about)
    except LiveDatabaseError as exc:
        print(f"{PROG}: FAILED: {exc}", file=sys.stderr)
        return None


class _Chunks(io.RawIOBase):
    """An iterator of byte chunks as a readable stream (what tarfile reads)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._left = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            self._left = next(self._chunks, b"")
            if not self._left:
                return 0
        n = min(len(buffer), len(self._left))
        buffer[:n], self._left = self._left[:n], self._left[n:]
        return n


def _from_server(args: argparse.Namespace, work: Path) -> dict[str, Any] | None:
    """Download ``GET /ledger/export`` and unpack it as it arrives; the bundle is read back
    (every file against the manifest) before it counts."""
    import httpx

    from audit.bundle import BundleError, read_bundle
    from client.platform import Platform, PlatformError

    try:
        with Platform.at(args.url) as platform, platform.export(args.token, args.all) as chunks, \
                tarfile.open(fileobj=io.BufferedReader(_Chunks(chunks)), mode="r|") as tar:
            tar.extractall(work, filter="data")
        bundle = read_bundle(work)
        bundle.check_files()
    except PlatformError as exc:
        print(f"{PROG}: the server refused: {exc.status} {exc.body[:500]}", file=sys.stderr)
        return None
    except (httpx.HTTPError, tarfile.TarError, BundleError) as exc:
        print(f"{PROG}: --url {args.url}: {exc}", file=sys.stderr)
        return None
    return bundle.manifest
