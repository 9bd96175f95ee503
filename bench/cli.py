"""``dataledger bench``: its arguments, added to the ``dataledger`` command by ``cli``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="benchmarks (print a table, write JSON)")
    bench.add_argument("suite", choices=["append", "audit", "chain", "compute", "security"])
    bench.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    bench.add_argument("--json", default=None, help="default: bench-results/<suite>.json")
    bench.add_argument("--quick", action="store_true", help="a short run (for tests)")
    bench.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from bench import run

    return run.main(args)
