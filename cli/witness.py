"""``dataledger witness``: a witness process (its own parser: ``anchoring.witness_app``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cli.common import Subcommands


def register(sub: Subcommands) -> None:
    """Listed in ``dataledger --help``; ``main`` parses its arguments."""
    sub.add_parser("witness", help="run a witness (see dataledger witness --help)")


def main(argv: list[str]) -> int:
    from anchoring.witness_app import main as witness_main

    return witness_main(argv)
