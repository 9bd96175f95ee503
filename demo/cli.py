"""``dataledger demo``: added to the ``dataledger`` command by ``cli``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Listed in ``dataledger --help``; each scenario parses its own arguments (``finance``)."""
    demo = sub.add_parser("demo", help="run a scenario of the white paper end to end")
    demo.add_argument("scenario", choices=["finance"],
                      help="finance: inclusive finance (6.1), see dataledger demo finance --help")


def finance(argv: list[str]) -> int:
    """``dataledger demo finance ARGS``."""
    from demo.finance import main

    return main(argv)
