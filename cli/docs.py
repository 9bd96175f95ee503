"""``dataledger docs``: documents generated from the code, so they cannot drift from it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cli.common import Subcommands


def register(sub: Subcommands) -> None:
    docs = sub.add_parser("docs", help="documents generated from the code")
    docs_sub = docs.add_subparsers(dest="docs_command", required=True)
    docs_sub.add_parser("permissions", help="print docs/PERMISSIONS.md, the permission "
                        "matrix (domain/permissions.py)").set_defaults(func=_permissions)


def _permissions(_: argparse.Namespace) -> int:
    from domain.permissions import render_markdown

    print(render_markdown(), end="")
    return 0
