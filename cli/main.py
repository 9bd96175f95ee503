"""The ``dataledger`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from audit import cli as audit_cli
from bench import cli as bench_cli
from cli import (
    chain,
    client,
    compute_node,
    docs,
    events,
    export,
    forensics,
    privacy,
    projections,
    serve,
    signing,
    witness,
)
from demo import cli as demo_cli

#: commands with parsers of their own: the arguments after the prefix are handed on
PASSTHROUGH: dict[tuple[str, ...], Callable[[list[str]], int]] = {
    ("witness",): witness.main,
    ("compute-node",): compute_node.main,  # runs in the compute node's own environment
    ("demo", "finance"): demo_cli.finance,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dataledger", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for register in (serve.register, events.register, projections.register, chain.register,
                     client.register, signing.register, witness.register, compute_node.register,
                     demo_cli.register, bench_cli.register, docs.register, audit_cli.register,
                     forensics.register, export.register, privacy.register):
        register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for prefix, run in PASSTHROUGH.items():
        if tuple(argv[:len(prefix)]) == prefix:
            return run(argv[len(prefix):])
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code
