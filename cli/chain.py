"""``dataledger chain``: the verifiable log, in a process of its own."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from typing import TYPE_CHECKING

from cli.common import build_or_exit, load_settings

if TYPE_CHECKING:
    from cli.common import Subcommands
    from runtime.build import Container


def register(sub: Subcommands) -> None:
    chain = sub.add_parser("chain", help="the verifiable log")
    chain_sub = chain.add_subparsers(dest="chain_command", required=True)
    run = chain_sub.add_parser("run", help="integrate the log into the tree and cut "
                               "checkpoints in this process (what serve does in a thread)")
    run.add_argument("--once", action="store_true", help="catch up once, then exit")
    run.set_defaults(func=_run)
    chain_sub.add_parser("verify", help="recompute every leaf and tree hash from the stored "
                         "events and check the checkpoints; exit 1 naming what differs"
                         ).set_defaults(func=_verify)


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


def _verify(_: argparse.Namespace) -> int:
    from anchoring.check import ChainChecker

    services = _open()
    chain = services.chain
    assert chain is not None  # the chain role always builds it
    cp = chain.checkpointer
    try:
        checker = ChainChecker(services.store, chain.tree, cp.signer.verifier(), cp.origin,
                               cp.trusted, cp.quorum)
        findings = checker.run()
        checkpoints = chain.tree.checkpoints.all()
        size = chain.tree.size()
    finally:
        services.close()
    for finding in findings:
        print(f"FAIL {finding}")
    anchored = [c for c in checkpoints if c.anchored]
    summary = (f"{size} leaves recomputed, {len(checkpoints)} checkpoints "
               f"({len(anchored)} anchored, latest anchored at size "
               f"{anchored[-1].size if anchored else 0})")
    print(("FAILED: " if findings else "ok: ") + summary)
    return 1 if findings else 0
