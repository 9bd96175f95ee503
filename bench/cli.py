"""``dataledger bench``: its arguments, added to the ``dataledger`` command by ``cli``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="benchmarks (print a table, write JSON)")
    bench.add_argument("suite", choices=["append", "audit", "chain", "compute", "joint",
                                         "privacy", "security"])
    bench.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    bench.add_argument("--json", default=None, help="default: bench-results/<suite>.json")
    bench.add_argument("--quick", action="store_true", help="a short run (for tests)")
    joint = bench.add_argument_group("joint", "sizes of `bench joint` (default: the issue's)")
    joint.add_argument("--rows", type=int, help="rows of each provider's table (100,000); "
                       "bench privacy: rows of the masked and watermarked result (100,000)")
    joint.add_argument("--providers", type=int, help="providers of the joint computation (3)")
    joint.add_argument("--codes", type=int, help="codes of the hidden query (1,000)")
    joint.add_argument("--table-rows", type=int, help="rows of the hidden query's table "
                       "(1,000,000)")
    joint.add_argument("--repetitions", type=int, help="repetitions of each timed step (5; "
                       "bench privacy too)")
    privacy = bench.add_argument_group("privacy", "sizes of `bench privacy` (default: the "
                                       "issue's; --rows and --repetitions too)")
    privacy.add_argument("--deliveries", type=int, help="deliveries a leak is traced among "
                         "(1,000)")
    privacy.add_argument("--trace-rows", type=int, help="rows of each traced delivery (2,000)")
    bench.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from bench import run

    return run.main(args)
