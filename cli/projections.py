"""``dataledger projections``: the read models."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cli.common import build_or_exit, load_settings

if TYPE_CHECKING:
    from cli.common import Subcommands


def register(sub: Subcommands) -> None:
    proj = sub.add_parser("projections", help="read models")
    proj_sub = proj.add_subparsers(dest="projections_command", required=True)
    proj_sub.add_parser("rebuild", help="drop and rebuild every read model from seq 1; "
                        "exit 1 if the state differs, or (nothing dropped) if a seq is "
                        "missing from the log").set_defaults(func=_rebuild)


def _rebuild(_: argparse.Namespace) -> int:
    from events.store import LogGapError

    container = build_or_exit(load_settings(), start_background=False)
    try:
        before = container.runner.digests()
        position = container.runner.rebuild()
        after = container.runner.digests()
    except LogGapError as gap:
        print(f"refused: {gap}; the read models were left as they were", file=sys.stderr)
        return 1
    finally:
        container.close()
    for name in after:
        same = "same" if before.get(name) == after[name] else "CHANGED"
        print(f"{name:<16} {after[name][:16]}  {same}")
    print(f"rebuilt from seq 1 to {position}")
    return 0 if before == after else 1
