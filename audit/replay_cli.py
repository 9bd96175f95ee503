"""``dataledger audit replay``: the command around audit/replay.py.

``(--bundle DIR | --url URL --token T | --database URL) --trust FILE [--json REPORT]
[--html REPORT]``. Exit 0 when every step holds; 1 naming the first failing seq, the step,
what was expected and what was found; 2 for a usage error (a bad argument, an unreadable
trust file or source). A progress bar on standard error for long logs, a summary table at
the end (rich).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit.report import Report
    from audit.sources import Source

#: logs shorter than this replay without a progress bar
PROGRESS_FROM = 20_000


def add_replay(audit_sub: Any) -> None:
    """Add ``replay`` to the ``audit`` group."""
    p = audit_sub.add_parser(
        "replay", help="check a whole log offline in numbered steps (tree, signatures, "
        "witnesses, consistency, index, business rules, read models) against your own "
        "trust file; exit 1 naming the first failing seq and step")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--bundle", type=Path, metavar="DIR",
                       help="an exported bundle (`dataledger export --out DIR`)")
    where.add_argument("--url", metavar="URL", help="a running platform, read as the "
                       "regulator through GET /ledger/events and /ledger/checkpoints")
    where.add_argument("--database", metavar="URL", help="the ledger's own database (also "
                       "compares the live read models with those rebuilt from the log)")
    p.add_argument("--token", metavar="T", help="the regulator's bearer token (with --url; "
                   "default $DATALEDGER_TOKEN)")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="with --database on SQLite: "
                   "the data dir holding chain.db and views.db (default: "
                   "$DATALEDGER_DATA_DIR, else the database file's dir)")
    p.add_argument("--trust", required=True, type=Path, metavar="FILE",
                   help="the trust document (log key, witnesses, quorum) taken out of band, "
                   "never one that came with the log")
    p.add_argument("--anchored-only", action="store_true", help="replay up to the newest "
                   "checkpoint a quorum of witnesses co-signed and stop there (a live log's "
                   "newest events await their checkpoint); without it, an event no anchored "
                   "checkpoint covers is a failure")
    p.add_argument("--accept-unwitnessed", action="store_true", help="replay against a "
                   "trust file of quorum 0 all the same (refused otherwise: no witness would "
                   "vouch for the log, a log the operator rewrote and re-signed alone would "
                   "pass); the report and the verdict then say so")
    p.add_argument("--json", type=Path, metavar="REPORT", help="write the full "
                   "machine-readable report here")
    p.add_argument("--html", type=Path, metavar="REPORT", help="write a one-file HTML "
                   "report here (steps, events per type and day, checkpoints over time)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or table: the "
                   "verdict line only")
    p.set_defaults(func=_replay)


def _usage(message: str) -> int:
    print(f"dataledger audit replay: {message}", file=sys.stderr)
    return 2


def _source(args: argparse.Namespace) -> Source:
    """The source the arguments name (SourceUnavailable, or ValueError for a usage error)."""
    from audit.sources import BundleSource, DatabaseSource, PlatformSource

    if args.bundle is not None:
        return BundleSource(args.bundle)
    if args.url is not None:
        token = args.token or os.environ.get("DATALEDGER_TOKEN")
        if not token:
            raise ValueError("--url needs --token (or $DATALEDGER_TOKEN): the regulator's")
        return PlatformSource(args.url, token)
    data_dir = args.data_dir or os.environ.get("DATALEDGER_DATA_DIR") or None
    return DatabaseSource(args.database, data_dir)


def _replay(args: argparse.Namespace) -> int:
    from audit.replay import Replay
    from audit.sources import SourceUnavailable
    from chain.trust import TrustDocumentError, TrustedKeys

    if args.token and args.url is None:
        return _usage("--token goes with --url")
    try:
        keys = TrustedKeys.from_file(args.trust)
    except TrustDocumentError as exc:
        return _usage(f"--trust: {exc}")
    if keys.quorum == 0 and not args.accept_unwitnessed:
        return _usage(f"--trust: {args.trust} has quorum 0: no witness would vouch for the "
                      "log, so a log the operator rewrote and re-signed alone would pass; "
                      "give --accept-unwitnessed to replay it anyway")
    for out in (args.json, args.html):
        if out is not None and not out.parent.is_dir():
            return _usage(f"{out}: no directory {out.parent} to write the report in")
    try:
        source = _source(args)
    except (SourceUnavailable, ValueError) as exc:
        return _usage(str(exc))
    try:
        with _progress(args.quiet) as progress:
            report = Replay(keys, trust_label=f"{args.trust}: {keys.describe()}",
                            progress=progress, anchored_only=args.anchored_only).run(source)
    except SourceUnavailable as exc:
        return _usage(str(exc))
    finally:
        source.close()
    _write(args, report)
    return 0 if report.ok else 1


def _write(args: argparse.Namespace, report: Report) -> None:
    from audit.html import render
    from audit.report import UNWITNESSED

    if not args.quiet:
        _table(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n",
                             encoding="utf-8")
    if args.html is not None:
        args.html.write_text(render(report), encoding="utf-8")
    if report.failure is None:
        cps = report.to_json()["checkpoints"]
        loud = " BUT UNWITNESSED (quorum 0: no witness vouches for this log)" if (
            report.unwitnessed) else ""
        print(f"ok{loud}: {report.events} events replayed, {cps['count']} checkpoints "
              f"({cps['anchored']} anchored); every step held")
    else:
        print(f"FAILED: {report.failure.line()}")
    if report.unwitnessed:
        print(UNWITNESSED)


def _table(report: Report) -> None:
    """The summary table: one row per step."""
    from rich.console import Console
    from rich.table import Table

    from audit.report import STEPS

    styles = {"passed": "green", "failed": "bold red", "skipped": "yellow",
              "stopped": "yellow"}
    table = Table(title=f"audit replay of {report.source}")
    for name in ("#", "step", "status", "checked", "note"):
        table.add_column(name)
    for info in STEPS:
        step = report.steps[info.number]
        table.add_row(str(info.number), info.name,
                      f"[{styles.get(step.status, '')}]{step.status}[/]",
                      f"{step.checked:,}", step.reason)
    console = Console(highlight=False, soft_wrap=False)
    console.print(table)
    for note in report.notes:
        console.print(f"note: {note}", markup=False)


class _progress:
    """A rich progress bar on standard error while the log is long; a no-op otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> Any:
        return None if self.quiet else self.update

    def update(self, done: int, total: int | None) -> None:
        if self.bar is None:
            if (total or done) < PROGRESS_FROM:
                return
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.bar = Progress("replaying", BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=Console(stderr=True),
                                transient=True)
            self.bar.start()
            self.task = self.bar.add_task("events", total=total)
        self.bar.update(self.task, completed=done)

    def __exit__(self, *_: object) -> None:
        if self.bar is not None:
            self.bar.stop()
