"""``dataledger chain``: the verifiable log, in a process of its own.

``verify`` holds the stored log to the keys of a trust file handed over out of band
(``--trust FILE``, written by ``trust --out FILE``), never to keys read from the data dir it
checks: whoever can rewrite that dir can also make new keys there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from cli.common import build_or_exit, load_settings

if TYPE_CHECKING:
    from chain.trust import TrustedKeys
    from cli.common import Subcommands
    from runtime.build import Container
    from runtime.settings import Settings


def register(sub: Subcommands) -> None:
    chain = sub.add_parser("chain", help="the verifiable log")
    chain_sub = chain.add_subparsers(dest="chain_command", required=True)
    run = chain_sub.add_parser("run", help="integrate the log into the tree and cut "
                               "checkpoints in this process (what serve does in a thread)")
    run.add_argument("--once", action="store_true", help="catch up once, then exit")
    run.set_defaults(func=_run)
    verify = chain_sub.add_parser(
        "verify", help="recompute every leaf and tree hash from the stored events and check "
        "the checkpoints against the keys of a trust file; exit 1 naming what differs")
    verify.add_argument("--trust", required=True, type=Path, metavar="FILE",
                        help="the trust document (log key, witnesses, quorum) taken out of "
                        "band before, e.g. with `dataledger chain trust --out FILE`; never a "
                        "file in the data dir checked")
    verify.set_defaults(func=_verify)
    trust = chain_sub.add_parser(
        "trust", help="write the trust document (the log key, the witnesses' keys, the "
        "quorum: what GET /ledger/witnesses shows) to hand to verifiers out of band")
    trust.add_argument("--out", required=True, metavar="FILE",
                       help="where to write it (- for standard output)")
    trust.set_defaults(func=_trust)


def _open() -> Container:
    """The event store and the chain service as configured (nothing started)."""
    return build_or_exit(load_settings(), role="chain")


def _run(args: argparse.Namespace) -> int:
    """Integrate and checkpoint in this process (the chain half of serve, on its own)."""
    services = _open()
    chain = services.chain
    assert chain is not None  # the chain role always builds it
    try:
        if args.once:
            latest = chain.step()
            print(f"tree size {chain.tree.size()}; latest checkpoint "
                  f"{latest.size if latest else 0} (anchored: {bool(latest and latest.anchored)})")
            return 0
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        chain.start()
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops it, as SIGTERM does
            done.wait()
    finally:
        services.close()
    return 0


def _trusted(path: Path, settings: Settings) -> TrustedKeys:
    """The keys of the trust file, or exit 2 saying why (unreadable, malformed, or kept in
    the data dir it would vouch for)."""
    from chain.trust import TrustDocumentError, TrustedKeys

    if path.resolve().is_relative_to(settings.data_dir.resolve()):
        why = (f"{path} is inside the data dir {settings.data_dir} it checks: whoever can "
               "rewrite the log can rewrite it too; keep the copy taken out of band elsewhere")
    else:
        try:
            return TrustedKeys.from_file(path)
        except TrustDocumentError as exc:
            why = str(exc)
    print(f"dataledger chain verify: --trust: {why}", file=sys.stderr)
    raise SystemExit(2)


def _verify(args: argparse.Namespace) -> int:
    """Recompute the tree from the stored events and hold every checkpoint to the keys of
    ``--trust``; the data dir's own keys are not read (nor made)."""
    from anchoring.check import ChainChecker
    from anchoring.service import open_tree
    from events.store import open_store
    from events.url import DatabaseURL

    settings = load_settings()
    keys = _trusted(args.trust, settings)
    print(f"trusting {args.trust}: {keys.describe()}", flush=True)
    url = DatabaseURL.parse(settings.resolved_database_url())
    if url.kind == "sqlite" and not Path(url.path).exists():
        print(f"FAILED: no event store at {url.path}")
        return 1
    store = open_store(url, create=False)
    try:
        tree = open_tree(url, settings.data_dir)
        try:
            checker = ChainChecker(store, tree, keys.log_verifier, keys.origin,
                                   keys.witnesses, keys.quorum)
            findings = checker.run()
            checkpoints = tree.checkpoints.all()
            size = tree.size()
        finally:
            tree.close()
    finally:
        store.close()
    for finding in findings:
        print(f"FAIL {finding}")
    anchored = [c for c in checkpoints if c.anchored]
    summary = (f"{size} leaves recomputed, {len(checkpoints)} checkpoints "
               f"({len(anchored)} anchored, latest anchored at size "
               f"{anchored[-1].size if anchored else 0})")
    print(("FAILED: " if findings else "ok: ") + summary)
    return 1 if findings else 0


def _trust(args: argparse.Namespace) -> int:
    """Write the trust document of this log as configured (its key, its witnesses)."""
    services = _open()
    chain = services.chain
    assert chain is not None  # the chain role always builds it
    try:
        document = chain.trust_document()
        independence = chain.independence()
    finally:
        services.close()
    text = json.dumps(document, indent=2) + "\n"
    if args.out == "-":
        print(text, end="")
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}: log {document['origin']}, {len(document['witnesses'])} "
              f"witnesses, quorum {document['quorum']}")
    if not independence["independent"]:
        print(f"note: these witnesses are not independent: {independence['why']}",
              file=sys.stderr)
    return 0
